"""``zerocert lookup ID``: what the parent's phone shows, or a child's eligibility; and
``zerocert audit-lookups --id ID``: which enrollment systems looked that person up.

The typed ID is repaired like a delivered one (spaces, full-width, lowercase x, 15 digits) and
then bound as a query parameter: hostile input can only ever be "not found" or a usage error.
Connected as a district login (no privilege on the tables), ``lookup`` asks the audited lookup
functions (pipelines/access.py), so the answer is that district's and the call is in
``lookup_audit``; connected as the owner it reads the tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipelines.errors import NotFound, UsageError
from pipelines.resident_id import mask_id, normalize_resident_ids
from pipelines.warehouse_schema import SCHEMA

MAX_INPUT = 64
GAP_RANGES_SHOWN = 20


def normalize_typed_id(text: str) -> str:
    """One typed ID to its 18-character form, or a UsageError saying why (masked)."""
    if len(text) > MAX_INPUT:
        raise UsageError("not a resident ID: the input is too long")
    if not text.strip():
        raise UsageError("not a resident ID: the input is blank")
    ids, reasons = normalize_resident_ids(pd.Series([text], dtype=object))
    reason_code = reasons.iloc[0]
    if pd.notna(reason_code) or pd.isna(ids.iloc[0]):
        reason = "wrong check character" if reason_code == "INVALID_ID_CHECKSUM" else "not in any ID form"
        raise UsageError(f"not a resident ID ({reason}): {mask_id(text.strip())}")
    return str(ids.iloc[0])


def _table(engine: sa.Engine, name: str) -> str:
    return f"{SCHEMA}.{name}" if engine.dialect.name == "postgresql" else name


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _reads_through_functions(db: sa.Connection) -> bool:
    """A district login: no SELECT on the prefill table, EXECUTE on the lookup function."""
    return bool(
        db.execute(
            sa.text(
                f"SELECT to_regprocedure('{SCHEMA}.prefill_of(text)') IS NOT NULL "
                f"AND has_function_privilege('{SCHEMA}.prefill_of(text)', 'EXECUTE') "
                f"AND NOT has_table_privilege('{SCHEMA}.prefill', 'SELECT')"
            )
        ).scalar()
    )


def _through_functions(db: sa.Connection, resident: str) -> tuple:
    prefill = db.execute(sa.text(f"SELECT {SCHEMA}.prefill_of(:id)"), {"id": resident}).scalar()
    child = db.execute(sa.text(f"SELECT {SCHEMA}.eligibility_of(:id)"), {"id": resident}).scalar()
    db.commit()  # the audit rows the calls wrote
    child = _json(child) or {}
    return _json(prefill), child.get("eligibility", []), child.get("ineligibility", [])


def _from_tables(engine: sa.Engine, db: sa.Connection, resident: str) -> tuple:
    prefill = db.execute(
        sa.text(f"SELECT document FROM {_table(engine, 'prefill')} WHERE guardian_id = :id"), {"id": resident}
    ).scalar()
    rows = (
        db.execute(
            sa.text(
                f"SELECT level, school_code, category, priority_date, basis_guardian_id, evidence, policy_id "
                f"FROM {_table(engine, 'eligibility')} WHERE child_id = :id ORDER BY level, category, school_code"
            ),
            {"id": resident},
        )
        .mappings()
        .all()
    )
    reasons = (
        db.execute(
            sa.text(
                f"SELECT level, reasons, policy_id FROM {_table(engine, 'ineligibility')} WHERE child_id = :id "
                f"ORDER BY level"
            ),
            {"id": resident},
        )
        .mappings()
        .all()
    )
    eligibility = [
        {**dict(r), "priority_date": str(r["priority_date"]), "evidence": _json(r["evidence"])} for r in rows
    ]
    return _json(prefill), eligibility, [{**dict(r), "reasons": _json(r["reasons"])} for r in reasons]


FIRST_RUN = "run `zerocert run` (after `make demo`: export ZEROCERT_HOME=$PWD/.demo)"


def warehouse_name(url: str) -> str:
    """The warehouse as a person recognises it: a SQLite file's path, or the URL without password."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def require_warehouse_file(url: str) -> None:
    """A reading command never creates a warehouse: SQLite would make an empty file at a wrong path.

    Raises a one-line UsageError naming the path and what to run; other databases pass.
    """
    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise UsageError(f"no published run: there is no warehouse at {database}; {FIRST_RUN}, or give --warehouse URL")


