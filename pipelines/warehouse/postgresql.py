"""The PostgreSQL warehouse: published tables in schema ``zerocert``, loaded with binary COPY
and switched in one transaction.

A publish holds the session advisory lock ``PUBLISH_LOCK`` throughout, so one publish runs at
a time. It recreates the schema ``zerocert_stage`` and loads the tables into it on
``LOAD_CONNECTIONS`` connections at once, each table in its own transaction: created, streamed
in with ``COPY ... (FORMAT binary, FREEZE)`` (the binary tuples built from the Arrow columns,
no Python object per row), then keyed, indexed and ANALYZEd. Nobody reads the stage schema, so
these commits publish nothing. Then one transaction takes ACCESS EXCLUSIVE on every live table
at once (short ``lock_timeout``, retried, so a waiting publish never stalls readers for long and
always loses a deadlock to a reader), drops the old tables, moves the new ones into
``zerocert`` and marks ``run_audit`` published -- all in the same COMMIT. A failure anywhere
drops the stage schema and leaves the live tables as they were. ``FREEZE`` makes the new rows
visible even to a reader whose snapshot predates the load, so a REPEATABLE READ reader that
touches the tables only after the swap still sees the complete new run.

Grants and row-level security: the swap replaces table objects, so before dropping each live
table it copies the table's owner, table and column privileges, RLS switches and policies onto
its successor inside the swap transaction. Whatever the DBA granted on the live tables therefore
survives every publish, and roles see no instant without their privileges. Views over published
tables would pin the old objects and make the drop fail (the publish then fails cleanly); build
reader-facing views as functions or recreate them in a migration instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.errors import UsageError, ZerocertError
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
from pipelines.warehouse_schema import (
    PUBLISHED_TABLES,
    SCHEMA,
    TABLES,
    Table,
    mask_ids_in,
    render_create_table,
    render_indexes,
)

log = logging.getLogger(__name__)

STAGE_SCHEMA = "zerocert_stage"
_MIGRATE_LOCK = 0x7A65_726F_0001  # advisory lock keys ("zero"...)
PUBLISH_LOCK = 0x7A65_726F_0002
"""Advisory lock a publish holds for its whole transaction; hold it to keep publishes out."""

LOAD_CONNECTIONS = 3
"""Tables loaded at once, each on its own connection: the server parses one COPY per backend."""


@dataclass(frozen=True)
class PostgreSQLWarehouse:
    """A PostgreSQL warehouse database (``postgresql://`` or Airflow's ``postgres://``)."""

    conninfo: Mapping[str, object] = field(repr=False)  # psycopg keyword arguments (a password)

    def connect(self):
        """A psycopg connection as the URL's role; a refused connection is one masked line."""
        import psycopg

        try:
            return psycopg.connect(**self.conninfo)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"cannot connect to the warehouse: {mask_ids_in(first)}") from None

    def ensure(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            _default_search_path(cur)
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute(f"SELECT version FROM {SCHEMA}.schema_version")
            applied = {row[0] for row in cur.fetchall()}
            for version, name, sql in pending_migrations("postgresql", applied):
                cur.execute(sql)
                cur.execute(f"INSERT INTO {SCHEMA}.schema_version (version, name) VALUES (%s, %s)", (version, name))
                log.info("warehouse migration %04d_%s applied", version, name)
            for table in TABLES.values():
                cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{table.name}",))
                if cur.fetchone()[0] is None:
                    qualified = f"{SCHEMA}.{table.name}"
                    cur.execute(render_create_table(table, "postgresql", qualified))
                    for ddl in render_indexes(table, qualified):
                        cur.execute(ddl)

    def write_audit(
        self,
        run: dict,
        status: str,
        reason: str | None = None,
        row_counts: Mapping[str, int] | None = None,
        *,
        cursor=None,
    ) -> None:
        values = audit_values(run, status, reason, row_counts)
        sql = audit_upsert(f"{SCHEMA}.run_audit", "%s", status)
        if cursor is not None:
            cursor.execute(sql, values)
            return
        with self.connect() as conn:
            conn.execute(sql, values)

    def mark_abandoned(self, started_at: dt.datetime, reason: str) -> bool:
        self.ensure()
        with self.connect() as conn:
            done = conn.execute(
                f"UPDATE {SCHEMA}.run_audit SET status = 'abandoned', finished_at = %s, "
                "reason = %s WHERE status = 'started' AND started_at = %s",
                (now(), reason, started_at),
            ).rowcount
        return bool(done)

    def current_run(self) -> dict | None:
        with self.connect() as conn:
            if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.run_audit",)).fetchone()[0] is None:
                return None
            row = conn.execute(current_run_query(f"{SCHEMA}.run_audit")).fetchone()
        if row is None:
            return None
        return dict(zip(AUDIT_COLUMNS, row))

    def rows(self, table: Table) -> list[tuple]:
        cols = ", ".join(f"{c.name}::text" if c.type == "json" else c.name for c in table.columns)
        with self.connect() as conn:
            return conn.execute(f"SELECT {cols} FROM {SCHEMA}.{table.name}").fetchall()

    def live_columns(self, table: str) -> list[str]:
        with self.connect() as conn:
            return [
                row[0]
                for row in conn.execute(
                    """SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)
                   AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                    (f"{SCHEMA}.{table}",),
                )
            ]

    def publish(self, run: dict, files: Mapping[str, pq.ParquetFile], swap_timeout: float) -> dict[str, int]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (PUBLISH_LOCK,))
            if not cur.fetchone()[0]:  # one publish at a time: the later one waits, then wins
                log.info("another publish is running on this warehouse; waiting for it to finish")
                cur.execute("SELECT pg_advisory_lock(%s)", (PUBLISH_LOCK,))
            try:
                cur.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
                cur.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
                conn.commit()
                counts = self._load_stage(files, run["run_id"])
                _swap(cur, swap_timeout)
                self.write_audit(run, "published", row_counts=counts, cursor=cur)
                conn.commit()
            except BaseException:
                _drop_stage(conn)
                raise
            finally:
                _unlock(conn)
        return counts

    def _load_stage(self, files: Mapping[str, pq.ParquetFile], run_id: str) -> dict[str, int]:
        """Every table loaded into the stage schema, largest first, on ``LOAD_CONNECTIONS``
        connections at once (one committed transaction per table); name -> rows.

        After the first failure no further table is started; the failure of the first table
        in ``PUBLISHED_TABLES`` order is raised.
        """
        order = sorted(PUBLISHED_TABLES, key=lambda name: -files[name].metadata.num_rows)
        pending = list(reversed(order))
        guard = threading.Lock()
        counts: dict[str, int] = {}
        failures: dict[str, BaseException] = {}

        def work() -> None:
            while True:
                with guard:
                    if failures or not pending:
                        return
                    name = pending.pop()
                try:
                    rows = self._load_table(name, files[name], run_id)
                except BaseException as exc:  # re-raised by the caller
                    with guard:
                        failures[name] = exc
                    return
                with guard:
                    counts[name] = rows

        workers = [threading.Thread(target=work, daemon=True) for _ in range(min(LOAD_CONNECTIONS, len(order)))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if failures:
            raise failures[next(name for name in PUBLISHED_TABLES if name in failures)]
        return {name: counts[name] for name in PUBLISHED_TABLES}

    def _load_table(self, name: str, source: pq.ParquetFile, run_id: str) -> int:
        """One table into the stage schema in its own transaction: created, loaded with binary
        ``COPY ... FREEZE``, then keyed, indexed and analysed; returns its rows."""
        table, staged = TABLES[name], f"{STAGE_SCHEMA}.{name}"
        began = time.monotonic()
        with self.connect() as conn, conn.cursor() as cur, loading(name):
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds sort in memory
            cur.execute(render_create_table(table, "postgresql", staged, with_primary_key=False))
            rows = _copy_into(cur, table, staged, source, run_id)
            copied = time.monotonic()
            if table.primary_key:
                cur.execute(
                    f"ALTER TABLE {staged} ADD CONSTRAINT {name}_pkey PRIMARY KEY ({', '.join(table.primary_key)})"
                )
            for ddl in render_indexes(table, staged):
                cur.execute(ddl)
            cur.execute(f"ANALYZE {staged}")
            conn.commit()
        log_load(name, rows, copied - began, time.monotonic() - copied)
        return rows


def _drop_stage(conn) -> None:
    """After a failed publish: no half-loaded stage schema is left behind (best effort)."""
    try:
        conn.rollback()
        conn.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
        conn.commit()
    except Exception as exc:  # noqa: BLE001 - the publish's own failure matters more
        log.warning("could not drop the stage schema %s: %s", STAGE_SCHEMA, type(exc).__name__)


def _unlock(conn) -> None:
    try:
        conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(%s)", (PUBLISH_LOCK,))
        conn.commit()
    except Exception:  # noqa: BLE001 - closing the connection releases it anyway
        pass


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
        log.warning(
            "could not set the database search_path (%s); readers must qualify tables as %s.<table>",
            type(exc).__name__,
            SCHEMA,
        )


_PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's day 0, in days since 1970-01-01
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.binary())  # field length -1


def _prefixed(values: np.ndarray) -> pa.Array:
    """Big-endian fixed-width values as binary fields, each behind its 4-byte length."""
    n, width = len(values), values.dtype.itemsize
    out = np.empty((n, 4 + width), dtype=np.uint8)
    out[:, :4] = np.array([width], dtype=">i4").view(np.uint8)
    out[:, 4:] = values.view(np.uint8).reshape(n, width)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + width), n, [None, pa.py_buffer(out)]).cast(pa.binary())


def _binary_fields(kind: str, arr: pa.Array) -> list[pa.Array]:
    """One column as PostgreSQL binary COPY fields (length, then the type's send format), as
    pieces the row join concatenates: a text's 4-byte length and its bytes stay two pieces, so
    each value is copied once, into its row."""
    if kind in ("text", "json"):
        data = arr.cast(pa.binary())
        if kind == "json":  # jsonb's binary format: version 1, then the JSON text
            data = pc.binary_join_element_wise(pa.scalar(b"\x01", pa.binary()), data, b"")
        lengths = pc.fill_null(pc.binary_length(data), -1).to_numpy().astype(">i4")
        header = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(arr), [None, pa.py_buffer(lengths)])
        return [header.cast(pa.binary()), pc.fill_null(data, b"") if data.null_count else data]
    if kind == "date":
        values = (pc.fill_null(arr.cast(pa.int32()), 0).to_numpy() - _PG_EPOCH_DAYS).astype(">i4")
    elif kind == "bool":
        values = pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(np.uint8)
    elif kind == "int":
        values = pc.fill_null(arr, 0).to_numpy().astype(">i8")
    elif kind == "double":
        values = pc.fill_null(arr, 0.0).to_numpy().astype(">f8")
    else:
        raise AssertionError(kind)
    fields = _prefixed(values)
    return [pc.if_else(arr.is_valid(), fields, _NULL_FIELD) if arr.null_count else fields]


def binary_copy_rows(table: Table, batch: pa.RecordBatch) -> pa.Buffer:
    """A conformed batch as the tuples of PostgreSQL's binary COPY format, built column by
    column in Arrow and joined into rows at once (no Python object per row or per value)."""
    count = pa.scalar(np.array([len(table.columns)], dtype=">i2").tobytes(), pa.binary())
    pieces = [piece for i, c in enumerate(table.columns) for piece in _binary_fields(c.type, batch.column(i))]
    rows = pc.binary_join_element_wise(count, *pieces, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset : rows.offset + len(rows) + 1]
    return rows.buffers()[2][int(offsets[0]) : int(offsets[-1])]


def _copy_into(cur, table: Table, qualified: str, source: pq.ParquetFile, run_id: str) -> int:
    """Stream a Parquet file into a table with binary COPY, encoded from Arrow columns."""
    rows = 0
    sql = f"COPY {qualified} ({', '.join(table.column_names)}) FROM STDIN (FORMAT binary, FREEZE)"
    with cur.copy(sql) as copy:
        copy.write(_COPY_HEADER)
        for batch in batches(table, source, run_id):
            if batch.num_rows:
                copy.write(binary_copy_rows(table, batch))
            rows += batch.num_rows
        copy.write(_COPY_TRAILER)
    return rows


def _swap(cur, swap_timeout: float) -> None:
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
                raise ZerocertError(
                    f"readers kept the warehouse tables busy for {swap_timeout:.0f} s; the previous run stays published"
                ) from None
            if busy == first:  # readers hold it longer than we waited: wait longer next time
                wait_ms = min(1000, wait_ms * 3 // 2)
            first = busy
    log.info("live tables locked for the switch after %d attempt(s), %.2f s", attempts, time.monotonic() - began)
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
    cur.execute(
        """SELECT c.relowner, c.relowner = (SELECT oid FROM pg_roles
                          WHERE rolname = current_user), c.relrowsecurity, c.relforcerowsecurity,
                          c.relacl IS NOT NULL
                   FROM pg_class c WHERE c.oid = %s::regclass""",
        (live,),
    )
    owner, owned_by_me, rls, force_rls, has_acl = cur.fetchone()
    if has_acl:
        cur.execute(
            """SELECT a.grantee, a.privilege_type, a.is_grantable
                       FROM pg_class c, aclexplode(c.relacl) a
                       WHERE c.oid = %s::regclass AND a.grantee <> c.relowner""",
            (live,),
        )
        for grantee, privilege, grantable in cur.fetchall():
            cur.execute(
                f"GRANT {privilege} ON {successor} TO {_quote_role(cur, grantee)}"
                + (" WITH GRANT OPTION" if grantable else "")
            )
    cur.execute(
        """SELECT quote_ident(t.attname), a.grantee, a.privilege_type, a.is_grantable
                   FROM pg_attribute t, aclexplode(t.attacl) a
                   WHERE t.attrelid = %s::regclass AND t.attacl IS NOT NULL""",
        (live,),
    )
    for column, grantee, privilege, grantable in cur.fetchall():
        cur.execute(
            f"GRANT {privilege} ({column}) ON {successor} TO {_quote_role(cur, grantee)}"
            + (" WITH GRANT OPTION" if grantable else "")
        )
    if rls:
        cur.execute(f"ALTER TABLE {successor} ENABLE ROW LEVEL SECURITY")
    if force_rls:
        cur.execute(f"ALTER TABLE {successor} FORCE ROW LEVEL SECURITY")
    cur.execute(
        """SELECT quote_ident(polname), polpermissive, polcmd,
                          pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid),
                          polroles
                   FROM pg_policy WHERE polrelid = %s::regclass""",
        (live,),
    )
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    for policy, permissive, command, using, check, roles in cur.fetchall():
        to = ", ".join(_quote_role(cur, r) for r in roles) or "PUBLIC"
        sql = (
            f"CREATE POLICY {policy} ON {successor} AS "
            f"{'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {commands[command]} TO {to}"
        )
        sql += f" USING ({using})" if using else ""
        sql += f" WITH CHECK ({check})" if check else ""
        cur.execute(sql)
    if not owned_by_me:
        cur.execute(f"ALTER TABLE {successor} OWNER TO {_quote_role(cur, owner)}")
