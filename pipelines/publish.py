"""Load a run's tables into the warehouse and switch them in atomically (PostgreSQL or SQLite).

Readers see the whole previous run or the whole new one, never a mix, and a failed publish
leaves the previous run in place:

* PostgreSQL: one transaction creates fresh tables in the schema ``zerocert_stage``, streams
  each Parquet file in with ``COPY ... (FORMAT csv, FREEZE)``, builds primary keys and indexes
  and ANALYZEs; then takes ACCESS EXCLUSIVE on every live table at once (short
  ``lock_timeout``, retried, so a waiting publish never stalls readers for long and always
  loses a deadlock to a reader), drops the old tables, moves the new ones into ``zerocert``
  and marks ``run_audit`` published -- all in the same COMMIT. ``FREEZE`` makes the new rows
  visible even to a reader whose snapshot predates the load, so a REPEATABLE READ reader that
  touches the tables only after the swap still sees the complete new run.
* SQLite (WAL mode): one ``BEGIN IMMEDIATE`` transaction loads ``<table>__new`` with
  ``executemany``, drops the old tables, renames the new ones and builds indexes; readers keep
  their snapshot of the old run until COMMIT.

Readers query plain table names in schema ``zerocert`` on PostgreSQL (qualify them or
``SET search_path = zerocert``; with SQLAlchemy, ``?options=-csearch_path%3Dzerocert``) and in
the main database on SQLite.

Grants and row-level security: the swap replaces table objects, so before dropping each live
table it copies the table's owner, table and column privileges, RLS switches and policies onto
its successor inside the swap transaction. Whatever the DBA granted on the live tables therefore
survives every publish, and roles see no instant without their privileges. Views over published
tables would pin the old objects and make the drop fail (the publish then fails cleanly); build
reader-facing views as functions or recreate them in a migration instead.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipelines.data import data_path
from pipelines.errors import UsageError, ZerocertError
from pipelines.warehouse_schema import (
    OPTIONAL_TABLES, PUBLISHED_TABLES, SCHEMA, TABLES, arrow_schema, Table, check_input_schema, conform_batch, mask_ids_in,
    render_create_table, render_indexes,
)

log = logging.getLogger(__name__)

STAGE_SCHEMA = "zerocert_stage"
MIGRATIONS_DIR = data_path("migrations")
RUN_KEYS = ("run_id", "as_of", "policy_id", "started_at", "code_version")
AUDIT_COLUMNS = ("run_id", "as_of", "policy_id", "started_at", "finished_at", "status",
                 "code_version", "reason", "row_counts", "accepted_changes")
BATCH_ROWS = 65_536
_MIGRATE_LOCK = 0x7A65_726F_0001  # advisory lock keys ("zero"...)
_PUBLISH_LOCK = 0x7A65_726F_0002


@dataclass(frozen=True)
class _Warehouse:
    dialect: str  # "postgresql" | "sqlite"
    conninfo: Mapping[str, object]  # psycopg keyword arguments
    path: Path | None  # SQLite file


def _warehouse(url: str) -> _Warehouse:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"not a warehouse URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):  # Airflow connections say postgres://
        info = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
                "password": parsed.password, "dbname": parsed.database}
        info.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
        return _Warehouse("postgresql", {k: v for k, v in info.items() if v is not None}, None)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UsageError("the SQLite warehouse must be a file (sqlite:///path/to/file.db)")
        return _Warehouse("sqlite", {}, Path(parsed.database))
    raise UsageError(f"unsupported warehouse database {backend!r}: use postgresql or sqlite")


def _pg_connect(wh: _Warehouse):
    import psycopg

    try:
        return psycopg.connect(**wh.conninfo)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot connect to the warehouse: {mask_ids_in(first)}") from None


def _sqlite_connect(wh: _Warehouse) -> sqlite3.Connection:
    assert wh.path is not None
    wh.path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(wh.path, timeout=60, isolation_level=None)
    con.execute("PRAGMA synchronous = NORMAL")
    return con


@contextmanager
def _sqlite_write(wh: _Warehouse, *pragmas: str) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back on any error."""
    con = _sqlite_connect(wh)
    try:
        for pragma in pragmas:
            con.execute(pragma)
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Ordered (version, name, sql) from ``warehouse/migrations/<dialect>/NNNN_name.sql``."""
    found = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, _, name = path.stem.partition("_")
        found.append((int(version), name, path.read_text(encoding="utf-8")))
    if not found:
        raise ZerocertError(f"no warehouse migrations found under {MIGRATIONS_DIR / dialect}")
    return found


def _default_search_path(cur) -> None:
    """Let readers of this database use plain table names: search_path zerocert, public.

    Set once per database (new sessions only); a role without the right to alter the database
    is told to qualify names instead.
    """
    cur.execute("""SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d
                   ON d.oid = s.setdatabase WHERE d.datname = current_database()
                   AND s.setrole = 0""")
    row = cur.fetchone()
    if row and any(item.startswith("search_path=") for item in row[0] or []):
        return
    cur.execute("SELECT quote_ident(current_database())")
    database = cur.fetchone()[0]
    cur.execute("SAVEPOINT search_path")
    try:
        cur.execute(f"ALTER DATABASE {database} SET search_path = {SCHEMA}, public")
    except Exception as exc:  # noqa: BLE001 - a missing privilege only costs readers convenience
        cur.execute("ROLLBACK TO SAVEPOINT search_path")
        log.warning("could not set the database search_path (%s); readers must qualify "
                    "tables as %s.<table>", type(exc).__name__, SCHEMA)


def _pending(dialect: str, applied: set[int]) -> list[tuple[int, str, str]]:
    """Migrations not applied yet; a warehouse migrated by newer code is refused, not touched."""
    known = _migrations(dialect)
    newer = sorted(applied - {version for version, _, _ in known})
    if newer:
        raise ZerocertError(f"the warehouse schema is at version {newer[-1]}, newer than this code "
                            f"knows ({known[-1][0]}); upgrade zerocert")
    return [m for m in known if m[0] not in applied]


def _sqlite_statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (``executescript`` would COMMIT first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not all(
            not ln.strip() or ln.strip().startswith("--") for ln in pending.splitlines()):
        raise ZerocertError("incomplete SQL statement at the end of a migration file")


def ensure_warehouse(url: str) -> None:
    """Create or migrate the warehouse schema; safe to call any number of times, concurrently.

    Applies the versioned migrations not yet recorded in ``schema_version`` and creates any
    published table that does not exist yet (empty), so readers and grants have tables to
    point at before the first run.
    """
    wh = _warehouse(url)
    if wh.dialect == "postgresql":
        with _pg_connect(wh) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            _default_search_path(cur)
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute(f"SELECT version FROM {SCHEMA}.schema_version")
            applied = {row[0] for row in cur.fetchall()}
            for version, name, sql in _pending("postgresql", applied):
                cur.execute(sql)
                cur.execute(f"INSERT INTO {SCHEMA}.schema_version (version, name) "
                            "VALUES (%s, %s)", (version, name))
                log.info("warehouse migration %04d_%s applied", version, name)
            for table in TABLES.values():
                cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{table.name}",))
                if cur.fetchone()[0] is None:
                    qualified = f"{SCHEMA}.{table.name}"
                    cur.execute(render_create_table(table, "postgresql", qualified))
                    for ddl in render_indexes(table, qualified):
                        cur.execute(ddl)
        return
    # WAL: readers keep reading the old run during a publish
    with _sqlite_write(wh, "PRAGMA journal_mode = WAL") as con:
        con.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)""")
        applied = {row[0] for row in con.execute("SELECT version FROM schema_version")}
        for version, name, sql in _pending("sqlite", applied):
            for statement in _sqlite_statements(sql):
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, _iso(_now())))
            log.info("warehouse migration %04d_%s applied", version, name)
        for table in TABLES.values():
            con.execute(render_create_table(table, "sqlite", table.name, if_not_exists=True))
            for ddl in render_indexes(table, table.name, if_not_exists=True):
                con.execute(ddl)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _normalize_run(run: Mapping[str, object]) -> dict:
    missing = [k for k in RUN_KEYS if k not in run or run[k] is None]
    if missing:
        raise ZerocertError(f"run description lacks {', '.join(missing)}")
    as_of, started = run["as_of"], run["started_at"]
    try:
        as_of = dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
        started = dt.datetime.fromisoformat(started) if isinstance(started, str) else started
    except ValueError:
        raise ZerocertError("run as_of must be YYYY-MM-DD and started_at an ISO timestamp") from None
    if isinstance(as_of, dt.datetime):
        as_of = as_of.date()
    if not isinstance(started, dt.datetime) or not isinstance(as_of, dt.date):
        raise ZerocertError("run as_of must be a date and started_at a datetime")
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)
    return {"run_id": str(run["run_id"]), "as_of": as_of, "policy_id": str(run["policy_id"]),
            "started_at": started.astimezone(dt.timezone.utc),
            "code_version": str(run["code_version"]),
            "accepted_changes": list(run.get("accepted_changes") or []) or None}


