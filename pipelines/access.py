"""Who may read what in the PostgreSQL warehouse: roles, grants, district row-level security and
the pseudonymized tables analysts read.

Three roles (warehouse.md, "Who may read what"):

* ``zerocert_etl`` owns the schema and every table and is the only writer. Owners bypass
  row-level security, so the pipeline always sees the whole city.
* ``enrollment_reader`` reads the per-citizen, eligibility and prefill tables, and only the rows
  of the district its session names: ``SET zerocert.district = '371102'``. A district's rows are
  the eligibility rows of its schools and the per-citizen and prefill rows of the children and
  guardians behind them (``district_scope``). An unset district matches nothing. It gets no
  privilege on ``quarantine``, ``address_match``, ``district_scope`` or the analyst tables, and
  no write privilege anywhere.
* ``analyst`` reads aggregates and pseudonymized tables only: resident IDs are replaced by
  ``HMAC-SHA256(key, id)`` whose key comes from configuration (``ZEROCERT_HMAC_KEY`` or
  ``ZEROCERT_HMAC_KEY_FILE``), so the same person keeps the same key across runs while nobody
  without the key can link it back.

The policies call two small ``SECURITY DEFINER`` functions instead of naming ``district_scope``
in a subquery: a policy that names a table depends on that table object, and the publish swaps
table objects (the old one could not be dropped). Function bodies are resolved at call time, so
policies carried by the swap keep working on the new tables. Each lookup then costs one extra
primary-key probe of ``district_scope``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UsageError

log = logging.getLogger(__name__)

ETL_ROLE, READER_ROLE, ANALYST_ROLE = "zerocert_etl", "enrollment_reader", "analyst"
DISTRICT_SETTING = "zerocert.district"
MIN_KEY_BYTES = 16

# Table -> the reader's row-level security condition (SQL over the table's own columns).
_SEES = "zerocert.reader_sees_citizen"
READER_POLICIES: dict[str, str] = {
    "citizen": f"{_SEES}(citizen_id)",
    "property_holding": f"{_SEES}(citizen_id)",
    "rental_holding": f"{_SEES}(citizen_id)",
    "employment": f"{_SEES}(citizen_id)",
    "guardianship": f"{_SEES}(child_id)",
    "ineligibility": f"{_SEES}(child_id)",
    "prefill": f"{_SEES}(guardian_id)",
    "eligibility": "zerocert.reader_sees_school(school_code)",
    "guardian_eligibility": f"{_SEES}(guardian_id) AND zerocert.reader_sees_school(school_code)",
    "school": f"district_code = current_setting('{DISTRICT_SETTING}', true)",
}
READER_TABLES = tuple(READER_POLICIES)
ANALYST_TABLES = ("analyst_citizen", "analyst_eligibility", "demand_by_school", "school",
                  "source_snapshot", "address_catchment", "analyst_school_demand", "analyst_district_summary", "analyst_source_quality", "analyst_catchment_forecast")


# --- pure transforms -------------------------------------------------------------------------

def school_table(schools: pd.DataFrame) -> pd.DataFrame:
    """``school`` rows from schools.csv: the school -> district map the policies read."""
    out = schools[["school_code", "level", "school_name", "district_code"]].astype("string")
    capacity = pd.to_numeric(schools["capacity"], errors="coerce").astype("Int64")
    return out.assign(capacity=capacity).drop_duplicates("school_code").reset_index(drop=True)


def district_scope(eligibility: pd.DataFrame, guardianship: pd.DataFrame, schools: pd.DataFrame,
                   ineligibility: pd.DataFrame | None = None,
                   citizen: pd.DataFrame | None = None) -> pd.DataFrame:
    """``(citizen_id, district_code)``: whose rows each district's enrollment system may read.

    A child belongs to every district where it has an eligibility row (two districts: both), and
    a child with no school at all to the district of its hukou region (its district still has
    to answer the family); guardians belong wherever one of their children does.
    """
    districts = schools[["school_code", "district_code"]].astype("string").drop_duplicates("school_code")
    placed = eligibility[["child_id", "school_code"]].merge(districts, on="school_code", how="left")
    unknown = placed["district_code"].isna()
    if unknown.any():
        log.warning("district scope: %d eligibility row(s) name a school missing from schools.csv; "
                    "no district reader sees them", int(unknown.sum()))
    children = [placed.loc[~unknown, ["child_id", "district_code"]]]
    if ineligibility is not None and citizen is not None:
        homes = citizen[["citizen_id", "hukou_region_code"]].rename(
            columns={"citizen_id": "child_id", "hukou_region_code": "district_code"})
        unplaced = ineligibility[["child_id"]].drop_duplicates().merge(homes, on="child_id")
        known = unplaced["district_code"].isin(districts["district_code"])
        children.append(unplaced.loc[known, ["child_id", "district_code"]])
    children_scope = pd.concat(children, ignore_index=True).astype("string").drop_duplicates()
    guardians = guardianship[["child_id", "guardian_id"]].astype("string").merge(children_scope, on="child_id")
    scope = pd.concat([children_scope.rename(columns={"child_id": "citizen_id"}),
                       guardians[["guardian_id", "district_code"]].rename(columns={"guardian_id": "citizen_id"})],
                      ignore_index=True)
    return (scope.drop_duplicates().sort_values(["citizen_id", "district_code"])
            .reset_index(drop=True))


def pseudonymize(ids: pd.Series, key: bytes) -> pd.Series:
    """Hex ``HMAC-SHA256(key, id)`` per ID, computed once per distinct ID; missing stays missing."""
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes")
    codes, distinct = pd.factorize(ids)
    digests = np.array([hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest() for v in distinct]
                       + [None], dtype=object)  # codes == -1 (missing) pick the trailing None
    return pd.Series(digests[codes], index=ids.index, dtype="string")


def analyst_citizen(citizen: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Citizens without identity: no ID, name, household or address; birth year only."""
    birth = pd.to_datetime(citizen["birth_date"])
    return pd.DataFrame({
        "citizen_key": pseudonymize(citizen["citizen_id"], key),
        "sex": citizen["sex"].astype("string"),
        "birth_year": birth.dt.year.astype("Int64"),
        "hukou_status": citizen["hukou_status"].astype("string"),
        "hukou_region_code": citizen["hukou_region_code"].astype("string"),
        "urban_hukou": citizen["urban_hukou"].astype("boolean"),
    })


