"""Great Expectations guards on staged sources, and the verdict that can reject a delivery.

Staging has already quarantined every row it could not repair, so the row checks here are
guards: a failure means staging let something through or a department changed its codes, and
the delivery must not be published. The table checks catch deliveries that are empty or whose
size jumped against the last accepted snapshot (a truncated export looks valid row by row).

The suites are data (``expectations/<source>.yaml``); code lists come from the staging schema
(``schemas/<source>.yaml``) when it names them, so one list rules both quarantine and guard.
Each run uses an ephemeral GX context; only the validation results (JSON, one file per run
under ``results_dir/gx/validations``, the latest per source in ``results_dir/<source>/``) and
the Data Docs site (``results_dir/data_docs``) are kept. Personal values (IDs) are masked
before anything is written.

Speed: GX evaluates on a narrow frame holding only the checked columns (GX hashes the whole
batch frame), dates as ``datetime64[ns]`` and counts as float (other dtypes fall back to a
per-row Python ``map`` inside GX), and resident IDs through a vectorized check-character test
whose boolean result GX then expects to be true (a regex alone cannot verify the checksum).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.data import data_path
from pipelines.errors import UsageError, ValidationFailed
from pipelines.registry import source_keys
from pipelines.resident_id import (
    CREDIT_CODE_PATTERN,
    RESIDENT_ID_PATTERN,
    check_character_bytes,
    id_bytes,
    mask_id,
    mask_name,
)
from pipelines.staging.schema import SCHEMA_DIR as DEFAULT_SCHEMAS_DIR
from pipelines.staging.schema import load_schema

DEFAULT_EXPECTATIONS_DIR = data_path("expectations")

ROW_KINDS = ("not_null", "resident_id", "credit_code", "unique", "in_set", "date_range", "pattern", "between")
SEVERITIES = ("error", "warn")
AS_OF = "as_of"
RECORD_COLUMN = "record_ref"  # one value per delivered record (file:line or table key)
ID_LIKE = re.compile(r"\d{14,17}[\dXx]")
# What may be a resident ID in a report: any run of 15 or more digits (full-width ones too, \d
# is Unicode), the last possibly X; a few long non-ID numbers masked too is the cheap side.
ID_RUN = re.compile(r"\d{14,}[\dXxＸｘ]")
PERSON_NAME_COLUMN = re.compile(r"(?:^|_)name$")  # name, owner_name, tenant_name, ...
# Engineers open the index; validation pages sit below it.
DOCS_SITE = "zerocert"
KEPT_RESULTS_STORE = "kept_validation_results"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowCheck:
    """One row-level expectation of a suite, as written in ``expectations/<source>.yaml``."""

    kind: str
    columns: tuple[str, ...]
    mostly: float = 1.0
    severity: str = "error"
    values: tuple[Any, ...] | None = None  # in_set: fallback list when the schema names none
    regex: str | None = None  # pattern
    minimum: Any = None  # date_range (ISO date or "as_of") / between (number)
    maximum: Any = None
    when: tuple[tuple[str, str], ...] = ()  # check only rows where these columns hold these values

    @property
    def label(self) -> str:
        """The name engineers see in errors, the result dict and Data Docs notes."""
        condition = "".join(f"[{col}={val}]" for col, val in self.when)
        return f"{self.kind}({','.join(self.columns)}){condition}"


@dataclass(frozen=True)
class TableChecks:
    min_rows: int = 1
    max_change_fraction: float | None = None


@dataclass(frozen=True)
class SuiteSpec:
    """A source's checked expectation file."""

    source: str
    path: Path
    row_checks: tuple[RowCheck, ...]
    table: TableChecks
    personal_columns: frozenset[str] = field(default_factory=frozenset)


# ---------------------------------------------------------------------------------------------
# Loading and checking the expectation files