def _write_audit(wh: _Warehouse, run: dict, status: str, reason: str | None = None,
                 row_counts: Mapping[str, int] | None = None, *, cursor=None) -> None:
    """Insert or update the attempt's run_audit row; a published row is never turned failed."""
    finished = None if status == "started" else _now()
    counts = None if row_counts is None else json.dumps(dict(row_counts), sort_keys=True)
    accepted = run.get("accepted_changes")
    accepted = None if not accepted else mask_ids_in(json.dumps(accepted, ensure_ascii=False, sort_keys=True))
    values = (run["run_id"], run["as_of"], run["policy_id"], run["started_at"], finished, status,
              run["code_version"], reason, counts, accepted)
    guard = "" if status == "published" else " WHERE run_audit.status <> 'published'"
    update = ("ON CONFLICT (run_id, started_at) DO UPDATE SET finished_at = excluded.finished_at, "
              "status = excluded.status, reason = excluded.reason, "
              "row_counts = excluded.row_counts, accepted_changes = excluded.accepted_changes" + guard)
    if wh.dialect == "postgresql":
        sql = (f"INSERT INTO {SCHEMA}.run_audit ({', '.join(AUDIT_COLUMNS)}) "
               f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) {update}")
        if cursor is not None:
            cursor.execute(sql, values)
            return
        with _pg_connect(wh) as conn:
            conn.execute(sql, values)
        return
    sql = (f"INSERT INTO run_audit ({', '.join(AUDIT_COLUMNS)}) "
           f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {update}")
    values = (values[0], values[1].isoformat(), values[2], _iso(values[3]),
              None if finished is None else _iso(finished), *values[5:])
    if cursor is not None:
        cursor.execute(sql, values)
        return
    con = _sqlite_connect(wh)
    try:
        con.execute(sql, values)
    finally:
        con.close()


def record_started_run(url: str, run: Mapping[str, object]) -> None:
    """Record that a run began (status ``started``), so an abandoned run still leaves a trace."""
    ensure_warehouse(url)
    _write_audit(_warehouse(url), _normalize_run(run), "started")


def record_failed_run(url: str, run: Mapping[str, object], reason: str) -> None:
    """Mark a run ``failed`` with its reason (IDs masked); the published tables are not touched."""
    ensure_warehouse(url)
    _write_audit(_warehouse(url), _normalize_run(run), "failed", mask_ids_in(str(reason))[:2000])


def mark_run_abandoned(url: str, started_at: dt.datetime) -> bool:
    """Turn the ``started`` run_audit rows of an attempt that began at ``started_at`` into
    ``abandoned`` (it was killed); True when there was one."""
    wh = _warehouse(url)
    if wh.dialect == "sqlite" and (wh.path is None or not wh.path.exists()):
        return False
    ensure_warehouse(url)
    reason = "ended before it finished (killed or lost); found by the next run"
    if wh.dialect == "postgresql":
        with _pg_connect(wh) as conn:
            done = conn.execute(f"UPDATE {SCHEMA}.run_audit SET status = 'abandoned', finished_at = %s, "
                                "reason = %s WHERE status = 'started' AND started_at = %s",
                                (_now(), reason, started_at)).rowcount
        return bool(done)
    with _sqlite_write(wh) as con:
        done = con.execute("UPDATE run_audit SET status = 'abandoned', finished_at = ?, reason = ? "
                           "WHERE status = 'started' AND started_at = ?",
                           (_iso(_now()), reason, _iso(started_at))).rowcount
    return bool(done)


def read_current_run(url: str) -> dict | None:
    """The run_audit row of the run the published tables hold, or None before the first publish."""
    wh = _warehouse(url)
    query = (f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {{}}run_audit WHERE status = 'published' "
             "ORDER BY finished_at DESC, started_at DESC LIMIT 1")
    if wh.dialect == "postgresql":
        with _pg_connect(wh) as conn:
            if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.run_audit",)).fetchone()[0] is None:
                return None
            row = conn.execute(query.format(SCHEMA + ".")).fetchone()
        if row is None:
            return None
        return dict(zip(AUDIT_COLUMNS, row))
    if wh.path is None or not wh.path.exists():
        return None
    con = _sqlite_connect(wh)
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_audit'").fetchone() is None:
            return None
        row = con.execute(query.format("")).fetchone()
    finally:
        con.close()
    if row is None:
        return None
    found = dict(zip(AUDIT_COLUMNS, row))
    found["as_of"] = dt.date.fromisoformat(found["as_of"])
    for key in ("started_at", "finished_at"):
        found[key] = dt.datetime.fromisoformat(found[key]) if found[key] else None
    for key in ("row_counts", "accepted_changes"):
        found[key] = json.loads(found[key]) if found[key] else None
    return found


def read_table(url: str, table: str) -> list[tuple]:
    """Every row of a published table as tuples in the registry's column order (JSON as text)."""
    if table not in TABLES:
        raise UsageError(f"no published table {table!r}")
    wh = _warehouse(url)
    spec = TABLES[table]
    if wh.dialect == "postgresql":
        cols = ", ".join(f"{c.name}::text" if c.type == "json" else c.name for c in spec.columns)
        with _pg_connect(wh) as conn:
            return conn.execute(f"SELECT {cols} FROM {SCHEMA}.{table}").fetchall()
    con = _sqlite_connect(wh)
    try:
        return con.execute(f"SELECT {', '.join(spec.column_names)} FROM {table}").fetchall()
    finally:
        con.close()


def _open_inputs(tables: Mapping[str, object]) -> dict[str, pq.ParquetFile]:
    """Open and schema-check every input before anything is written."""
    unknown = sorted(set(tables) - set(PUBLISHED_TABLES))
    if unknown:
        raise ZerocertError(f"no published table named {unknown[0]!r}")
    missing = [name for name in PUBLISHED_TABLES if name not in tables and name not in OPTIONAL_TABLES]
    if missing:
        raise ZerocertError(f"a run publishes every table at once; no input for {missing[0]!r}")
    absent = [name for name in PUBLISHED_TABLES if name not in tables]
    if absent:
        log.warning("this run provides no %s: published empty (district readers and analysts see "
                    "nothing there until a run provides them)", ", ".join(absent))
    files = {}
    for name in PUBLISHED_TABLES:
        if name not in tables:
            files[name] = _empty_parquet(TABLES[name])
            continue
        path = Path(tables[name])
        try:
            files[name] = pq.ParquetFile(path)
        except FileNotFoundError:
            raise ZerocertError(f"table {name}: Parquet file not found: {path}") from None
        except (pa.ArrowInvalid, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZerocertError(f"table {name}: cannot read Parquet file {path}: {detail}") from None
        check_input_schema(TABLES[name], files[name].schema_arrow)
    return files


def _empty_parquet(table: Table) -> pq.ParquetFile:
    """An in-memory Parquet file with the table's columns and no rows."""
    sink = pa.BufferOutputStream()
    pq.write_table(arrow_schema(table).empty_table(), sink)
    return pq.ParquetFile(pa.BufferReader(sink.getvalue()))


def _batches(table: Table, source: pq.ParquetFile, run_id: str, *,
             key_order: bool = False) -> Iterator[pa.RecordBatch]:
    """Conformed batches, streamed; or the whole file sorted by its primary key.

    SQLite maintains a primary key while inserting: in key order that is an append, in random
    order a B-tree search per row (twice as slow at a million rows).
    """
    if not (key_order and table.primary_key):
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            yield conform_batch(table, batch, run_id)
        return
    whole = source.read()
    order = pc.sort_indices(whole.select(list(table.primary_key)),
                            sort_keys=[(column, "ascending") for column in table.primary_key])
    for start in range(0, len(order), BATCH_ROWS):  # no second, sorted copy of the table
        chunk = whole.take(order.slice(start, BATCH_ROWS)).combine_chunks()
        for batch in chunk.to_batches():
            yield conform_batch(table, batch, run_id)


def publish_run(url: str, run: Mapping[str, object], tables: Mapping[str, Path | str], *,
                swap_timeout: float = 120.0) -> None:
    """Publish one run's tables (name -> Parquet path) atomically and mark run_audit published.

    Every table of ``PUBLISHED_TABLES`` must be given. On any failure the transaction rolls
    back, the previous run stays readable, the attempt is recorded ``failed`` with its reason
    and a ``ZerocertError`` is raised. ``swap_timeout`` bounds how long the final switch waits
    for readers holding the old tables (PostgreSQL).
    """
    run = _normalize_run(run)
    wh = _warehouse(url)
    ensure_warehouse(url)
    _write_audit(wh, run, "started")
    started = time.monotonic()
    files: dict[str, pq.ParquetFile] = {}
    try:
        files = _open_inputs(tables)
        if wh.dialect == "postgresql":
            counts = _publish_postgresql(wh, run, files, swap_timeout)
        else:
            counts = _publish_sqlite(wh, run, files)
    except BaseException as exc:
        reason = _reason(exc)
        try:
            _write_audit(wh, run, "failed", reason)
        except Exception as audit_exc:  # the original failure matters more
            log.error("could not record the failure of run %s: %s", run["run_id"],
                      mask_ids_in(str(audit_exc)))
        if not isinstance(exc, Exception) or isinstance(exc, ZerocertError):
            raise
        raise ZerocertError(f"publish of run {run['run_id']} failed: {reason}") from exc
    finally:
        for source in files.values():
            source.close()
    log.info("run %s published: %d rows in %d tables in %.1f s", run["run_id"],
             sum(counts.values()), len(counts), time.monotonic() - started)


@contextmanager
def _loading(name: str) -> Iterator[None]:
    """Name the table (and, for COPY, the line and column) in any failure while loading it."""
    try:
        yield
    except ZerocertError:
        raise
    except Exception as exc:
        context = getattr(getattr(exc, "diag", None), "context", None) or ""
        where = re.search(r"line \d+(, column \w+)?", context)
        place = f"table {name}" + (f", {where.group()}" if where else "")
        raise ZerocertError(f"{place}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """One masked line: database errors keep only their primary message (DETAIL quotes keys)."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    return mask_ids_in(text if isinstance(exc, ZerocertError) else f"{type(exc).__name__}: {text}")


# --- PostgreSQL ----------------------------------------------------------------------------

_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=BATCH_ROWS)


def _copy_into(cur, table: Table, qualified: str, source: pq.ParquetFile, run_id: str) -> int:
    """Stream a Parquet file into a table with COPY, as CSV rendered by Arrow (nulls unquoted).

    Arrow's CSV writer quotes every string, so an empty string stays distinct from NULL and a
    ``\\.`` value cannot end the data early.
    """
    rows = 0
    sql = (f"COPY {qualified} ({', '.join(table.column_names)}) FROM STDIN "
           "(FORMAT csv, FREEZE, ENCODING 'UTF8')")
    with cur.copy(sql) as copy:
        for batch in _batches(table, source, run_id):
            buffer = io.BytesIO()
            pa_csv.write_csv(batch, buffer, _CSV)
            copy.write(buffer.getbuffer())
            rows += batch.num_rows
    return rows


def _publish_postgresql(wh: _Warehouse, run: dict, files: Mapping[str, pq.ParquetFile],
                        swap_timeout: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    with _pg_connect(wh) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
        if not cur.fetchone()[0]:  # one publish at a time: the later one waits, then wins
            log.info("another publish is running on this warehouse; waiting for it to finish")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
        cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds sort in memory
        cur.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
        for name in PUBLISHED_TABLES:
            table, staged = TABLES[name], f"{STAGE_SCHEMA}.{name}"
            began = time.monotonic()
            with _loading(name):
                cur.execute(render_create_table(table, "postgresql", staged, with_primary_key=False))
                counts[name] = _copy_into(cur, table, staged, files[name], run["run_id"])
                copied = time.monotonic()
                if table.primary_key:
                    cur.execute(f"ALTER TABLE {staged} ADD CONSTRAINT {name}_pkey "
                                f"PRIMARY KEY ({', '.join(table.primary_key)})")
                for ddl in render_indexes(table, staged):
                    cur.execute(ddl)
                cur.execute(f"ANALYZE {staged}")
            _log_load(name, counts[name], copied - began, time.monotonic() - copied)
        _swap_postgresql(cur, swap_timeout)
        _write_audit(wh, run, "published", row_counts=counts, cursor=cur)
    return counts


def _swap_postgresql(cur, swap_timeout: float) -> None:
    """Replace every live table by its staged successor; the caller's COMMIT makes it visible.

    Locks are taken so that the publish never waits while holding another live table: it waits
    (briefly) on one busy table alone, then takes the rest with NOWAIT; if one of those is busy
    it lets everything go and next waits on that one. A reader holding table A while asking for
    B therefore never deadlocks with the publish, and with readers that touch tables in a fixed
    order this settles on their first table within a few rounds.
    """
    import psycopg

    deadline = time.monotonic() + swap_timeout
    wait_ms, first, attempts, began = 100, PUBLISHED_TABLES[0], 0, time.monotonic()
    cur.execute("SAVEPOINT swap")
    while True:
        busy, attempts = first, attempts + 1
        try:
            cur.execute(f"SET LOCAL lock_timeout = '{wait_ms}ms'")
            cur.execute(f"LOCK TABLE {SCHEMA}.{first} IN ACCESS EXCLUSIVE MODE")
            for name in PUBLISHED_TABLES:
                if name != first:
                    busy = name
                    cur.execute(f"LOCK TABLE {SCHEMA}.{name} IN ACCESS EXCLUSIVE MODE NOWAIT")
            break
        except psycopg.errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT swap")
            if time.monotonic() > deadline:
                raise ZerocertError(f"readers kept the warehouse tables busy for {swap_timeout:.0f} s;"
                                    " the previous run stays published") from None
            if busy == first:  # readers hold it longer than we waited: wait longer next time
                wait_ms = min(1000, wait_ms * 3 // 2)
            first = busy
    log.info("live tables locked for the switch after %d attempt(s), %.2f s", attempts,
             time.monotonic() - began)
    cur.execute("SET LOCAL lock_timeout = 0")
    for name in PUBLISHED_TABLES:
        _carry_access(cur, f"{SCHEMA}.{name}", f"{STAGE_SCHEMA}.{name}")
        cur.execute(f"DROP TABLE {SCHEMA}.{name}")
        cur.execute(f"ALTER TABLE {STAGE_SCHEMA}.{name} SET SCHEMA {SCHEMA}")
    cur.execute(f"DROP SCHEMA {STAGE_SCHEMA}")


def _quote_role(cur, oid: int) -> str:
    if oid == 0:
        return "PUBLIC"
    cur.execute("SELECT quote_ident(rolname) FROM pg_roles WHERE oid = %s", (oid,))
    return cur.fetchone()[0]


def _carry_access(cur, live: str, successor: str) -> None:
    """Give ``successor`` the owner, privileges, RLS switches and policies of ``live``."""
    cur.execute("""SELECT c.relowner, c.relowner = (SELECT oid FROM pg_roles
                          WHERE rolname = current_user), c.relrowsecurity, c.relforcerowsecurity,
                          c.relacl IS NOT NULL
                   FROM pg_class c WHERE c.oid = %s::regclass""", (live,))
    owner, owned_by_me, rls, force_rls, has_acl = cur.fetchone()
    if has_acl:
        cur.execute("""SELECT a.grantee, a.privilege_type, a.is_grantable
                       FROM pg_class c, aclexplode(c.relacl) a
                       WHERE c.oid = %s::regclass AND a.grantee <> c.relowner""", (live,))
        for grantee, privilege, grantable in cur.fetchall():
            cur.execute(f"GRANT {privilege} ON {successor} TO {_quote_role(cur, grantee)}"
                        + (" WITH GRANT OPTION" if grantable else ""))
    cur.execute("""SELECT quote_ident(t.attname), a.grantee, a.privilege_type, a.is_grantable
                   FROM pg_attribute t, aclexplode(t.attacl) a
                   WHERE t.attrelid = %s::regclass AND t.attacl IS NOT NULL""", (live,))
    for column, grantee, privilege, grantable in cur.fetchall():
        cur.execute(f"GRANT {privilege} ({column}) ON {successor} TO {_quote_role(cur, grantee)}"
                    + (" WITH GRANT OPTION" if grantable else ""))
    if rls:
        cur.execute(f"ALTER TABLE {successor} ENABLE ROW LEVEL SECURITY")
    if force_rls:
        cur.execute(f"ALTER TABLE {successor} FORCE ROW LEVEL SECURITY")
    cur.execute("""SELECT quote_ident(polname), polpermissive, polcmd,
                          pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid),
                          polroles
                   FROM pg_policy WHERE polrelid = %s::regclass""", (live,))
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    for policy, permissive, command, using, check, roles in cur.fetchall():
        to = ", ".join(_quote_role(cur, r) for r in roles) or "PUBLIC"
        sql = (f"CREATE POLICY {policy} ON {successor} AS "
               f"{'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {commands[command]} TO {to}")
        sql += f" USING ({using})" if using else ""
        sql += f" WITH CHECK ({check})" if check else ""
        cur.execute(sql)
    if not owned_by_me:
        cur.execute(f"ALTER TABLE {successor} OWNER TO {_quote_role(cur, owner)}")


# --- SQLite --------------------------------------------------------------------------------

def _sqlite_rows(batch: pa.RecordBatch) -> Iterator[tuple]:
    columns = []
    for arr in batch.columns:
        if pa.types.is_date(arr.type):
            arr = arr.cast(pa.string())  # ISO dates as text, what SQLite's date functions read
        columns.append(arr.to_pylist())
    return zip(*columns)


def _publish_sqlite(wh: _Warehouse, run: dict, files: Mapping[str, pq.ParquetFile]) -> dict[str, int]:
    counts: dict[str, int] = {}
    # 256 MiB of cache: a whole run's pages stay in memory
    with _sqlite_write(wh, "PRAGMA cache_size = -262144") as con:
        for name in PUBLISHED_TABLES:
            table, staged = TABLES[name], f"{name}__new"
            began = time.monotonic()
            con.execute(f"DROP TABLE IF EXISTS {staged}")
            con.execute(render_create_table(table, "sqlite", staged))
            insert = (f"INSERT INTO {staged} ({', '.join(table.column_names)}) "
                      f"VALUES ({', '.join('?' * len(table.columns))})")
            counts[name] = 0
            with _loading(name):
                for batch in _batches(table, files[name], run["run_id"], key_order=True):
                    con.executemany(insert, _sqlite_rows(batch))
                    counts[name] += batch.num_rows
            _log_load(name, counts[name], time.monotonic() - began)
        for name in PUBLISHED_TABLES:
            con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute(f"ALTER TABLE {name}__new RENAME TO {name}")
            for ddl in render_indexes(TABLES[name], name):
                con.execute(ddl)
        _write_audit(wh, run, "published", row_counts=counts, cursor=con)
    return counts


def _log_load(name: str, rows: int, seconds: float, indexing: float = 0.0) -> None:
    log.info("staged %s: %d rows loaded in %.2f s (%.0f rows/s), keys and indexes %.2f s", name,
             rows, seconds, rows / seconds if seconds > 0 else float("inf"), indexing)