def analyst_eligibility(eligibility: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Eligibility rows keyed by the child's HMAC; no guardian ID, no evidence record keys."""
    return pd.DataFrame({
        "child_key": pseudonymize(eligibility["child_id"], key),
        **{c: eligibility[c].astype("string") for c in ("level", "school_code", "category")},
        "priority_date": pd.to_datetime(eligibility["priority_date"]),
    })


def demand_by_school(eligibility: pd.DataFrame) -> pd.DataFrame:
    """Distinct children per school, level and category: what planners size classes by."""
    counts = (eligibility.groupby(["school_code", "level", "category"], observed=True)["child_id"]
              .nunique().rename("children").reset_index())
    return counts.astype({"school_code": "string", "level": "string", "category": "string",
                          "children": "int64"})


def build_access_frames(tables: Mapping[str, pd.DataFrame], schools: pd.DataFrame,
                        hmac_key: bytes | None) -> dict[str, pd.DataFrame]:
    """Every access table of one run; the pseudonymized ones only when a key is configured."""
    out = {
        "school": school_table(schools),
        "district_scope": district_scope(tables["eligibility"], tables["guardianship"], schools,
                                         tables.get("ineligibility"), tables.get("citizen")),
        "demand_by_school": demand_by_school(tables["eligibility"]),
    }
    if hmac_key is None:
        log.warning("no HMAC key configured (ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE): "
                    "the pseudonymized analyst tables are not produced")
        return out
    out["analyst_citizen"] = analyst_citizen(tables["citizen"], hmac_key)
    out["analyst_eligibility"] = analyst_eligibility(tables["eligibility"], hmac_key)
    return out


# --- configuration and files -----------------------------------------------------------------

def hmac_key_from_config(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The analysts' HMAC key: ``ZEROCERT_HMAC_KEY`` (text) or ``ZEROCERT_HMAC_KEY_FILE`` (a file
    whose content, stripped of surrounding whitespace, is the key); None when neither is set."""
    environ = os.environ if environ is None else environ
    text, path = environ.get("ZEROCERT_HMAC_KEY"), environ.get("ZEROCERT_HMAC_KEY_FILE")
    if text and path:
        raise UsageError("set either ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE, not both")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the HMAC key file {path}: {exc.strerror}") from None
    elif text:
        key = text.strip().encode()
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes")
    return key


_NEEDED = {
    "eligibility": ["child_id", "level", "school_code", "category", "priority_date"],
    "guardianship": ["child_id", "guardian_id"],
    "ineligibility": ["child_id"],
    "citizen": ["citizen_id", "sex", "birth_date", "hukou_status", "hukou_region_code", "urban_hukou"],
}


def build_access_tables(tables: Mapping[str, Path], schools_csv: Path, hmac_key: bytes | None,
                        out_dir: Path) -> dict[str, Path]:
    """Read the engine's Parquet outputs and schools.csv, write the access tables as Parquet.

    Returns table name -> Parquet path, to add to what ``publish_run`` publishes.
    """
    missing = [name for name in ("eligibility", "guardianship") if name not in tables]
    if missing:
        raise UsageError(f"access tables need the engine's {missing[0]} table")
    try:
        schools = pd.read_csv(schools_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UsageError(f"no schools list at {schools_csv}") from None
    frames = {name: pd.read_parquet(tables[name], columns=columns)
              for name, columns in _NEEDED.items() if name in tables}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in build_access_frames(frames, schools, hmac_key).items():
        written[name] = out_dir / f"{name}.parquet"
        frame.to_parquet(written[name], index=False)
    return written


# --- roles, grants, policies -----------------------------------------------------------------

_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION zerocert.reader_sees_citizen(citizen text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM zerocert.district_scope s WHERE s.citizen_id = citizen
                 AND s.district_code = current_setting('{DISTRICT_SETTING}', true));
END $$;
CREATE OR REPLACE FUNCTION zerocert.reader_sees_school(school text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM zerocert.school s WHERE s.school_code = school
                 AND s.district_code = current_setting('{DISTRICT_SETTING}', true));
END $$;
"""


def _ensure_role(cur, role: str, password: str | None) -> None:
    from psycopg import sql

    cur.execute(f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} LOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
    END $$""")
    if password is not None:
        cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))


def access_statements(database: str, tables: list[str]) -> list[str]:
    """The grants, functions and policies, in order; idempotent (revoke, then grant again)."""
    readers = f"{READER_ROLE}, {ANALYST_ROLE}"
    stmts = [
        f"GRANT CONNECT ON DATABASE {database} TO {ETL_ROLE}, {readers}",
        f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {ETL_ROLE}",
        f"ALTER SCHEMA zerocert OWNER TO {ETL_ROLE}",
        f"GRANT USAGE ON SCHEMA zerocert TO {readers}",
    ]
    stmts += [f"ALTER TABLE zerocert.{t} OWNER TO {ETL_ROLE}" for t in tables]
    stmts += [f"REVOKE ALL ON zerocert.{t} FROM PUBLIC, {readers}" for t in tables]
    stmts += [_FUNCTIONS]
    for fn in ("reader_sees_citizen", "reader_sees_school"):
        stmts += [f"ALTER FUNCTION zerocert.{fn}(text) OWNER TO {ETL_ROLE}",
                  f"REVOKE ALL ON FUNCTION zerocert.{fn}(text) FROM PUBLIC",
                  f"GRANT EXECUTE ON FUNCTION zerocert.{fn}(text) TO {READER_ROLE}"]
    for table, condition in READER_POLICIES.items():
        stmts += [f"GRANT SELECT ON zerocert.{table} TO {READER_ROLE}",
                  f"ALTER TABLE zerocert.{table} ENABLE ROW LEVEL SECURITY",
                  f"DROP POLICY IF EXISTS district_reader ON zerocert.{table}",
                  f"CREATE POLICY district_reader ON zerocert.{table} FOR SELECT TO {READER_ROLE} "
                  f"USING ({condition})"]
    for table in ANALYST_TABLES:
        stmts.append(f"GRANT SELECT ON zerocert.{table} TO {ANALYST_ROLE}")
        if table in READER_POLICIES:  # RLS is on there: analysts see every row of it
            stmts += [f"DROP POLICY IF EXISTS analyst_all ON zerocert.{table}",
                      f"CREATE POLICY analyst_all ON zerocert.{table} FOR SELECT TO {ANALYST_ROLE} USING (true)"]
    for role in (READER_ROLE, ANALYST_ROLE):
        stmts.append(f"ALTER ROLE {role} IN DATABASE {database} SET default_transaction_read_only = on")
        stmts.append(f"ALTER ROLE {role} IN DATABASE {database} SET search_path = zerocert")
    return stmts


def create_roles(url: str, *, reader_password: str | None = None, analyst_password: str | None = None,
                 etl_password: str | None = None) -> None:
    """Create the three roles and (re)apply every grant and policy on the live tables.

    Run it as a superuser or a role with CREATEROLE that owns the database; safe to repeat. The
    publish carries grants and policies from each live table to its successor, so this is needed
    once per warehouse, and again only after a release adds tables.
    """
    from pipelines.publish import _PUBLISH_LOCK, _pg_connect, _warehouse, ensure_warehouse
    from pipelines.warehouse_schema import TABLES

    wh = _warehouse(url)
    if wh.dialect != "postgresql":
        raise UsageError("roles and row-level security exist only in a PostgreSQL warehouse")
    ensure_warehouse(url)
    with _pg_connect(wh) as conn, conn.cursor() as cur:
        for role, password in ((ETL_ROLE, etl_password), (READER_ROLE, reader_password),
                               (ANALYST_ROLE, analyst_password)):
            _ensure_role(cur, role, password)
        conn.commit()
        cur.execute("SELECT quote_ident(current_database())")
        database = cur.fetchone()[0]
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))  # not during a publish
        for statement in access_statements(database, [*TABLES, "run_audit", "schema_version"]):
            cur.execute(statement)
    log.info("roles %s, %s, %s ready; grants and district policies applied", ETL_ROLE, READER_ROLE,
             ANALYST_ROLE)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.access --warehouse URL``: create the roles (passwords from
    ``ZEROCERT_ETL_PASSWORD``, ``ZEROCERT_READER_PASSWORD``, ``ZEROCERT_ANALYST_PASSWORD``)."""
    import argparse
    import sys

    from pipelines.errors import ZerocertError
    from pipelines.masking import configure_logging

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m pipelines.access", description=main.__doc__)
    parser.add_argument("--warehouse", required=True, help="PostgreSQL URL of a superuser/DB owner")
    args = parser.parse_args(argv)
    try:
        create_roles(args.warehouse, reader_password=os.environ.get("ZEROCERT_READER_PASSWORD"),
                     analyst_password=os.environ.get("ZEROCERT_ANALYST_PASSWORD"),
                     etl_password=os.environ.get("ZEROCERT_ETL_PASSWORD"))
    except ZerocertError as exc:
        print(f"zerocert: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
