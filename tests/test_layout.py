"""The run folder's layout: the paths the DAG docs, the demo and engineers look at."""

import datetime as dt
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.layout import RunLayout

AS_OF = dt.date(2027, 8, 15)


def settings(work: Path) -> Settings:
    return Settings(
        landing=work / "landing",
        exchange_url=None,
        reference=work / "reference",
        warehouse_url="sqlite://",
        policy_path=work / "policy.yaml",
        as_of=AS_OF,
        work_dir=work,
    )


def test_an_attempt_keeps_its_files_in_its_own_folder(tmp_path):
    layout = settings(tmp_path).with_attempt("airflow-manual__2027-08-15T01:00:00").layout
    run = tmp_path / "runs" / "2027-08-15" / "airflow-manual__2027-08-15T01_00_00"
    assert layout.run_dir == run
    assert layout.snapshot_file("hukou") == run / "staged" / "hukou" / "snapshot.json"
    assert layout.accepted_rows("rental") == run / "staged" / "rental" / "accepted.parquet"
    assert layout.accepted_change("hukou") == run / "accepted_changes" / "hukou.json"
    assert layout.review_dir == run / "addresses" / "review"
    assert layout.address_catchment == run / "addresses" / "address_catchment.parquet"
    assert (layout.access_tables_dir, layout.marts_dir) == (run / "tables" / "access", run / "tables" / "marts")


def test_what_every_attempt_shares_sits_beside_the_attempts(tmp_path):
    layout = settings(tmp_path).layout
    assert layout.shared_staged_dir == tmp_path / "staged" / "2027-08-15"
    assert layout.data_docs == tmp_path / "validation" / "data_docs" / "index.html"
    assert layout.reports_dir == tmp_path / "reports" / "2027-08-15"
    assert layout.lock_file == tmp_path / ".zerocert-run.lock"
    with pytest.raises(ValueError, match="with_attempt"):
        _ = layout.run_dir


def test_attempt_folders_are_listed_by_prefix_for_one_day_or_every_day(tmp_path):
    for day, attempt in [("2027-08-14", "cli-1"), ("2027-08-15", "cli-2"), ("2027-08-15", "airflow-x")]:
        (tmp_path / "runs" / day / attempt).mkdir(parents=True)
    layout = RunLayout(tmp_path, AS_OF)
    assert [p.name for p in layout.attempt_dirs("cli-")] == ["cli-2"]
    assert [p.name for p in layout.attempt_dirs("cli-", every_day=True)] == ["cli-1", "cli-2"]
    assert [p.name for p in layout.attempt_dirs()] == ["airflow-x", "cli-2"]


def test_pruning_keeps_the_newest_older_attempt_of_the_prefix_and_every_other_prefix(tmp_path):
    import os

    for age, (day, attempt) in enumerate(
        [("2027-08-15", "cli-3"), ("2027-08-15", "cli-2"), ("2027-08-14", "cli-1"), ("2027-08-14", "airflow-x")]
    ):
        folder = tmp_path / "runs" / day / attempt
        folder.mkdir(parents=True)
        os.utime(folder, (1_800_000_000 - 60 * age,) * 2)
    RunLayout(tmp_path, AS_OF, "cli-4").prune_attempts("cli-")
    assert sorted(p.name for p in tmp_path.glob("runs/*/*")) == ["airflow-x", "cli-3"]
