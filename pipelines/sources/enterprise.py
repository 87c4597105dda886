"""Staging of `enterprise` (sources.md).

The legal representative's ID, when present, must be a certain resident ID.
Everything else is the schema's (`schemas/enterprise.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("enterprise")


def stage_enterprise(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one enterprise delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
