"""Staging of `hukou` (sources.md).

Guardian IDs are checked like the citizen's own: a present but unrepairable guardian ID
quarantines the person (contracts.md), since a wrong link is worse than none.
Everything else is the schema's (`schemas/hukou.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("hukou")


def stage_hukou(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one hukou delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
