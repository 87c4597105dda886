"""Publishing a run to the warehouse: atomic switch, failure leaves the old run, reruns repeat.

Every behaviour is checked on SQLite (a file in tmp_path) and on the real PostgreSQL server.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from resident_ids import resident_id

from pipelines.errors import ZerocertError
from pipelines.resident_id import mask_id
from pipelines.warehouse import (
    ensure_warehouse,
    publish_run,
    read_current_run,
    read_table,
    record_failed_run,
    record_started_run,
)
from pipelines.warehouse_schema import OPTIONAL_TABLES, PUBLISHED_TABLES, TABLES


def child_id(i: int) -> str:
    return resident_id(f"37110220200101{i:03d}")


CHILD = child_id(1)
GUARDIAN = resident_id("37110219850101001")


def frames(run_id: str | None, children: int = 3, *, shift: int = 0) -> dict[str, pd.DataFrame]:
    """A tiny but complete run; ``shift`` changes values so two runs are told apart."""
    kids = [child_id(i) for i in range(children)]
    day = pd.Timestamp("2027-07-01") + pd.Timedelta(days=shift)
    evidence = json.dumps(
        [{"date": "2020-05-01", "record_key": "鲁(2020)第1号", "source": "property_title"}],
        ensure_ascii=False,
        sort_keys=True,
    )
    out = {
        "citizen": pd.DataFrame(
            {
                "citizen_id": kids + [GUARDIAN],
                "name": [["张三", "", None][i] if i < 3 else f"n{i}" for i in range(children)] + ["王五"],
                "sex": "男",
                "birth_date": pd.Timestamp("2020-01-01"),
                "household_no": "000000123",
                "hukou_status": "正常",
                "hukou_region_code": "371102",
                "hukou_address": 'a "quoted", \\. addr\nline',
                "hukou_address_code": None,
                "hukou_address_status": "unmatched",
                "settled_date": day,
                "urban_hukou": True,
                "sources": json.dumps(["hukou"]),
                "name_conflict": False,
            }
        ),
        "guardianship": pd.DataFrame(
            {"child_id": kids, "guardian_id": GUARDIAN, "relation": "父亲", "basis": "guardian_field"}
        ),
        "property_holding": pd.DataFrame(
            {
                "citizen_id": [GUARDIAN],
                "kind": ["title"],
                "record_key": ["鲁(2020)第1号"],
                "use": ["住宅"],
                "status": ["现势"],
                "record_date": [pd.Timestamp("2020-05-01")],
                "share": [0.5 + shift],
                "address": ["x"],
                "address_code": ["A1"],
                "address_status": ["exact"],
                "qualifying": [True],
                "record_ref": ["property_title.csv:2"],
            }
        ),
        "rental_holding": pd.DataFrame(
            {
                "citizen_id": [GUARDIAN],
                "record_no": ["R1"],
                "address": ["y"],
                "address_code": [None],
                "address_status": ["unmatched"],
                "start_date": [pd.Timestamp("2026-01-01")],
                "end_date": [pd.NaT],
                "registered_date": [pd.Timestamp("2026-01-02")],
                "status": ["有效"],
                "qualifying": [False],
                "record_ref": ["rental.jsonl:1"],
            }
        ),
        "employment": pd.DataFrame(
            {
                "citizen_id": [GUARDIAN],
                "kind": ["social_insurance"],
                "record_key": ["企业职工基本养老保险"],
                "org_code": ["91370000MA3C00000X"],
                "since": [pd.Timestamp("2015-01-01")],
                "local_months": pd.array([24 + shift], dtype="Int64"),
                "status": ["参保缴费"],
                "scheme": ["企业职工基本养老保险"],
                "qualifying": [True],
                "record_ref": ["social_insurance.csv:2"],
            }
        ),
        "eligibility": pd.DataFrame(
            {
                "child_id": kids,
                "level": "primary",
                "school_code": "S01",
                "category": "A1",
                "priority_date": pd.Timestamp("2020-05-01") + pd.Timedelta(days=shift),
                "basis_guardian_id": GUARDIAN,
                "evidence": evidence,
                "policy_id": "demo-2027",
            }
        ),
        "ineligibility": pd.DataFrame(
            {
                "child_id": [kids[0]],
                "level": ["junior"],
                "reasons": [json.dumps(["NO_QUALIFYING_PROPERTY"])],
                "policy_id": ["demo-2027"],
            }
        ),
        "guardian_eligibility": pd.DataFrame(
            {
                "guardian_id": [GUARDIAN],
                "level": ["primary"],
                "school_code": ["S01"],
                "basis": ["property"],
                "priority_date": [pd.Timestamp("2020-05-01")],
                "evidence": [evidence],
                "policy_id": "demo-2027",
            }
        ),
        "prefill": pd.DataFrame(
            {
                "guardian_id": [GUARDIAN],
                "document": [json.dumps({"children": kids, "shift": shift})],
                "policy_id": ["demo-2027"],
            }
        ),
        "source_snapshot": pd.DataFrame(
            {
                "source": ["hukou", "rental"],
                "delivery": [pd.Timestamp("2027-07-01")] * 2,
                "checksum": ["ab", "cd"],
                "rows_in": [10, 4],
                "rows_accepted": [8, 4],
                "rows_quarantined": [1, 0],
                "rows_duplicate": [1, 0],
            }
        ),
        "quarantine": pd.DataFrame(
            {
                "source": ["hukou"],
                "record_ref": ["hukou.csv:7"],
                "reason_code": ["INVALID_DATE"],
                "detail": ["birth_date"],
                "raw": ["a,b\x00,c"],
            }
        ),
        "address_match": pd.DataFrame(
            {
                "source": ["rental"],
                "address": ["y"],
                "address_code": [None],
                "status": ["unmatched"],
                "candidates": ["[]"],
                "score": [float("nan")],
            }
        ),
    }
    if run_id is not None:
        for frame in out.values():
            frame["run_id"] = run_id
    return out


def write(frames_: dict[str, pd.DataFrame], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in frames_.items():
        paths[name] = directory / f"{name}.parquet"
        frame.to_parquet(paths[name], index=False)
    return paths


def run_desc(run_id: str, started: str = "2026-11-01T08:00:00+00:00") -> dict:
    return {
        "run_id": run_id,
        "as_of": dt.date(2027, 8, 15),
        "policy_id": "demo-2027",
        "started_at": started,
        "code_version": "test",
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    return request.getfixturevalue("pg_url")


def run_ids(url: str, table: str) -> set[str]:
    column = TABLES[table].column_names.index("run_id")
    return {row[column] for row in read_table(url, table)}


def audit(url: str) -> dict[str, list[str]]:
    """run_id -> statuses of its attempts, through a plain SQL read as an engineer would."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as db:
        rows = db.execute(sa.text("SELECT run_id, status FROM run_audit ORDER BY started_at")).all()
    engine.dispose()
    out: dict[str, list[str]] = {}
    for run_id, status in rows:
        out.setdefault(run_id, []).append(status)
    return out


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_second_run_replaces_the_first_and_audit_keeps_both(url, tmp_path):
    first, second = unique("r1"), unique("r2")
    publish_run(url, run_desc(first), write(frames(first), tmp_path / "a"))
    assert read_current_run(url)["run_id"] == first
    publish_run(
        url, run_desc(second, "2026-11-02T08:00:00+00:00"), write(frames(second, children=2, shift=1), tmp_path / "b")
    )
    for table in PUBLISHED_TABLES:
        if table in OPTIONAL_TABLES:  # not given by frames(): published empty, never the first run's
            assert run_ids(url, table) == set(), table
        else:
            assert run_ids(url, table) == {second}, table
    assert len(read_table(url, "eligibility")) == 2
    current = read_current_run(url)
    assert current["run_id"] == second and current["status"] == "published"
    assert current["finished_at"] > current["started_at"]
    assert current["row_counts"]["eligibility"] == 2
    history = audit(url)
    assert history[first] == ["published"] and history[second] == ["published"]


