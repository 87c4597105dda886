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


def member(values: pd.Series, pool: pd.Series | pd.Index) -> np.ndarray:
    """``values.isin(pool)`` for text values (IDs, codes): one Arrow hash set of the pool.

    Missing values are never members; IDs and address codes here meet pools of millions, so
    membership goes through Arrow's ``is_in`` rather than Python objects.
    """
    found = pc.is_in(arrow_text(values), value_set=arrow_text(pool).drop_null().unique(), skip_nulls=True)
    return found.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _ordinal(values: pd.Series, ascending: bool) -> np.ndarray:
    """Integer ranks of the values in sort order, missing last (as pandas sorts); equal values
    share a rank. Text is ranked by Arrow (UTF-8 byte order is code point order, as Python's)."""
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        ranks = pc.rank(arrow_text(values), sort_keys="ascending" if ascending else "descending", tiebreaker="dense")
        return ranks.to_numpy().astype(np.int64)  # missing values rank last in either order
    codes, uniques = pd.factorize(values, sort=True)
    codes = codes.astype(np.int64, copy=False)
    n = len(uniques)
    if not ascending:
        codes = np.where(codes >= 0, n - 1 - codes, codes)
    codes[codes < 0] = n
    return codes


def sort_rows(
    frame: pd.DataFrame, keys: list[str], ascending: bool | list[bool] = True, *, first_of: int | None = None
) -> pd.DataFrame:
    """``frame.sort_values(keys, kind="stable")`` (index kept), through integer ranks of each
    key and one stable ``lexsort``; missing values last, as pandas sorts them.

    With ``first_of=n``, only the first row of each run of equal values in the first ``n`` keys
    is kept: ``.drop_duplicates(keys[:n])`` of the sorted frame.
    """
    if frame.empty:
        return frame
    flags = [ascending] * len(keys) if isinstance(ascending, bool) else list(ascending)
    ranks = [_ordinal(frame[key], up) for key, up in zip(keys, flags)]
    order = np.lexsort(ranks[::-1])
    if first_of is not None:
        change = np.zeros(len(order), dtype=bool)
        change[0] = True
        for rank in ranks[:first_of]:
            ordered = rank[order]
            change[1:] |= ordered[1:] != ordered[:-1]
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
