"""Staging of ``housing_contract`` (sources.md): one JSON object per contract, many buyers.

The contract is staged one row per buyer (contracts.md) so the engine can find a guardian among
the buyers with a plain join. A contract is quarantined whole when any buyer ID cannot be
repaired with certainty: a partly readable buyer list would silently drop a co-buyer.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from pipelines.resident_id import INVALID_ID_CHECKSUM, INVALID_ID_FORMAT, normalize_resident_ids
from pipelines.staging.quarantine import MALFORMED_RECORD, MISSING_REQUIRED, Failure
from pipelines.staging.schema import load_schema
from pipelines.staging.stage import Staged, stage_with_schema

SCHEMA = load_schema("housing_contract")
COLUMNS = [
    "contract_no",
    "buyer_id",
    "buyer_name",
    "seller",
    "project_name",
    "address",
    "use",
    "signed_date",
    "status",
    "record_ref",
    "buyers_count",
]


def _buyer_list(text: str) -> list | None:
    try:
        value = json.loads(text) if text.strip() else []
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        return None
    return value


def explode_buyers(buyers_text: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """One row per buyer (index = the contract's row label) and a mask of unreadable lists."""
    lists = pd.Series(
        [_buyer_list(text) for text in buyers_text.fillna("").tolist()], index=buyers_text.index, dtype="object"
    )
    unreadable = lists.isna()
    exploded = lists[~unreadable].explode().dropna()
    buyers = pd.DataFrame(
        {
            "buyer_name": [b.get("name") for b in exploded.tolist()],
            "buyer_id": [b.get("id") for b in exploded.tolist()],
        },
        index=exploded.index,
    )
    buyers = buyers.astype({"buyer_name": "str", "buyer_id": "str"})
    return buyers, unreadable


def stage_housing_contract(raw: pd.DataFrame, extract_date: dt.date, duplicate: np.ndarray | None = None) -> Staged:
    """Typed per-buyer rows of some contracts of a delivery; counts are per contract (line).

    ``duplicate`` marks contracts repeating an earlier one (``stage_with_schema``)."""
    buyers, unreadable = explode_buyers(raw["buyers"])
    buyers["buyer_name"] = buyers["buyer_name"].str.strip().replace("", pd.NA)
    ids, reasons = normalize_resident_ids(buyers["buyer_id"])
    buyers["buyer_id"] = ids.to_numpy()
    per_contract = (
        pd.DataFrame(
            {
                "missing": ids.isna(),
                "format": reasons.eq(INVALID_ID_FORMAT).fillna(False).astype(bool),
                "checksum": reasons.eq(INVALID_ID_CHECKSUM).fillna(False).astype(bool),
            }
        )
        .groupby(level=0)
        .any()
        .reindex(raw.index, fill_value=False)
    )
    no_buyer = ~raw.index.isin(buyers.index) & ~unreadable
    failures = (
        Failure(MALFORMED_RECORD, unreadable, "buyers: not a JSON list of {name, id} objects"),
        Failure(MISSING_REQUIRED, per_contract["missing"] | no_buyer, "buyers: a buyer ID is missing"),
        Failure(INVALID_ID_FORMAT, per_contract["format"], "buyers: a buyer ID is not a resident ID"),
        Failure(INVALID_ID_CHECKSUM, per_contract["checksum"], "buyers: a buyer ID's check character does not match"),
    )
    staged, accepted = stage_with_schema(raw, SCHEMA, extract_date, failures, duplicate)
    counts = buyers.groupby(level=0).size().rename("buyers_count")
    per_buyer = accepted.drop(columns=["buyers"]).join(buyers, how="inner").join(counts)
    per_buyer["buyers_count"] = per_buyer["buyers_count"].astype("int64")
    return Staged(
        accepted=per_buyer[COLUMNS].reset_index(drop=True),
        quarantined=staged.quarantined,
        rows_in=staged.rows_in,
        rows_duplicate=staged.rows_duplicate,
    )