def load_expectation_suites(directory: Path) -> dict[str, SuiteSpec]:
    """Read and check every ``<source>.yaml`` in ``directory`` at start-up.

    A bad file stops the run before anything is read from the departments, with a UsageError
    naming the file and the offending key.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"expectations directory {directory} does not exist")
    suites = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = _load_suite_file(path)
        suites[spec.source] = spec
    if not suites:
        raise UsageError(f"expectations directory {directory} holds no <source>.yaml file")
    return suites


def _load_suite_file(path: Path) -> SuiteSpec:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path}: not readable YAML ({reason})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a mapping with keys source, row_checks, table_checks")
    unknown = set(doc) - {"source", "personal_columns", "row_checks", "table_checks"}
    if unknown:
        raise UsageError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    source = doc.get("source")
    if source not in source_keys():
        raise UsageError(f"{path}: key 'source' must be one of {', '.join(source_keys())}, got {source!r}")
    if path.stem != source:
        raise UsageError(f"{path}: key 'source' is {source!r} but the file is named {path.name}")
    personal = doc.get("personal_columns", [])
    if not isinstance(personal, list) or not all(isinstance(c, str) for c in personal):
        raise UsageError(f"{path}: key 'personal_columns' must be a list of column names")
    raw_checks = doc.get("row_checks", [])
    if not isinstance(raw_checks, list):
        raise UsageError(f"{path}: key 'row_checks' must be a list")
    checks = tuple(_row_check(path, i, item) for i, item in enumerate(raw_checks))
    return SuiteSpec(
        source=source,
        path=path,
        row_checks=checks,
        table=_table_checks(path, doc.get("table_checks", {})),
        personal_columns=frozenset(personal),
    )


def _row_check(path: Path, index: int, item: Any) -> RowCheck:
    where = f"{path}: row_checks[{index}]"
    if not isinstance(item, dict):
        raise UsageError(f"{where} must be a mapping")
    allowed = {"check", "column", "columns", "mostly", "severity", "values", "regex", "min", "max", "when"}
    unknown = set(item) - allowed
    if unknown:
        raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    kind = item.get("check")
    if kind not in ROW_KINDS:
        raise UsageError(f"{where}: key 'check' must be one of {', '.join(ROW_KINDS)}, got {kind!r}")
    if ("column" in item) == ("columns" in item):
        raise UsageError(f"{where}: give exactly one of keys 'column' or 'columns'")
    columns = [item["column"]] if "column" in item else item["columns"]
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and c for c in columns):
        raise UsageError(f"{where}: key 'columns' must name one or more columns")
    if len(columns) > 1 and kind != "unique" and kind != "not_null":
        raise UsageError(f"{where}: key 'columns' takes several columns only for unique/not_null")
    mostly = item.get("mostly", 1.0)
    if isinstance(mostly, bool) or not isinstance(mostly, (int, float)) or not 0 < mostly <= 1:
        raise UsageError(f"{where}: key 'mostly' must be a fraction in (0, 1], got {mostly!r}")
    severity = item.get("severity", "error")
    if severity not in SEVERITIES:
        raise UsageError(f"{where}: key 'severity' must be error or warn, got {severity!r}")
    values = item.get("values")
    if values is not None and (not isinstance(values, list) or not values):
        raise UsageError(f"{where}: key 'values' must be a non-empty list")
    if kind == "in_set" and values is None:
        raise UsageError(f"{where}: key 'values' is required for in_set (used when the schema file names no code list)")
    regex = item.get("regex")
    if kind == "pattern":
        if not isinstance(regex, str):
            raise UsageError(f"{where}: key 'regex' is required for pattern")
        try:
            re.compile(regex)
        except re.error as exc:
            raise UsageError(f"{where}: key 'regex' does not compile ({exc})") from None
    minimum, maximum = item.get("min"), item.get("max")
    if kind == "date_range":
        minimum, maximum = (_date_bound(where, "min", minimum), _date_bound(where, "max", maximum))
    if kind == "between":
        for key, bound in (("min", minimum), ("max", maximum)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
                raise UsageError(f"{where}: key {key!r} must be a number, got {bound!r}")
    if kind in ("date_range", "between") and minimum is None and maximum is None:
        raise UsageError(f"{where}: {kind} needs key 'min' or 'max'")
    when = item.get("when", {})
    if not isinstance(when, dict) or not all(isinstance(k, str) for k in when):
        raise UsageError(f"{where}: key 'when' must map column names to values")
    return RowCheck(
        kind=kind,
        columns=tuple(columns),
        mostly=float(mostly),
        severity=severity,
        values=tuple(str(v) for v in values) if values is not None else None,
        regex=regex,
        minimum=minimum,
        maximum=maximum,
        when=tuple((k, str(v)) for k, v in when.items()),
    )


def _date_bound(where: str, key: str, bound: Any) -> dt.date | str | None:
    if bound is None or bound == AS_OF:
        return bound
    if isinstance(bound, dt.datetime):
        return bound.date()
    if isinstance(bound, dt.date):
        return bound
    if isinstance(bound, str):
        try:
            return dt.date.fromisoformat(bound)
        except ValueError:
            pass
    raise UsageError(f"{where}: key {key!r} must be an ISO date or 'as_of', got {bound!r}")


def _table_checks(path: Path, doc: Any) -> TableChecks:
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: key 'table_checks' must be a mapping")
    unknown = set(doc) - {"min_rows", "max_change_fraction"}
    if unknown:
        raise UsageError(f"{path}: table_checks: unknown key {sorted(unknown)[0]!r}")
    min_rows = doc.get("min_rows", 1)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise UsageError(f"{path}: table_checks.min_rows must be a whole number ≥ 0, got {min_rows!r}")
    change = doc.get("max_change_fraction")
    if change is not None and (isinstance(change, bool) or not isinstance(change, (int, float)) or change <= 0):
        raise UsageError(f"{path}: table_checks.max_change_fraction must be a number > 0, got {change!r}")
    return TableChecks(min_rows=min_rows, max_change_fraction=float(change) if change is not None else None)


def schema_code_lists(source: str, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> dict[str, list]:
    """Allowed codes per column from the staging schema (the one place code lists live).

    A missing schema file means the suite's own lists apply.
    """
    if not (Path(schemas_dir) / f"{source}.yaml").is_file():
        return {}
    return {column.key: list(column.codes) for column in load_schema(source, Path(schemas_dir)).columns if column.codes}


# ---------------------------------------------------------------------------------------------
# Vectorized helpers feeding GX


def valid_resident_ids(values: pd.Series) -> pd.Series:
    """True where a present value is an 18-character GB 11643 ID with a matching check character.

    Missing values stay missing (GX skips them; required columns have their own not_null check).
    """
    result = pd.Series(pd.NA, index=values.index, dtype="boolean")
    present = values.notna().to_numpy()
    if not present.any():
        return result
    text = values[present].astype(str)
    shaped = text.str.fullmatch(RESIDENT_ID_PATTERN).fillna(False).to_numpy(dtype=bool)
    verdict = np.zeros(len(text), dtype=bool)
    if shaped.any():
        codes = id_bytes(text[shaped], 18)
        verdict[shaped] = check_character_bytes(codes[:, :17]) == codes[:, 17]
    result[present] = verdict
    return result


def valid_credit_codes(values: pd.Series) -> pd.Series:
    """True where a present value has the GB 32100 shape: 18 characters of its alphabet."""
    result = pd.Series(pd.NA, index=values.index, dtype="boolean")
    present = values.notna().to_numpy()
    if present.any():
        text = values[present].astype(str)
        result[present] = text.str.fullmatch(CREDIT_CODE_PATTERN).fillna(False).to_numpy(dtype=bool)
    return result


def _as_gx_friendly(values: pd.Series) -> pd.Series:
    """Dtypes on which GX pandas metrics stay vectorized: datetime64[ns], float, object text."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dtype, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        return values.astype("datetime64[ns]")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values
    if pd.api.types.is_numeric_dtype(values.dtype) and values.dtype not in (np.int64, np.float64):
        return values.astype("float64")
    return values