def test_published_values_round_trip(url, tmp_path):
    run_id = unique("rt")
    given = frames(run_id)
    publish_run(url, run_desc(run_id), write(given, tmp_path / "a"))
    citizens = {row[0]: row for row in read_table(url, "citizen")}
    names = TABLES["citizen"].column_names
    child = citizens[child_id(1)]
    assert child[names.index("name")] == ""  # an empty string is not NULL
    assert citizens[child_id(2)][names.index("name")] is None
    assert child[names.index("hukou_address")] == 'a "quoted", \\. addr\nline'
    assert str(child[names.index("birth_date")]) == "2020-01-01"
    assert child[names.index("urban_hukou")] in (True, 1)
    assert child[names.index("household_no")] == "000000123"
    [holding] = read_table(url, "property_holding")
    assert holding[TABLES["property_holding"].column_names.index("share")] == 0.5
    [employment] = read_table(url, "employment")
    assert employment[TABLES["employment"].column_names.index("local_months")] == 24
    [rental] = read_table(url, "rental_holding")
    assert rental[TABLES["rental_holding"].column_names.index("end_date")] is None
    [match] = read_table(url, "address_match")
    assert match[TABLES["address_match"].column_names.index("score")] is None  # NaN stored as NULL
    [quarantined] = read_table(url, "quarantine")
    assert quarantined[TABLES["quarantine"].column_names.index("raw")] == "a,b\ufffd,c"
    evidence = read_table(url, "eligibility")[0][TABLES["eligibility"].column_names.index("evidence")]
    assert json.loads(evidence) == json.loads(given["eligibility"].evidence[0])


