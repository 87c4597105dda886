"""Whole runs on a small synthetic city, checked against the city's ground truth.

The `zerocert run` command publishes to SQLite and to a real PostgreSQL database; the Airflow
DAGs run with `airflow dags test` on SQLite metadata, as `make demo` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.cli import main

PEOPLE = 3000
KEYS = ["child_id", "level", "school_code", "category"]


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("city")
    synthesize(out, PEOPLE, seed=7)
    return out


def run_cli(city: Path, warehouse: str, work: Path, *extra: str) -> int:
    return main(["run", "--landing", str(city / "landing"), "--reference", str(city / "reference"),
                 "--warehouse", warehouse, "--as-of", "2027-08-15", "--work-dir", str(work), *extra])


def read(url: str, sql: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return pd.read_sql(sql, db)
    finally:
        engine.dispose()


def assert_matches_truth(url: str, city: Path) -> None:
    got = read(url, "SELECT child_id, level, school_code, category FROM eligibility")
    truth = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)
    got_rows = set(map(tuple, got[KEYS].astype(str).to_numpy()))
    truth_rows = set(map(tuple, truth[KEYS].to_numpy()))
    assert len(truth_rows) > 50
    assert got_rows - truth_rows == set(), "rows the truth does not hold"
    assert truth_rows - got_rows == set(), "rows the truth holds that are missing"
    ineligible = read(url, "SELECT child_id, level FROM ineligibility")
    truth_inel = pd.read_csv(city / "truth" / "ineligible.csv", dtype=str)
    assert set(map(tuple, ineligible[["child_id", "level"]].to_numpy())) == set(
        map(tuple, truth_inel[["child_id", "level"]].to_numpy()))


def assert_counts_reconcile(url: str) -> None:
    snapshots = read(url, "SELECT * FROM source_snapshot")
    assert len(snapshots) == 7
    total = snapshots.rows_accepted + snapshots.rows_quarantined + snapshots.rows_duplicate
    assert (snapshots.rows_in == total).all()
    quarantine = read(url, "SELECT source, COUNT(*) AS n FROM quarantine GROUP BY source")
    by_source = dict(zip(quarantine.source, quarantine.n))
    for row in snapshots.itertuples():
        assert by_source.get(row.source, 0) == row.rows_quarantined, row.source


@pytest.mark.e2e
def test_run_into_sqlite_matches_ground_truth(city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(city, url, tmp_path / "work") == 0
    assert_matches_truth(url, city)
    assert_counts_reconcile(url)
    truth_q = pd.read_csv(city / "truth" / "quarantine.csv", dtype=str)
    got_q = read(url, "SELECT source, record_ref, reason_code FROM quarantine")
    assert set(map(tuple, got_q.to_numpy())) == set(map(tuple, truth_q[["source", "record_ref", "reason_code"]].to_numpy()))
    out = capsys.readouterr()
    for child in pd.read_csv(city / "truth" / "eligibility.csv", dtype=str).child_id.head(50):
        assert child not in out.out and child not in out.err


@pytest.mark.e2e
def test_rerun_for_the_same_as_of_gives_identical_tables(city, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(city, url, tmp_path / "work") == 0
    first = read(url, "SELECT * FROM eligibility ORDER BY child_id, level, school_code")
    assert run_cli(city, url, tmp_path / "work") == 0
    second = read(url, "SELECT * FROM eligibility ORDER BY child_id, level, school_code")
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.e2e
@pytest.mark.postgres
def test_run_into_postgresql_matches_ground_truth(city, tmp_path, pg_database):
    pg_url = pg_database()
    assert run_cli(city, pg_url, tmp_path / "work") == 0
    assert_matches_truth(pg_url, city)
    assert_counts_reconcile(pg_url)


@pytest.mark.e2e
def test_bad_delivery_fails_with_status_3_and_keeps_the_last_good_run(city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(city, url, tmp_path / "work") == 0
    before = read(url, "SELECT run_id, COUNT(*) AS n FROM eligibility GROUP BY run_id")
    broken = tmp_path / "landing"
    shutil.copytree(city / "landing", broken)
    newest = sorted(p for p in (broken / "rental").iterdir() if (p / "_SUCCESS").exists())[-1]
    (newest / "rental.jsonl").write_bytes(b"")
    code = main(["run", "--landing", str(broken), "--reference", str(city / "reference"), "--warehouse", url,
                 "--as-of", "2027-08-15", "--work-dir", str(tmp_path / "work2")])
    err = capsys.readouterr().err
    assert code == 3
    assert "rental" in err and "Traceback" not in err
    after = read(url, "SELECT run_id, COUNT(*) AS n FROM eligibility GROUP BY run_id")
    pd.testing.assert_frame_equal(before, after)


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["run", "--landing", str(tmp_path / "missing"), "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerocert:") and "\n" not in err and "landing" in err
    assert main(["run", "--as-of", "yesterday", "--landing", str(tmp_path), "--reference", str(tmp_path)]) == 2
    assert main(["no-such-command"]) == 2


@pytest.mark.e2e
def test_airflow_dags_run_the_city_like_the_demo(tmp_path, capsys):
    from pipelines.demo import run_demo

    assert run_demo(tmp_path / "demo", people=PEOPLE, seed=3, progress=lambda m: None, source_dags=["rental"]) == 0
    out = capsys.readouterr().out
    assert "0 extra, 0 missing" in out
    url = f"sqlite:///{tmp_path / 'demo' / 'warehouse.sqlite'}"
    assert_matches_truth(url, tmp_path / "demo" / "city")
    assert (tmp_path / "demo" / "work" / "runs" / "2027-08-15" / "staged" / "rental" / "snapshot.json").exists()
    report = tmp_path / "demo" / "work" / "reports" / "2027-08-15" / "report.html"
    assert f"the bureau's report:  {report}" in out and "data:image/png" in report.read_text(encoding="utf-8")
    warehouse_log = (tmp_path / "demo" / "logs" / "zerocert_warehouse.log").read_text(encoding="utf-8")
    assert "rental: delivery 2027-08-14 already staged for 2027-08-15, reused" in warehouse_log
    assert "hukou: delivery 2027-08-14 already staged" not in warehouse_log
    for log in (tmp_path / "demo" / "logs").glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text, log.name


@pytest.mark.e2e
def test_airflow_task_logs_hold_no_full_resident_id(tmp_path, capsys):
    """The DAG runs' own logs never show a whole ID; the warehouse comes from an Airflow connection."""
    from test_privacy_logs import decoded, delivered_ids, windows

    from pipelines.demo import run_demo

    demo = tmp_path / "demo"
    assert run_demo(demo, people=400, seed=11, progress=lambda m: None, source_dags=["hukou"],
                    warehouse_as_connection=True) == 0
    assert (demo / "warehouse.sqlite").exists()  # reached through the Airflow connection zerocert_warehouse
    capsys.readouterr()
    ids = delivered_ids(demo / "city" / "landing")
    assert len(ids) > 400
    logs = [*(demo / "logs").glob("*.log"), *(demo / "airflow").rglob("*.log")]
    assert len(logs) > 2
    leaked = {log.name for log in logs if ids & windows(decoded(log))}
    assert not leaked, f"whole IDs in {sorted(leaked)}"


