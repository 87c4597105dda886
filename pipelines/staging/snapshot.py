"""The staging I/O driver: one source's delivery in, its snapshot written atomically.

``stage_source`` reads the delivery (landing folder or exchange database) a slice at a time,
runs the source's stage function on each (``pipelines.registry``: its special module's, or
staging by the schema alone) and writes ``accepted.parquet``, ``quarantine.parquet`` and
``snapshot.json``;
``staging_version`` stamps what code and schema staged it. This is the only staging module
that imports the registry (and through it ``pipelines.sources``); both import the layers below.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import registry
from pipelines.errors import UsageError
from pipelines.staging.delivery import choose_delivery
from pipelines.staging.quarantine import EarlierCopies
from pipelines.staging.readers import FileRecords, read_exchange_delivery
from pipelines.staging.schema import load_schema

log = logging.getLogger(__name__)


class ParquetParts:
    """A Parquet file written a frame at a time into ``scratch`` (on the same file system), put
    in place only when every frame is written (``os.replace``), and never if writing fails, so
    a half-staged delivery is never seen.

    The first frame with rows fixes the file's column types; a frame without rows has types
    only as far as pandas can tell, so it is written only when no frame has rows.
    """

    def __init__(self, path: Path, scratch: Path) -> None:
        self.path = path
        self._temporary = scratch / f".{path.parent.name}.{path.name}.{os.getpid()}.tmp"
        self._writer: pq.ParquetWriter | None = None
        self._empty: pa.Table | None = None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            if not len(table):
                if self._empty is None:
                    self._empty = table
                return
            self._writer = pq.ParquetWriter(self._temporary, table.schema)
        elif not table.schema.equals(self._writer.schema):
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def __enter__(self) -> ParquetParts:
        return self

    def __exit__(self, failed, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
        elif failed is None and self._empty is not None:
            pq.write_table(self._empty, self._temporary)
        if failed is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temporary, self.path)
        else:
            self._temporary.unlink(missing_ok=True)


def staging_version(source: str) -> str:
    """What a staged snapshot depends on besides the delivery: the schema and the staging code.

    Hashes the source's schema, every module of this package and the source's own module (when
    it has one), each with its name, so a snapshot staged by other code or another schema is
    never reused.
    """
    declared = registry.source(source)
    staging_code = sorted(Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256()
    for path in (declared.schema_path, *staging_code, declared.special_module_path):
        if path is not None:
            digest.update(f"{path.parent.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_source(source: str, *, landing: Path | None, exchange_url: str | None, as_of: dt.date, out_dir: Path) -> dict:
    """Stage one source's delivery for ``as_of`` and write its snapshot under ``out_dir/source``.

    Writes ``accepted.parquet``, ``quarantine.parquet`` and ``snapshot.json``, each replaced
    atomically and only once the whole delivery has been read, so a rejected delivery leaves
    the last good snapshot untouched. The delivery is read twice, a slice at a time: once for
    the fingerprints that find its duplicates (``EarlierCopies``), once to stage it slice by
    slice into the Parquet files, so the memory it takes is a slice's, not the delivery's.
    Returns the snapshot dict (contracts.md).
    """
    if (landing is None) == (exchange_url is None):
        raise UsageError("stage_source needs exactly one of a landing directory or an exchange URL")
    schema = load_schema(source)
    stage = registry.stage_function(source)
    scratch, target = Path(out_dir), Path(out_dir) / source  # the source's folder appears only once staged
    scratch.mkdir(parents=True, exist_ok=True)
    if landing is not None:
        folder = choose_delivery(Path(landing), source, as_of)
        records = FileRecords(folder, schema, spill_dir=scratch)
        day = dt.date.fromisoformat(folder.name)
    else:
        records, day = read_exchange_delivery(exchange_url, schema, as_of)
    delivery = day.isoformat()
    accepted_path, quarantine_path = target / "accepted.parquet", target / "quarantine.parquet"
    counts = dict.fromkeys(("rows_in", "rows_accepted", "rows_quarantined", "rows_duplicate"), 0)
    with (
        records,
        ParquetParts(accepted_path, scratch) as accepted,
        ParquetParts(quarantine_path, scratch) as quarantined,
    ):
        copies = EarlierCopies(records.texts())
        for raw in records.frames():
            staged = stage(raw, day, copies.copies(raw["raw"]))
            accepted.write(staged.accepted)
            quarantined.write(staged.quarantined)
            for key in counts:
                counts[key] += getattr(staged, key)
        if counts["rows_in"] != copies.records:
            raise RuntimeError(f"{source}: {counts['rows_in']} records staged of the {copies.records} read")
    snapshot = {
        "source": source,
        "delivery": delivery,
        "checksum": records.checksum,
        **counts,
        "accepted_path": str(accepted_path),
        "quarantine_path": str(quarantine_path),
        "staging_version": staging_version(source),
    }
    temporary = target / f".snapshot.json.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(snapshot, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, target / "snapshot.json")
    log.info(
        "%s %s: %d in, %d accepted, %d quarantined, %d duplicate",
        source,
        delivery,
        counts["rows_in"],
        counts["rows_accepted"],
        counts["rows_quarantined"],
        counts["rows_duplicate"],
    )
    return snapshot
