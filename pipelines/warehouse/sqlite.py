"""The SQLite warehouse: one file in WAL mode, published tables in the main database.

A publish first writes the run's Arrow batches into private scratch databases through ADBC's
SQLite driver (bound in C, no Python object per row), ``SCRATCH_FILES`` of them at once on
separate threads, each table with its indexes built there. Then one ``BEGIN IMMEDIATE``
transaction drops each live table, creates it anew with its indexes and copies the scratch
table in with ``INSERT ... SELECT *``: with the same DDL and indexes on both sides SQLite copies
the records and every index's entries in order without decoding them or sorting again (its
transfer optimization), so no index is built in the one writing transaction. Readers keep their
snapshot of the old run until COMMIT, so they see the whole previous run or the whole new one.
Dates and timestamps are stored as ISO text, JSON as text, booleans as 0/1.

The ADBC driver carries its own copy of SQLite; two copies in one process must never open the
same file (their POSIX locks undo each other), so ADBC only ever opens the scratch files, closed
before ``sqlite3`` attaches them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import ZerocertError
from pipelines.warehouse.common import (
    AUDIT_COLUMNS,
    audit_upsert,
    audit_values,
    batches,
    current_run_query,
    loading,
    log_load,
    now,
    pending_migrations,
)
from pipelines.warehouse_schema import PUBLISHED_TABLES, TABLES, Table, render_create_table, render_indexes

log = logging.getLogger(__name__)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (``executescript`` would COMMIT first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not all(not ln.strip() or ln.strip().startswith("--") for ln in pending.splitlines()):
        raise ZerocertError("incomplete SQL statement at the end of a migration file")


def _stored(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch as SQLite stores it: ISO dates as text, what SQLite's date functions read."""
    return pa.RecordBatch.from_arrays(
        [arr.cast(pa.string()) if pa.types.is_date(arr.type) else arr for arr in batch.columns],
        names=batch.schema.names,
    )


PAGE_BYTES = 16384
"""A new warehouse's page size. Against SQLite's default 4096, a publish writes a quarter of the
pages (each into the WAL, then again at the checkpoint): copying and committing the 3 M city's
citizen and employment tables (1.9 GB) took 12.4 s instead of 21.4 s."""

SCRATCH_FILES = 2
"""Scratch files written at once, each by its own thread and ADBC connection (the driver binds
and inserts without the GIL), so reading, sorting and inserting use both cores."""


def _load_scratch(scratch: Path, names: list[str], files: Mapping[str, pq.ParquetFile], run_id: str) -> dict:
    """Write the ``names`` tables into one private scratch file, in primary-key order;
    name -> (rows, seconds).

    Each table has the warehouse's DDL and indexes (a key-ordered load appends to its primary key;
    the indexes are built after the rows), which lets the copy into the warehouse transfer
    records, keys and index entries as they are.
    """
    import adbc_driver_sqlite.dbapi

    loaded = {}
    with adbc_driver_sqlite.dbapi.connect(str(scratch), autocommit=True) as con, con.cursor() as cur:
        for pragma in ("PRAGMA journal_mode = OFF", "PRAGMA synchronous = OFF"):  # throwaway file
            cur.execute(pragma)
            cur.fetchall()
        cur.execute("BEGIN")
        for name in names:
            table, began, rows = TABLES[name], time.monotonic(), 0
            with loading(name):
                cur.execute(render_create_table(table, "sqlite", name))
                for batch in batches(table, files[name], run_id, key_order=True):
                    if batch.num_rows:
                        cur.adbc_ingest(name, _stored(batch), mode="append")
                    rows += batch.num_rows
                for ddl in render_indexes(table, name):
                    cur.execute(ddl)
            loaded[name] = (rows, time.monotonic() - began)
        cur.execute("COMMIT")
    return loaded


def _load_scratches(folder: Path, files: Mapping[str, pq.ParquetFile], run_id: str) -> dict[str, tuple]:
    """Every table into one of ``SCRATCH_FILES`` scratch files, loaded at once, the tables dealt
    largest first to the file with the fewest rows so far; name -> (scratch index, rows, seconds).

    A failure is raised for the first failing table in ``PUBLISHED_TABLES`` order.
    """
    shares: list[list[str]] = [[] for _ in range(SCRATCH_FILES)]
    weight = [0] * SCRATCH_FILES
    for name in sorted(PUBLISHED_TABLES, key=lambda name: -files[name].metadata.num_rows):
        lightest = weight.index(min(weight))
        shares[lightest].append(name)
        weight[lightest] += files[name].metadata.num_rows
    results: list[dict | BaseException] = [{} for _ in shares]

    def load(i: int) -> None:
        try:
            results[i] = _load_scratch(folder / f"load{i}.sqlite", shares[i], files, run_id)
        except BaseException as exc:  # re-raised below
            results[i] = exc

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(len(shares)) if shares[i]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [result for result in results if isinstance(result, BaseException)]
    if failed:
        place = {name: i for i, share in enumerate(shares) for name in share}
        first = next(name for name in PUBLISHED_TABLES if isinstance(results[place[name]], BaseException))
        raise results[place[first]]
    return {name: (i, *results[i][name]) for i, share in enumerate(shares) for name in share}


