"""What every warehouse backend shares: the migrations, the run record, the run_audit row and
the Parquet inputs of a publish.

Nothing here speaks to a database; the backends (``sqlite.py``, ``postgresql.py``) render these
into their own SQL and their own transactions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.data import data_path
from pipelines.errors import ZerocertError
from pipelines.warehouse_schema import (
    OPTIONAL_TABLES,
    PUBLISHED_TABLES,
    TABLES,
    Table,
    arrow_schema,
    check_input_schema,
    conform_batch,
    mask_ids_in,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = data_path("migrations")
RUN_KEYS = ("run_id", "as_of", "policy_id", "started_at", "code_version")
AUDIT_COLUMNS = (
    "run_id",
    "as_of",
    "policy_id",
    "started_at",
    "finished_at",
    "status",
    "code_version",
    "reason",
    "row_counts",
    "accepted_changes",
    "warnings",
)
BATCH_ROWS = 65_536
ABANDONED_REASON = "ended before it finished (killed or lost); found by the next run"


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Ordered (version, name, sql) from ``warehouse/migrations/<dialect>/NNNN_name.sql``."""
    found = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, _, name = path.stem.partition("_")
        found.append((int(version), name, path.read_text(encoding="utf-8")))
    if not found:
        raise ZerocertError(f"no warehouse migrations found under {MIGRATIONS_DIR / dialect}")
    return found


def pending_migrations(dialect: str, applied: set[int]) -> list[tuple[int, str, str]]:
    """Migrations not applied yet; a warehouse migrated by newer code is refused, not touched."""
    known = migrations(dialect)
    newer = sorted(applied - {version for version, _, _ in known})
    if newer:
        raise ZerocertError(
            f"the warehouse schema is at version {newer[-1]}, newer than this code "
            f"knows ({known[-1][0]}); upgrade zerocert"
        )
    return [m for m in known if m[0] not in applied]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def normalize_run(run: Mapping[str, object]) -> dict:
    """The run description with typed, UTC values; a missing or malformed key is refused."""
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
        started = started.replace(tzinfo=dt.UTC)
    return {
        "run_id": str(run["run_id"]),
        "as_of": as_of,
        "policy_id": str(run["policy_id"]),
        "started_at": started.astimezone(dt.UTC),
        "code_version": str(run["code_version"]),
        "accepted_changes": list(run.get("accepted_changes") or []) or None,
        "warnings": list(run.get("warnings") or []) or None,
    }


def audit_values(run: dict, status: str, reason: str | None, row_counts: Mapping[str, int] | None) -> tuple:
    """The run_audit row of an attempt in ``AUDIT_COLUMNS`` order (JSON as text, IDs masked)."""
    finished = None if status == "started" else now()
    counts = None if row_counts is None else json.dumps(dict(row_counts), sort_keys=True)
    accepted = run.get("accepted_changes")
    accepted = None if not accepted else mask_ids_in(json.dumps(accepted, ensure_ascii=False, sort_keys=True))
    warnings = run.get("warnings")
    warnings = None if not warnings else mask_ids_in(json.dumps(warnings, ensure_ascii=False, sort_keys=True))
    return (
        run["run_id"],
        run["as_of"],
        run["policy_id"],
        run["started_at"],
        finished,
        status,
        run["code_version"],
        reason,
        counts,
        accepted,
        warnings,
    )


def audit_upsert(table: str, placeholder: str, status: str) -> str:
    """INSERT of one run_audit row that updates the attempt's row; a published row is never
    turned failed (only a ``published`` write may overwrite one)."""
    guard = "" if status == "published" else " WHERE run_audit.status <> 'published'"
    return (
        f"INSERT INTO {table} ({', '.join(AUDIT_COLUMNS)}) "
        f"VALUES ({', '.join([placeholder] * len(AUDIT_COLUMNS))}) "
        "ON CONFLICT (run_id, started_at) DO UPDATE SET finished_at = excluded.finished_at, "
        "status = excluded.status, reason = excluded.reason, "
        "row_counts = excluded.row_counts, accepted_changes = excluded.accepted_changes, "
        "warnings = excluded.warnings" + guard
    )


def current_run_query(table: str) -> str:
    """The run_audit row of the run the published tables hold: the last one published."""
    return (
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {table} WHERE status = 'published' "
        "ORDER BY finished_at DESC, started_at DESC LIMIT 1"
    )


