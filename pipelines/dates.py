"""Dates as the departments deliver them, parsed without guessing.

Seen forms (sources.md): ``2019-07-31``, ``2019/7/31``, ``20190731``, ``2019年7月31日``,
``2019-07-31 08:15:00`` and spreadsheet serial numbers (``43677``, days since 1899-12-30, the
Excel epoch that absorbs its 1900 leap-year bug). Parsing runs once per distinct text, which at
city scale is a few ten thousand values for millions of rows.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.resident_id import EARLIEST_YEAR, LATEST_YEAR, fold_fullwidth

EXCEL_EPOCH = pd.Timestamp("1899-12-30")

# Python's ``\s`` (every character ``str.isspace`` accepts) spelled out for RE2, whose ``\s`` is ASCII.
_SPACE = "[" + "".join(f"\\x{{{code:x}}}" for code in range(sys.maxunicode + 1) if chr(code).isspace()) + "]"
# RE2 patterns read as ``re`` reads them: ``\n?$`` is ``re``'s ``$`` (also before a final newline).
_SEPARATED = (
    rf"^(?P<year>[0-9]{{4}}){_SPACE}*[-/.年]{_SPACE}*(?P<month>[0-9]{{1,2}}){_SPACE}*[-/.月]{_SPACE}*"
    rf"(?P<day>[0-9]{{1,2}}){_SPACE}*日?"
    r"(?:[ T]+(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{1,2})(?::(?P<second>[0-9]{1,2})(?:\.[0-9]+)?)?)?\n?$"
)
_COMPACT = r"^(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})\n?$"
_SERIAL = r"^(?P<days>[0-9]{1,5})(?:\.(?P<fraction>[0-9]+))?\n?$"


def extract_groups(texts: pd.Series, pattern: str) -> pd.DataFrame:
    """``texts.str.extract(pattern)`` run by Arrow's RE2 at once (pandas runs ``re`` row by row).

    ``pattern`` names its groups (the frame's columns) and each group matches at least one
    character when it takes part, so an empty capture is a group that took none (NA, as pandas).
    """
    found = pc.extract_regex(pa.array(texts.astype("str")), pattern)
    columns = {}
    for i in range(found.type.num_fields):
        group = pc.struct_field(found, [i])
        group = pc.if_else(pc.equal(group, ""), pa.scalar(None, group.type), group)
        columns[found.type.field(i).name] = pd.Series(pd.array(group, dtype="str"), index=texts.index)
    return pd.DataFrame(columns, index=texts.index)


def _from_parts(parts: pd.DataFrame) -> pd.Series:
    """Build timestamps from year..second text; an impossible calendar date becomes NaT."""
    numbers = parts.apply(pd.to_numeric, errors="coerce").fillna({"hour": 0, "minute": 0, "second": 0})
    numbers = numbers.reindex(columns=["year", "month", "day", "hour", "minute", "second"], fill_value=0)
    in_range = numbers["year"].between(EARLIEST_YEAR, LATEST_YEAR)
    stamps = pd.to_datetime(numbers.where(in_range, np.nan).astype("float64"), errors="coerce")
    return stamps.astype("datetime64[ns]")


def _parse_distinct(texts: pd.Series, keep_time: bool) -> pd.Series:
    parsed = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[ns]")
    for pattern in (_SEPARATED, _COMPACT):
        parts = extract_groups(texts, pattern)
        found = parts["year"].notna()
        if found.any():
            parsed[found] = _from_parts(parts[found])
    serial = extract_groups(texts, _SERIAL)
    found = serial["days"].notna() & parsed.isna() & ~texts.str.fullmatch(r"[0-9]{8}")
    if found.any():
        days = pd.to_numeric(serial.loc[found, "days"]).astype("int64")
        fraction = pd.to_numeric("0." + serial.loc[found, "fraction"].fillna("0"))
        stamps = EXCEL_EPOCH + pd.to_timedelta(days, unit="D")
        if keep_time:
            stamps = stamps + pd.to_timedelta((fraction * 86400).round(), unit="s")
        parsed[found] = stamps.astype("datetime64[ns]")
    return parsed if keep_time else parsed.dt.normalize()


def parse_dates(values: pd.Series, *, keep_time: bool = False) -> tuple[pd.Series, pd.Series]:
    """Parse delivered date texts; returns ``(datetime64[ns] Series, invalid mask)``.

    Blank or missing texts give NaT and are not invalid (whether a value is required is the
    schema's business). A text in no seen form, or an impossible date (2019-02-30), gives NaT
    and ``invalid`` True. Without ``keep_time`` the time of day is dropped (midnight).
    """
    text = fold_fullwidth(values.fillna("").astype("str")).str.strip()
    codes, distinct = pd.factorize(text)
    distinct_texts = pd.Series(np.asarray(distinct, dtype=object), dtype="str")
    parsed_distinct = _parse_distinct(distinct_texts, keep_time)
    parsed = pd.Series(parsed_distinct.to_numpy()[codes], index=values.index, dtype="datetime64[ns]")
    invalid = parsed.isna() & (text != "")
    return parsed, invalid
