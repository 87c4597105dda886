"""Whole runs on small synthetic cities, checked against each city's ground truth.

The truth tests run on every shipped synth profile and more than one seed: a rule that holds
only for one generator's shape must fail here. The `zerocert run` command publishes to SQLite
and to a real PostgreSQL database; the Airflow DAGs run with `airflow dags test` on SQLite
metadata, as `make demo` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from id_leaks import decoded, delivered_ids, windows
from warehouse_reader import read

from pipelines.cli import main

PEOPLE = 3000
KEYS = ["child_id", "level", "school_code", "category", "priority_date"]
# (profile, seed): both shipped profiles, and a second seed of the default
CITIES = [("default", 7), ("weifang", 11), ("default", 23)]


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("city")
    synthesize(out, PEOPLE, seed=7)
    return out


@pytest.fixture(scope="module", params=CITIES, ids=[f"{p}-seed{s}" for p, s in CITIES])
def truth_city(request, tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    profile, seed = request.param
    out = tmp_path_factory.mktemp(f"city_{profile}_{seed}")
    synthesize(out, PEOPLE, seed=seed, profile=profile)
    return out


def run_cli(city: Path, warehouse: str, work: Path, *extra: str, as_of: str = "2027-08-15") -> int:
    return main(
        [
            "run",
            "--landing",
            str(city / "landing"),
            "--reference",
            str(city / "reference"),
            "--warehouse",
            warehouse,
            "--as-of",
            as_of,
            "--work-dir",
            str(work),
            *extra,
        ]
    )


def assert_matches_truth(url: str, city: Path, truth_dir: str = "truth") -> None:
    """eligibility row for row (with its priority date) and ineligibility, as the truth has them;
    differences are reported as counts, never as IDs."""
    got = read(url, "SELECT child_id, level, school_code, category, priority_date FROM eligibility")
    got["priority_date"] = pd.to_datetime(got["priority_date"]).dt.strftime("%Y-%m-%d")
    truth = pd.read_csv(city / truth_dir / "eligibility.csv", dtype=str)
    got_rows = set(map(tuple, got[KEYS].astype(str).to_numpy()))
    truth_rows = set(map(tuple, truth[KEYS].to_numpy()))
    assert len(truth_rows) > 50
    assert len(got_rows - truth_rows) == 0, "rows the truth does not hold"
    assert len(truth_rows - got_rows) == 0, "rows the truth holds that are missing"
    ineligible = read(url, "SELECT child_id, level FROM ineligibility")
    truth_inel = pd.read_csv(city / truth_dir / "ineligible.csv", dtype=str)
    got_inel = set(map(tuple, ineligible[["child_id", "level"]].to_numpy()))
    truth_inel = set(map(tuple, truth_inel[["child_id", "level"]].to_numpy()))
    assert (len(got_inel - truth_inel), len(truth_inel - got_inel)) == (0, 0)


def assert_quarantine_matches_truth(url: str, city: Path, truth_dir: str = "truth") -> None:
    truth_q = pd.read_csv(city / truth_dir / "quarantine.csv", dtype=str)
    got_q = read(url, "SELECT source, record_ref, reason_code FROM quarantine")
    got = set(map(tuple, got_q.to_numpy()))
    expected = set(map(tuple, truth_q[["source", "record_ref", "reason_code"]].to_numpy()))
    assert sorted(got - expected) == [] and sorted(expected - got) == []


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
def test_run_into_sqlite_matches_ground_truth(truth_city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(truth_city, url, tmp_path / "work") == 0
    assert_matches_truth(url, truth_city)
    assert_counts_reconcile(url)
    assert_quarantine_matches_truth(url, truth_city)
    out = capsys.readouterr()
    for child in pd.read_csv(truth_city / "truth" / "eligibility.csv", dtype=str).child_id.head(50):
        assert child not in out.out and child not in out.err


def test_every_truth_address_resolves_as_the_truth_says(truth_city):
    """Recall ≥ 99.5 %, wrong codes < 0.05 %, every deliberately unresolvable text unresolved, and
    an ambiguous text always names at least two candidates."""
    import json

    from pipelines.addresses import AddressRegistry, resolve_texts
    from pipelines.addresses.evaluate import evaluate_against_truth

    report = evaluate_against_truth(truth_city)
    assert report["texts_with_truth"] > 1000
    assert report["right_share"] >= 0.995, report["by_kind"]
    assert report["wrong_share"] < 0.0005, report["by_kind"]
    assert report["blank_truth_unresolved"]
    texts = pd.read_csv(truth_city / "truth" / "addresses.csv", dtype=str, keep_default_na=False)["address"]
    resolved = resolve_texts(texts, AddressRegistry.load(truth_city / "reference" / "addresses.csv"))
    sizes = resolved["candidates"].map(lambda c: len(json.loads(c)))
    assert (sizes[resolved["status"] == "ambiguous"] >= 2).all()
    assert (sizes[resolved["status"] == "unmatched"] == 0).all()


TABLES_COMPARED = {
    "eligibility": "child_id, level, school_code",
    "ineligibility": "child_id, level",
    "citizen": "citizen_id",
    "guardian_eligibility": "guardian_id, level, school_code, basis",
    "source_snapshot": "source",
    "property_holding": "citizen_id, kind, record_key",
}


@pytest.mark.e2e
def test_rerun_for_the_same_as_of_gives_identical_tables(truth_city, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(truth_city, url, tmp_path / "work") == 0
    first = {t: read(url, f"SELECT * FROM {t} ORDER BY {k}") for t, k in TABLES_COMPARED.items()}
    assert run_cli(truth_city, url, tmp_path / "work") == 0
    for table, key in TABLES_COMPARED.items():
        pd.testing.assert_frame_equal(first[table], read(url, f"SELECT * FROM {table} ORDER BY {key}"))


@pytest.mark.e2e
def test_the_next_days_deliveries_publish_and_match_that_days_truth(truth_city, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(truth_city, url, tmp_path / "work") == 0
    today = read(url, "SELECT source, delivery, rows_in FROM source_snapshot ORDER BY source")
    assert run_cli(truth_city, url, tmp_path / "work", as_of="2027-08-16") == 0
    next_day = read(url, "SELECT source, delivery, rows_in FROM source_snapshot ORDER BY source")
    assert set(next_day.delivery) == {"2027-08-16"}
    assert (today.rows_in != next_day.rows_in).any(), "the next day's deliveries differ by a few rows"
    assert_matches_truth(url, truth_city, "truth/next_day")
    assert_quarantine_matches_truth(url, truth_city, "truth/next_day")
    assert_counts_reconcile(url)


@pytest.mark.e2e
@pytest.mark.postgres
def test_run_into_postgresql_matches_ground_truth(truth_city, tmp_path, pg_database):
    pg_url = pg_database()
    assert run_cli(truth_city, pg_url, tmp_path / "work") == 0
    assert_matches_truth(pg_url, truth_city)
    assert_counts_reconcile(pg_url)


@pytest.mark.e2e
def test_bad_delivery_fails_with_status_3_and_keeps_the_last_good_run(city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(city, url, tmp_path / "work") == 0
    before = read(url, "SELECT run_id, COUNT(*) AS n FROM eligibility GROUP BY run_id")
    broken = tmp_path / "landing"
    shutil.copytree(city / "landing", broken)
    newest = _newest_delivery(broken, "rental")
    (newest / "rental.jsonl").write_bytes(b"")
    code = main(
        [
            "run",
            "--landing",
            str(broken),
            "--reference",
            str(city / "reference"),
            "--warehouse",
            url,
            "--as-of",
            "2027-08-15",
            "--work-dir",
            str(tmp_path / "work2"),
        ]
    )
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


@pytest.fixture(scope="module")
def airflow_demo(tmp_path_factory) -> tuple[Path, str]:
    """One demo run through Airflow for the tests below: (its folder, what it printed).

    The rental DAG stages on its own (the warehouse DAG reuses it); the warehouse reaches Airflow
    as the connection ``zerocert_warehouse``, as a deployment would give it.
    """
    import contextlib
    import io

    from pipelines.demo import run_demo

    demo = tmp_path_factory.mktemp("airflow") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = run_demo(
            demo, people=PEOPLE, seed=3, progress=lambda m: None, source_dags=["rental"], warehouse_as_connection=True
        )
    assert status == 0
    return demo, printed.getvalue()


@pytest.mark.e2e
def test_airflow_dags_run_the_city_like_the_demo(airflow_demo):
    demo, out = airflow_demo
    assert "0 extra, 0 missing" in out
    url = f"sqlite:///{demo / 'warehouse.sqlite'}"
    assert_matches_truth(url, demo / "city")
    assert (demo / "work" / "staged" / "2027-08-15" / "rental" / "snapshot.json").exists()
    report = demo / "work" / "reports" / "2027-08-15" / "report.html"
    assert f"the bureau's report:  {report}" in out and "data:image/png" in report.read_text(encoding="utf-8")
    warehouse_log = (demo / "logs" / "zerocert_warehouse.log").read_text(encoding="utf-8")
    assert "rental: delivery 2027-08-14 already staged for 2027-08-15, reused" in warehouse_log
    assert "hukou: delivery 2027-08-14 already staged" not in warehouse_log
    for log in (demo / "logs").glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text, log.name


@pytest.mark.e2e
def test_airflow_task_logs_hold_no_full_resident_id(airflow_demo):
    """The DAG runs' own logs never show a whole ID; the warehouse comes from an Airflow connection."""
    demo, _ = airflow_demo
    assert (demo / "warehouse.sqlite").exists()  # reached through the Airflow connection zerocert_warehouse
    ids = delivered_ids(demo / "city" / "landing")
    assert len(ids) > 400
    logs = [*(demo / "logs").glob("*.log"), *(demo / "airflow").rglob("*.log")]
    assert len(logs) > 2
    leaked = {str(log.relative_to(demo)) for log in logs if ids & windows(decoded(log))}
    assert not leaked, f"whole IDs in {sorted(leaked)}"