def open_inputs(tables: Mapping[str, object]) -> dict[str, pq.ParquetFile]:
    """Open and schema-check every input before anything is written."""
    unknown = sorted(set(tables) - set(PUBLISHED_TABLES))
    if unknown:
        raise ZerocertError(f"no published table named {unknown[0]!r}")
    missing = [name for name in PUBLISHED_TABLES if name not in tables and name not in OPTIONAL_TABLES]
    if missing:
        raise ZerocertError(f"a run publishes every table at once; no input for {missing[0]!r}")
    absent = [name for name in PUBLISHED_TABLES if name not in tables]
    if absent:
        log.warning(
            "this run provides no %s: published empty (district readers and analysts see "
            "nothing there until a run provides them)",
            ", ".join(absent),
        )
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
        check_input_schema(TABLES[name], files[name].schema_arrow, files[name].metadata.num_rows)
    return files


def _empty_parquet(table: Table) -> pq.ParquetFile:
    """An in-memory Parquet file with the table's columns and no rows."""
    return in_memory_parquet(arrow_schema(table).empty_table())


def in_memory_parquet(rows: pa.Table) -> pq.ParquetFile:
    """Rows written as Parquet into memory and opened again, as a publish opens its inputs."""
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink)
    return pq.ParquetFile(pa.BufferReader(sink.getvalue()))


def batches(table: Table, source: pq.ParquetFile, run_id: str, *, key_order: bool = False) -> Iterator[pa.RecordBatch]:
    """Conformed batches, streamed; with ``key_order``, in primary-key order.

    SQLite maintains a primary key while inserting: in key order that is an append, in random
    order a B-tree search per row (twice as slow at a million rows). The engine's and the marts'
    large tables are written in key order already: those are streamed as they are; any other
    is read whole and sorted.
    """
    if not (key_order and table.primary_key) or in_key_order(source, table.primary_key):
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            yield conform_batch(table, batch, run_id)
        return
    whole = source.read()
    order = pc.sort_indices(
        whole.select(list(table.primary_key)), sort_keys=[(column, "ascending") for column in table.primary_key]
    )
    for start in range(0, len(order), BATCH_ROWS):  # no second, sorted copy of the table
        chunk = whole.take(order.slice(start, BATCH_ROWS)).combine_chunks()
        for batch in chunk.to_batches():
            yield conform_batch(table, batch, run_id)


def in_key_order(source: pq.ParquetFile, keys: Sequence[str]) -> bool:
    """Whether the rows run in ascending order of ``keys`` (equal keys allowed), compared as
    SQLite's BINARY collation does (text by its UTF-8 bytes); beside a missing key value they
    are not (so is a key column with no values at all). Reads the key columns a batch at a time,
    each with the row before it."""
    if any(pa.types.is_null(source.schema_arrow.field(key).type) for key in keys):
        return False
    last = None
    for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=list(keys)):
        rows = pa.Table.from_batches([batch])
        rows = rows if last is None else pa.concat_tables([last, rows])
        before, after = rows.slice(0, max(rows.num_rows - 1, 0)), rows.slice(1)
        ordered = pc.less_equal(before.column(keys[-1]), after.column(keys[-1]))
        for key in reversed(keys[:-1]):  # (a1, a2) <= (b1, b2): a1 < b1, or a1 = b1 and a2 <= b2
            a, b = before.column(key), after.column(key)
            ordered = pc.or_(pc.less(a, b), pc.and_(pc.equal(a, b), ordered))
        if not pc.all(ordered.fill_null(False), min_count=0).as_py():
            return False
        last = rows.slice(rows.num_rows - 1) if rows.num_rows else last
    return True


@contextmanager
def loading(name: str) -> Iterator[None]:
    """Name the table (and, for COPY, the line and column) in any failure while loading it."""
    try:
        yield
    except ZerocertError:
        raise
    except Exception as exc:
        context = getattr(getattr(exc, "diag", None), "context", None) or ""
        where = re.search(r"line \d+(, column \w+)?", context)
        place = f"table {name}" + (f", {where.group()}" if where else "")
        raise ZerocertError(f"{place}: {failure_reason(exc)}") from exc


def failure_reason(exc: BaseException) -> str:
    """One masked line: database errors keep only their primary message (DETAIL quotes keys)."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    return mask_ids_in(text if isinstance(exc, ZerocertError) else f"{type(exc).__name__}: {text}")


def log_load(name: str, rows: int, seconds: float, indexing: float = 0.0) -> None:
    log.info(
        "staged %s: %d rows loaded in %.2f s (%.0f rows/s), keys and indexes %.2f s",
        name,
        rows,
        seconds,
        rows / seconds if seconds > 0 else float("inf"),
        indexing,
    )
