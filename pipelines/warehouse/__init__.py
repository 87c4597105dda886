"""The warehouse: load a run's tables and switch them in atomically, one backend per dialect.

Readers see the whole previous run or the whole new one, never a mix, and a failed publish
leaves the previous run in place. ``warehouse_for(url)`` picks the backend from the URL
(``sqlite:///file.db``: ``sqlite.py``; ``postgresql://`` or Airflow's ``postgres://``:
``postgresql.py``); each backend says how it keeps that promise. What they share -- the
migrations (``common.MIGRATIONS_DIR``), the run record, the run_audit row and the Parquet
inputs -- is in ``common.py``. Callers use the functions below and never ask for a dialect.

Readers query plain table names in schema ``zerocert`` on PostgreSQL (qualify them or
``SET search_path = zerocert``; with SQLAlchemy, ``?options=-csearch_path%3Dzerocert``) and in
the main database on SQLite.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipelines.errors import UsageError, ZerocertError
from pipelines.warehouse.common import ABANDONED_REASON, failure_reason, normalize_run, open_inputs
from pipelines.warehouse.postgresql import PUBLISH_LOCK, PostgreSQLWarehouse
from pipelines.warehouse.sqlite import SQLiteWarehouse
from pipelines.warehouse_schema import TABLES, Table, mask_ids_in

__all__ = [
    "PUBLISH_LOCK",
    "PostgreSQLWarehouse",
    "SQLiteWarehouse",
    "Warehouse",
    "ensure_warehouse",
    "live_columns",
    "mark_run_abandoned",
    "postgresql_warehouse",
    "publish_run",
    "read_current_run",
    "read_table",
    "record_failed_run",
    "record_started_run",
    "warehouse_for",
]

log = logging.getLogger(__name__)


class Warehouse(Protocol):
    """What a backend does; run records given to it are already normalised (``normalize_run``)."""

    def ensure(self) -> None:
        """Apply pending migrations and create every missing published table (empty)."""

    def write_audit(
        self, run: dict, status: str, reason: str | None = None, row_counts: Mapping[str, int] | None = None
    ) -> None:
        """Insert or update the attempt's run_audit row; a published row is never turned failed."""

    def mark_abandoned(self, started_at: dt.datetime, reason: str) -> bool:
        """Turn the attempt's ``started`` rows ``abandoned``; True when there was one."""

    def current_run(self) -> dict | None:
        """The newest published run_audit row, typed; None before the first publish."""

    def rows(self, table: Table) -> list[tuple]:
        """Every row of a published table in the registry's column order (JSON as text)."""

    def live_columns(self, table: str) -> list[str]:
        """The column names the live table has now, in order."""

    def publish(self, run: dict, files: Mapping[str, pq.ParquetFile], swap_timeout: float) -> dict[str, int]:
        """Load every table and switch them in with run_audit marked published, in one
        transaction; table name -> rows."""


def warehouse_for(url: str) -> Warehouse:
    """The backend of a warehouse URL; anything but a PostgreSQL database or a SQLite file is
    a usage error."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"not a warehouse URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):  # Airflow connections say postgres://
        info = {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "dbname": parsed.database,
        }
        info.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
        return PostgreSQLWarehouse({k: v for k, v in info.items() if v is not None})
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UsageError("the SQLite warehouse must be a file (sqlite:///path/to/file.db)")
        return SQLiteWarehouse(Path(parsed.database))
    raise UsageError(f"unsupported warehouse database {backend!r}: use postgresql or sqlite")


def postgresql_warehouse(url: str, refusal: str) -> PostgreSQLWarehouse:
    """The PostgreSQL warehouse of ``url``, for what only PostgreSQL has (roles, lookup functions,
    their audit); any other warehouse is refused with ``refusal`` as the usage error."""
    warehouse = warehouse_for(url)
    if not isinstance(warehouse, PostgreSQLWarehouse):
        raise UsageError(refusal)
    return warehouse


def ensure_warehouse(url: str) -> None:
    """Create or migrate the warehouse schema; safe to call any number of times, concurrently.

    Applies the versioned migrations not yet recorded in ``schema_version`` and creates any
    published table that does not exist yet (empty), so readers and grants have tables to
    point at before the first run.
    """
    warehouse_for(url).ensure()


def record_started_run(url: str, run: Mapping[str, object]) -> None:
    """Record that a run began (status ``started``), so an abandoned run still leaves a trace."""
    warehouse = warehouse_for(url)
    warehouse.ensure()
    warehouse.write_audit(normalize_run(run), "started")


def record_failed_run(url: str, run: Mapping[str, object], reason: str) -> None:
    """Mark a run ``failed`` with its reason (IDs masked); the published tables are not touched."""
    warehouse = warehouse_for(url)
    warehouse.ensure()
    warehouse.write_audit(normalize_run(run), "failed", mask_ids_in(str(reason))[:2000])


def mark_run_abandoned(url: str, started_at: dt.datetime) -> bool:
    """Turn the ``started`` run_audit rows of an attempt that began at ``started_at`` into
    ``abandoned`` (it was killed); True when there was one. A SQLite warehouse that does not
    exist yet is left uncreated."""
    return warehouse_for(url).mark_abandoned(started_at, ABANDONED_REASON)


def read_current_run(url: str) -> dict | None:
    """The run_audit row of the run the published tables hold, or None before the first publish."""
    return warehouse_for(url).current_run()


def read_table(url: str, table: str) -> list[tuple]:
    """Every row of a published table as tuples in the registry's column order (JSON as text)."""
    if table not in TABLES:
        raise UsageError(f"no published table {table!r}")
    return warehouse_for(url).rows(TABLES[table])


def live_columns(url: str, table: str) -> list[str]:
    """The columns a published table has in the warehouse now (a release may have changed them)."""
    return warehouse_for(url).live_columns(table)


def publish_run(
    url: str, run: Mapping[str, object], tables: Mapping[str, Path | str], *, swap_timeout: float = 120.0
) -> dict[str, int]:
    """Publish one run's tables (name -> Parquet path) atomically and mark run_audit published;
    returns the rows loaded per table.

    Every table of ``PUBLISHED_TABLES`` must be given. On any failure the transaction rolls
    back, the previous run stays readable, the attempt is recorded ``failed`` with its reason
    and a ``ZerocertError`` is raised. ``swap_timeout`` bounds how long the final switch waits
    for readers holding the old tables (PostgreSQL).
    """
    run = normalize_run(run)
    warehouse = warehouse_for(url)
    warehouse.ensure()
    warehouse.write_audit(run, "started")
    started = time.monotonic()
    files: dict[str, pq.ParquetFile] = {}
    try:
        files = open_inputs(tables)
        counts = warehouse.publish(run, files, swap_timeout)
    except BaseException as exc:
        reason = failure_reason(exc)
        try:
            warehouse.write_audit(run, "failed", reason)
        except Exception as audit_exc:  # the original failure matters more
            log.error("could not record the failure of run %s: %s", run["run_id"], mask_ids_in(str(audit_exc)))
        if not isinstance(exc, Exception) or isinstance(exc, ZerocertError):
            raise
        raise ZerocertError(f"publish of run {run['run_id']} failed: {reason}") from exc
    finally:
        for source in files.values():
            source.close()
    log.info(
        "run %s published: %d rows in %d tables in %.1f s; rows per table: %s",
        run["run_id"],
        sum(counts.values()),
        len(counts),
        time.monotonic() - started,
        ", ".join(f"{name} {rows}" for name, rows in counts.items()),
    )
    return counts