def _derived_name(check: RowCheck) -> str:
    return f"{check.columns[0]}__{'valid_id' if check.kind == 'resident_id' else 'valid_code'}"


def _condition_mask(frame: pd.DataFrame, check: RowCheck) -> pd.Series | None:
    if not check.when:
        return None
    mask = pd.Series(True, index=frame.index)
    for column, value in check.when:
        mask &= frame[column].astype("string").eq(value).fillna(False)
    return mask


def _when_name(check: RowCheck) -> str:
    return check.columns[0] + "__when_" + "_".join(f"{c}_{v}" for c, v in check.when)


def _gx_columns(check: RowCheck) -> list[str]:
    """The columns of the GX frame that carry this check."""
    if check.when:
        return [_when_name(check)]
    if check.kind in ("resident_id", "credit_code"):
        return [_derived_name(check)]
    return list(check.columns)


def _source_columns(check: RowCheck) -> list[str]:
    return [*check.columns, *(column for column, _ in check.when)]


def _checked_columns(spec: SuiteSpec) -> set[str]:
    """The staged columns the suite's row checks read (their columns and conditions)."""
    return {c for chk in spec.row_checks for c in _source_columns(chk)}


def missing_columns(spec: SuiteSpec, accepted: pd.DataFrame) -> list[str]:
    """Staged columns the suite names but the frame lacks (a staging contract breach)."""
    return sorted(_checked_columns(spec) - set(accepted.columns))


