"""Checks before a run does any work, and the guard just before it publishes.

A run that would fail at its end, or worse succeed with a gutted warehouse, because of its
configuration is stopped here within seconds with one line (a ``UsageError``, exit 2) and
nothing written: the warehouse reachable and writable, the exchange reachable, the reference
complete, its catchments present for the policy's year and levels and valid polygons, every
code the policy lists known to the schemas, and an HMAC key when the warehouse already holds
pseudonymized tables. The checks themselves are pure; the probes at the edge only read, or
write a temporary file they remove.

The output guard compares the tables a run is about to publish with the run the warehouse
holds: a table published empty where it had rows, or shrunk by more than
``Settings.max_table_shrink``, is refused (exit 3, as a source's size change is) unless the
engineer accepted it with ``--accept-change TABLE --reason TEXT``; the acceptance goes into
run_audit. The fraction is a setting (``ZEROCERT_MAX_TABLE_SHRINK``, pipelines/config.py), not
policy: the policy is the education bureau's, the guard the data engineer's. Only tables of
``MIN_GUARDED_ROWS`` or more are held to it, and after an accepted source size change the
tables may follow their sources; an emptied table is always refused.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipelines import registry
from pipelines.config import Settings
from pipelines.errors import UsageError, ValidationFailed
from pipelines.masking import mask_ids_in
from pipelines.policy import CODE_LISTS, Policy
from pipelines.warehouse_schema import PUBLISHED_TABLES

REFERENCE_FILES = ("addresses.csv", "catchments.geojson", "schools.csv")
PSEUDONYMIZED_TABLES = ("analyst_citizen", "analyst_eligibility")
SHRINK_IS_GOOD_NEWS = frozenset({"quarantine"})
"""Published tables the guard leaves alone: fewer quarantined rows is a cleaner delivery."""
MIN_GUARDED_ROWS = 100
"""Below this many rows a table's size moves by chance (counts suppressed under k, a handful
of schools): only its emptying is refused."""
CONNECT_TIMEOUT_S = 5


# --- pure checks -----------------------------------------------------------------------------


def code_lists(sources: Mapping[str, registry.Source]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Policy key -> {'source.column': its codes} for every source whose evidence role the key
    is compared with (``policy.CODE_LISTS``); a source without that code column is left out."""
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for key, (_, columns) in CODE_LISTS.items():
        found[key] = {}
        for evidence, column in columns:
            for source in sources.values():
                if source.evidence != evidence or column not in source.schema.keys:
                    continue
                codes = source.schema.column(column).codes
                if codes:
                    found[key][f"{source.key}.{column}"] = codes
    return found


def unknown_policy_codes(policy: Policy, lists: Mapping[str, Mapping[str, tuple[str, ...]]]) -> list[str]:
    """One line per policy key listing a code that none of its code columns holds.

    A code matches when any of the key's sources knows it (enterprise has 在业, individual
    businesses do not; the policy lists it for both).
    """
    problems = []
    for key, codes in policy.codes_named().items():
        columns = lists.get(key) or {}
        if not columns:
            continue
        known = list(dict.fromkeys(code for name in sorted(columns) for code in columns[name]))
        unknown = [code for code in codes if code not in known]
        if unknown:
            problems.append(
                f"policy: key '{key}' lists {', '.join(unknown)}, not a code of {' or '.join(sorted(columns))} "
                f"(codes: {', '.join(known)})"
            )
    return problems


def catchment_problems(catchments, policy: Policy) -> list[str]:
    """What makes the catchments unusable for the policy: a level of its enrollment year with no
    catchment, or a catchment of that year that is not a valid polygon."""
    from pipelines.addresses.catchments import invalid_catchments

    year = policy.enrollment_year
    this_year = catchments.loc[catchments["enrollment_year"] == year]
    if this_year.empty:
        years = sorted({int(y) for y in catchments["enrollment_year"]})
        return [
            f"no catchments for the policy's enrollment year {year} "
            f"(the file has {', '.join(map(str, years)) or 'none'})"
        ]
    problems = [
        f"no {window.level} catchments for {year}"
        for window in policy.levels
        if not (this_year["level"] == window.level).any()
    ]
    invalid = invalid_catchments(this_year)
    if invalid:
        more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
        problems.append(f"not a valid polygon: {invalid[0]}{more}")
    return problems


