"""Roles on the real PostgreSQL: a district reader sees its district only, analysts no identity.

Two districts, a child eligible in both, a guardian with children in both; published twice, so
the policies are checked after the atomic swap too.
"""

from __future__ import annotations

import re
import uuid

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.access import ANALYST_TABLES, READER_TABLES, build_access_tables, create_roles
from pipelines.marts import write_mart_tables
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
from pipelines.publish import publish_run
from pipelines.warehouse_schema import PUBLISHED_TABLES, TABLES, arrow_schema
from test_access import C1, C2, C3, C4, CITIZEN, ELIGIBILITY, G1, G2, G5, GUARDIANSHIP, KEY, SCHOOLS

pytestmark = pytest.mark.postgres

DEMO_POLICY = policy_from_dict(yaml.safe_load(DEMO_POLICY_YAML))
DISTRICT_A = {C1, C3, G1, G5}
DISTRICT_B = {C2, C3, C4, G2, G5}
ALL_IDS = set(CITIZEN["citizen_id"])
ID_COLUMNS = ("citizen_id", "child_id", "guardian_id")
ID_TEXT = re.compile(r"\d{17}[\dX]")


def run_rows(run_id: str) -> dict[str, list[dict]]:
    """Rows per published table; the rest are published empty."""
    day = pd.Timestamp("2027-07-01").date()
    return {
        "citizen": [{"citizen_id": c, "name": "张三", "sex": "男", "hukou_status": "正常",
                     "hukou_region_code": r, "birth_date": b.date(), "urban_hukou": True}
                    for c, r, b in zip(CITIZEN["citizen_id"], CITIZEN["hukou_region_code"], CITIZEN["birth_date"])],
        "guardianship": [{"child_id": c, "guardian_id": g, "relation": "父亲", "basis": "guardian_field"}
                         for c, g in zip(GUARDIANSHIP["child_id"], GUARDIANSHIP["guardian_id"])],
        "property_holding": [{"citizen_id": g, "kind": "title", "record_key": f"K{i}"}
                             for i, g in enumerate([G1, G2, G5])],
        "rental_holding": [{"citizen_id": G2, "record_no": "R1"}],
        "employment": [{"citizen_id": g, "kind": "social_insurance"} for g in (G1, G2)],
        "eligibility": [{"child_id": r.child_id, "level": r.level, "school_code": r.school_code,
                         "category": r.category, "priority_date": day, "policy_id": "p",
                         "basis_guardian_id": G5, "evidence": "[]"} for r in ELIGIBILITY.itertuples()],
        "ineligibility": [{"child_id": C4, "level": "primary", "reasons": '["NO_QUALIFYING_PROPERTY"]',
                           "policy_id": "p"}],
        "guardian_eligibility": [{"guardian_id": G5, "level": "primary", "school_code": s,
                                  "basis": "property"} for s in ("PA", "PB")]
                                + [{"guardian_id": G1, "level": "primary", "school_code": "PB", "basis": "rental"}],
        "prefill": [{"guardian_id": g, "document": '{"children": []}'} for g in (G1, G2, G5)],
        "source_snapshot": [{"source": "hukou", "rows_in": 7, "rows_accepted": 7, "rows_quarantined": 0,
                             "rows_duplicate": 0}],
        "quarantine": [{"source": "hukou", "record_ref": "hukou.csv:9", "reason_code": "INVALID_DATE",
                        "raw": f"{C1},张三,2020-13-01"}],
        "address_match": [{"source": "hukou", "address": "x", "status": "unmatched"}],
    }


def publish(url: str, tmp_path, run_id: str) -> None:
    folder = tmp_path / run_id
    folder.mkdir()
    paths = {}
    for name, rows in run_rows(run_id).items():
        schema = arrow_schema(TABLES[name]).remove(len(TABLES[name].columns) - 1)  # run_id filled in
        paths[name] = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths[name])
    SCHOOLS.to_csv(folder / "schools.csv", index=False)
    paths.update(build_access_tables(paths, folder / "schools.csv", KEY, folder / "access"))
    placed = pd.DataFrame({"address_code": ["A1"], "level": ["primary"], "school_code": ["PA"]})
    paths.update(write_mart_tables(paths, schools_csv=folder / "schools.csv", placed=placed, policy=DEMO_POLICY,
                                   run_id=run_id, as_of="2027-08-15", out_dir=folder / "marts"))
    assert set(paths) == set(PUBLISHED_TABLES)
    publish_run(url, {"run_id": run_id, "as_of": "2027-08-15", "policy_id": "p",
                      "started_at": pd.Timestamp.now(tz="UTC").isoformat(), "code_version": "t"}, paths)


