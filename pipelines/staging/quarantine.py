"""Quarantine: reason codes in contract order, failed checks, duplicates and the quarantine frame.

A row failing several checks is quarantined once, under the first reason in ``REASON_ORDER``
(contracts.md), so counts per reason add up to the rows quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.resident_id import INVALID_ID_CHECKSUM, INVALID_ID_FORMAT

MALFORMED_RECORD = "MALFORMED_RECORD"
MISSING_REQUIRED = "MISSING_REQUIRED"
INVALID_DATE = "INVALID_DATE"
INVALID_CODE = "INVALID_CODE"
INVALID_NUMBER = "INVALID_NUMBER"
INVALID_SHARE = "INVALID_SHARE"
REASON_ORDER = (
    MALFORMED_RECORD,
    MISSING_REQUIRED,
    INVALID_ID_FORMAT,
    INVALID_ID_CHECKSUM,
    INVALID_DATE,
    INVALID_CODE,
    INVALID_NUMBER,
    INVALID_SHARE,
)
QUARANTINE_COLUMNS = ["source", "record_ref", "reason_code", "detail", "raw"]


@dataclass(frozen=True)
class Failure:
    """Rows failing one check: the reason code, a row mask and a one-line detail (no values)."""

    reason: str
    mask: pd.Series
    detail: str


def first_failure(failures: list[Failure], index: pd.Index) -> tuple[pd.Series, pd.Series]:
    """Per row, the first failing check in contract order (reason code and detail), else NA."""
    reason = pd.Series(pd.NA, index=index, dtype="object")
    detail = pd.Series(pd.NA, index=index, dtype="object")
    rank = {code: i for i, code in enumerate(REASON_ORDER)}
    for failure in sorted(failures, key=lambda f: rank.get(f.reason, len(REASON_ORDER))):
        hit = failure.mask.reindex(index, fill_value=False).to_numpy(dtype=bool) & reason.isna().to_numpy()
        reason[hit] = failure.reason
        detail[hit] = failure.detail
    return reason, detail


def duplicate_rows(raw: pd.DataFrame, probe: str) -> np.ndarray:
    """True where a row's text equals an earlier row's.

    Equal rows share the ``probe`` column and the text length, so only rows sharing both are
    compared whole: hashing every long row text (an exchange row is JSON) would cost gigabytes
    at city scale.
    """
    text = raw["raw"]
    shared = raw[probe].duplicated(keep=False).to_numpy(dtype=bool)  # rows sharing a pair share the probe
    candidates = np.zeros(len(text), dtype=bool)
    if shared.any():
        pairs = pd.DataFrame({"probe": raw[probe][shared], "length": text[shared].str.len()})
        candidates[shared] = pairs.duplicated(keep=False).to_numpy(dtype=bool)
    duplicate = np.zeros(len(text), dtype=bool)
    duplicate[candidates] = text[candidates].duplicated(keep="first").to_numpy(dtype=bool)
    return duplicate


def quarantine_frame(
    source: str, raw: pd.DataFrame, reason: pd.Series, detail: pd.Series, rows: np.ndarray
) -> pd.DataFrame:
    """The quarantine of the ``rows`` (a mask of ``raw``) with their first reason and detail.

    A malformed record's detail is the reader's parse error, which says what broke the line.
    """
    detail = detail.where(reason != MALFORMED_RECORD, raw["parse_error"]).where(reason.notna(), pd.NA)
    return pd.DataFrame(
        {
            "source": source,
            "record_ref": raw["record_ref"][rows].astype("str"),
            "reason_code": reason[rows].astype("str"),
            "detail": detail[rows].astype("str"),
            "raw": raw["raw"][rows].astype("str"),
        },
        columns=QUARANTINE_COLUMNS,
    ).reset_index(drop=True)