def _headline_first(table: str) -> tuple[bool, int, str]:
    """eligibility, then the published tables in their registry order (the engine's first)."""
    order = PUBLISHED_TABLES.index(table) if table in PUBLISHED_TABLES else len(PUBLISHED_TABLES)
    return table != "eligibility", order, table


def shrunk_tables(
    previous: Mapping[str, int], rows: Mapping[str, int], max_shrink: float | None
) -> list[dict[str, int | float | str | None]]:
    """Tables published empty where the previous run filled them, or (with ``max_shrink``) that
    lost more than that fraction of at least ``MIN_GUARDED_ROWS`` previous rows.

    Each as {'table', 'previous_rows', 'rows', 'max_shrink_fraction'}; ``SHRINK_IS_GOOD_NEWS``
    is never reported.
    """
    found = []
    for table in sorted(previous, key=_headline_first):
        before, now = int(previous[table]), int(rows.get(table, 0))
        if table in SHRINK_IS_GOOD_NEWS or before <= 0:
            continue
        emptied = now == 0
        shrunk = max_shrink is not None and before >= MIN_GUARDED_ROWS and (before - now) / before > max_shrink
        if emptied or shrunk:
            found.append({"table": table, "previous_rows": before, "rows": now, "max_shrink_fraction": max_shrink})
    return found


def guard_published_tables(
    previous: Mapping[str, int], rows: Mapping[str, int], max_shrink: float | None, accepted: Mapping[str, str]
) -> list[dict]:
    """The table changes this run publishes under, each with the engineer's reason; raises
    ``ValidationFailed`` when a table changed so and nobody accepted it (the message names the
    flag that would accept every such table).

    ``max_shrink`` None: only emptied tables are refused (a person accepted a source's size
    change for this run, and the tables follow their sources).
    """
    changed = shrunk_tables(previous, rows, max_shrink)
    refused = [change for change in changed if change["table"] not in accepted]
    if refused:
        first = refused[0]
        how = "would be published empty" if first["rows"] == 0 else f"would lose more than {max_shrink:.0%} of its rows"
        also = f" (also {', '.join(str(c['table']) for c in refused[1:])})" if len(refused) > 1 else ""
        raise ValidationFailed(
            f"table {first['table']} {how}: {first['previous_rows']} rows in the published run, {first['rows']} "
            f"in this one{also}; nothing published. If the change is real: "
            f"--accept-change {','.join(str(c['table']) for c in refused)} --reason TEXT"
        )
    return [{**change, "reason": accepted[str(change["table"])]} for change in changed]