@pytest.mark.parametrize("damage", ["missing_file", "wrong_type", "duplicate_key", "broken_json"])
def test_failed_publish_leaves_the_previous_run_and_is_audited(url, tmp_path, damage):
    good, bad = unique("good"), unique("bad")
    publish_run(url, run_desc(good), write(frames(good), tmp_path / "good"))
    before = {t: sorted(read_table(url, t), key=repr) for t in PUBLISHED_TABLES}
    broken = frames(bad, shift=2)
    if damage == "wrong_type":
        broken["citizen"]["household_no"] = 123  # a number where a code with leading zeros belongs
    elif damage == "duplicate_key":  # prefill is loaded late: earlier tables are already staged
        broken["prefill"] = pd.concat([broken["prefill"]] * 2, ignore_index=True)
    elif damage == "broken_json":
        broken["address_match"]["candidates"] = "[unterminated"
    paths = write(broken, tmp_path / "bad")
    if damage == "missing_file":
        paths["guardianship"].unlink()
    with pytest.raises(ZerocertError) as failure:
        publish_run(url, run_desc(bad), paths)
    message = str(failure.value)
    assert "\n" not in message and GUARDIAN not in message
    damaged = {
        "missing_file": "guardianship",
        "wrong_type": "citizen",
        "duplicate_key": "prefill",
        "broken_json": "address_match",
    }[damage]
    assert damaged in message, message
    after = {t: sorted(read_table(url, t), key=repr) for t in PUBLISHED_TABLES}
    assert after == before
    assert read_current_run(url)["run_id"] == good
    assert audit(url)[bad] == ["failed"]


def test_wrong_type_names_table_and_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    broken = frames("r")
    broken["employment"]["since"] = "2015/01/01"
    with pytest.raises(ZerocertError, match="employment.*since.*date"):
        publish_run(url, run_desc("r"), write(broken, tmp_path / "in"))


def test_unknown_column_is_refused_by_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    broken = frames("r")
    broken["eligibility"]["score_hint"] = 1
    with pytest.raises(ZerocertError, match="eligibility.*score_hint"):
        publish_run(url, run_desc("r"), write(broken, tmp_path / "in"))


def test_a_table_left_out_of_the_run_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    paths = write(frames("r"), tmp_path / "in")
    del paths["quarantine"]
    with pytest.raises(ZerocertError, match="quarantine"):
        publish_run(url, run_desc("r"), paths)
    assert read_current_run(url) is None


def test_rerun_with_identical_inputs_gives_identical_tables(url, tmp_path):
    run_id = unique("same")
    paths = write(frames(run_id, children=4), tmp_path / "in")
    publish_run(url, run_desc(run_id), paths)
    first = {t: sorted(read_table(url, t), key=repr) for t in PUBLISHED_TABLES}
    publish_run(url, run_desc(run_id, "2026-11-01T09:00:00+00:00"), paths)
    second = {t: sorted(read_table(url, t), key=repr) for t in PUBLISHED_TABLES}
    assert first == second
    assert audit(url)[run_id] == ["published", "published"]