def _newest_delivery(landing: Path, source: str) -> Path:
    return sorted(p for p in (landing / source).iterdir() if (p / "_SUCCESS").exists())[-1]


def _png_named_csv(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)


def _drop_a_column(path: Path) -> None:
    text = path.read_bytes().decode("utf-8-sig")
    lines = [",".join(line.split(",")[:-1]) for line in text.splitlines()]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))


def _truncate_gb18030(path: Path) -> None:
    """Cut the file inside a two-byte character, as an interrupted transfer would."""
    text = path.read_bytes().decode("gb18030")
    middle = next(k for k in range(len(text) // 2, len(text)) if ord(text[k]) > 0x7F)
    offset = len(text[:middle].encode("gb18030"))
    path.write_bytes(text.encode("gb18030")[: offset + 1])


HOSTILE_DELIVERIES = {
    "png_renamed_csv": ("enterprise", "enterprise.csv", _png_named_csv),
    "empty_file": ("individual_business", "individual_business.csv", lambda p: p.write_bytes(b"")),
    "missing_column": ("property_title", "property_title.csv", _drop_a_column),
    "truncated_gb18030": ("hukou", "hukou.csv", _truncate_gb18030),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(HOSTILE_DELIVERIES))
def test_hostile_delivery_is_one_clear_line_exit_3_and_nothing_published(city, tmp_path, capsys, case):
    source, name, damage = HOSTILE_DELIVERIES[case]
    landing = tmp_path / "landing"
    shutil.copytree(city / "landing", landing)
    damage(_newest_delivery(landing, source) / name)
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    code = main(
        ["run", "--landing", str(landing), "--reference", str(city / "reference"), "--warehouse", url,
         "--as-of", "2027-08-15", "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 3
    final = err.strip().splitlines()[-1]
    assert final.startswith("zerocert: ") and source in final and "Traceback" not in err
    published = read(url, "SELECT COUNT(*) AS n FROM run_audit WHERE status = 'published'")
    assert int(published.n[0]) == 0


@pytest.mark.e2e
def test_broken_json_line_and_huge_line_are_quarantined_and_the_rest_published(city, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(city / "landing", landing)
    rental = _newest_delivery(landing, "rental") / "rental.jsonl"
    lines = rental.read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"record_no": "R-broken", "tenant_id": \n')
    lines.insert(4, b'{"record_no": "' + b"9" * (50 * 2**20) + b'"}\n')
    rental.write_bytes(b"".join(lines))
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert main(["run", "--landing", str(landing), "--reference", str(city / "reference"), "--warehouse", url,
                 "--as-of", "2027-08-15", "--work-dir", str(tmp_path / "work")]) == 0
    quarantined = read(url, "SELECT record_ref, reason_code FROM quarantine WHERE source = 'rental'")
    refs = dict(zip(quarantined.record_ref, quarantined.reason_code))
    assert refs["rental.jsonl:3"] == "MALFORMED_RECORD"
    assert refs["rental.jsonl:5"] == "MALFORMED_RECORD"
    assert_counts_reconcile(url)