@dataclass(frozen=True)
class SQLiteWarehouse:
    """A SQLite warehouse file (``sqlite:///path/to/file.db``)."""

    path: Path

    def connect(self) -> sqlite3.Connection:
        """An autocommit connection (the parent folder is created), waiting up to a minute for locks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    @contextmanager
    def _write(self, *pragmas: str, attach: Sequence[Path] = ()) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back on any error.

        ``attach`` are database files readable as schemas ``scratch0``, ``scratch1``.. within it.
        """
        con = self.connect()
        try:
            for pragma in pragmas:
                con.execute(pragma)
            for i, path in enumerate(attach):
                con.execute(f"ATTACH DATABASE ? AS scratch{i}", (str(path),))
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def ensure(self) -> None:
        # WAL: readers keep reading the old run during a publish. The page size takes effect
        # only in a new file (an existing warehouse keeps its own).
        with self._write(f"PRAGMA page_size = {PAGE_BYTES}", "PRAGMA journal_mode = WAL") as con:
            con.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)""")
            applied = {row[0] for row in con.execute("SELECT version FROM schema_version")}
            for version, name, sql in pending_migrations("sqlite", applied):
                for statement in _statements(sql):
                    con.execute(statement)
                con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, _iso(now())))
                log.info("warehouse migration %04d_%s applied", version, name)
            for table in TABLES.values():
                con.execute(render_create_table(table, "sqlite", table.name, if_not_exists=True))
                for ddl in render_indexes(table, table.name, if_not_exists=True):
                    con.execute(ddl)

    def write_audit(
        self,
        run: dict,
        status: str,
        reason: str | None = None,
        row_counts: Mapping[str, int] | None = None,
        *,
        cursor: sqlite3.Connection | None = None,
    ) -> None:
        values = audit_values(run, status, reason, row_counts)
        finished = values[4]
        values = (
            values[0],
            values[1].isoformat(),
            values[2],
            _iso(values[3]),
            None if finished is None else _iso(finished),
            *values[5:],
        )
        sql = audit_upsert("run_audit", "?", status)
        if cursor is not None:
            cursor.execute(sql, values)
            return
        con = self.connect()
        try:
            con.execute(sql, values)
        finally:
            con.close()

    def mark_abandoned(self, started_at: dt.datetime, reason: str) -> bool:
        if not self.path.exists():
            return False
        self.ensure()
        with self._write() as con:
            done = con.execute(
                "UPDATE run_audit SET status = 'abandoned', finished_at = ?, reason = ? "
                "WHERE status = 'started' AND started_at = ?",
                (_iso(now()), reason, _iso(started_at)),
            ).rowcount
        return bool(done)

    def current_run(self) -> dict | None:
        if not self.path.exists():
            return None
        con = self.connect()
        try:
            if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_audit'").fetchone() is None:
                return None
            row = con.execute(current_run_query("run_audit")).fetchone()
        finally:
            con.close()
        if row is None:
            return None
        found = dict(zip(AUDIT_COLUMNS, row))
        found["as_of"] = dt.date.fromisoformat(found["as_of"])
        for key in ("started_at", "finished_at"):
            found[key] = dt.datetime.fromisoformat(found[key]) if found[key] else None
        for key in ("row_counts", "accepted_changes", "warnings"):
            found[key] = json.loads(found[key]) if found[key] else None
        return found

    def rows(self, table: Table) -> list[tuple]:
        con = self.connect()
        try:
            return con.execute(f"SELECT {', '.join(table.column_names)} FROM {table.name}").fetchall()
        finally:
            con.close()

    def live_columns(self, table: str) -> list[str]:
        con = self.connect()
        try:
            return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]
        finally:
            con.close()

    def publish(self, run: dict, files: Mapping[str, pq.ParquetFile], swap_timeout: float) -> dict[str, int]:
        """Load and switch in one transaction (``swap_timeout`` is PostgreSQL's: SQLite readers
        never block the switch)."""
        counts: dict[str, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.path.name}.publish-", dir=self.path.parent) as folder:
            loaded = _load_scratches(Path(folder), files, run["run_id"])
            scratches = [Path(folder) / f"load{i}.sqlite" for i in range(SCRATCH_FILES)]  # an unused one: empty
            # 256 MiB of cache: a whole run's pages stay in memory
            with self._write("PRAGMA cache_size = -262144", attach=scratches) as con:
                for name in PUBLISHED_TABLES:
                    table, began = TABLES[name], time.monotonic()
                    scratch, rows, seconds = loaded[name]
                    with loading(name):
                        con.execute(f"DROP TABLE IF EXISTS main.{name}")
                        con.execute(render_create_table(table, "sqlite", f"main.{name}"))
                        for ddl in render_indexes(table, name):  # main comes first in name lookup
                            con.execute(ddl)
                        con.execute(f"INSERT INTO main.{name} SELECT * FROM scratch{scratch}.{name}")
                    counts[name] = rows
                    log_load(name, rows, seconds, time.monotonic() - began)
                self.write_audit(run, "published", row_counts=counts, cursor=con)
        return counts