def suite_for(source: str, suites: dict[str, SuiteSpec] | None = None) -> tuple[SuiteSpec, dict[str, SuiteSpec]]:
    """The source's suite, and the suites it was found in (read from the expectations when not given)."""
    suites = suites if suites is not None else load_expectation_suites(DEFAULT_EXPECTATIONS_DIR)
    if source not in suites:
        raise UsageError(f"no expectation suite for source {source!r} (expectations/{source}.yaml)")
    return suites[source], suites


def read_checked_rows(spec: SuiteSpec, path: Path) -> pd.DataFrame:
    """A staged snapshot's rows with only the columns its suite reads (its row checks' columns
    and conditions, and the record numbers): names and address texts, a source's widest
    columns, are checked by no row check, so validation does not hold them. A column the suite
    names but the snapshot lacks stays missing, for ``columns_present`` to report."""
    import pyarrow.parquet as pq

    read = _checked_columns(spec) | {RECORD_COLUMN}
    return pd.read_parquet(path, columns=[name for name in pq.read_schema(path).names if name in read])


def build_validation_frame(spec: SuiteSpec, accepted: pd.DataFrame) -> pd.DataFrame:
    """The narrow frame GX evaluates: checked columns only, derived verdicts in place of IDs.

    GX fingerprints every column of its batch, so columns checked only through a derived
    verdict stay out. Never mutates ``accepted``. Checks whose columns are missing are left
    out; the table-level column check reports them.
    """
    narrow: dict[str, pd.Series] = {}
    for check in spec.row_checks:
        if not set(_source_columns(check)) <= set(accepted.columns):
            continue
        if check.kind in ("resident_id", "credit_code") or check.when:
            column = accepted[check.columns[0]]
            if check.kind == "resident_id":
                checked = valid_resident_ids(column)
            elif check.kind == "credit_code":
                checked = valid_credit_codes(column)
            else:
                checked = _as_gx_friendly(column)
            mask = _condition_mask(accepted, check)
            if mask is not None:
                checked = checked.where(mask.to_numpy())
            narrow[_gx_columns(check)[0]] = checked
        else:
            for name in check.columns:
                if name not in narrow:
                    narrow[name] = _as_gx_friendly(accepted[name])
    # Code columns checked only against lists become categorical: GX filters each column once
    # per metric, and taking from a few integer codes is far cheaper than from strings.
    code_only = {c for chk in spec.row_checks if chk.kind == "in_set" and not chk.when for c in chk.columns} - {
        c for chk in spec.row_checks if chk.kind not in ("in_set", "not_null") for c in chk.columns
    }
    for name in code_only & set(narrow):
        if pd.api.types.is_string_dtype(narrow[name].dtype):
            narrow[name] = narrow[name].astype("category")
    if RECORD_COLUMN in accepted.columns:  # counted, never shown: record numbers suffice
        narrow[RECORD_COLUMN] = pd.Series(pd.factorize(accepted[RECORD_COLUMN])[0])
    # Positions, not labels: a concatenated staged frame may repeat index labels.
    return pd.DataFrame(
        {name: values.reset_index(drop=True) for name, values in narrow.items()}, index=pd.RangeIndex(len(accepted))
    )


