"""Staging of `social_insurance` (sources.md).

`local_months` is an integer (Int64) and `last_paid_month` stays a `YYYYMM` string.
Everything else is the schema's (`schemas/social_insurance.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("social_insurance")


def stage_social_insurance(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one social_insurance delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
