"""A whole ``zerocert run`` over a dirty synthetic city leaves no full resident ID or name in its
logs: stderr (logging and progress), stdout and any log file under the work folder."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from id_leaks import decoded, delivered_ids, windows

from pipelines.synth import synthesize

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DIGIT_RUN = re.compile(r"[0-9]{15,}[0-9Xx]?|[0-9]{14}[0-9][0-9]{2}[Xx]")


@pytest.fixture(scope="module")
def city_run(pg_database, tmp_path_factory):
    """One whole CLI run over a dirty 3 000-person city (children in every district at realistic
    cohorts), published to PostgreSQL, logs in files."""
    pg_url = pg_database()
    root = tmp_path_factory.mktemp("privacy")
    city, work = root / "city", root / "work"
    synthesize(city, people=3000, seed=11)
    log_file, out_file = root / "run.log", root / "run.out"
    with log_file.open("wb") as stderr, out_file.open("wb") as stdout:
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "-v",
                "run",
                "--landing",
                str(city / "landing"),
                "--reference",
                str(city / "reference"),
                "--warehouse",
                pg_url,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(work),
            ],
            stdout=stdout,
            stderr=stderr,
            timeout=240,
        ).returncode
    text = "\n".join(decoded(p) for p in [log_file, out_file, *work.rglob("*.log")])
    assert status == 0, text[-2000:]
    return city, work, text, pg_url


def test_a_dirty_run_logs_no_full_id_or_name(city_run):
    city, work, text, _ = city_run
    assert "quarantine" in text.lower() or "INVALID" in text  # the dirt was seen and logged about

    ids = delivered_ids(city / "landing")
    citizens = pd.read_parquet(next(work.rglob("citizen.parquet")), columns=["citizen_id", "name"])
    ids |= set(citizens["citizen_id"])
    assert len(ids) > 400
    hukou = next((city / "landing" / "hukou").rglob("hukou.csv"))
    assert len(ids & windows(decoded(hukou))) > 300  # the search does find IDs where they are
    leaked = ids & windows(text)
    assert not leaked, f"{len(leaked)} full IDs in the run's logs"

    names = {n for n in citizens["name"].dropna() if len(n) >= 2}
    named = [n for n in names if n in text]
    assert not named, f"{len(named)} full names in the run's logs"


def test_district_logins_of_a_real_run_see_their_district_only(city_run):
    """The engine's real outputs plus the access tables, published and looked up per district."""
    import datetime as dt
    import secrets

    import psycopg

    from pipelines.access import build_access_tables, create_roles
    from pipelines.warehouse import publish_run, read_current_run

    city, work, _, pg_url = city_run
    tables_dir = next(work.rglob("eligibility.parquet")).parent
    tables = {p.stem: p for p in tables_dir.glob("*.parquet") if not p.stem.endswith(".pre")}
    schools_csv = city / "reference" / "schools.csv"
    key = b"privacy-test-key-0123456789"
    tables.update(build_access_tables(tables, schools_csv, key, work / "access"))
    current = read_current_run(pg_url)
    publish_run(pg_url, {**current, "started_at": dt.datetime.now(dt.UTC)}, tables)
    schools = pd.read_csv(schools_csv, dtype=str)
    password = secrets.token_urlsafe(12)
    create_roles(pg_url, hmac_key=key, district_passwords={d: password for d in schools["district_code"].unique()})

    truth = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str).merge(schools, on=["school_code", "level"])
    ineligible = pd.read_csv(city / "truth" / "ineligible.csv", dtype=str)
    citizen = pd.read_parquet(tables["citizen"], columns=["citizen_id", "hukou_region_code"])
    home = dict(zip(citizen["citizen_id"], citizen["hukou_region_code"]))
    guardianship = pd.read_parquet(tables["guardianship"], columns=["child_id", "guardian_id"])
    database = pg_url.rsplit("/", 1)[1]
    every_id = set(citizen["citizen_id"])
    children = set(truth["child_id"]) | set(ineligible["child_id"])
    for district, own in schools.groupby("district_code"):
        eligible = set(truth.loc[truth["district_code"] == district, "child_id"])
        unplaced = {c for c in ineligible["child_id"] if home.get(c) == district}
        guardians = set(guardianship.loc[guardianship["child_id"].isin(eligible | unplaced), "guardian_id"])
        with psycopg.connect(
            host="127.0.0.1", user=f"enrollment_{district}", password=password, dbname=database, autocommit=True
        ) as conn:
            seen = {}
            for child in children:
                document = conn.execute("SELECT zerocert.eligibility_of(%s)", (child,)).fetchone()[0]
                if document and document["eligibility"]:
                    seen[child] = {row["school_code"] for row in document["eligibility"]}
            prefill = {
                g
                for g in set(guardianship["guardian_id"])
                if conn.execute("SELECT zerocert.prefill_of(%s)", (g,)).fetchone()[0] is not None
            }
        assert set().union(*seen.values()) <= set(own["school_code"]), district
        differ = len(set(seen) ^ eligible)  # counts only: no ID in test output
        assert differ == 0, district
        strangers = len(prefill - guardians)
        assert strangers == 0 and prefill, district
    with psycopg.connect(host="127.0.0.1", user="analyst", dbname=database) as conn:
        for table in ("analyst_citizen", "analyst_eligibility", "demand_by_school"):
            text = " ".join(str(v) for row in conn.execute(f"SELECT * FROM {table}") for v in row)
            leaked = len(ids_in(text, every_id))
            assert leaked == 0, table
        assert conn.execute("SELECT count(*) FROM analyst_citizen").fetchone()[0] == len(every_id)
        total = conn.execute("SELECT coalesce(sum(children), 0) FROM demand_by_school").fetchone()[0]
    demand = (
        truth.drop_duplicates(["child_id", "level", "school_code"])
        .groupby(["school_code", "level", "category"])["child_id"]
        .nunique()
    )
    assert int(total) == demand[demand >= 5].sum()  # groups under five children are suppressed


def ids_in(text: str, ids: set[str]) -> set[str]:
    return ids & windows(text)
