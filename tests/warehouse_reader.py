"""What the tests read back from a published warehouse, one helper for every test module."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa


def read(url: str, sql: str) -> pd.DataFrame:
    """The rows of one query against the warehouse at ``url`` (SQLite or PostgreSQL)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return pd.read_sql(sql, db)
    finally:
        engine.dispose()
