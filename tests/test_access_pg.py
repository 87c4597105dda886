"""Roles on the real PostgreSQL: a district login looks people up through the audited functions,
for its own district only, and reads no table; analysts see no identity.

Two districts, a child eligible in both, a guardian with children in both; published twice
(the second time by the owner role), so grants and functions are checked after the swap too.
The design changed on purpose from the session setting (``SET zerocert.district``) to logins:
the old tests of the setting are replaced by tests that the setting changes nothing.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid

import psycopg
import pytest
from access_warehouse import PASSWORDS, A, B, audit_rows, publish
from access_world import C1, C2, C3, C4, CITIZEN, ELIGIBILITY, G1, G2, KEY, LABEL, UNKNOWN
from warehouse_reader import connect

from pipelines.access import ANALYST_TABLES, READER_ROLE, create_roles, person_hash, revoke_districts
from pipelines.cli import main
from pipelines.warehouse_schema import TABLES

pytestmark = pytest.mark.postgres

ALL_IDS = set(CITIZEN["citizen_id"])
ID_TEXT = re.compile(r"\d{17}[\dX]")
LABEL = {**LABEL, UNKNOWN: "nobody"}
# what each district's login must get, by label
PREFILL = {A: {"G1", "G5"}, B: {"G2", "G5"}}
SCHOOLS_OF_CHILD = {A: {"C1": {"PA"}, "C3": {"PA"}}, B: {"C2": {"PB"}, "C3": {"PB"}, "C4": set()}}
APPLICANTS = {(A, "PA"): {"C1", "C3"}, (A, "PB"): set(), (B, "PB"): {"C2", "C3"}, (B, "PA"): set()}


@pytest.fixture(scope="module")
def warehouse(pg_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    publish(pg_url, tmp, f"r1-{uuid.uuid4().hex[:6]}")
    create_roles(pg_url, hmac_key=KEY, district_passwords=PASSWORDS)
    create_roles(pg_url, hmac_key=KEY, district_passwords=PASSWORDS)  # idempotent
    # the second run is published by the owner role itself; grants and functions survive the swap
    publish(owner_url(pg_url), tmp, f"r2-{uuid.uuid4().hex[:6]}")
    return pg_url


@pytest.fixture
def throwaway_district(warehouse):
    """A district of this test alone: its login may be altered or revoked while other test runs
    on the same server use the shared ones. Dropped afterwards."""
    district = f"98{secrets.randbelow(10_000):04d}"
    password = secrets.token_urlsafe(12)
    create_roles(warehouse, hmac_key=KEY, district_passwords={**PASSWORDS, district: password}, issue=[district])
    yield district, password
    with connect(warehouse, "postgres") as admin:
        admin.execute(f"DROP ROLE IF EXISTS enrollment_{district}")


def owner_url(url: str) -> str:
    return url.replace("://postgres@", "://zerocert_etl@")


def login(url: str, district: str) -> psycopg.Connection:
    return connect(url, f"enrollment_{district}", PASSWORDS[district])


def prefill_found(conn) -> set[str]:
    return {
        LABEL[i]
        for i in [*ALL_IDS, UNKNOWN]
        if conn.execute("SELECT zerocert.prefill_of(%s)", (i,)).fetchone()[0] is not None
    }


def schools_by_child(conn) -> dict[str, set[str]]:
    found = {}
    for i in [*ALL_IDS, UNKNOWN]:
        doc = conn.execute("SELECT zerocert.eligibility_of(%s)", (i,)).fetchone()[0]
        if doc is not None:
            found[LABEL[i]] = {row["school_code"] for row in doc["eligibility"]}
    return found


def test_logins_are_bound_to_their_district(warehouse):
    with connect(warehouse, "postgres") as admin:
        for district in (A, B):
            role = f"enrollment_{district}"
            can_login, privileged, hashed = admin.execute(
                """SELECT rolcanlogin, rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls,
                          rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s""",
                (role,),
            ).fetchone()
            assert can_login and not privileged and hashed
            assert admin.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (role, READER_ROLE)).fetchone()[0]
            assert admin.execute(
                "SELECT district_code FROM zerocert.reader_district WHERE login = %s", (role,)
            ).fetchone() == (district,)


@pytest.mark.parametrize("district", [A, B])
def test_login_gets_its_own_district_through_the_functions(warehouse, district):
    with login(warehouse, district) as conn:
        assert prefill_found(conn) == PREFILL[district]
        assert schools_by_child(conn) == SCHOOLS_OF_CHILD[district]
        for (where, school), children in APPLICANTS.items():
            if where == district:
                rows = conn.execute(
                    "SELECT child_id, category FROM zerocert.school_applicants(%s)", (school,)
                ).fetchall()
                assert {LABEL[c] for c, _ in rows} == children, school
        document = conn.execute("SELECT zerocert.eligibility_of(%s)", (C4,)).fetchone()[0]
        if district == B:  # C4 has no school: its hukou district answers with the reasons
            assert document["ineligibility"][0]["reasons"] == ["NO_QUALIFYING_PROPERTY"]
        else:
            assert document is None
        # the current (second) run answers
        run = conn.execute("SELECT zerocert.eligibility_of(%s) #>> '{eligibility,0,run_id}'", (C3,)).fetchone()[0]
        assert run.startswith("r2-")


@pytest.mark.parametrize(
    "trick",
    [
        "SET zerocert.district = '371103'",
        "SELECT set_config('zerocert.district', '371103', false)",
        f"SET ROLE {READER_ROLE}",
        "SET search_path = public, pg_temp",
    ],
)
def test_another_district_stays_null_whatever_the_session_sets(warehouse, trick):
    with login(warehouse, A) as conn:
        conn.execute(trick)
        assert conn.execute("SELECT zerocert.prefill_of(%s)", (G2,)).fetchone()[0] is None
        assert conn.execute("SELECT zerocert.eligibility_of(%s)", (C2,)).fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM zerocert.school_applicants('PB')").fetchone()[0] == 0
        # set_config inside the very SELECT changes nothing either
        inline = conn.execute(
            "SELECT set_config('zerocert.district', '371103', true), zerocert.eligibility_of(%s)", (C2,)
        ).fetchone()[1]
        assert inline is None
        assert prefill_found(conn) == PREFILL[A]  # and its own district still answers
    with connect(warehouse, "postgres") as admin:  # the group role itself is no district
        admin.execute(f"SET SESSION AUTHORIZATION {READER_ROLE}")
        assert admin.execute("SELECT zerocert.prefill_of(%s)", (G1,)).fetchone()[0] is None


@pytest.mark.parametrize(
    "typed", [None, "", "   ", "x" * 10_000, f"{G1}' OR true --", G1[:17], G1 + "0", "３７１１０２", f"{G1[:10]}%"]
)
def test_malformed_input_is_null_not_an_error(warehouse, typed):
    with login(warehouse, A) as conn:
        for fn in ("prefill_of", "eligibility_of"):
            assert conn.execute(f"SELECT zerocert.{fn}(%s)", (typed,)).fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM zerocert.school_applicants(%s)", (typed,)).fetchone()[0] == 0


def test_typed_forms_of_an_own_id_are_found(warehouse):
    with login(warehouse, A) as conn:
        assert conn.execute("SELECT zerocert.prefill_of(%s)", (f"  {G1.lower()} ",)).fetchone()[0] is not None


def all_tables(url: str) -> list[str]:
    with connect(url, "postgres") as admin:
        return [r[0] for r in admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'zerocert' ORDER BY 1")]


def test_every_base_table_is_permission_denied_so_nothing_to_explain(warehouse):
    tables = all_tables(warehouse)
    assert {
        "citizen",
        "eligibility",
        "prefill",
        "district_scope",
        "lookup_audit",
        "lookup_secret",
        "reader_district",
        "quarantine",
    } <= set(tables)
    with login(warehouse, A) as conn:
        for table in tables:
            for probe in (
                f"SELECT * FROM zerocert.{table} LIMIT 1",
                f"EXPLAIN (ANALYZE) SELECT * FROM zerocert.{table} WHERE true",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(probe)
        for internal in ("SELECT nextval('zerocert.lookup_call_no')", "SELECT setval('zerocert.lookup_call_no', 1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(internal)
        # column statistics show only columns one may read: none
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname = 'zerocert'").fetchone()[0] == 0


WORK = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")


def table_counters(url: str) -> dict[str, tuple[int, ...]]:
    with connect(url, "postgres") as admin:
        admin.execute("SELECT pg_stat_clear_snapshot()")
        return {
            name: tuple(counts)
            for name, *counts in admin.execute(
                f"""SELECT relname, {", ".join(f"coalesce({c}, 0)" for c in WORK)} FROM pg_stat_user_tables
                WHERE schemaname = 'zerocert' AND relname IN ('prefill', 'district_scope')"""
            )
        }


def work_of_one_call(url: str, resident: str) -> dict[str, tuple[int, ...]]:
    """Scans and rows read by one prefill_of call (statistics every role can read)."""
    import time

    before = table_counters(url)
    with login(url, A) as conn:
        conn.execute("SELECT zerocert.prefill_of(%s)", (resident,))
    for _ in range(40):  # a session's statistics reach shared memory as it ends
        after = table_counters(url)
        delta = {name: tuple(a - b for a, b in zip(after[name], before[name])) for name in after}
        if delta["district_scope"][0] + delta["district_scope"][2] >= 1:
            return delta
        time.sleep(0.25)
    raise AssertionError("the call's statistics never arrived")


def test_someone_of_another_district_costs_the_same_work_as_nobody(warehouse):
    """No side channel (timing, statistics) can tell them apart: the same probes run."""
    elsewhere, nobody, own = (work_of_one_call(warehouse, i) for i in (G2, UNKNOWN, G1))
    assert elsewhere == nobody
    assert elsewhere["prefill"] == (0, 0, 0, 0)
    assert own["prefill"][0] + own["prefill"][2] == 1  # the probe the counters would show


def test_no_temporary_table_large_object_or_write(warehouse):
    with login(warehouse, A) as conn:
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "CREATE TEMP TABLE mine (x int)",
            "SELECT lo_create(0)",
            "SELECT lo_creat(-1)",
            "SELECT lo_from_bytea(0, 'x')",
            "CREATE TABLE zerocert.mine (x int)",
            "CREATE TABLE public.mine (x int)",
            "DELETE FROM zerocert.prefill",
            "UPDATE zerocert.eligibility SET category = 'A1'",
            "TRUNCATE zerocert.citizen",
            "INSERT INTO zerocert.lookup_audit (call_no, looked_at, login, function, found, key_id) "
            "VALUES (1, now(), 'x', 'x', true, 'x')",
            "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with connect(warehouse, "postgres") as admin:
        assert admin.execute("SELECT count(*) FROM zerocert.eligibility").fetchone()[0] == len(ELIGIBILITY)
        assert admin.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0] == 0


def test_login_cannot_alter_the_group_another_district_or_its_own_powers(warehouse):
    with login(warehouse, A) as conn:
        for statement in (
            f"ALTER ROLE {READER_ROLE} SET default_transaction_read_only = off",
            f"ALTER ROLE {READER_ROLE} LOGIN",
            f"ALTER ROLE enrollment_{B} SET search_path = public",
            f"ALTER ROLE enrollment_{B} PASSWORD 'x'",
            f"ALTER ROLE enrollment_{A} CREATEROLE",
            f"ALTER ROLE enrollment_{A} BYPASSRLS",
            f"ALTER ROLE enrollment_{A} SUPERUSER",
            f"ALTER ROLE enrollment_{A} NOINHERIT",
            f"GRANT {READER_ROLE} TO enrollment_{B}",
            f"GRANT enrollment_{A} TO enrollment_{B}",
            f"SET ROLE enrollment_{B}",
            f"SET SESSION AUTHORIZATION enrollment_{B}",
            f"ALTER DATABASE {warehouse.rsplit('/', 1)[1]} SET search_path = public",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_membership_in_a_login_granted_by_mistake_gives_no_district_and_is_taken_back(warehouse, throwaway_district):
    """The functions go by the session's login, not by roles it may SET; zerocert roles revokes
    memberships in a district login (a login is nobody's group)."""
    district, password = throwaway_district
    other = f"enrollment_{district}"
    with connect(warehouse, "postgres") as admin:
        admin.execute(f"GRANT enrollment_{A} TO {other}")
    with connect(warehouse, other, password) as conn:
        conn.execute(f"SET ROLE enrollment_{A}")
        assert conn.execute("SELECT zerocert.prefill_of(%s)", (G1,)).fetchone()[0] is None
    create_roles(warehouse, hmac_key=KEY, district_passwords={district: password}, issue=[])
    with connect(warehouse, "postgres") as admin:
        assert not admin.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (other, f"enrollment_{A}")).fetchone()[0]


