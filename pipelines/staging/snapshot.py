"""The staging I/O driver: one source's delivery in, its snapshot written atomically.

``stage_source`` reads the delivery (landing folder or exchange database), runs the source's
stage function (``pipelines.registry``: its special module's, or staging by the schema alone)
and writes ``accepted.parquet``, ``quarantine.parquet`` and ``snapshot.json``;
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

from pipelines import registry
from pipelines.errors import UsageError
from pipelines.staging.delivery import choose_delivery
from pipelines.staging.readers import read_exchange_delivery, read_file_delivery
from pipelines.staging.schema import load_schema

log = logging.getLogger(__name__)


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)


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
    the last good snapshot untouched. Returns the snapshot dict (contracts.md).
    """
    if (landing is None) == (exchange_url is None):
        raise UsageError("stage_source needs exactly one of a landing directory or an exchange URL")
    schema = load_schema(source)
    stage = registry.stage_function(source)
    if landing is not None:
        folder = choose_delivery(Path(landing), source, as_of)
        raw, checksum = read_file_delivery(folder, schema)
        day = dt.date.fromisoformat(folder.name)
    else:
        raw, checksum, day = read_exchange_delivery(exchange_url, schema, as_of)
    delivery = day.isoformat()
    staged = stage(raw, day)
    del raw  # the delivered text is no longer needed once typed, and is the larger copy
    target = Path(out_dir) / source
    target.mkdir(parents=True, exist_ok=True)
    accepted_path, quarantine_path = target / "accepted.parquet", target / "quarantine.parquet"
    _write_atomically(staged.accepted, accepted_path)
    _write_atomically(staged.quarantined, quarantine_path)
    snapshot = {
        "source": source,
        "delivery": delivery,
        "checksum": checksum,
        "rows_in": staged.rows_in,
        "rows_accepted": staged.rows_accepted,
        "rows_quarantined": staged.rows_quarantined,
        "rows_duplicate": staged.rows_duplicate,
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
        staged.rows_in,
        staged.rows_accepted,
        staged.rows_quarantined,
        staged.rows_duplicate,
    )
    return snapshot