# ---------------------------------------------------------------------------------------------
# GX suite


def _gx():
    from pipelines.gx import gx

    return gx


def _row_expectation(gx, spec: SuiteSpec, check: RowCheck, as_of: dt.date, codes: dict[str, list]):
    E = gx.expectations
    column = _gx_columns(check)[0]
    common = {"mostly": check.mostly, "meta": {"check": check.label, "severity": check.severity}}
    if check.kind == "not_null":
        return [
            E.ExpectColumnValuesToNotBeNull(
                column=c, mostly=check.mostly, meta={"check": f"not_null({c})", "severity": check.severity}
            )
            for c in check.columns
        ]
    if check.kind in ("resident_id", "credit_code"):
        note = (
            "GB 11643 check character verified (vectorized) on "
            if check.kind == "resident_id"
            else "GB 32100 shape (18 characters of its alphabet) on "
        ) + check.columns[0]
        return [E.ExpectColumnValuesToBeInSet(column=column, value_set=[True], notes=note, **common)]
    if check.kind == "unique":
        if len(check.columns) == 1:
            return [E.ExpectColumnValuesToBeUnique(column=column, **common)]
        return [E.ExpectCompoundColumnsToBeUnique(column_list=list(check.columns), **common)]
    if check.kind == "in_set":
        value_set = codes.get(check.columns[0], list(check.values or ()))
        return [E.ExpectColumnValuesToBeInSet(column=column, value_set=list(value_set), **common)]
    if check.kind == "pattern":
        return [E.ExpectColumnValuesToMatchRegex(column=column, regex=check.regex, **common)]
    if check.kind == "date_range":
        bounds = [None if b is None else _midnight(as_of if b == AS_OF else b) for b in (check.minimum, check.maximum)]
        return [E.ExpectColumnValuesToBeBetween(column=column, min_value=bounds[0], max_value=bounds[1], **common)]
    return [E.ExpectColumnValuesToBeBetween(column=column, min_value=check.minimum, max_value=check.maximum, **common)]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day)


def row_count_bounds(table: TableChecks, previous_rows: int | None) -> tuple[int, int | None]:
    """Allowed delivered records: at least ``min_rows``, and within the change fraction of the
    last published snapshot when there is one (100 previous, 0.5 → 50..150)."""
    low, high = table.min_rows, None
    if previous_rows is not None and table.max_change_fraction is not None:
        low = max(low, math.ceil(previous_rows * (1 - table.max_change_fraction)))
        high = math.floor(previous_rows * (1 + table.max_change_fraction))
    return low, high


