"""Typed casting: each column's strings cast per its schema type, with the rows that fail.

A cast never raises on delivered data: a value that cannot be typed becomes a ``Failure`` (its
row is quarantined under the reason code), so one bad record never rejects a whole delivery.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dates import extract_groups, parse_dates
from pipelines.resident_id import (
    INVALID_ID_CHECKSUM,
    INVALID_ID_FORMAT,
    fold_fullwidth,
    normalize_party_ids,
    normalize_resident_ids,
)
from pipelines.staging.quarantine import (
    INVALID_CODE,
    INVALID_DATE,
    INVALID_NUMBER,
    INVALID_SHARE,
    MISSING_REQUIRED,
    Failure,
)
from pipelines.staging.schema import Schema


def _text_series(values: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    return pd.Series(pd.array(values, dtype="str"), index=index)


def _strip(values: pd.Series) -> pd.Series:
    """Trimmed text, blank or missing as NA; in Arrow, as ``str.strip`` and ``where`` would be row by row."""
    text = pc.utf8_trim_whitespace(pa.array(values.astype("str")))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    return _text_series(text, values.index)


def _extract(text: pd.Series, pattern: str) -> pd.DataFrame:
    """``text.str.extract`` of a pattern of groups ``g0``, ``g1``.. (see ``extract_groups``), columns 0, 1.."""
    parts = extract_groups(text, pattern)
    return parts.set_axis(range(parts.shape[1]), axis=1)


def _cast_share(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``50%``, ``1/2``, ``0.5`` → 0.5; blank → NaN; anything else or outside (0, 1] invalid."""
    text = fold_fullwidth(text.fillna("")).str.replace(" ", "", regex=False)
    percent = _extract(text, r"^(?P<g0>[0-9]+(?:\.[0-9]+)?)%\n?$")[0]
    fraction = _extract(text, r"^(?P<g0>[0-9]+)/(?P<g1>[0-9]+)\n?$")
    plain = _extract(text, r"^(?P<g0>[0-9]+(?:\.[0-9]+)?)\n?$")[0]
    share = pd.to_numeric(plain, errors="coerce")
    share = share.fillna(pd.to_numeric(percent, errors="coerce") / 100)
    share = share.fillna(pd.to_numeric(fraction[0], errors="coerce") / pd.to_numeric(fraction[1], errors="coerce"))
    share = share.astype("float64")
    invalid = (text != "") & ~((share > 0) & (share <= 1))
    return share.where(~invalid), invalid