# --- probes at the edge ------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return mask_ids_in(text.splitlines()[0] if text else type(exc).__name__)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextlib.contextmanager
def _closing(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield con
    finally:
        con.close()


def probe_sqlite_file(path: Path, what: str) -> None:
    """An existing SQLite database is readable and writable, or a new one could be created.

    Writes at most a temporary file beside it, removed at once; a missing file stays missing.
    """
    if path.exists():
        if not path.is_file():
            raise UsageError(f"{what} {path} is not a file")
        try:
            with _closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=1)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):  # locked: another run is publishing, so it is writable
                raise UsageError(f"{what} {path} is not a writable SQLite database: {_first_line(exc)}") from None
        except sqlite3.Error as exc:
            raise UsageError(f"{what} {path} is not a writable SQLite database: {_first_line(exc)}") from None
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise UsageError(f"{what} {path} cannot be created: {folder} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".zerocert-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {folder}: {exc.strerror or _first_line(exc)}") from None


def probe_postgresql(warehouse) -> None:
    """The database answers within ``CONNECT_TIMEOUT_S``, is not read-only, and the role may
    create the schemas a publish needs."""
    import dataclasses

    import psycopg

    conninfo = {"connect_timeout": CONNECT_TIMEOUT_S, **warehouse.conninfo}
    probe = dataclasses.replace(warehouse, conninfo=conninfo)
    with probe.connect() as conn:
        try:
            read_only, may_create, schema_exists, may_use_schema = conn.execute(
                """SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on',
                          has_database_privilege(current_database(), 'CREATE'),
                          to_regnamespace('zerocert') IS NOT NULL,
                          CASE WHEN to_regnamespace('zerocert') IS NULL THEN true
                               ELSE has_schema_privilege('zerocert', 'CREATE') END"""
            ).fetchone()
        except psycopg.Error as exc:
            raise UsageError(f"the warehouse does not answer: {_first_line(exc)}") from None
    if read_only:
        raise UsageError("the warehouse is read-only (a standby, or default_transaction_read_only is on)")
    if not may_create or (schema_exists and not may_use_schema):
        raise UsageError("the warehouse's role may not create tables there (it needs CREATE on the database)")


def probe_warehouse(url: str) -> None:
    """The warehouse URL names a database this run can reach and write, without creating it."""
    from pipelines.warehouse import PostgreSQLWarehouse, SQLiteWarehouse, warehouse_for

    warehouse = warehouse_for(url)
    if isinstance(warehouse, SQLiteWarehouse):
        probe_sqlite_file(warehouse.path, "the SQLite warehouse")
    elif isinstance(warehouse, PostgreSQLWarehouse):
        probe_postgresql(warehouse)


def probe_exchange(url: str) -> None:
    """The exchange database answers (a SQLite exchange must exist: connecting would create it)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise UsageError("exchange database URL not usable: not a SQLAlchemy URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database or "")
        if not parsed.database or not database.is_file():
            raise UsageError(f"exchange database not found: {database}")
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = sa.create_engine(url, connect_args=connect_args)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise UsageError(f"exchange database URL not usable: {type(exc).__name__}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise UsageError(f"cannot reach the exchange database: {_first_line(getattr(exc, 'orig', exc))}") from None
    finally:
        engine.dispose()


def check_hmac_key(url: str) -> None:
    """A configured key must be usable; none at all is refused once the warehouse holds
    pseudonymized tables (publishing without one would empty them)."""
    from pipelines.access import hmac_key_from_config
    from pipelines.warehouse import read_current_run

    if hmac_key_from_config() is not None:
        return
    current = read_current_run(url) or {}
    counts = current.get("row_counts") or {}
    if isinstance(counts, str):
        import json

        counts = json.loads(counts)
    filled = [f"{name} ({int(counts[name])} rows)" for name in PSEUDONYMIZED_TABLES if int(counts.get(name) or 0)]
    if filled:
        raise UsageError(
            f"the warehouse holds pseudonymized tables ({', '.join(filled)}, run {current.get('run_id')}) "
            "but no HMAC key is configured: set ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE to the key that made them"
        )


def check_reference(reference: Path, policy: Policy) -> None:
    """The reference folder holds its three files, and its catchments serve the policy."""
    from pipelines.addresses.catchments import load_catchments

    missing = [name for name in REFERENCE_FILES if not (reference / name).is_file()]
    if missing:
        raise UsageError(f"reference {reference} is incomplete: no {', '.join(missing)}")
    path = reference / "catchments.geojson"
    problems = catchment_problems(load_catchments(path), policy)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"catchments file {path}: {problems[0]}{more}")


def check_policy_codes(policy: Policy) -> None:
    problems = unknown_policy_codes(policy, code_lists(registry.sources()))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(problems[0] + more)


def check_engine_work(url: str) -> None:
    """A configured engine work location names a filesystem pyarrow can open (its scheme known,
    its bucket and credentials found); nothing is written."""
    if not url or "://" not in url:
        return
    from pipelines.engine.buckets import WorkFolder, shown_location

    try:
        WorkFolder(url)
    except Exception as exc:
        raise UsageError(
            f"engine work location {shown_location(url)} cannot be opened "
            f"({shown_location(_first_line(exc), strip_query=False)}); "
            "fix zerocert_engine_work_url / ZEROCERT_ENGINE_WORK_URL (a path, file:///…, s3://bucket/prefix), "
            "or unset it to use the attempt's folder"
        ) from None


def preflight(settings: Settings, policy: Policy) -> None:
    """Every check above, cheapest first; the first failure is the one line the user sees."""
    check_policy_codes(policy)
    check_reference(settings.reference, policy)
    probe_warehouse(settings.warehouse_url)
    if settings.exchange_url:
        probe_exchange(settings.exchange_url)
    check_hmac_key(settings.warehouse_url)
    check_engine_work(settings.engine_work_url)