def _newest_delivery(landing: Path, source: str, as_of: str = "2027-08-15") -> Path:
    """The folder a run for ``as_of`` uses: the newest complete one dated on or before it (the
    next day's deliveries lie after it)."""
    return sorted(p for p in (landing / source).iterdir() if (p / "_SUCCESS").exists() and p.name <= as_of)[-1]


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
        [
            "run",
            "--landing",
            str(landing),
            "--reference",
            str(city / "reference"),
            "--warehouse",
            url,
            "--as-of",
            "2027-08-15",
            "--work-dir",
            str(tmp_path / "work"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
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
    assert (
        main(
            [
                "run",
                "--landing",
                str(landing),
                "--reference",
                str(city / "reference"),
                "--warehouse",
                url,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(tmp_path / "work"),
            ]
        )
        == 0
    )
    quarantined = read(url, "SELECT record_ref, reason_code FROM quarantine WHERE source = 'rental'")
    refs = dict(zip(quarantined.record_ref, quarantined.reason_code))
    assert refs["rental.jsonl:3"] == "MALFORMED_RECORD"
    assert refs["rental.jsonl:5"] == "MALFORMED_RECORD"
    assert_counts_reconcile(url)


def _deliver_again(landing: Path, source: str, day: str, keep) -> Path:
    """A new complete delivery folder of ``source`` dated ``day``: the newest one's header and
    the lines ``keep(lines)`` returns."""
    newest = _newest_delivery(landing, source)
    folder = landing / source / day
    folder.mkdir()
    for path in newest.iterdir():
        if path.name == "_SUCCESS":
            continue
        header, *lines = path.read_bytes().splitlines(keepends=True)
        has_header = path.suffix == ".csv"
        kept = keep(lines if has_header else [header, *lines])
        (folder / path.name).write_bytes(b"".join(([header] if has_header else []) + kept))
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


@pytest.mark.e2e
def test_a_hukou_with_half_its_rows_is_refused_unless_a_person_accepts_it(city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    assert run_cli(city, url, tmp_path / "work") == 0
    published = read(url, "SELECT run_id FROM eligibility LIMIT 1").run_id[0]
    landing = tmp_path / "landing"
    shutil.copytree(city / "landing", landing)
    _deliver_again(landing, "hukou", "2027-08-15", lambda lines: lines[: len(lines) // 2])
    capsys.readouterr()

    def run(*extra):
        return main(
            [
                "run",
                "--landing",
                str(landing),
                "--reference",
                str(city / "reference"),
                "--warehouse",
                url,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(tmp_path / "work"),
                *extra,
            ]
        )

    assert run() == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("zerocert: hukou: table check row_count_change failed")
    assert "--accept-change hukou --reason" in err
    assert read(url, "SELECT run_id FROM eligibility LIMIT 1").run_id[0] == published

    assert run("--accept-change", "hukou") == 2
    assert "needs --reason" in capsys.readouterr().err
    assert run("--accept-change", "hukuo", "--reason", "typo") == 2
    assert "unknown source(s) hukuo" in capsys.readouterr().err

    reason = "half the city moved to a new registry, confirmed with the PSB"
    assert run("--accept-change", "hukou", "--reason", reason) == 0
    audit = read(
        url,
        "SELECT run_id, accepted_changes FROM run_audit WHERE status = 'published' ORDER BY finished_at DESC LIMIT 1",
    )
    assert audit.run_id[0] != published
    import json

    (change,) = json.loads(audit.accepted_changes[0])
    previous = read(url, "SELECT rows_accepted FROM source_snapshot WHERE source = 'hukou'").rows_accepted[0]
    assert change["source"] == "hukou" and change["reason"] == reason
    assert change["rows"] == previous and change["previous_rows"] > 1.9 * previous
    assert change["allowed"][0] > change["rows"]
