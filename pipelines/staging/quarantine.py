"""Quarantine: reason codes in contract order, failed checks, duplicates and the quarantine frame.

A row failing several checks is quarantined once, under the first reason in ``REASON_ORDER``
(contracts.md), so counts per reason add up to the rows quarantined.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

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
RAW_KEEP_CHARS = 4096  # how much of an oversized record the quarantine keeps


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


FINGERPRINT_WORDS = 4  # the 8-byte words of a record's head, and as many of its tail, that its fingerprint mixes
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _fingerprints(texts: pa.Array) -> np.ndarray:
    """Per text, 64 bits mixed from its length and its first and last ``FINGERPRINT_WORDS``
    8-byte words (read inside the text only): equal texts have equal fingerprints, and the
    converse is likely enough that few records are compared whole."""
    texts = texts.cast(pa.large_string())
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    padded = np.zeros((data.size if data is not None else 0) + 8, dtype=np.uint8)  # a word read at the end stays inside
    if data is not None:
        padded[: data.size] = np.frombuffer(data, dtype=np.uint8)
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # a word at every byte
    start, end = offsets[:-1], offsets[1:]
    length = end - start
    last = np.maximum(end - 8, start)
    short_bits = (8 * np.minimum(length, 7)).astype(np.uint64)
    keep = np.where(length < 8, (np.uint64(1) << short_bits) - np.uint64(1), ~np.uint64(0))
    mixed = length.astype(np.uint64) * _MIX
    for j in range(FINGERPRINT_WORDS):
        for at in (start + 8 * j, end - 8 - 8 * j):
            mixed ^= words[np.clip(at, start, last)] & keep
            mixed *= _MIX
            mixed ^= mixed >> np.uint64(29)
    return mixed


class EarlierCopies:
    """Which records of a delivery repeat an earlier record's whole text: the duplicates.

    Built from the delivery's texts in delivery order (one pass), it keeps only a fingerprint
    per record, so the candidates — records sharing a fingerprint with another — are found
    without holding the delivery's texts. ``copies`` then takes the records again, slice by
    slice in the same order, and compares the candidates' texts exactly: a record is a copy
    when its text equals an earlier record's, never because two fingerprints collide.
    """

    def __init__(self, texts: Iterable[pa.Array | pa.ChunkedArray]) -> None:
        parts = []
        for part in texts:
            for chunk in part.chunks if isinstance(part, pa.ChunkedArray) else [part]:
                parts.append(_fingerprints(chunk))
        fingerprints = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        self._candidate = pd.Series(fingerprints).duplicated(keep=False).to_numpy(dtype=bool)
        self._seen: set[str] = set()
        self._at = 0

    @classmethod
    def in_frame(cls, texts: pd.Series) -> np.ndarray:
        """The copies among the texts of one frame (a delivery read in one slice)."""
        return cls([pa.array(texts.astype("str"))]).copies(texts)

    def copies(self, texts: pd.Series) -> np.ndarray:
        """True where a text of the next slice of records repeats an earlier record's."""
        candidate = self._candidate[self._at : self._at + len(texts)]
        if len(candidate) != len(texts):
            raise RuntimeError("the delivery's records were read back in other slices than counted")
        self._at += len(texts)
        copy = np.zeros(len(texts), dtype=bool)
        for i in np.flatnonzero(candidate):
            text = texts.iloc[i]
            if text in self._seen:
                copy[i] = True
            else:
                self._seen.add(text)
        return copy

    @property
    def records(self) -> int:
        return len(self._candidate)


def _shortened(raw: pd.Series) -> pd.Series:
    """Raw texts longer than the quarantine keeps cut short; only those rows are sliced."""
    long = raw.str.len() > RAW_KEEP_CHARS
    if not long.any():
        return raw
    return raw.where(~long, raw[long].str.slice(0, RAW_KEEP_CHARS) + "…")


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
            "raw": _shortened(raw["raw"][rows].astype("str")),
        },
        columns=QUARANTINE_COLUMNS,
    ).reset_index(drop=True)