def _cast_month(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """YYYYMM (also ``2024-05``, ``2024/5``, ``202405.0``) as a ``YYYYMM`` string."""
    parts = _extract(fold_fullwidth(text.fillna("")), r"^(?P<g0>[0-9]{4})[-/年]?(?P<g1>[0-9]{1,2})月?(?:\.0+)?\n?$")
    month = pd.to_numeric(parts[1], errors="coerce")
    good = parts[0].notna() & month.between(1, 12)
    value = parts[0] + month.fillna(0).astype("int64").astype("str").str.zfill(2)
    return value.where(good, pd.NA).astype("str"), text.notna() & ~good


def _cast_int(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Whole numbers (``12``, ``+12``, ``12.0``) as ``Int64``; anything else invalid."""
    cleaned = text.str.replace(r"\.0+$", "", regex=True)
    number = pd.to_numeric(cleaned.where(cleaned.str.fullmatch(r"[+-]?[0-9]+"), pd.NA), errors="coerce")
    return number.astype("Int64"), text.notna() & number.isna()


def _cast_float(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Decimal numbers (``12``, ``12.5``, ``.5``) as float64; anything else invalid."""
    number = pd.to_numeric(text.where(text.str.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)"), pd.NA), errors="coerce")
    return number.astype("float64"), text.notna() & number.isna()


def _per_distinct(
    cast: Callable[[pd.Series], tuple[pd.Series, pd.Series]], text: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """``cast`` (value and invalid mask per text, row by row alike) run once per distinct text:
    a city's months, shares and counts repeat a few thousand values over millions of rows.
    A missing text is missing and not invalid, as ``cast`` has it."""
    codes, distinct = pd.factorize(text)  # missing: code -1
    value, invalid = cast(pd.Series(distinct, dtype="str"))
    present = codes >= 0
    bad = np.zeros(len(text), dtype=bool)
    bad[present] = invalid.to_numpy(dtype=bool)[codes[present]]
    return (
        pd.Series(value.array.take(codes, allow_fill=True), index=text.index),
        pd.Series(bad, index=text.index),
    )


def cast_columns(raw: pd.DataFrame, schema: Schema, extract_date: dt.date) -> tuple[pd.DataFrame, list[Failure]]:
    """Typed columns per the schema, and the failures of every row (not yet ordered).

    ``extract_date`` is the delivery's (folder date or ``extract_date``): an event column
    (``not_after_extract``) dated after it describes something that cannot have happened yet,
    so that row is ``INVALID_DATE`` like any other impossible date (sources.md "Dates").
    """
    typed: dict[str, pd.Series] = {}
    failures: list[Failure] = []
    for column in schema.columns:
        text = _strip(raw[column.key])
        if column.required:
            failures.append(Failure(MISSING_REQUIRED, text.isna(), f"{column.key}: required value missing"))
        if column.type in ("id", "org_or_id"):
            if column.type == "id":
                ids, reasons = normalize_resident_ids(text)
            else:
                ids, kinds, reasons = normalize_party_ids(text)
            typed[column.key] = ids
            if column.type == "org_or_id" and column.kind_column:
                typed[column.kind_column] = kinds
            failures.append(
                Failure(
                    INVALID_ID_FORMAT,
                    reasons.eq(INVALID_ID_FORMAT).fillna(False).astype(bool),
                    f"{column.key}: not a resident ID in any accepted form",
                )
            )
            failures.append(
                Failure(
                    INVALID_ID_CHECKSUM,
                    reasons.eq(INVALID_ID_CHECKSUM).fillna(False).astype(bool),
                    f"{column.key}: check character does not match",
                )
            )
        elif column.type in ("date", "datetime"):
            typed[column.key], invalid = parse_dates(text, keep_time=column.type == "datetime")
            failures.append(Failure(INVALID_DATE, invalid, f"{column.key}: not a possible date"))
            if column.not_after_extract:
                later = typed[column.key].dt.normalize() > pd.Timestamp(extract_date)
                failures.append(
                    Failure(
                        INVALID_DATE,
                        later.fillna(False).astype(bool),
                        f"{column.key}: after the delivery's extract date {extract_date}",
                    )
                )
        elif column.type == "code":
            value = text.replace(column.aliases) if column.aliases else text
            typed[column.key] = value
            failures.append(
                Failure(
                    INVALID_CODE,
                    value.notna() & ~value.isin(column.codes),
                    f"{column.key}: value outside the schema's code list",
                )
            )
        elif column.type == "credit_code":
            typed[column.key] = fold_fullwidth(text).str.upper().where(text.notna(), pd.NA)
        elif column.type == "int":
            typed[column.key], invalid = _per_distinct(_cast_int, text)
            failures.append(Failure(INVALID_NUMBER, invalid, f"{column.key}: not an integer"))
        elif column.type == "float":
            typed[column.key], invalid = _per_distinct(_cast_float, text)
            failures.append(Failure(INVALID_NUMBER, invalid, f"{column.key}: not a number"))
        elif column.type == "share":
            typed[column.key], invalid = _per_distinct(_cast_share, text)
            failures.append(Failure(INVALID_SHARE, invalid, f"{column.key}: not a share in (0, 1]"))
        elif column.type == "month":
            typed[column.key], invalid = _per_distinct(_cast_month, text)
            failures.append(Failure(INVALID_DATE, invalid, f"{column.key}: not a year-month"))
        else:
            typed[column.key] = text
    return pd.DataFrame(typed, index=raw.index), failures
