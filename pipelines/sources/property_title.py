"""Staging of `property_title` (sources.md).

`owner_kind` tells persons from organizations (credit codes); `share` becomes a float in
(0, 1] or NaN, `floor_area` a float.
Everything else is the schema's (`schemas/property_title.yaml`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.staging import Staged, load_schema, stage_with_schema

SCHEMA = load_schema("property_title")


def stage_property_title(raw: pd.DataFrame, extract_date: dt.date) -> Staged:
    """Typed accepted rows and the quarantine of one property_title delivery."""
    staged, _ = stage_with_schema(raw, SCHEMA, extract_date)
    return staged
