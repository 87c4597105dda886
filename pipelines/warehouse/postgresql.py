"""The PostgreSQL warehouse: published tables in schema ``zerocert``, loaded with COPY and
switched in one transaction.

One transaction creates fresh tables in the schema ``zerocert_stage``, streams each Parquet file
in with ``COPY ... (FORMAT csv, FREEZE)``, builds primary keys and indexes and ANALYZEs; then
takes ACCESS EXCLUSIVE on every live table at once (short ``lock_timeout``, retried, so a
waiting publish never stalls readers for long and always loses a deadlock to a reader), drops
the old tables, moves the new ones into ``zerocert`` and marks ``run_audit`` published -- all in
the same COMMIT. ``FREEZE`` makes the new rows visible even to a reader whose snapshot predates
the load, so a REPEATABLE READ reader that touches the tables only after the swap still sees the
complete new run.

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
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipelines.errors import UsageError, ZerocertError
from pipelines.warehouse.common import (
    AUDIT_COLUMNS,
    BATCH_ROWS,
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

_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=BATCH_ROWS)


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
        counts: dict[str, int] = {}
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
            if not cur.fetchone()[0]:  # one publish at a time: the later one waits, then wins
                log.info("another publish is running on this warehouse; waiting for it to finish")
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds sort in memory
            cur.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
            cur.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
            for name in PUBLISHED_TABLES:
                table, staged = TABLES[name], f"{STAGE_SCHEMA}.{name}"
                began = time.monotonic()
                with loading(name):
                    cur.execute(render_create_table(table, "postgresql", staged, with_primary_key=False))
                    counts[name] = _copy_into(cur, table, staged, files[name], run["run_id"])
                    copied = time.monotonic()
                    if table.primary_key:
                        cur.execute(
                            f"ALTER TABLE {staged} ADD CONSTRAINT {name}_pkey "
                            f"PRIMARY KEY ({', '.join(table.primary_key)})"
                        )
                    for ddl in render_indexes(table, staged):
                        cur.execute(ddl)
                    cur.execute(f"ANALYZE {staged}")
                log_load(name, counts[name], copied - began, time.monotonic() - copied)
            _swap(cur, swap_timeout)
            self.write_audit(run, "published", row_counts=counts, cursor=cur)
        return counts


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


def _copy_into(cur, table: Table, qualified: str, source: pq.ParquetFile, run_id: str) -> int:
    """Stream a Parquet file into a table with COPY, as CSV rendered by Arrow (nulls unquoted).

    Arrow's CSV writer quotes every string, so an empty string stays distinct from NULL and a
    ``\\.`` value cannot end the data early.
    """
    rows = 0
    sql = f"COPY {qualified} ({', '.join(table.column_names)}) FROM STDIN (FORMAT csv, FREEZE, ENCODING 'UTF8')"
    with cur.copy(sql) as copy:
        for batch in batches(table, source, run_id):
            buffer = io.BytesIO()
            pa_csv.write_csv(batch, buffer, _CSV)
            copy.write(buffer.getbuffer())
            rows += batch.num_rows
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