def test_run_id_is_filled_in_and_must_match(url, tmp_path):
    run_id = unique("fill")
    publish_run(url, run_desc(run_id), write(frames(None), tmp_path / "plain"))
    assert run_ids(url, "citizen") == {run_id}
    with pytest.raises(ZerocertError, match="run_id"):
        publish_run(url, run_desc(unique("other")), write(frames("someone-else"), tmp_path / "foreign"))


def test_record_failed_run_keeps_the_published_tables(url, tmp_path):
    good, failed = unique("good"), unique("validation")
    publish_run(url, run_desc(good), write(frames(good), tmp_path / "a"))
    record_started_run(url, run_desc(failed, "2026-11-03T08:00:00+00:00"))
    assert audit(url)[failed] == ["started"]
    record_failed_run(url, run_desc(failed, "2026-11-03T08:00:00+00:00"), f"hukou failed validation near {CHILD}")
    assert read_current_run(url)["run_id"] == good
    assert audit(url)[failed] == ["failed"]


def test_failure_reason_masks_resident_ids(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    record_failed_run(url, run_desc("r"), f"duplicate key ({CHILD}, primary, S01)")
    [reason] = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT reason FROM run_audit").fetchone()
    assert CHILD not in reason and mask_id(CHILD) in reason


def test_ensure_warehouse_is_idempotent_and_versioned(url):
    import sqlalchemy as sa

    ensure_warehouse(url)
    ensure_warehouse(url)
    engine = sa.create_engine(url)
    with engine.connect() as db:
        versions = db.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
    tables = sa.inspect(engine).get_table_names(schema="zerocert" if url.startswith("postgresql") else None)
    engine.dispose()
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert set(PUBLISHED_TABLES) | {"run_audit", "schema_version"} <= set(tables)  # readable before a run


def test_no_current_run_before_the_first_publish(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    assert read_current_run(url) is None
    assert not (tmp_path / "new.sqlite").exists()  # reading creates nothing


@pytest.mark.postgres
def test_lookups_by_child_and_guardian_use_an_index(pg_url, tmp_path):
    run_id = unique("idx")
    publish_run(pg_url, run_desc(run_id), write(frames(run_id), tmp_path / "a"))
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute("SET enable_seqscan = off")
        for sql in [
            "SELECT * FROM eligibility WHERE child_id = 'x'",
            "SELECT * FROM prefill WHERE guardian_id = 'x'",
            "SELECT * FROM guardianship WHERE guardian_id = 'x'",
            "SELECT * FROM guardianship WHERE child_id = 'x'",
            "SELECT count(*) FROM eligibility WHERE school_code = 'S' AND category = 'A1'",
        ]:
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql))
            assert "Index" in plan, (sql, plan)


@pytest.mark.postgres
def test_grants_and_row_level_security_survive_the_swap(pg_url, tmp_path):
    role = f"zc_reader_{uuid.uuid4().hex[:8]}"
    plain = pg_url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        ensure_warehouse(pg_url)
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"GRANT USAGE ON SCHEMA zerocert TO {role}")
            conn.execute(f"GRANT SELECT ON zerocert.eligibility TO {role}")
            conn.execute(f"GRANT SELECT (source, reason_code) ON zerocert.quarantine TO {role}")
            conn.execute("ALTER TABLE zerocert.eligibility ENABLE ROW LEVEL SECURITY")
            conn.execute(
                f"CREATE POLICY own_school ON zerocert.eligibility FOR SELECT TO {role} "
                "USING (school_code = current_setting('zerocert.school', true))"
            )
            run_id = unique("acl")
            publish_run(pg_url, run_desc(run_id), write(frames(run_id), tmp_path / "a"))
            conn.execute(f"SET ROLE {role}")
            assert conn.execute("SELECT count(*) FROM zerocert.eligibility").fetchone()[0] == 0
            conn.execute("SET zerocert.school = 'S01'")
            assert conn.execute("SELECT count(*) FROM zerocert.eligibility").fetchone()[0] == 3
            assert conn.execute("SELECT count(source) FROM zerocert.quarantine").fetchone()[0] == 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT raw FROM zerocert.quarantine")
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DROP POLICY IF EXISTS own_school ON zerocert.eligibility")
            conn.execute("ALTER TABLE zerocert.eligibility DISABLE ROW LEVEL SECURITY")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.postgres
