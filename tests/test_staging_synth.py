"""Staging against the synthetic city's ground truth: exactly the deliberately damaged rows."""

import datetime as dt

import pandas as pd
import pytest

from pipelines.registry import source_keys
from pipelines.staging.snapshot import stage_source
from pipelines.synth import synthesize

AS_OF = dt.date(2027, 8, 15)


@pytest.mark.parametrize(("profile", "seed"), [("default", 11), ("weifang", 3)])
def test_quarantine_matches_the_synthetic_truth_and_nothing_is_lost(tmp_path, profile, seed):
    synthesize(tmp_path / "city", 1500, seed, as_of=AS_OF, profile=profile)
    truth = pd.read_csv(tmp_path / "city/truth/quarantine.csv", dtype=str)
    quarantined = []
    for source in source_keys():
        snapshot = stage_source(
            source, landing=tmp_path / "city/landing", exchange_url=None, as_of=AS_OF, out_dir=tmp_path / "staged"
        )
        assert snapshot["rows_in"] == (
            snapshot["rows_accepted"] + snapshot["rows_quarantined"] + snapshot["rows_duplicate"]
        )
        assert snapshot["rows_accepted"] > 0
        quarantined.append(pd.read_parquet(snapshot["quarantine_path"]))
    got = pd.concat(quarantined)[["source", "record_ref", "reason_code"]]
    key = ["source", "record_ref", "reason_code"]
    assert len(truth) > 20
    assert got.sort_values(key).values.tolist() == truth[key].sort_values(key).values.tolist()


@pytest.mark.parametrize(("profile", "seed"), [("default", 5), ("weifang", 13)])
def test_staging_a_delivery_in_slices_stages_the_same_snapshot(tmp_path, monkeypatch, profile, seed):
    """A delivery is read in blocks, staged in slices and cast in smaller slices to bound memory
    at city scale; blocks of a few kilobytes and slices of a few rows (duplicates and
    their originals in different slices, quarantined rows in every slice) stage the same
    snapshot as one slice does."""
    from pipelines.staging import delivery, readers, stage

    synthesize(tmp_path / "city", 1500, seed, as_of=AS_OF, profile=profile)

    snapshots: dict[str, dict] = {}

    def staged(out: str) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        frames = {}
        for source in source_keys():
            snapshot = stage_source(
                source, landing=tmp_path / "city/landing", exchange_url=None, as_of=AS_OF, out_dir=tmp_path / out
            )
            snapshots.setdefault(out, {})[source] = snapshot
            frames[source] = (pd.read_parquet(snapshot["accepted_path"]), pd.read_parquet(snapshot["quarantine_path"]))
        return frames

    monkeypatch.setattr(delivery, "BLOCK_BYTES", 1 << 30)
    monkeypatch.setattr(readers, "CHUNK_LINES", 1 << 30)
    whole = staged("whole")
    monkeypatch.setattr(delivery, "BLOCK_BYTES", 20_000)
    monkeypatch.setattr(readers, "CHUNK_LINES", 53)
    monkeypatch.setattr(stage, "CAST_ROWS", 37)
    sliced = staged("sliced")
    assert sum(len(quarantine) for _, quarantine in whole.values()) > 20
    assert sum(snapshot["rows_duplicate"] for snapshot in snapshots["sliced"].values()) > 5
    for source in whole:
        for got, want in zip(sliced[source], whole[source]):
            pd.testing.assert_frame_equal(got, want)
        counts = ("rows_in", "rows_accepted", "rows_quarantined", "rows_duplicate", "checksum")
        assert [snapshots["sliced"][source][k] for k in counts] == [snapshots["whole"][source][k] for k in counts]