def _build_suite(
    gx, spec: SuiteSpec, accepted: pd.DataFrame, as_of: dt.date, previous_rows: int | None, codes: dict[str, list]
):
    E = gx.expectations
    suite = gx.ExpectationSuite(name=spec.source)
    suite.add_expectation(
        E.ExpectTableRowCountToBeBetween(
            min_value=spec.table.min_rows, max_value=None, meta={"check": "row_count", "severity": "table"}
        )
    )
    low, high = row_count_bounds(spec.table, previous_rows)
    if high is not None:
        # Delivered records, not staged rows (a contract is staged once per buyer): like is
        # compared with like, the previous snapshot's rows_accepted.
        suite.add_expectation(
            E.ExpectColumnUniqueValueCountToBeBetween(
                column=RECORD_COLUMN,
                min_value=low,
                max_value=high,
                meta={
                    "check": "row_count_change",
                    "severity": "table",
                    "previous_rows": previous_rows,
                    "max_change_fraction": spec.table.max_change_fraction,
                },
            )
        )
    suite.add_expectation(
        E.ExpectTableColumnsToMatchSet(
            column_set=sorted({c for chk in spec.row_checks for c in _gx_columns(chk)}),
            exact_match=False,
            meta={"check": "columns_present", "severity": "table", "missing_columns": missing_columns(spec, accepted)},
        )
    )
    for check in spec.row_checks:
        if not set(_source_columns(check)) <= set(accepted.columns):
            continue
        for expectation in _row_expectation(gx, spec, check, as_of, codes):
            suite.add_expectation(expectation)
    return suite


# ---------------------------------------------------------------------------------------------
# Running


def validate_staged(
    source: str,
    accepted: pd.DataFrame,
    *,
    as_of: dt.date,
    previous_rows: int | None,
    results_dir: Path,
    suites: dict[str, SuiteSpec] | None = None,
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR,
    accept_change_reason: str | None = None,
    quality_page: Path | None = None,
) -> dict:
    """Run the source's suite on its accepted rows; keep the result JSON and the Data Docs.

    Raises ValidationFailed (exit 3, nothing published) when a table check fails or an
    error-level row check falls below its ``mostly``; the results and Data Docs are written
    first so engineers can see why. Warn-level failures are returned, not raised.
    ``accept_change_reason``: an engineer confirmed that this delivery's change in size is
    real; a failed ``row_count_change`` then lets the run go on and is returned as
    ``accepted_change`` (with its figures) for run_audit.
    ``quality_page``: the run's offline quality page, which a failure message points to
    instead of the Data Docs (their index needs the internet to show anything).
    The report's ``failures`` list each failed expectation with its column and counts.
    """
    spec, suites = suite_for(source, suites)
    results_dir = Path(results_dir)
    codes = schema_code_lists(source, schemas_dir)
    gx = _gx()
    context = _ephemeral_context(gx, results_dir)
    frame = build_validation_frame(spec, accepted)
    suite = context.suites.add(_build_suite(gx, spec, accepted, as_of, previous_rows, codes))
    batch = (
        context.data_sources.add_pandas("staged")
        .add_dataframe_asset(source)
        .add_batch_definition_whole_dataframe("accepted")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{source}-accepted", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{source}-staged",
            validation_definitions=[definition],
            actions=[],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
        )
    )
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=f"{source}-as-of-{as_of.isoformat()}")
    with _no_batch_fingerprint():
        outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    ((key, result),) = outcome.run_results.items()
    _mask_personal_values(result, spec.personal_columns)
    context.stores[KEPT_RESULTS_STORE].set(key, result)

    result_json = result.to_json_dict()
    results_path = results_dir / source / "validation.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(result_json, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=[key])
    docs_path = results_dir / "data_docs" / "index.html"

    failures = [_describe(r) for r in result.results if not r.success]
    accepted_change = None
    if accept_change_reason is not None:
        change = next((f for f in failures if f["check"] == "row_count_change"), None)
        if change is not None:
            failures.remove(change)
            accepted_change = {"source": source, "reason": accept_change_reason, **change["figures"]}
            log.warning(
                "%s: size change accepted by an engineer (%s): %s", source, accept_change_reason, change["numbers"]
            )
    report = {
        "source": source,
        "success": bool(result.success),
        "failed_expectations": [f["check"] for f in failures],
        "failures": [{k: v for k, v in f.items() if k != "figures"} for f in failures],
        "expectations": len(result.results),
        "results_path": str(results_path),
        "docs_path": str(docs_path),
        "rows": int(len(accepted)),
        "accepted_change": accepted_change,
    }
    fatal = sorted((f for f in failures if f["severity"] != "warn"), key=lambda f: f["level"] != "table")
    log.info(
        "%s: %d rows checked by %d expectations, %d failed (%d stopping the run)%s",
        source,
        len(accepted),
        len(result.results),
        len(failures),
        len(fatal),
        "".join(f"; {f['check']}: {f['numbers']}" for f in failures),
    )
    if fatal:
        first = fatal[0]
        more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
        hint = (
            f"; if the change is real: --accept-change {source} --reason TEXT"
            if first["check"] == "row_count_change"
            else ""
        )
        error = ValidationFailed(
            f"{source}: {first['level']} check {first['check']} failed: {first['numbers']}{more}; "
            f"see {quality_page or docs_path}{hint}"
        )
        error.report = report
        raise error
    for warning in failures:
        log.warning("%s: row check %s below threshold: %s", source, warning["check"], warning["numbers"])
    return report