def test_concurrent_reader_sees_the_old_run_or_the_new_never_a_mix(pg_url, tmp_path):
    runs = [unique(f"c{i}") for i in range(4)]
    inputs = [write(frames(r, children=2000 + 500 * i, shift=i), tmp_path / r) for i, r in enumerate(runs)]
    publish_run(pg_url, run_desc(runs[0]), inputs[0])
    expected = {r: 2000 + 500 * i for i, r in enumerate(runs)}
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        elig = conn.execute("SELECT run_id, count(*) FROM eligibility GROUP BY run_id").fetchall()
                        time.sleep(0.002)  # hold the tables across statements, as a real client might
                        guard = conn.execute("SELECT run_id, count(*) FROM guardianship GROUP BY run_id").fetchall()
                    seen.append((tuple(elig), tuple(guard)))
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(1, len(runs)):
            publish_run(pg_url, run_desc(runs[i], f"2026-11-01T0{i}:00:00+00:00"), inputs[i])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(seen) > 20
    for elig, guard in seen:
        assert len(elig) == 1 and len(guard) == 1, (elig, guard)
        (run_e, n_e), (run_g, n_g) = elig[0], guard[0]
        assert run_e == run_g and n_e == n_g == expected[run_e]
    assert {e[0][0] for e, _ in seen} >= {runs[0], runs[-1]}


def test_empty_tables_publish_as_empty(url, tmp_path):
    run_id = unique("empty")
    given = frames(run_id)
    for name in ("quarantine", "ineligibility", "address_match"):
        given[name] = given[name].iloc[0:0].astype(object)  # as pandas writes an empty result
    publish_run(url, run_desc(run_id), write(given, tmp_path / "a"))
    assert read_table(url, "quarantine") == [] and read_table(url, "ineligibility") == []
    assert read_current_run(url)["row_counts"]["quarantine"] == 0
    assert run_ids(url, "eligibility") == {run_id}


@pytest.mark.postgres
def test_a_reader_that_never_lets_go_fails_the_publish_not_the_reader(pg_url, tmp_path):
    good, late = unique("held"), unique("late")
    publish_run(pg_url, run_desc(good), write(frames(good), tmp_path / "a"))
    with psycopg.connect(pg_url.replace("+psycopg", "")) as reader:
        reader.execute("SELECT count(*) FROM eligibility").fetchone()  # holds the table until commit
        with pytest.raises(ZerocertError, match="readers kept the warehouse tables busy"):
            publish_run(pg_url, run_desc(late), write(frames(late, shift=1), tmp_path / "b"), swap_timeout=0.5)
        assert reader.execute("SELECT DISTINCT run_id FROM eligibility").fetchall() == [(good,)]
    assert read_current_run(pg_url)["run_id"] == good
    assert audit(pg_url)[late] == ["failed"]


@pytest.mark.postgres
def test_a_snapshot_taken_before_the_load_reads_the_whole_new_run(pg_url, tmp_path):
    """COPY FREEZE: rows of the new tables are visible even to an older REPEATABLE READ snapshot."""
    old, new = unique("old"), unique("new")
    publish_run(pg_url, run_desc(old), write(frames(old, children=3), tmp_path / "a"))
    with psycopg.connect(pg_url.replace("+psycopg", "")) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1")  # the snapshot is taken here, before the new run exists
        publish_run(pg_url, run_desc(new), write(frames(new, children=5, shift=1), tmp_path / "b"))
        rows = reader.execute("SELECT run_id, count(*) FROM eligibility GROUP BY run_id").fetchall()
        citizens = reader.execute("SELECT run_id, count(*) FROM citizen GROUP BY run_id").fetchall()
    assert rows == [(new, 5)] and citizens == [(new, 6)]


