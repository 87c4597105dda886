"""Small frame helpers every engine step uses: one JSON spelling, membership, dates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipelines.warehouse_schema import TABLES


def json_text(value: object) -> str:
    """The one JSON spelling used in every table: sorted keys, Chinese kept readable."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def member(values: pd.Series, pool: pd.Series | pd.Index) -> np.ndarray:
    """``values.isin(pool)`` through one hash table of Python strings.

    pandas' Arrow-string ``isin`` walks a large pool in Python; IDs and address codes here
    meet pools of millions, so membership goes through an object ``Index`` instead.
    """
    pool = np.asarray(pool, dtype=object)
    index = pd.Index(pd.unique(pool[pd.notna(pool)]), dtype=object)
    return index.get_indexer(np.asarray(values, dtype=object)) >= 0


def as_dates(values: pd.Series) -> pd.Series:
    """``datetime64[ns]`` at midnight, ``NaT`` where unknown (the engine's one date form)."""
    return pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")


def produced_columns(table: str, *, with_run_id: bool = False) -> list[str]:
    """The columns the engine writes for a published table, in the warehouse's order
    (``pipelines.warehouse_schema``); ``run_id`` is added at publish unless asked for here."""
    return [c for c in TABLES[table].column_names if with_run_id or c != "run_id"]