@contextlib.contextmanager
def _no_batch_fingerprint():
    """Skip GX's md5 fingerprint of the batch frame, as GX itself does above 1 GB.

    It only labels the batch in the results; hashing the narrow frame cost more than all row
    checks together at city scale. The staging snapshot checksum identifies the delivery.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    saved = getattr(engine, "HASH_THRESHOLD", None)
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = saved


def _ephemeral_context(gx, results_dir: Path):
    """An in-memory context plus, under results_dir, a store of kept (masked) results and the
    Data Docs site built from it.

    GX writes its raw results to the in-memory store; only masked copies reach the disk. The
    kept store lives across runs so the Data Docs index keeps every run's page (the index
    builder drops pages whose result is no longer in its source store).
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    config = DataContextConfig(store_backend_defaults=defaults, progress_bars=ProgressBarsConfig(globally=False))
    config.stores[KEPT_RESULTS_STORE] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str((results_dir / "gx" / "validations").resolve()),
        },
    }
    config.data_docs_sites = {
        DOCS_SITE: {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str((results_dir / "data_docs").resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
            "site_section_builders": {
                "expectations": "None",
                "profiling": "None",
                "validations": {"source_store_name": KEPT_RESULTS_STORE},
            },
        }
    }
    return gx.get_context(mode="ephemeral", project_config=config)


def _mask_personal_values(result, personal_columns: frozenset[str]) -> None:
    """Mask every result value before anything is written (Data Docs and JSON are read by people
    who must not see them): whole values of the suite's personal columns (IDs) and of person-name
    columns, and whatever looks like a resident ID anywhere else, whatever the column -- a
    department may put IDs where no one expects them. The full unexpected lists are dropped."""
    for item in result.results:
        kwargs = item.expectation_config.kwargs
        columns = {c for c in [*(kwargs.get("column_list") or []), kwargs.get("column")] if isinstance(c, str)}
        columns |= {c.split("__")[0] for c in columns}
        whole = (
            mask_id
            if columns & personal_columns
            else mask_name
            if any(PERSON_NAME_COLUMN.search(c) for c in columns)
            else None
        )
        details = item.result if item.result is not None else {}
        for key in ("unexpected_list", "unexpected_index_list"):
            details.pop(key, None)
        if "partial_unexpected_list" in details:
            details["partial_unexpected_list"] = [_mask_value(v, whole) for v in details["partial_unexpected_list"]]
        if "partial_unexpected_counts" in details:
            details["partial_unexpected_counts"] = [
                {**entry, "value": _mask_value(entry.get("value"), whole)}
                for entry in details["partial_unexpected_counts"]
            ]
        if "observed_value" in details:
            details["observed_value"] = _mask_value(details["observed_value"], whole)
        masked = _mask_value(details, None)
        details.clear()
        details.update(masked)
        if item.exception_info:
            item.exception_info = _mask_value(item.exception_info, None)


def _mask_value(value: Any, whole=None) -> Any:
    """``whole`` (mask_id, mask_name) replaces each text value entirely; without it only the
    ID-shaped digit runs inside a value are masked. Counts and flags pass unchanged."""
    if isinstance(value, dict):
        return {k: _mask_value(v, whole) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_mask_value(v, whole) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return whole(value) if whole is not None else _mask_id_runs(value)
    if isinstance(value, (int, np.integer)):
        return mask_id(value) if abs(int(value)) >= 10**14 else value
    if isinstance(value, (float, np.floating)):
        return _mask_id_runs(repr(float(value))) if math.isfinite(value) and abs(value) >= 1e14 else value
    return _mask_id_runs(str(value))  # dates, decimals, anything else GX may carry


def _mask_id_runs(text: str) -> str:
    return ID_RUN.sub(lambda m: mask_id(m.group(0)), text)


def _raised_exception(info: Any) -> str | None:
    """First line of the exception GX caught while evaluating an expectation, IDs masked.

    GX reports it either flat or keyed by metric; None when nothing was raised.
    """
    if not isinstance(info, dict):
        return None
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            lines = str(candidate.get("exception_message") or "exception").splitlines() or [""]
            return ID_LIKE.sub(lambda m: mask_id(m.group(0)), lines[0])[:160]
    return None


def _checked_column(kwargs: dict) -> str | None:
    """The staged column(s) an expectation checks; a derived verdict column names its source."""
    columns = [c for c in [*(kwargs.get("column_list") or []), kwargs.get("column")] if isinstance(c, str)]
    return ", ".join(dict.fromkeys(c.split("__")[0] for c in columns)) or None


def _describe(item) -> dict:
    """check label, column, level, severity, unexpected rows and the numbers an engineer needs,
    for one failed expectation (values already masked)."""
    config = item.expectation_config
    meta = config.meta or {}
    details = item.result or {}
    check = meta.get("check", config.type)
    where = {"column": _checked_column(config.kwargs), "unexpected_count": None, "unexpected_percent": None}
    if meta.get("severity") == "table":
        figures = None
        if check == "row_count":
            numbers = f"{details.get('observed_value')} rows, at least {config.kwargs.get('min_value')} expected"
        elif check == "row_count_change":
            kwargs = config.kwargs
            figures = {
                "rows": details.get("observed_value"),
                "previous_rows": meta.get("previous_rows"),
                "allowed": [kwargs.get("min_value"), kwargs.get("max_value")],
                "max_change_fraction": meta.get("max_change_fraction"),
            }
            numbers = (
                f"{figures['rows']} rows accepted (delivered records), allowed "
                f"{kwargs.get('min_value')}..{kwargs.get('max_value')} (previous snapshot "
                f"{figures['previous_rows']} rows, max change {figures['max_change_fraction']:g})"
            )
        elif check == "columns_present":
            numbers = f"staged frame lacks columns {meta.get('missing_columns')}"
        else:
            numbers = str(details.get("observed_value"))
        return {
            "check": check,
            "level": "table",
            "severity": "table",
            "numbers": numbers,
            "figures": figures,
            **where,
            "column": None if check == "row_count_change" else where["column"],
        }
    raised = _raised_exception(item.exception_info)
    if raised is not None:
        return {
            "check": check,
            "level": "row",
            "severity": meta.get("severity", "error"),
            "numbers": f"could not be evaluated ({raised})",
            **where,
        }
    unexpected = details.get("unexpected_count") or 0
    counted = (details.get("element_count") or 0) - (details.get("missing_count") or 0)
    percent = details.get("unexpected_percent") or 0
    mostly = config.kwargs.get("mostly", 1.0)
    numbers = f"{unexpected} of {counted} rows unexpected ({percent:.3g}%), mostly {mostly:g}"
    return {
        "check": check,
        "level": "row",
        "severity": meta.get("severity", "error"),
        "numbers": numbers,
        **where,
        "unexpected_count": int(unexpected),
        "unexpected_percent": float(percent),
    }
