"""The staged result of one delivery, and the generic split by which every source is staged.

``stage_with_schema`` is pure (frames in, frames out). The registry calls it for a source staged
by its schema alone; a source module adds its own checks as extra failures and reshapes the
accepted rows; ``snapshot.stage_source`` does the I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.staging.casting import cast_columns
from pipelines.staging.quarantine import (
    MALFORMED_RECORD,
    EarlierCopies,
    Failure,
    first_failure,
    quarantine_frame,
)
from pipelines.staging.schema import Schema


@dataclass(frozen=True)
class Staged:
    """One source's staged snapshot: typed accepted rows and the quarantine, with the counts."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    rows_duplicate: int

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    @property
    def rows_accepted(self) -> int:
        """Delivered records accepted (contracts, not buyer rows, for housing_contract)."""
        return self.rows_in - self.rows_duplicate - self.rows_quarantined


CAST_ROWS = 1 << 19  # rows cast at once: a slice's intermediates stay small beside the delivery


def stage_with_schema(
    raw: pd.DataFrame,
    schema: Schema,
    extract_date: dt.date,
    extra_failures: tuple[Failure, ...] = (),
    duplicate: np.ndarray | None = None,
) -> tuple[Staged, pd.DataFrame]:
    """Dedupe, cast (events checked against ``extract_date``), and split into accepted and
    quarantined rows.

    Returns the ``Staged`` result and the typed frame of the accepted rows indexed like ``raw``
    (for a source module that reshapes them, like housing_contract's buyers).
    ``extra_failures`` are a source's own checks, masks indexed like ``raw``. ``duplicate``
    marks the rows repeating an earlier row of the delivery (``EarlierCopies``, over the whole
    delivery when ``raw`` is a slice of it); without it the duplicates are found in ``raw``.
    Rows are cast ``CAST_ROWS`` at a time (every check is per row), so the casts'
    intermediates are a slice's, not the delivery's.
    """
    if duplicate is None:
        duplicate = EarlierCopies.in_frame(raw["raw"])
    accepted_parts, quarantined_parts = [], []
    for start in range(0, max(len(raw), 1), CAST_ROWS):
        part = raw.iloc[start : start + CAST_ROWS]
        accepted, quarantined = _split_rows(
            part, duplicate[start : start + CAST_ROWS], schema, extract_date, extra_failures
        )
        accepted_parts.append(accepted)
        quarantined_parts.append(quarantined)
    accepted = pd.concat(accepted_parts)
    quarantined = pd.concat(quarantined_parts, ignore_index=True)
    staged = Staged(
        accepted=accepted.reset_index(drop=True),
        quarantined=quarantined,
        rows_in=len(raw),
        rows_duplicate=int(duplicate.sum()),
    )
    return staged, accepted


def _split_rows(
    raw: pd.DataFrame, duplicate: np.ndarray, schema: Schema, extract_date: dt.date, extra_failures: tuple[Failure, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Some rows of a delivery typed and split: accepted (indexed like ``raw``) and quarantined."""
    malformed = raw["parse_error"].fillna("") != ""
    typed, failures = cast_columns(raw, schema, extract_date)
    failures.append(Failure(MALFORMED_RECORD, malformed, ""))
    failures.extend(extra_failures)
    reason, detail = first_failure(failures, raw.index)
    failed = reason.notna().to_numpy(dtype=bool)
    bad, good = failed & ~duplicate, ~failed & ~duplicate
    quarantined = quarantine_frame(schema.source, raw, reason, detail, bad)
    columns = {}
    for key in list(typed.columns):  # filter column by column, freeing each typed column as we go
        columns[key] = typed.pop(key)[good]
    accepted = pd.DataFrame(columns)
    accepted["record_ref"] = raw["record_ref"][good].astype("str")
    return accepted, quarantined
