"""Staged frames as the validation step receives them (contracts.md), for the tests of the GX
guards and of what their reports may show."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from resident_ids import resident_id

AS_OF = dt.date(2027, 3, 1)


def hukou_frame(rows: int = 5) -> pd.DataFrame:
    """Staged hukou rows as staging hands them over (contracts.md)."""
    ids = [resident_id(f"3711021980{i // 28 % 12 + 1:02d}{i % 28 + 1:02d}{i % 1000:03d}") for i in range(rows)]
    births = pd.to_datetime([f"1980-{i // 28 % 12 + 1:02d}-{i % 28 + 1:02d}" for i in range(rows)])
    return pd.DataFrame(
        {
            "citizen_id": pd.array(ids, dtype="str"),
            "name": pd.array(["张伟"] * rows, dtype="str"),
            "sex": pd.array(["男", "女"] * (rows // 2) + ["男"] * (rows % 2), dtype="str"),
            "birth_date": births.astype("datetime64[ns]"),
            "household_no": pd.array([f"{100000000 + i // 3}" for i in range(rows)], dtype="str"),
            "relation_to_head": pd.array((["户主", "配偶", "子"] * rows)[:rows], dtype="str"),
            "hukou_address": pd.array(["某区文化路12号"] * rows, dtype="str"),
            "hukou_region_code": pd.array(["371102"] * rows, dtype="str"),
            "settled_date": pd.Series(pd.to_datetime(["2010-05-01"] * rows))
            .astype("datetime64[ns]")
            .where(pd.Series(range(rows)) != 1),
            "guardian1_id": pd.array([ids[0] if i % 3 == 2 else None for i in range(rows)], dtype="str"),
            "guardian1_relation": pd.array(["父亲" if i % 3 == 2 else None for i in range(rows)], dtype="str"),
            "guardian2_id": pd.array([None] * rows, dtype="str"),
            "guardian2_relation": pd.array([None] * rows, dtype="str"),
            "status": pd.array(["正常"] * rows, dtype="str"),
            "record_ref": pd.array([f"hukou.csv:{i + 2}" for i in range(rows)], dtype="str"),
        }
    )