@pytest.mark.postgres
def test_a_failure_during_the_switch_rolls_everything_back(pg_url, tmp_path):
    good, bad = unique("good"), unique("blocked")
    publish_run(pg_url, run_desc(good), write(frames(good), tmp_path / "a"))
    plain = pg_url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.pinned AS SELECT guardian_id FROM zerocert.prefill")
        try:
            with pytest.raises(ZerocertError, match="depend"):
                publish_run(pg_url, run_desc(bad), write(frames(bad, shift=1), tmp_path / "b"))
        finally:
            conn.execute("DROP VIEW public.pinned")
        stage = conn.execute("SELECT to_regnamespace('zerocert_stage')").fetchone()[0]
    assert stage is None
    assert run_ids(pg_url, "citizen") == {good} and run_ids(pg_url, "prefill") == {good}
    assert audit(pg_url)[bad] == ["failed"]


def test_sqlite_reader_sees_the_old_run_or_the_new_never_a_mix(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    runs = [unique(f"s{i}") for i in range(3)]
    inputs = [write(frames(r, children=1000 + 300 * i, shift=i), tmp_path / r) for i, r in enumerate(runs)]
    publish_run(url, run_desc(runs[0]), inputs[0])
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            con = sqlite3.connect(tmp_path / "w.sqlite", isolation_level=None, timeout=30)
            while not stop.is_set():
                con.execute("BEGIN")
                elig = con.execute("SELECT run_id, count(*) FROM eligibility GROUP BY run_id").fetchall()
                guard = con.execute("SELECT run_id, count(*) FROM guardianship GROUP BY run_id").fetchall()
                con.execute("COMMIT")
                seen.append((tuple(elig), tuple(guard)))
            con.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in (1, 2):
            publish_run(url, run_desc(runs[i], f"2026-11-01T0{i}:00:00+00:00"), inputs[i])
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    counts = {r: 1000 + 300 * i for i, r in enumerate(runs)}
    for elig, guard in seen:
        assert len(elig) == 1 and elig == guard and elig[0][1] == counts[elig[0][0]], (elig, guard)
    assert len(seen) > 5
    assert run_ids(url, "eligibility") == {runs[-1]}


def test_a_new_migration_is_applied_once_and_newer_warehouses_are_refused(tmp_path, monkeypatch):
    import shutil
    import sqlite3

    import pipelines.warehouse.common as common

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    run_id = unique("mig")
    publish_run(url, run_desc(run_id), write(frames(run_id), tmp_path / "a"))
    released, migrations = common.MIGRATIONS_DIR, tmp_path / "migrations"
    shutil.copytree(released, migrations)
    later = len(list((released / "sqlite").glob("*.sql"))) + 1
    (migrations / "sqlite" / f"{later:04d}_run_audit_note.sql").write_text(
        "-- a later release\nALTER TABLE run_audit ADD COLUMN note TEXT;\n", encoding="utf-8"
    )
    monkeypatch.setattr(common, "MIGRATIONS_DIR", migrations)
    ensure_warehouse(url)
    ensure_warehouse(url)
    db = sqlite3.connect(tmp_path / "w.sqlite")
    assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == list(
        range(1, later + 1)
    )
    assert "note" in [r[1] for r in db.execute("PRAGMA table_info(run_audit)")]
    db.close()
    assert read_current_run(url)["run_id"] == run_id  # the history survived the migration
    monkeypatch.setattr(common, "MIGRATIONS_DIR", released)  # an older release meets the newer warehouse
    with pytest.raises(ZerocertError, match=f"version {later}, newer than this code"):
        ensure_warehouse(url)


@pytest.mark.parametrize("made_by", ["this release", "an earlier release"])
def test_a_sqlite_warehouse_publishes_again_with_its_indexes_whatever_its_page_size(tmp_path, made_by):
    """A new warehouse gets 16 KiB pages; one an earlier release made (SQLite's 4 KiB, WAL) keeps
    them. Either way every run replaces the last whole and lookups go through the indexes."""
    import sqlite3

    path = tmp_path / "w.sqlite"
    if made_by == "an earlier release":
        old = sqlite3.connect(path)
        old.execute("PRAGMA journal_mode = WAL")
        old.execute("CREATE TABLE kept_by_the_bureau (note TEXT)")
        old.close()
    url = f"sqlite:///{path}"
    first, second = unique("p1"), unique("p2")
    publish_run(url, run_desc(first), write(frames(first), tmp_path / "a"))
    publish_run(url, run_desc(second, "2026-11-02T08:00:00+00:00"), write(frames(second, children=2), tmp_path / "b"))
    assert run_ids(url, "guardianship") == {second} and len(read_table(url, "eligibility")) == 2
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA page_size").fetchone()[0] == (16384 if made_by == "this release" else 4096)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    [plan] = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN SELECT * FROM guardianship WHERE child_id = 'x'")]
    assert "USING INDEX guardianship_child_id_idx" in plan
    db.close()