def lookup(url: str, typed_id: str) -> dict:
    """The prefill document when the ID is a guardian's; the eligibility rows when a child's."""
    resident = normalize_typed_id(typed_id)
    require_warehouse_file(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            if engine.dialect.name == "postgresql" and _reads_through_functions(db):
                prefill, eligibility, ineligibility = _through_functions(db, resident)
            else:
                prefill, eligibility, ineligibility = _from_tables(engine, db, resident)
    except sa.exc.OperationalError as exc:
        detail = str(exc.orig).splitlines()[0]
        if detail.startswith("no such table"):  # SQLite's way of saying "never published"
            raise UsageError(f"the warehouse {warehouse_name(url)} has no published run yet: {FIRST_RUN}") from None
        raise UsageError(f"cannot read the warehouse {warehouse_name(url)}: {detail}") from None
    except sa.exc.ProgrammingError as exc:
        detail = str(exc.orig).splitlines()[0]
        if "does not exist" not in detail:  # e.g. a login without the privilege
            raise UsageError(f"the warehouse {warehouse_name(url)} refused the lookup: {detail}") from None
        raise UsageError(f"the warehouse {warehouse_name(url)} has no published run yet: {FIRST_RUN}") from None
    except sa.exc.DBAPIError as exc:  # e.g. a lookup function refusing a read-only transaction
        raise UsageError(f"the warehouse refused the lookup: {str(exc.orig).splitlines()[0]}") from None
    finally:
        engine.dispose()
    if prefill is None and not eligibility and not ineligibility:
        raise NotFound(f"not found: no guardian or child {mask_id(resident)} in the published run")
    document: dict = {"id": resident}
    if prefill is not None:
        document["as_guardian"] = prefill
    if eligibility or ineligibility:
        document["as_child"] = {"eligibility": eligibility, "ineligibility": ineligibility}
    return document


# --- who looked at my record -------------------------------------------------------------------


def audit_lookups(url: str, typed_id: str, hmac_key: bytes | None, *, gaps: bool = False) -> dict:
    """Every audited lookup of one person, oldest first, with IDs masked.

    Besides the person's own lookups, lists the ``prefill_of`` lookups of the person's current
    guardians (that document lists their children). Read as the owner: only it reads the audit.
    With ``gaps``, also counts function calls that left no audit row (their transaction rolled
    back or is still open); the server log line ``zerocert lookup call N`` names each.
    """
    from pipelines.access import audit_key_id, person_hash
    from pipelines.warehouse import postgresql_warehouse

    if hmac_key is None:
        raise UsageError(
            "audit-lookups needs the HMAC key (ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE) "
            "the lookups were audited with"
        )
    resident = normalize_typed_id(typed_id)
    wh = postgresql_warehouse(url, "the lookup audit exists only in a PostgreSQL warehouse")
    import psycopg

    with wh.connect() as conn:
        if conn.execute(f"SELECT to_regclass('{SCHEMA}.lookup_audit')").fetchone()[0] is None:
            raise UsageError("this warehouse has no lookup audit yet: run zerocert roles")
        try:
            stored = conn.execute(f"SELECT key_id FROM {SCHEMA}.lookup_secret").fetchone()
            guardians = [
                r[0]
                for r in conn.execute(
                    f"SELECT DISTINCT guardian_id FROM {SCHEMA}.guardianship WHERE child_id = %s", (resident,)
                )
            ]
            subjects = {person_hash(hmac_key, resident): "this person"}
            for guardian in guardians:
                subjects.setdefault(
                    person_hash(hmac_key, guardian), f"guardian {mask_id(guardian)} (prefill lists this child)"
                )
            rows = conn.execute(
                f"""SELECT call_no, looked_at, login, district_code, function, person_hash, school_code, found
                    FROM {SCHEMA}.lookup_audit WHERE person_hash = ANY(%s) ORDER BY looked_at, call_no""",
                (list(subjects),),
            ).fetchall()
            other_key = conn.execute(
                f"SELECT count(*) FROM {SCHEMA}.lookup_audit WHERE key_id <> %s", (audit_key_id(hmac_key),)
            ).fetchone()[0]
            missing = _unaudited_calls(conn) if gaps else None
        except psycopg.errors.InsufficientPrivilege:
            raise UsageError("only the warehouse owner (zerocert_etl) reads the lookup audit") from None
    if stored is None or stored[0] != audit_key_id(hmac_key):
        raise UsageError("the configured HMAC key is not the one this warehouse audits lookups with")
    own = person_hash(hmac_key, resident)
    lookups = [
        {
            "at": looked_at.isoformat(),
            "login": login,
            "district": district,
            "function": function,
            "about": subjects[hashed],
            **({"school_code": school} if school else {}),
            "found": found,
            "call": call,
        }
        for call, looked_at, login, district, function, hashed, school, found in rows
        if hashed == own or function == "prefill_of"
    ]
    report: dict = {
        "person": mask_id(resident),
        "lookups": lookups,
        "logins": sorted({entry["login"] for entry in lookups if entry["found"]}),
    }
    if other_key:
        report["rows_under_another_key"] = other_key  # hashed before a key change: not searchable
    if missing is not None:
        report["unaudited_calls"] = missing
    return report


def _unaudited_calls(conn) -> dict:
    """Call numbers the sequence handed out that have no audit row, as a count and first ranges."""
    last = conn.execute(
        f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {SCHEMA}.lookup_call_no"
    ).fetchone()[0]
    ranges = conn.execute(
        f"""
        WITH calls AS (SELECT DISTINCT call_no FROM {SCHEMA}.lookup_audit
                       UNION ALL SELECT 0 UNION ALL SELECT %s + 1),
             steps AS (SELECT call_no, lead(call_no) OVER (ORDER BY call_no) AS next FROM calls)
        SELECT call_no + 1, next - 1 FROM steps WHERE next > call_no + 1 ORDER BY call_no""",
        (last,),
    ).fetchall()
    return {
        "calls": int(last),
        "without_audit_row": int(sum(hi - lo + 1 for lo, hi in ranges)),
        "first_ranges": [[int(lo), int(hi)] for lo, hi in ranges[:GAP_RANGES_SHOWN]],
    }
