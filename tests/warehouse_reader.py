"""What the tests read back from a published warehouse, one helper for every test module: its
rows by query, and a PostgreSQL session as one of its roles."""

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


def connect(url: str, role: str, password: str | None = None):
    """An autocommit psycopg session as ``role`` on the local PostgreSQL database of ``url``."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=5432, user=role, password=password, dbname=url.rsplit("/", 1)[1], autocommit=True
    )
