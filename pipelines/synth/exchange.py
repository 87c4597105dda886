"""Load a synthesized city's deliveries into an exchange database (the database form of sources.md).

The exchange's front database holds the same datasets as the files: one table per source named
by its key, the file form's headers as text columns plus ``extract_date``. Values are the raw
text as delivered, dirt included, so a run from the database must survive the same dirt as a run
from the files. A malformed record (wrong field count, broken JSON) cannot be a table row: the
exchange would have rejected it, so it is skipped and counted.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.errors import UsageError
from pipelines.staging.delivery import SUCCESS_MARKER
from pipelines.staging.readers import FileRecords
from pipelines.staging.schema import Schema, load_schemas

log = logging.getLogger(__name__)

__all__ = ["load_exchange"]

COPY_BATCH_ROWS = 500_000


def _deliveries(landing: Path, source: str) -> list[tuple[dt.date, Path]]:
    """Complete delivery folders of one source, oldest first; unfinished ones never reach the exchange."""
    found = []
    base = landing / source
    for folder in sorted(base.iterdir()) if base.is_dir() else ():
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue
        if (folder / SUCCESS_MARKER).exists():
            found.append((day, folder))
    return found


def _delivered_rows(folder: Path, schema: Schema) -> tuple[pd.DataFrame, int]:
    """The delivery's well-formed records as text columns named by the file form's headers."""
    with FileRecords(folder, schema) as records:
        raw = pd.concat(list(records.frames()), ignore_index=True)
    good = (raw["parse_error"].fillna("") == "").to_numpy()
    present = [c for c in schema.columns if c.key in raw.columns]
    frame = pd.DataFrame({c.header: raw[c.key][good].fillna("").astype("str") for c in present})
    return frame.reset_index(drop=True), int((~good).sum())


def _create_tables(engine, schemas: dict[str, Schema], headers: dict[str, list[str]]) -> None:
    import sqlalchemy as sa

    meta = sa.MetaData()
    for source, columns in headers.items():
        sa.Table(source, meta, *(sa.Column(h, sa.Text) for h in columns), sa.Column("extract_date", sa.Date))
    with engine.begin() as conn:
        for source in schemas:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{source}"'))
    meta.create_all(engine)


def _copy_postgres(dbapi, table: str, frame: pd.DataFrame, day: dt.date) -> None:
    """COPY in CSV form: every text quoted, so an empty text stays an empty text, not NULL."""
    columns = ", ".join(f'"{h}"' for h in frame.columns) + ", extract_date"
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    with dbapi.cursor() as cur, cur.copy(f'COPY "{table}" ({columns}) FROM STDIN (FORMAT csv)') as copy:
        for start in range(0, len(frame), COPY_BATCH_ROWS):
            part = frame.iloc[start : start + COPY_BATCH_ROWS]
            arrow = pa.Table.from_pandas(part, preserve_index=False)
            arrow = arrow.append_column("extract_date", pa.array([day.isoformat()] * len(part), pa.string()))
            buffer = io.BytesIO()
            pacsv.write_csv(arrow, buffer, options)
            copy.write(buffer.getbuffer())


def _insert_sqlite(dbapi, table: str, frame: pd.DataFrame, day: dt.date) -> None:
    marks = ", ".join("?" for _ in range(len(frame.columns) + 1))
    columns = ", ".join(f'"{h}"' for h in frame.columns) + ", extract_date"
    frame = frame.assign(extract_date=day.isoformat())
    cur = dbapi.cursor()
    cur.executemany(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', frame.itertuples(index=False, name=None))
    cur.close()


def load_exchange(city_dir: Path, url: str) -> dict:
    """Write every complete delivery under ``city_dir/landing`` into the exchange database at ``url``.

    Tables are dropped and recreated, so loading twice gives the same database. Returns, per
    source and extract date, the rows loaded and the malformed records skipped.
    """
    import sqlalchemy as sa

    landing = Path(city_dir) / "landing"
    if not landing.is_dir():
        raise UsageError(f"load_exchange: no landing directory under {city_dir}")
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise UsageError(f"exchange database URL not usable: {type(exc).__name__}") from None
    if engine.dialect.name not in ("postgresql", "sqlite"):
        raise UsageError(f"load_exchange: {engine.dialect.name} is not supported (SQLite or PostgreSQL)")
    schemas = load_schemas()
    summary: dict[str, dict] = {}
    headers = {source: [c.header for c in schema.columns] for source, schema in schemas.items()}
    try:
        _create_tables(engine, schemas, headers)
        for source, schema in schemas.items():
            loaded: dict[str, int] = {}
            skipped: dict[str, int] = {}
            for day, folder in _deliveries(landing, source):
                frame, malformed = _delivered_rows(folder, schema)
                frame = frame.reindex(columns=[h for h in headers[source] if h in frame.columns])
                raw = engine.raw_connection()
                try:
                    if engine.dialect.name == "postgresql":
                        _copy_postgres(raw.driver_connection, source, frame, day)
                    else:
                        _insert_sqlite(raw.driver_connection, source, frame, day)
                    raw.commit()
                finally:
                    raw.close()
                loaded[day.isoformat()] = len(frame)
                skipped[day.isoformat()] = malformed
                del frame
            summary[source] = {"rows": loaded, "malformed_skipped": skipped}
            log.info("exchange %s: rows loaded %s, malformed records skipped %s", source, loaded, skipped)
    finally:
        engine.dispose()
    return {
        "url": engine.url.render_as_string(hide_password=True),
        "tables": summary,
        "malformed_skipped": sum(n for s in summary.values() for n in s["malformed_skipped"].values()),
    }