@pytest.fixture(scope="module")
def warehouse(pg_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    publish(pg_url, tmp, f"r1-{uuid.uuid4().hex[:6]}")
    create_roles(pg_url)
    create_roles(pg_url)  # idempotent
    # the second run is published by the owner role itself; policies and grants carried by the swap
    publish(pg_url.replace("://postgres@", "://zerocert_etl@"), tmp, f"r2-{uuid.uuid4().hex[:6]}")
    return pg_url


def connect(url: str, role: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=5432, user=role, dbname=url.rsplit("/", 1)[1],
                           autocommit=True)


def visible_ids(conn, table: str) -> set[str]:
    columns = [c for c in TABLES[table].column_names if c in ID_COLUMNS]
    found = set()
    for row in conn.execute(f"SELECT {', '.join(columns) or 'NULL'} FROM zerocert.{table}"):
        found.update(v for v in row if v is not None)
    return found


@pytest.mark.parametrize("district, scope, schools", [("371102", DISTRICT_A, {"PA"}),
                                                      ("371103", DISTRICT_B, {"PB"})])
def test_reader_sees_only_its_district(warehouse, district, scope, schools):
    with connect(warehouse, "enrollment_reader") as conn:
        conn.execute("SELECT set_config('zerocert.district', %s, false)", (district,))
        for table in READER_TABLES:
            outside = len(visible_ids(conn, table) - scope)  # counts only: no ID in test output
            assert outside == 0, table
        differ = len(visible_ids(conn, "citizen") ^ scope)
        assert differ == 0
        assert {r[0] for r in conn.execute("SELECT school_code FROM zerocert.eligibility")} == schools
        assert {r[0] for r in conn.execute("SELECT school_code FROM zerocert.guardian_eligibility")} <= schools
        assert {r[0] for r in conn.execute("SELECT school_code FROM zerocert.school")} == schools
        # plain names work through the role's search_path, and the run is the second one
        assert {r[0] for r in conn.execute("SELECT run_id FROM eligibility")} <= {
            r[0] for r in conn.execute("SELECT DISTINCT run_id FROM zerocert.citizen")}
        assert len(conn.execute("SELECT DISTINCT run_id FROM zerocert.citizen").fetchall()) == 1


def test_guardian_rows_of_another_district_school_are_hidden(warehouse):
    with connect(warehouse, "enrollment_reader") as conn:
        conn.execute("SET zerocert.district = '371102'")
        rows = conn.execute("SELECT guardian_id, school_code FROM guardian_eligibility").fetchall()
    assert sorted(rows) == [(G5, "PA")]  # G1's rental at PB and G5's PB row belong to district B


@pytest.mark.parametrize("setting", [None, "", "999999", "371102' OR true --"])
def test_unset_or_unknown_district_sees_nothing(warehouse, setting):
    with connect(warehouse, "enrollment_reader") as conn:
        if setting is not None:
            conn.execute("SELECT set_config('zerocert.district', %s, false)", (setting,))
        for table in READER_TABLES:
            assert conn.execute(f"SELECT count(*) FROM zerocert.{table}").fetchone()[0] == 0, table


@pytest.mark.parametrize("table", ["quarantine", "address_match", "district_scope", "analyst_citizen",
                                   "run_audit"])
def test_reader_cannot_read_other_tables(warehouse, table):
    with connect(warehouse, "enrollment_reader") as conn:
        conn.execute("SET zerocert.district = '371102'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM zerocert.{table} LIMIT 1")
        if table == "quarantine":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT raw FROM zerocert.quarantine")


@pytest.mark.parametrize("statement", [
    f"INSERT INTO zerocert.eligibility (child_id, level, school_code, category, policy_id, run_id) "
    f"VALUES ('{C1}', 'junior', 'PA', 'A1', 'p', 'x')",
    "UPDATE zerocert.eligibility SET category = 'A1'",
    "DELETE FROM zerocert.prefill",
    "TRUNCATE zerocert.citizen",
    "CREATE TABLE zerocert.mine (x int)",
])
def test_reader_cannot_write_even_in_a_read_write_transaction(warehouse, statement):
    with connect(warehouse, "enrollment_reader") as conn:
        conn.execute("SET zerocert.district = '371102'")
        conn.execute("SET default_transaction_read_only = off")  # the role's default is read-only
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    with connect(warehouse, "postgres") as admin:
        assert admin.execute("SELECT count(*) FROM zerocert.eligibility").fetchone()[0] == len(ELIGIBILITY)


def test_analyst_sees_no_resident_id(warehouse):
    with connect(warehouse, "analyst") as conn:
        for table in ANALYST_TABLES:
            rows = conn.execute(f"SELECT * FROM zerocert.{table}").fetchall()
            assert rows, table
            text = " ".join(str(v) for row in rows for v in row)
            shaped, known = len(ID_TEXT.findall(text)), sum(i in text for i in ALL_IDS)
            assert shaped == 0 and known == 0, table
        assert conn.execute("SELECT count(*) FROM analyst_citizen").fetchone()[0] == len(ALL_IDS)
        for table in set(TABLES) - set(ANALYST_TABLES):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM zerocert.{table} LIMIT 1")


def test_owner_role_published_the_current_run_and_reads_everything(warehouse):
    with connect(warehouse, "zerocert_etl") as conn:
        differ = len(visible_ids(conn, "citizen") ^ ALL_IDS)
        assert differ == 0
        current = conn.execute("SELECT run_id FROM run_audit WHERE status = 'published' "
                               "ORDER BY finished_at DESC LIMIT 1").fetchone()[0]
        assert current.startswith("r2-")
        assert {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM citizen")} == {current}
        owners = {r[0] for r in conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'zerocert'")}
    assert owners == {"zerocert_etl"}