def test_defaults_a_login_stores_for_itself_are_cleared_by_zerocert_roles(warehouse, throwaway_district):
    """PostgreSQL lets every role ALTER ROLE itself ... SET (and change its own password); the
    settings cannot touch the functions (search_path pinned), and zerocert roles removes them."""
    district, password = throwaway_district
    role = f"enrollment_{district}"
    with connect(warehouse, role, password) as conn:
        conn.execute(f"ALTER ROLE {role} SET search_path = public")
        conn.execute(f"ALTER ROLE {role} IN DATABASE {warehouse.rsplit('/', 1)[1]} SET search_path = public")
    stored = (
        "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE r.rolname = %s AND array_to_string(s.setconfig, ',') LIKE '%%public%%'"
    )
    with connect(warehouse, "postgres") as admin:
        assert admin.execute(stored, (role,)).fetchone()[0] == 2
    create_roles(warehouse, hmac_key=KEY, district_passwords={district: password}, issue=[])
    with connect(warehouse, "postgres") as admin:
        assert admin.execute(stored, (role,)).fetchone()[0] == 0


def test_revoked_login_cannot_log_in_and_loses_its_open_session(warehouse, throwaway_district):
    district, password = throwaway_district
    role = f"enrollment_{district}"
    session = connect(warehouse, role, password)
    assert session.execute("SELECT zerocert.prefill_of(%s)", (G1,)).fetchone() == (None,)
    assert revoke_districts(warehouse, [district]) == {district: 1}
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        connect(warehouse, role, password)
    create_roles(warehouse, hmac_key=KEY, district_passwords={district: password}, issue=[district])
    connect(warehouse, role, password).close()  # issued again


