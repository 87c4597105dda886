"""The published warehouse tables as one explicit registry, rendered as DDL per dialect.

Columns are warehouse.md's, in its order where it gives one, plus a few extras the engine
provides (``record_ref`` lineage, ``hukou_address_status``, rental ``status``, insurance
``scheme``, ``policy_id`` on guardian_eligibility and prefill) and ``run_id`` last.

warehouse.md is a public interface: enrollment systems are written against these names and
types. The registry is the single place that defines them; `pipelines.warehouse` creates every
published table from it on each run (so a column added here reaches readers atomically with
the next run), and `conform_batch` holds every incoming Parquet file to it, so a producer that
drifts fails loudly naming the table and column instead of silently changing the contract.

Logical types: ``text`` (IDs, codes, free text), ``date``, ``bool``, ``int``, ``double``,
``json`` (JSON text; ``jsonb`` on PostgreSQL, TEXT checked by ``json_valid`` on SQLite).
Persistent tables (``run_audit``, ``schema_version``) are not here: they keep history across
runs and evolve through the SQL migrations in ``warehouse/migrations/<dialect>/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data import data_path
from pipelines.errors import ZerocertError
from pipelines.masking import mask_ids_in  # noqa: F401 - database and Arrow errors quote values

SCHEMA = "zerocert"  # PostgreSQL schema readers query (SQLite: the main database)
DIALECTS = ("postgresql", "sqlite")

_SQL_TYPES = {
    "postgresql": {
        "text": "text",
        "date": "date",
        "bool": "boolean",
        "int": "bigint",
        "double": "double precision",
        "json": "jsonb",
    },
    "sqlite": {"text": "TEXT", "date": "DATE", "bool": "BOOLEAN", "int": "INTEGER", "double": "REAL", "json": "TEXT"},
}
_ARROW_TYPES = {
    "text": pa.string(),
    "json": pa.string(),
    "date": pa.date32(),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "double": pa.float64(),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False  # NOT NULL
    free_text: bool = False  # unvalidated department text: NUL bytes are replaced


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    checks: tuple[str, ...] = field(default=())  # portable SQL boolean expressions

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _table(name: str, spec: str, *, pk: tuple[str, ...] = (), indexes=(), checks=()) -> Table:
    """Build a table from ``name:type[!]`` items (``!`` = required, ``free`` = free text); run_id last."""
    columns = []
    for item in spec.split():
        col, kind = item.split(":")
        required = kind.endswith("!")
        kind = kind.rstrip("!")
        free = kind == "free"
        columns.append(Column(col, "text" if free else kind, required or col in pk, free))
    columns.append(Column("run_id", "text", True))
    return Table(name, tuple(columns), pk, tuple(indexes), tuple(checks))


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        _table(
            "citizen",
            """citizen_id:text name:text sex:text birth_date:date household_no:text
        hukou_status:text hukou_region_code:text hukou_address:text hukou_address_code:text
        hukou_address_status:text settled_date:date urban_hukou:bool sources:json name_conflict:bool""",
            pk=("citizen_id",),
        ),
        _table(
            "guardianship",
            "child_id:text! guardian_id:text! relation:text basis:text!",
            indexes=[("child_id",), ("guardian_id",)],
        ),
        _table(
            "property_holding",
            """citizen_id:text! kind:text! record_key:text! use:text status:text
        record_date:date share:double address:text address_code:text address_status:text
        qualifying:bool record_ref:text""",
            indexes=[("citizen_id",)],
        ),
        _table(
            "rental_holding",
            """citizen_id:text! record_no:text! address:text address_code:text
        address_status:text start_date:date end_date:date registered_date:date status:text
        qualifying:bool record_ref:text""",
            indexes=[("citizen_id",)],
        ),
        _table(
            "employment",
            """citizen_id:text! kind:text! record_key:text org_code:text since:date
        local_months:int status:text scheme:text qualifying:bool record_ref:text""",
            indexes=[("citizen_id",)],
        ),
        _table(
            "eligibility",
            """child_id:text level:text school_code:text category:text!
        priority_date:date basis_guardian_id:text evidence:json policy_id:text!""",
            pk=("child_id", "level", "school_code"),
            indexes=[("school_code", "category")],
        ),
        _table("ineligibility", "child_id:text! level:text! reasons:json! policy_id:text!", indexes=[("child_id",)]),
        _table(
            "guardian_eligibility",
            """guardian_id:text! level:text! school_code:text! basis:text!
        priority_date:date evidence:json policy_id:text""",
            indexes=[("guardian_id",)],
        ),
        _table("prefill", "guardian_id:text document:json! policy_id:text", pk=("guardian_id",)),
        _table(
            "source_snapshot",
            """source:text! delivery:date checksum:text rows_in:int!
        rows_accepted:int! rows_quarantined:int! rows_duplicate:int!""",
            checks=["rows_in = rows_accepted + rows_quarantined + rows_duplicate"],
        ),
        _table(
            "quarantine",
            "source:text! record_ref:text! reason_code:text! detail:free raw:free",
            indexes=[("source", "reason_code")],
        ),
        _table(
            "address_match",
            """source:text! address:text! address_code:text status:text!
        candidates:json score:double""",
            indexes=[("address_code",)],
        ),
        # Access tables (pipelines/access.py): district scope for row-level security, analysts' views.
        _table(
            "school",
            """school_code:text! level:text! school_name:text district_code:text!
        capacity:int""",
            pk=("school_code",),
            indexes=[("district_code",)],
        ),
        _table("district_scope", "citizen_id:text! district_code:text!", pk=("citizen_id", "district_code")),
        _table(
            "analyst_citizen",
            """citizen_key:text! sex:text birth_year:int hukou_status:text
        hukou_region_code:text urban_hukou:bool""",
            pk=("citizen_key",),
        ),
        _table(
            "analyst_eligibility",
            """child_key:text! level:text! school_code:text! category:text!
        priority_period:text""",
            pk=("child_key", "level", "school_code"),
        ),
        _table(
            "demand_by_school",
            "school_code:text! level:text! category:text! children:int!",
            pk=("school_code", "level", "category"),
        ),
    ]
}

# Supervision marts (issue 15, migration 0004): what the education bureau reads about the whole
# city. Meanings: docs/marts.md. Reason codes get one column each; a code added later counts in
# the ``*_other_reason`` column until a migration gives it its own.
NO_SCHOOL_REASONS = (
    "NO_GUARDIAN_LINK",
    "NO_QUALIFYING_PROPERTY",
    "PROPERTY_AFTER_CUTOFF",
    "PROPERTY_NOT_RESIDENTIAL",
    "PROPERTY_NOT_CURRENT",
    "PROPERTY_OUTSIDE_ALL_CATCHMENTS",
    "PROPERTY_EXCLUDES_RENTAL_AND_HUKOU",
    "NO_QUALIFYING_RENTAL",
    "RENTAL_AFTER_CUTOFF",
    "RENTAL_NOT_COVERING_CUTOFF",
    "RENTAL_OUTSIDE_ALL_CATCHMENTS",
    "NO_STABLE_EMPLOYMENT",
    "INSUFFICIENT_INSURANCE_MONTHS",
    "BUSINESS_TOO_RECENT",
    "HUKOU_NOT_URBAN",
    "HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS",
    "ADDRESS_UNMATCHED",
    "CHILD_DECEASED",
)
QUARANTINE_REASONS = (
    "MALFORMED_RECORD",
    "MISSING_REQUIRED",
    "INVALID_ID_FORMAT",
    "INVALID_ID_CHECKSUM",
    "INVALID_DATE",
    "INVALID_CODE",
    "INVALID_NUMBER",
    "INVALID_SHARE",
)


def reason_column(prefix: str, code: str) -> str:
    return f"{prefix}_{code.lower()}"


def _counts(prefix: str, codes: tuple[str, ...]) -> str:
    return " ".join(f"{reason_column(prefix, code)}:int!" for code in codes) + f" {prefix}_other_reason:int!"


MART_TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        _table(
            "address_catchment",
            "address_code:text! level:text! school_code:text! enrollment_year:int!",
            pk=("address_code", "level", "school_code", "enrollment_year"),
            indexes=[("school_code", "level")],
        ),
        _table(
            "school_demand",
            """school_code:text! level:text! category:text! district_code:text
        children:int! best_children:int! capacity:int demand_ratio:double best_demand_ratio:double
        a1_exceeds_capacity:bool""",
            pk=("school_code", "level", "category"),
            indexes=[("district_code", "level")],
        ),
        _table(
            "district_summary",
            f"""district_code:text level:text! school_age_children:int!
        with_school:int! best_a1:int! best_a2:int! best_b:int! best_c:int! no_school:int!
        {_counts("no_school", NO_SCHOOL_REASONS)} decided_from_data:int! awaiting_address_review:int!
        decided_from_data_share:double address_review_backlog:int!""",
            indexes=[("district_code", "level")],
        ),
        _table(
            "source_quality",
            f"""source:text! measured_run_id:text! as_of:date! delivery:date
        delivery_age_days:int rows_in:int! rows_accepted:int! rows_duplicate:int! rows_quarantined:int!
        {_counts("quarantined", QUARANTINE_REASONS)} accepted_share:double""",
            pk=("measured_run_id", "source"),
            indexes=[("source",)],
        ),
        _table(
            "catchment_forecast",
            """school_code:text! level:text! district_code:text entry_year:int!
        horizon:int! born_from:date! born_to:date! children_now:double! migration_factor:double!
        migration_basis:text! expected_entrants:double! capacity:int utilisation:double method:text!""",
            pk=("school_code", "level", "entry_year"),
            indexes=[("district_code", "level")],
        ),
    ]
}


def _analyst_copy(table: Table) -> Table:
    """``analyst_<mart>``: the mart's columns with every number outside the key nullable (NULL =
    suppressed, pipelines/marts.py) and a ``suppressed`` flag per row."""
    figure = {"int", "double"}
    columns = [
        Column(c.name, c.type, c.required and (c.name in table.primary_key or c.type not in figure), c.free_text)
        for c in table.columns
        if c.name != "run_id"
    ]
    columns += [Column("suppressed", "bool", True), Column("run_id", "text", True)]
    return Table(f"analyst_{table.name}", tuple(columns), table.primary_key, table.indexes)


# address_catchment holds no counts: analysts read the mart itself.
ANALYST_MARTS: tuple[str, ...] = tuple(f"analyst_{name}" for name in MART_TABLES if name != "address_catchment")
TABLES.update(MART_TABLES)
TABLES.update({t.name: t for t in map(_analyst_copy, MART_TABLES.values()) if t.name in ANALYST_MARTS})
PUBLISHED_TABLES: tuple[str, ...] = tuple(TABLES)
# Published empty when a run does not provide them (no schools list, no HMAC key): readers of
# district-scoped tables then see nothing, which is the safe failure.
OPTIONAL_TABLES: frozenset[str] = frozenset(
    {
        "school",
        "district_scope",
        "analyst_citizen",
        "analyst_eligibility",
        "demand_by_school",
        *MART_TABLES,
        *ANALYST_MARTS,
    }
)


def index_name(table: str, columns: tuple[str, ...]) -> str:
    return f"{table}_{'_'.join(columns)}_idx"


def render_create_table(
    table: Table, dialect: str, qualified_name: str, *, with_primary_key: bool = True, if_not_exists: bool = False
) -> str:
    """CREATE TABLE for one dialect; PostgreSQL adds the primary key after the bulk load."""
    types = _SQL_TYPES[dialect]
    keys = set(table.primary_key).union(*table.indexes)
    lines = []
    for c in table.columns:
        line = f"    {c.name} {types[c.type]}"
        if dialect == "postgresql" and c.type == "text" and c.name in keys:
            line += ' COLLATE "C"'  # IDs and codes: byte order makes key builds and lookups cheap
        line += " NOT NULL" if c.required else ""
        if c.type == "json" and dialect == "sqlite":
            line += f" CHECK ({c.name} IS NULL OR json_valid({c.name}))"
        lines.append(line)
    lines += [f"    CHECK ({check})" for check in table.checks]
    if with_primary_key and table.primary_key:
        lines.append(f"    PRIMARY KEY ({', '.join(table.primary_key)})")
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return f"{create} {qualified_name} (\n" + ",\n".join(lines) + "\n)"


def render_indexes(table: Table, qualified_name: str, *, if_not_exists: bool = False) -> list[str]:
    create = "CREATE INDEX IF NOT EXISTS" if if_not_exists else "CREATE INDEX"
    return [
        f"{create} {index_name(table.name, cols)} ON {qualified_name} ({', '.join(cols)})" for cols in table.indexes
    ]


def render_reference_ddl(dialect: str) -> str:
    """The published tables as one readable SQL file (kept in ``warehouse/`` for readers)."""
    out = [
        f"-- Published zerocert tables ({dialect}); generated from pipelines/warehouse_schema.py.",
        "-- Every publish recreates these and swaps them in atomically; do not edit by hand.",
        "",
    ]
    for table in TABLES.values():
        name = f"{SCHEMA}.{table.name}" if dialect == "postgresql" else table.name
        out.append(render_create_table(table, dialect, name) + ";")
        out += [ddl + ";" for ddl in render_indexes(table, name)]
        out.append("")
    return "\n".join(out)


def _is_textual(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_textual(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _accepts(kind: str, t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    if kind in ("text", "json"):
        return _is_textual(t)
    if kind == "date":  # ISO text ('2027-07-31') is unambiguous; anything else fails the cast
        return pa.types.is_date(t) or (pa.types.is_timestamp(t) and t.tz is None) or _is_textual(t)
    if kind == "bool":
        return pa.types.is_boolean(t)
    if kind == "int":
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if kind == "double":
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    raise AssertionError(kind)


def arrow_schema(table: Table) -> pa.Schema:
    """The exact Arrow schema ``conform_batch`` produces for the table."""
    return pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in table.columns])


def check_input_schema(table: Table, schema: pa.Schema, rows: int | None = None) -> None:
    """Refuse a Parquet schema that does not match the table: unknown, missing or mistyped columns.

    pandas index artefacts (``__index_level_0__``) are ignored; a missing ``run_id`` is filled in.
    An input of no ``rows`` has no value to misread: its column types are not held against it
    (pandas types an empty column as it likes), only its column names.
    """
    names = [n for n in schema.names if not n.startswith("__index_level_")]
    unknown = [n for n in names if n not in table.column_names]
    if unknown:
        raise ZerocertError(f"table {table.name}: unknown column {unknown[0]!r} in input (not in the warehouse schema)")
    for col in table.columns:
        if col.name not in names:
            if col.name != "run_id":
                raise ZerocertError(f"table {table.name}: input lacks column {col.name!r}")
            continue
        got = schema.field(col.name).type
        if rows != 0 and not _accepts(col.type, got):
            raise ZerocertError(f"table {table.name}, column {col.name}: expected {col.type}, input has {got}")


def conform_batch(table: Table, batch: pa.RecordBatch, run_id: str) -> pa.RecordBatch:
    """Cast one input batch to the table's exact Arrow types, in the table's column order.

    Refuses what would change meaning: dates with a time of day, integers with a fraction,
    missing required values, rows of another run. NaN in doubles becomes NULL (both dialects
    then store the same thing), NUL characters in free text become U+FFFD (PostgreSQL text
    cannot hold them).
    """
    arrays = []
    for col in table.columns:
        target = _ARROW_TYPES[col.type]
        if col.name not in batch.schema.names:  # only run_id may be absent (checked before)
            arrays.append(pa.array([run_id] * batch.num_rows, pa.string()))
            continue
        arr = batch.column(col.name)
        where = f"table {table.name}, column {col.name}"
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if col.type == "date" and pa.types.is_timestamp(arr.type):
            day = pc.floor_temporal(arr, unit="day")
            if not pc.all(pc.or_kleene(pc.equal(day, arr), pc.is_null(arr))).as_py():
                raise ZerocertError(f"{where}: a date carries a time of day")
        if pa.types.is_floating(arr.type):
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        try:
            arr = arr.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            detail = mask_ids_in(str(exc).splitlines()[0])
            raise ZerocertError(f"{where}: cannot be read as {col.type} ({detail})") from None
        if col.free_text and arr.null_count < len(arr):
            arr = pc.replace_substring(arr, "\x00", "\ufffd")
        if col.required and arr.null_count:
            raise ZerocertError(f"{where}: {arr.null_count} row(s) lack a required value")
        if col.name == "run_id" and not pc.all(pc.equal(arr, run_id)).as_py():
            raise ZerocertError(f"table {table.name}: rows carry a run_id other than {run_id!r}")
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=table.column_names)


def reference_ddl_path(dialect: str):

    return data_path(f"published_tables.{dialect}.sql")


if __name__ == "__main__":  # python -m pipelines.warehouse_schema: refresh warehouse/*.sql
    for _dialect in DIALECTS:
        reference_ddl_path(_dialect).write_text(render_reference_ddl(_dialect), encoding="utf-8")
