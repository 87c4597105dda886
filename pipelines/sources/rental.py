"""Staging of `rental` (sources.md).

`landlord_id` is a resident ID or an organization's credit code; the tenant must be a person.
Everything else is the schema's (`schemas/rental.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("rental")


def stage_rental(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one rental delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