def test_every_call_leaves_one_audit_row_holding_no_whole_id(warehouse):
    before = len(audit_rows(warehouse))
    calls = [
        ("prefill_of", G1, True),
        ("prefill_of", G2, False),
        ("eligibility_of", C3, True),
        ("eligibility_of", UNKNOWN, False),
        ("prefill_of", "junk", False),
    ]
    with login(warehouse, A) as conn:
        for fn, resident, _ in calls:
            conn.execute(f"SELECT zerocert.{fn}(%s)", (resident,))
        conn.execute("SELECT * FROM zerocert.school_applicants('PA')")  # C1 and C3: one row each
        conn.execute("SELECT * FROM zerocert.school_applicants('PB')")  # another district's: one row
    rows = audit_rows(warehouse)[before:]
    assert len(rows) == len(calls) + 3
    for (fn, resident, found), row in zip(calls, rows):
        expected = person_hash(KEY, resident) if resident != "junk" else None
        assert row[1:] == (f"enrollment_{A}", A, fn, expected, None, found), LABEL.get(resident, resident)
    school_rows = rows[len(calls) :]
    assert {(r[5], r[6]) for r in school_rows} == {("PA", True), ("PB", False)}
    assert {r[4] for r in school_rows if r[6]} == {person_hash(KEY, C1), person_hash(KEY, C3)}
    assert len({r[0] for r in rows}) == len(calls) + 2  # one call number per call
    text = " ".join(str(v) for row in rows for v in row)
    assert not ID_TEXT.search(text) and not any(i in text for i in ALL_IDS)


