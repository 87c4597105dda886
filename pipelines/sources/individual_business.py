"""Staging of `individual_business` (sources.md).

The operator's ID links the business to a guardian for stable employment.
Everything else is the schema's (`schemas/individual_business.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("individual_business")


def stage_individual_business(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one individual_business delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
