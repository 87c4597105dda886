"""Small frame helpers every engine step uses: one JSON spelling, membership, dates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.warehouse_schema import TABLES


def json_text(value: object) -> str:
    """The one JSON spelling used in every table: sorted keys, Chinese kept readable."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def arrow_text(values) -> pa.Array:
    """Values as one Arrow ``large_string`` array (missing as null), without a Python object
    per value when the values are already Arrow-backed."""
    if isinstance(values, (pd.Series, pd.Index)) and isinstance(values.dtype, pd.StringDtype):
        array = pa.array(values.array)
    else:
        array = pa.array(np.asarray(values, dtype=object), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def as_text(values: pd.Series) -> pd.Series:
    """A text column as given: Arrow-backed text stays so (no Python object per value, cheap to
    write), anything else becomes ``object``."""
    return values if isinstance(values.dtype, pd.StringDtype) else values.astype("object")


def member(values: pd.Series, pool: pd.Series | pd.Index) -> np.ndarray:
    """``values.isin(pool)`` for text values (IDs, codes): one Arrow hash set of the pool.

    Missing values are never members; IDs and address codes here meet pools of millions, so
    membership goes through Arrow's ``is_in`` rather than Python objects.
    """
    found = pc.is_in(arrow_text(values), value_set=arrow_text(pool).drop_null().unique(), skip_nulls=True)
    return found.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object or isinstance(values.dtype, pd.StringDtype)


def _sort_key(values: pd.Series) -> pa.Array:
    """A column as Arrow for sorting: text as text, missing values (NaN, NaT, NA) as null."""
    if _is_text(values):
        return arrow_text(values)
    array = pa.array(values, from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _differs(values: pd.Series, order: np.ndarray) -> np.ndarray:
    """For the values taken in ``order``: whether each differs from the one before it, as
    ``drop_duplicates`` compares (two missing values are equal)."""
    if _is_text(values):
        taken = arrow_text(values).take(pa.array(order))
        missing = taken.is_null().to_numpy(zero_copy_only=False)
        differs = pc.not_equal(taken[1:], taken[:-1]).fill_null(False).to_numpy(zero_copy_only=False)
        return differs | (missing[1:] != missing[:-1])
    codes = pd.factorize(values)[0][order]
    return codes[1:] != codes[:-1]


def sort_rows(
    frame: pd.DataFrame, keys: list[str], ascending: bool | list[bool] = True, *, first_of: int | None = None
) -> pd.DataFrame:
    """``frame.sort_values(keys, kind="stable")`` (index kept), by Arrow's stable sort of the key
    columns; missing values last in either order, as pandas sorts them (text is compared by its
    UTF-8 bytes, which is code point order, as Python compares it).

    With ``first_of=n``, only the first row of each run of equal values in the first ``n`` keys
    is kept: ``.drop_duplicates(keys[:n])`` of the sorted frame.
    """
    if frame.empty:
        return frame
    flags = [ascending] * len(keys) if isinstance(ascending, bool) else list(ascending)
    table = pa.table({str(i): _sort_key(frame[key]) for i, key in enumerate(keys)})
    order = pc.sort_indices(
        table, sort_keys=[(str(i), "ascending" if up else "descending", "at_end") for i, up in enumerate(flags)]
    ).to_numpy()
    if first_of is not None:
        change = np.zeros(len(order), dtype=bool)
        change[0] = True
        for key in keys[:first_of]:
            change[1:] |= _differs(frame[key], order)
        order = order[change]
    return frame.take(order)


def run_starts(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Positions where a new run of equal ``keys`` begins in an already sorted frame (a missing
    value never equals the one before it, as ``frame[keys] != frame[keys].shift()``)."""
    change = np.zeros(len(frame), dtype=bool)
    if len(frame):
        change[0] = True
    for key in keys:
        values = frame[key]
        if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
            text = arrow_text(values)
            differs = pc.not_equal(text[1:], text[:-1]).fill_null(True).to_numpy(zero_copy_only=False)
        else:
            array = values.to_numpy()
            differs = array[1:] != array[:-1]
        change[1:] |= differs
    return np.flatnonzero(change)


def text_concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of Arrow text arrays and literal strings (no separator)."""
    items = [pa.scalar(p, type=pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*items, pa.scalar("", type=pa.large_string()))


def as_dates(values: pd.Series) -> pd.Series:
    """``datetime64[ns]`` at midnight, ``NaT`` where unknown (the engine's one date form)."""
    return pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")


def produced_columns(table: str, *, with_run_id: bool = False) -> list[str]:
    """The columns the engine writes for a published table, in the warehouse's order
    (``pipelines.warehouse_schema``); ``run_id`` is added at publish unless asked for here."""
    return [c for c in TABLES[table].column_names if with_run_id or c != "run_id"]