@pytest.mark.postgres
def test_binary_copy_reads_back_every_type_and_null_as_delivered(pg_url):
    """The binary COPY tuples built from Arrow columns: each type, NULL apart from empty text."""
    import pyarrow as pa

    from pipelines.warehouse.postgresql import _COPY_HEADER, _COPY_TRAILER, binary_copy_rows
    from pipelines.warehouse_schema import Column, Table

    table = Table(
        "copy_probe",
        (
            Column("t", "text"),
            Column("j", "json"),
            Column("d", "date"),
            Column("b", "bool"),
            Column("i", "int"),
            Column("f", "double"),
        ),
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["张三", "", None, 'a "q", \\. x\nline'], pa.string()),
            pa.array(['{"k": [1, "二"]}', "[]", None, '"s"'], pa.string()),
            pa.array([dt.date(2027, 7, 1), dt.date(1999, 12, 31), None, dt.date(1970, 1, 1)], pa.date32()),
            pa.array([True, False, None, True], pa.bool_()),
            pa.array([0, -(2**40), None, 2**62], pa.int64()),
            pa.array([0.5, -1e300, None, 0.0], pa.float64()),
        ],
        names=table.column_names,
    )
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE copy_probe (t text, j jsonb, d date, b boolean, i bigint, f float8)")
        with cur.copy("COPY copy_probe FROM STDIN (FORMAT binary)") as copy:
            copy.write(_COPY_HEADER)
            copy.write(binary_copy_rows(table, batch.slice(0, 2)))
            copy.write(binary_copy_rows(table, batch.slice(2)))  # a sliced batch keeps its offsets
            copy.write(_COPY_TRAILER)
        rows = cur.execute("SELECT t, j::text, d, b, i, f FROM copy_probe").fetchall()
    assert rows == [
        ("张三", '{"k": [1, "二"]}', dt.date(2027, 7, 1), True, 0, 0.5),
        ("", "[]", dt.date(1999, 12, 31), False, -(2**40), -1e300),
        (None, None, None, None, None, None),
        ('a "q", \\. x\nline', '"s"', dt.date(1970, 1, 1), True, 2**62, 0.0),
    ]


@pytest.mark.parametrize(
    ("columns", "ordered"),
    [
        ({"a": ["1", "2", "2", "3"], "b": [5, 1, 2, 0]}, True),  # ties on a, ordered by b
        ({"a": ["1", "2", "2", "3"], "b": [5, 2, 1, 0]}, False),
        ({"a": ["1", None, "3"], "b": [1, 2, 3]}, False),
        ({"a": ["z", "é"], "b": [1, 1]}, True),  # UTF-8 bytes, as SQLite's BINARY collation
        ({"a": ["é", "z"], "b": [1, 1]}, False),
        ({"a": [f"{i:06d}" for i in range(70_000)], "b": [0] * 70_000}, True),  # over two batches
        ({"a": [f"{i:06d}" for i in range(1, 65_537)] + ["000000"], "b": [0] * 65_537}, False),  # at the seam
        ({"a": [], "b": []}, False),  # no key values at all (Arrow's null type)
        ({"a": pa.array([], pa.string()), "b": pa.array([], pa.int64())}, True),
        ({"a": ["1"], "b": [1]}, True),
    ],
)
def test_a_file_already_in_key_order_is_told_apart_from_one_that_is_not(columns, ordered):
    from pipelines.warehouse.common import in_key_order, in_memory_parquet

    assert in_key_order(in_memory_parquet(pa.table(columns)), ["a", "b"]) is ordered
