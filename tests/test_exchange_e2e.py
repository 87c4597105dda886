"""Whole runs from the exchange database form (SQLite and PostgreSQL), checked against the truth.

The exchange holds the same dirty deliveries as the files; only records the exchange's database
could not hold (malformed ones) are absent, so everything else must come out as from the files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from warehouse_reader import read

from pipelines.cli import main
from pipelines.staging.quarantine import MALFORMED_RECORD
from pipelines.synth.exchange import load_exchange

PEOPLE = 3000  # realistic cohorts: more than 50 eligibility rows
KEYS = ["child_id", "level", "school_code", "category"]
SOURCES = {
    "hukou",
    "property_title",
    "housing_contract",
    "rental",
    "social_insurance",
    "individual_business",
    "enterprise",
}


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("excity")
    synthesize(out, PEOPLE, seed=11)
    return out


def run_from_exchange(city: Path, exchange: str, tmp_path: Path) -> str:
    warehouse = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert (
        main(
            [
                "run",
                "--exchange",
                exchange,
                "--reference",
                str(city / "reference"),
                "--warehouse",
                warehouse,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(tmp_path / "work"),
            ]
        )
        == 0
    )
    return warehouse


def rows(frame: pd.DataFrame, columns: list[str]) -> Counter:
    return Counter(map(tuple, frame[columns].astype(str).to_numpy()))


def assert_run_matches_truth(city: Path, warehouse: str, summary: dict) -> None:
    truth = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)
    got = read(warehouse, "SELECT child_id, level, school_code, category FROM eligibility")
    assert len(truth) > 50
    assert rows(got, KEYS) == rows(truth, KEYS)
    truth_inel = pd.read_csv(city / "truth" / "ineligible.csv", dtype=str)
    got_inel = read(warehouse, "SELECT child_id, level FROM ineligibility")
    assert rows(got_inel, ["child_id", "level"]) == rows(truth_inel, ["child_id", "level"])

    snapshots = read(warehouse, "SELECT * FROM source_snapshot")
    assert set(snapshots.source) == SOURCES
    assert (snapshots.rows_in == snapshots.rows_accepted + snapshots.rows_quarantined + snapshots.rows_duplicate).all()
    assert (snapshots.rows_duplicate > 0).any(), "exact duplicate rows in the exchange count as duplicates"
    # the run used the newest complete extract, not the older hukou one nor the unfinished rental one
    as_of = "2027-08-15"  # the next day's extracts lie after it
    delivered = {s: max(d for d in t["rows"] if d <= as_of) for s, t in summary["tables"].items()}
    assert dict(zip(snapshots.source, snapshots.delivery.astype(str))) == delivered

    quarantine = read(warehouse, "SELECT source, record_ref, reason_code FROM quarantine")
    assert quarantine.reason_code.notna().all() and (quarantine.reason_code != "").all()
    assert (quarantine.record_ref.str.split(":").str[0] == quarantine.source).all()
    truth_q = pd.read_csv(city / "truth" / "quarantine.csv", dtype=str)
    malformed = truth_q.reason_code == MALFORMED_RECORD
    # a duplicated malformed line is skipped twice but quarantined once from the file
    for source, truth_malformed in truth_q[malformed].source.value_counts().items():
        newest = max(d for d in summary["tables"][source]["malformed_skipped"] if d <= as_of)
        assert 0 < truth_malformed <= summary["tables"][source]["malformed_skipped"][newest], source
    assert rows(quarantine, ["source", "reason_code"]) == rows(truth_q[~malformed], ["source", "reason_code"])


def test_load_exchange_keeps_raw_text_and_skips_malformed(city, tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    first = load_exchange(city, url)
    again = load_exchange(city, url)
    assert first["tables"] == again["tables"], "loading twice gives the same tables"
    hukou = read(url, "SELECT * FROM hukou")
    assert sorted(hukou.extract_date.unique()) == ["2027-06-30", "2027-08-14", "2027-08-16"]
    assert len(hukou) == sum(first["tables"]["hukou"]["rows"].values())
    lines = (city / "landing" / "hukou" / "2027-08-14" / "hukou.csv").read_bytes().decode("gb18030").splitlines()
    header = lines[0].split(",")
    assert header == [c for c in hukou.columns if c != "extract_date"]
    # dirt survives: an ID with spaces or a lower-case x in the file is the same text in the table
    delivered_ids = {line.split(",")[0] for line in lines[1:]}
    dirty = {i for i in delivered_ids if i != i.strip() or i.endswith("x")}
    assert dirty and dirty <= set(hukou["公民身份号码"])
    contracts = read(url, "SELECT buyers FROM housing_contract")
    assert contracts.buyers.str.startswith("[").mean() > 0.99
    assert not (city / "landing" / "rental" / "2027-08-15").joinpath("_SUCCESS").exists()
    assert list(first["tables"]["rental"]["rows"]) == ["2027-08-14", "2027-08-16"]  # not the unfinished 08-15


def test_run_from_sqlite_exchange_matches_truth(city, tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    summary = load_exchange(city, url)
    assert_run_matches_truth(city, run_from_exchange(city, url, tmp_path), summary)


@pytest.mark.postgres
def test_run_from_postgresql_exchange_matches_truth(city, tmp_path, pg_database):
    url = pg_database()
    summary = load_exchange(city, url)
    assert read(url, "SELECT COUNT(*) AS n FROM enterprise").n[0] == sum(
        summary["tables"]["enterprise"]["rows"].values()
    )
    assert_run_matches_truth(city, run_from_exchange(city, url, tmp_path), summary)


def test_synth_command_loads_the_exchange(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    assert main(["synth", "--out", str(tmp_path / "city"), "--people", "200", "--exchange", url]) == 0
    printed = capsys.readouterr().out
    tables = read(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert set(tables.name) == SOURCES
    assert '"exchange"' in printed and read(url, "SELECT COUNT(*) AS n FROM hukou").n[0] > 0