def test_read_only_transaction_gets_an_error_not_an_unaudited_answer(warehouse):
    with login(warehouse, A) as conn:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="audited"):
            conn.execute("SELECT zerocert.prefill_of(%s)", (G1,))


def test_audit_lookups_answers_who_looked_and_counts_rolled_back_calls(warehouse, monkeypatch, capsys):
    with login(warehouse, B) as conn:
        conn.execute("SELECT zerocert.eligibility_of(%s)", (C2,))
        conn.execute("SELECT zerocert.prefill_of(%s)", (G2,))  # G2's prefill lists C2
        with conn.transaction(force_rollback=True):  # a caller hiding its lookup
            conn.execute("SELECT zerocert.eligibility_of(%s)", (C2,))
    monkeypatch.setenv("ZEROCERT_HMAC_KEY", KEY.decode())
    assert main(["audit-lookups", "--warehouse", owner_url(warehouse), "--id", C2, "--gaps"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["person"] == C2[:6] + "********" + C2[-4:]
    mine = [(e["login"], e["function"], e["found"], e["about"].split()[0]) for e in report["lookups"]]
    assert (f"enrollment_{B}", "eligibility_of", True, "this") in mine
    assert (f"enrollment_{B}", "prefill_of", True, "guardian") in mine
    assert report["logins"] == [f"enrollment_{B}"]
    assert report["unaudited_calls"]["without_audit_row"] >= 1
    leaked = [i for i in ALL_IDS if i in out]
    assert not leaked and not ID_TEXT.search(out)
    monkeypatch.setenv("ZEROCERT_HMAC_KEY", "another-key-0123456789")
    assert main(["audit-lookups", "--warehouse", owner_url(warehouse), "--id", C2]) == 2
    assert "not the one" in capsys.readouterr().err


def test_a_publish_between_calls_keeps_the_open_session_working(warehouse, tmp_path):
    with login(warehouse, A) as conn:
        assert conn.execute("SELECT zerocert.prefill_of(%s)", (G1,)).fetchone()[0] is not None
        publish(owner_url(warehouse), tmp_path, f"r3-{uuid.uuid4().hex[:6]}")
        run = conn.execute("SELECT zerocert.eligibility_of(%s) #>> '{eligibility,0,run_id}'", (C1,)).fetchone()[0]
        assert run.startswith("r3-")
    with connect(warehouse, "postgres") as admin:
        privileges = admin.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'zerocert'::regnamespace "
            "AND has_table_privilege(%s, c.oid, 'SELECT')",
            (f"enrollment_{A}",),
        ).fetchone()[0]
    assert privileges == 0


def test_analyst_sees_no_resident_id_and_calls_no_lookup(warehouse):
    with connect(warehouse, "analyst") as conn:
        for table in ANALYST_TABLES:
            rows = conn.execute(f"SELECT * FROM zerocert.{table}").fetchall()
            text = " ".join(str(v) for row in rows for v in row)
            shaped, known = len(ID_TEXT.findall(text)), sum(i in text for i in ALL_IDS)
            assert shaped == 0 and known == 0, table
        assert conn.execute("SELECT count(*) FROM analyst_citizen").fetchone()[0] == len(ALL_IDS)
        for table in set(TABLES) - set(ANALYST_TABLES):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM zerocert.{table} LIMIT 1")
        conn.execute("SET default_transaction_read_only = off")  # its default: read-only
        for statement in ("SELECT zerocert.prefill_of('x')", "CREATE TEMP TABLE mine (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_owner_role_published_the_current_run_and_owns_everything(warehouse):
    with connect(warehouse, "zerocert_etl") as conn:
        current = conn.execute(
            "SELECT run_id FROM run_audit WHERE status = 'published' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()[0]
        assert {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM citizen")} == {current}
        owners = {r[0] for r in conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'zerocert'")}
        functions = {
            r[0]
            for r in conn.execute(
                "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'zerocert'::regnamespace"
            )
        }
        definers = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT proname, prosecdef, proconfig FROM pg_proc WHERE pronamespace = 'zerocert'::regnamespace"
            )
        }
    assert owners == {"zerocert_etl"} and functions == {"zerocert_etl"}
    for fn in ("prefill_of", "eligibility_of", "school_applicants"):
        secdef, config = definers[fn]
        assert secdef and "search_path=pg_catalog, pg_temp" in config
        assert "log_min_error_statement=panic" in config  # its server-log line never quotes the caller


def test_roles_need_the_hmac_key(warehouse):
    from pipelines.errors import UsageError

    with pytest.raises(UsageError, match="HMAC key"):
        create_roles(warehouse, hmac_key=None)


def test_concurrent_roles_runs_on_two_warehouses_both_succeed(pg_database):
    """Roles are cluster-wide: two warehouses creating the same new logins at once must not fail."""
    from concurrent.futures import ThreadPoolExecutor

    districts = {f"97{secrets.randbelow(10_000):04d}": secrets.token_urlsafe(12) for _ in range(3)}
    urls = [pg_database(), pg_database()]
    try:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda url: create_roles(url, hmac_key=KEY, district_passwords=districts), urls))
        assert all(sorted(d["issued"]) == sorted(districts) for d in done)
        for url in urls:
            for district, password in districts.items():
                with connect(url, f"enrollment_{district}", password) as conn:
                    assert conn.execute("SELECT zerocert.prefill_of(%s)", (G1,)).fetchone() == (None,)
    finally:
        with connect(urls[0], "postgres") as admin:
            for district in districts:
                admin.execute(f"DROP ROLE IF EXISTS enrollment_{district}")
