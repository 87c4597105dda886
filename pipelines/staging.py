"""Staging: from a department's delivery to a typed snapshot and its quarantine.

Everything generic lives here once, driven by ``schemas/<source>.yaml``: choosing the delivery,
detecting the encoding, reading CSV / JSON Lines / the exchange database as strings, checking
the header against the schema (drift rejects the whole delivery so the last good snapshot stays
in use), casting IDs, dates, codes and numbers, and the quarantine bookkeeping
(``rows_in = accepted + quarantined + duplicate``). ``pipelines/sources/<source>.py``, where a source has one, adds only
what is particular to one source.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipelines.data import data_path
from pipelines.dates import parse_dates
from pipelines.errors import DeliveryRejected, UsageError
from pipelines.masking import mask_ids_in
from pipelines.resident_id import (
    INVALID_ID_CHECKSUM,
    INVALID_ID_FORMAT,
    fold_fullwidth,
    normalize_party_ids,
    normalize_resident_ids,
)

log = logging.getLogger(__name__)

SCHEMA_DIR = data_path("schemas")
SUCCESS_MARKER = "_SUCCESS"
MAX_LINE_CHARS = 1 << 20  # a record is a few hundred bytes; a 1 MiB line is not a record
RAW_KEEP_CHARS = 4096  # how much of an oversized line the quarantine keeps
QUOTE_CHARS = 24  # the most of a delivered text an error message quotes (masked)

MALFORMED_RECORD = "MALFORMED_RECORD"
MISSING_REQUIRED = "MISSING_REQUIRED"
INVALID_DATE = "INVALID_DATE"
INVALID_CODE = "INVALID_CODE"
INVALID_NUMBER = "INVALID_NUMBER"
INVALID_SHARE = "INVALID_SHARE"
REASON_ORDER = (
    MALFORMED_RECORD,
    MISSING_REQUIRED,
    INVALID_ID_FORMAT,
    INVALID_ID_CHECKSUM,
    INVALID_DATE,
    INVALID_CODE,
    INVALID_NUMBER,
    INVALID_SHARE,
)
COLUMN_TYPES = (
    "id", "org_or_id", "credit_code", "string", "code", "date", "datetime",
    "int", "float", "share", "month", "json",
)
FORMATS = ("csv", "jsonl")
QUARANTINE_COLUMNS = ["source", "record_ref", "reason_code", "detail", "raw"]


# --- schema ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    key: str
    type: str
    required: bool = False
    codes: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    kind_column: str | None = None
    not_after_extract: bool = False  # an event (birth, signing, ...) cannot postdate the extract


@dataclass(frozen=True)
class Schema:
    source: str
    file: str
    format: str
    separator: str
    encoding: str
    natural_key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def keys(self) -> list[str]:
        return [column.key for column in self.columns]

    def column(self, key: str) -> Column:
        return next(column for column in self.columns if column.key == key)


def _schema_error(path: Path, message: str) -> UsageError:
    return UsageError(f"schema {path.name}: {message}")


def _parse_column(path: Path, item: Any) -> Column:
    if not isinstance(item, dict) or not {"header", "key", "type"} <= item.keys():
        raise _schema_error(path, f"column {item!r} needs header, key and type")
    unknown = set(item) - {"header", "key", "type", "required", "codes", "aliases", "kind_column",
                           "not_after_extract"}
    if unknown:
        raise _schema_error(path, f"column {item['key']}: unknown setting {sorted(unknown)[0]}")
    if item["type"] not in COLUMN_TYPES:
        raise _schema_error(path, f"column {item['key']}: unknown type {item['type']!r}")
    codes = tuple(str(code) for code in item.get("codes") or ())
    aliases = {str(k): str(v) for k, v in (item.get("aliases") or {}).items()}
    if item["type"] == "code" and not codes:
        raise _schema_error(path, f"column {item['key']}: type code needs a codes list")
    if any(target not in codes for target in aliases.values()):
        raise _schema_error(path, f"column {item['key']}: an alias maps outside its codes")
    for flag in ("required", "not_after_extract"):
        if not isinstance(item.get(flag, False), bool):
            raise _schema_error(path, f"column {item['key']}: {flag} must be true or false")
    if item.get("not_after_extract") and item["type"] not in ("date", "datetime"):
        raise _schema_error(path, f"column {item['key']}: not_after_extract needs a date column")
    return Column(
        header=str(item["header"]), key=str(item["key"]), type=item["type"],
        required=item.get("required", False), codes=codes, aliases=aliases,
        kind_column=item.get("kind_column"), not_after_extract=item.get("not_after_extract", False),
    )


def load_schema(source: str, schema_dir: Path | None = None) -> Schema:
    """Read and check ``schemas/<source>.yaml``; a broken file is a one-line ``UsageError``."""
    path = (schema_dir or SCHEMA_DIR) / f"{source}.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"schema {path}: no such file (unknown source {source!r})") from None
    except yaml.YAMLError as exc:
        raise _schema_error(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise _schema_error(path, "must be a mapping")
    for key in ("source", "file", "format", "natural_key", "columns"):
        if key not in doc:
            raise _schema_error(path, f"missing key {key!r}")
    if doc["source"] != source:
        raise _schema_error(path, f"source is {doc['source']!r}, expected {source!r}")
    if doc["format"] not in FORMATS:
        raise _schema_error(path, f"format must be one of {', '.join(FORMATS)}")
    if not isinstance(doc["columns"], list) or not doc["columns"]:
        raise _schema_error(path, "columns must be a non-empty list")
    columns = tuple(_parse_column(path, item) for item in doc["columns"])
    for attribute in ("key", "header"):
        names = [getattr(column, attribute) for column in columns]
        if len(set(names)) != len(names):
            raise _schema_error(path, f"duplicate column {attribute}")
    natural_key = tuple(doc["natural_key"] or ())
    missing_key = [key for key in natural_key if key not in {c.key for c in columns}]
    if not natural_key or missing_key:
        raise _schema_error(path, f"natural_key must name columns ({missing_key or 'empty'})")
    separator = str(doc.get("separator", ","))
    if len(separator) != 1:
        raise _schema_error(path, "separator must be one character")
    return Schema(
        source=source, file=str(doc["file"]), format=doc["format"], separator=separator,
        encoding=str(doc.get("encoding", "utf-8")), natural_key=natural_key, columns=columns,
    )


def load_schemas(schema_dir: Path | None = None) -> dict[str, Schema]:
    """Every schema in the directory, checked at start-up so a broken one fails before any work."""
    directory = schema_dir or SCHEMA_DIR
    return {path.stem: load_schema(path.stem, directory) for path in sorted(directory.glob("*.yaml"))}


# --- staged result ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Staged:
    """One source's staged snapshot: typed accepted rows and the quarantine, with the counts."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    rows_duplicate: int

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    @property
    def rows_accepted(self) -> int:
        """Delivered records accepted (contracts, not buyer rows, for housing_contract)."""
        return self.rows_in - self.rows_duplicate - self.rows_quarantined


@dataclass(frozen=True)
class Failure:
    """Rows failing one check: the reason code, a row mask and a one-line detail (no values)."""

    reason: str
    mask: pd.Series
    detail: str


# --- delivery choice and decoding ------------------------------------------------------------

def _inside_landing(path: Path, landing: Path, what: str) -> None:
    """Deliveries are regular folders and files inside the landing directory: a symbolic link, or
    anything resolving elsewhere, could make the pipeline read (and quote) a file it must not."""
    if path.is_symlink() or not path.resolve().is_relative_to(landing.resolve()):
        raise DeliveryRejected(f"{what} is a symbolic link or lies outside the landing directory "
                               f"{landing}; deliveries must be regular files inside it")


def choose_delivery(landing: Path, source: str, as_of: dt.date) -> Path:
    """The newest complete delivery folder dated on or before ``as_of``.

    A folder without ``_SUCCESS`` is still being written by the exchange: skipped, with a warning.
    The chosen folder must be a real folder inside ``landing`` (no symbolic link).
    """
    base = landing / source
    if base.exists():
        _inside_landing(base, landing, f"{source}: the source folder {source}/")
    candidates: list[tuple[dt.date, Path]] = []
    for folder in base.iterdir() if base.is_dir() else ():
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue
        if folder.is_dir() and day <= as_of:
            candidates.append((day, folder))
    for day, folder in sorted(candidates, reverse=True):
        if (folder / SUCCESS_MARKER).exists():
            _inside_landing(folder, landing, f"{source}: delivery folder {source}/{folder.name}")
            return folder
        log.warning("%s: delivery %s has no %s yet, skipped", source, folder.name, SUCCESS_MARKER)
    raise DeliveryRejected(f"{source}: no complete delivery on or before {as_of} under {base}")


def decode_delivery(data: bytes, label: str) -> bytes:
    """The delivery as UTF-8 bytes: strict UTF-8 (BOM dropped) first, then GB18030.

    Anything else — binary content, a file cut inside a multi-byte character — rejects the
    whole delivery naming the byte offset.
    """
    if data.startswith(b"\x89PNG"):
        raise DeliveryRejected(f"{label}: a PNG image, not a text table")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DeliveryRejected(f"{label}: NUL byte at offset {nul}, not a text table")
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    body = data[bom:]
    try:
        pa.array([body], type=pa.large_binary()).cast(pa.large_string())
        return body
    except pa.ArrowInvalid:
        pass
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError as exc:
        utf8_offset = exc.start + bom
    try:
        return data.decode("gb18030").encode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeliveryRejected(
            f"{label}: neither UTF-8 (invalid byte at offset {utf8_offset}) nor GB18030 "
            f"(invalid byte at offset {exc.start})"
        ) from None


def split_lines(text: bytes) -> pa.Array:
    """Physical lines of UTF-8 bytes as an Arrow string array (``\\r\\n`` tolerated)."""
    crlf = b"\r" in text
    lines = pc.split_pattern(pa.array([text], type=pa.large_binary()), b"\n").flatten()
    del text
    lines = lines.cast(pa.large_string())
    if len(lines) and len(lines[-1].as_py()) == 0:
        lines = lines.slice(0, len(lines) - 1)
    return pc.utf8_rtrim(lines, characters="\r") if crlf else lines


def _to_str(array: pa.Array) -> pd.Series:
    return pa.table({"v": array}).to_pandas()["v"].astype("str")


def _truncate_raw(raw: pd.Series) -> pd.Series:
    long = raw.str.len() > RAW_KEEP_CHARS
    return raw.where(~long, raw.str.slice(0, RAW_KEEP_CHARS) + "…")


def _raw_frame(values: dict[str, pd.Series], refs: pd.Series, raw: pd.Series,
               errors: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame(values, index=refs.index)
    frame["record_ref"] = refs
    frame["raw"] = raw
    frame["parse_error"] = errors
    return frame.reset_index(drop=True)


# --- file readers: strings keyed by English column + record_ref, raw, parse_error -------------

def quote_delivered(text: str) -> str:
    """A delivered text as an error message may quote it: short, IDs masked."""
    short = text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"… ({len(text)} characters)"
    return repr(mask_ids_in(short))


def _check_columns(schema: Schema, label: str, found: list[str], names: dict[str, str]) -> None:
    """Schema drift: a duplicate, unknown or missing required column rejects the delivery.

    Column names come from the delivery, so they are quoted short and masked.
    """
    duplicated = sorted({name for name in found if found.count(name) > 1})
    if duplicated:
        raise DeliveryRejected(f"{schema.source}: {label}: duplicate column {quote_delivered(duplicated[0])}")
    unknown = [name for name in found if name not in names]
    missing = [c.header for c in schema.columns if c.required and not ({c.header, c.key} & set(found))]
    if unknown and missing:
        raise DeliveryRejected(
            f"{schema.source}: {label}: column {missing[0]!r} missing and unknown column "
            f"{quote_delivered(unknown[0])} (renamed header?)"
        )
    if missing:
        raise DeliveryRejected(f"{schema.source}: {label}: required column {missing[0]!r} missing")
    if unknown:
        raise DeliveryRejected(f"{schema.source}: {label}: unknown column {quote_delivered(unknown[0])}")


CHUNK_LINES = 1 << 19  # parse in slices so the split's intermediates stay small at city scale


def _split_chunk(chunk: pa.Array, separator: str, width: int) -> tuple[list[pa.Array], np.ndarray, np.ndarray]:
    """Columns of a slice's unquoted lines (null on other lines), per-line errors, quoted lines."""
    length = pc.utf8_length(chunk).to_numpy(zero_copy_only=False)
    quoted = pc.match_substring(chunk, '"').to_numpy(zero_copy_only=False)
    oversized = length > MAX_LINE_CHARS
    if oversized.any():  # never split a giant line into millions of fields
        chunk = pc.if_else(pa.array(oversized), pa.scalar("", pa.large_string()), chunk)
    parts = pc.split_pattern(chunk, separator)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    plain = ~quoted & ~oversized & (counts == width)
    errors = np.full(len(chunk), "", dtype=object)
    bad_count = ~quoted & ~oversized & (counts != width)
    errors[bad_count] = [f"{n} fields, expected {width}" for n in counts[bad_count]]
    errors[oversized] = [f"line of {n} characters" for n in length[oversized]]
    flat = parts.filter(pa.array(plain)).flatten()
    slot = np.full(len(chunk), -1, dtype=np.int64)
    slot[plain] = np.arange(int(plain.sum()), dtype=np.int64) * width
    columns = [flat.take(pa.array(slot + j, mask=slot < 0)) for j in range(width)]
    return columns, errors, quoted & ~oversized


def read_csv_delivery(lines: pa.Array, schema: Schema, label: str) -> pd.DataFrame:
    """Split CSV lines into string columns; a line with the wrong field count is malformed.

    Unquoted lines (nearly all) are split in Arrow; only lines holding a ``"`` go through the
    ``csv`` module. Blank lines carry no record and are skipped.
    """
    if len(lines) == 0 or not lines[0].as_py().strip():
        raise DeliveryRejected(f"{schema.source}: {label}: empty file")
    header = [name.strip() for name in next(csv.reader([lines[0].as_py()], delimiter=schema.separator))]
    names = {c.header: c.key for c in schema.columns}
    _check_columns(schema, label, header, names)
    width = len(header)
    column_chunks: list[list[pa.Array]] = [[] for _ in header]
    raw_chunks, error_chunks, line_chunks, quoted_chunks = [], [], [], []
    for start in range(1, len(lines), CHUNK_LINES):
        chunk = lines.slice(start, CHUNK_LINES)
        line_no = np.arange(start + 1, start + 1 + len(chunk))
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(chunk)), 0).to_numpy(zero_copy_only=False)
        if blank.any():
            chunk, line_no = chunk.filter(pa.array(~blank)), line_no[~blank]
        columns, errors, quoted = _split_chunk(chunk, schema.separator, width)
        for j, column in enumerate(columns):
            column_chunks[j].append(column)
        raw_chunks.append(chunk)
        error_chunks.append(errors)
        line_chunks.append(line_no)
        quoted_chunks.append(quoted)
    line_no = np.concatenate(line_chunks) if line_chunks else np.zeros(0, dtype=np.int64)
    if len(line_no) == 0:
        raise DeliveryRejected(f"{schema.source}: {label}: no data rows (header only)")
    raw_lines = pa.chunked_array(raw_chunks, type=pa.large_string())
    errors = np.concatenate(error_chunks)
    quoted_rows = np.flatnonzero(np.concatenate(quoted_chunks))
    quoted_values: list[list[str]] = [[] for _ in header]
    for i in quoted_rows:
        line = raw_lines[int(i)].as_py()
        try:
            row = next(csv.reader([line], delimiter=schema.separator, strict=True))
        except csv.Error as exc:
            row, errors[i] = [], f"unparsable quoting ({exc})"
        if row and len(row) != width:
            errors[i] = f"{len(row)} fields, expected {width}"
        for j in range(width):
            quoted_values[j].append(row[j] if len(row) == width else None)
    keyed = {}
    for j, name in enumerate(header):
        column = _to_str(pa.chunked_array(column_chunks[j], type=pa.large_string()))
        column_chunks[j] = []
        if len(quoted_rows):
            column.iloc[quoted_rows] = quoted_values[j]
        keyed[names[name]] = column
    raw = _to_str(raw_lines)
    if (errors != "").any():
        raw = _truncate_raw(raw)
    refs = pd.Series(schema.file + ":", index=raw.index) + pd.Series(line_no).astype("str")
    return _raw_frame(keyed, refs, raw, pd.Series(errors, dtype="str"))


def _json_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def read_jsonl_delivery(lines: pa.Array, schema: Schema, label: str) -> pd.DataFrame:
    """Parse JSON Lines; a line that is not a JSON object is malformed, the rest is staged."""
    raw_lines = _to_str(lines)
    keep = raw_lines.str.strip() != ""
    if not keep.any():
        raise DeliveryRejected(f"{schema.source}: {label}: empty file")
    raw_lines = raw_lines[keep]
    line_no = pd.Series(np.flatnonzero(keep.to_numpy()) + 1, index=raw_lines.index)
    records: list[dict[str, Any] | None] = []
    errors: list[str] = []
    for line in raw_lines.tolist():
        if len(line) > MAX_LINE_CHARS:
            records.append(None)
            errors.append(f"line of {len(line)} characters")
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            records.append(None)
            errors.append(f"broken JSON at column {getattr(exc, 'colno', '?')}")
            continue
        if isinstance(record, dict):
            records.append(record)
            errors.append("")
        else:
            records.append(None)
            errors.append("not a JSON object")
    parsed = [record for record in records if record is not None]
    if not parsed:
        raise DeliveryRejected(f"{schema.source}: {label}: no parsable record")
    seen: set[str] = set()
    for record in parsed:
        seen.update(record)
    names = {c.key: c.key for c in schema.columns}
    present = [key for key in schema.keys if key in seen] + sorted(seen - set(names))
    _check_columns(schema, label, present, names)
    values = {
        key: pd.Series([_json_text(r.get(key)) if r is not None else "" for r in records],
                       index=raw_lines.index, dtype="str")
        for key in schema.keys
    }
    refs = schema.file + ":" + line_no.astype("str")
    return _raw_frame(values, refs, _truncate_raw(raw_lines),
                      pd.Series(errors, index=raw_lines.index, dtype="str"))


def _read_regular_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file, never through a symbolic link (``O_NOFOLLOW``, then fstat)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise DeliveryRejected(f"{what}: file missing from the delivery") from None
    except OSError:
        raise DeliveryRejected(f"{what}: a symbolic link or unreadable; deliveries must be regular "
                               "files inside the landing directory") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise DeliveryRejected(f"{what}: not a regular file")
        return handle.read()


def read_file_delivery(folder: Path, schema: Schema) -> tuple[pd.DataFrame, str]:
    """The raw frame of one delivery folder and the sha256 of its bytes."""
    path = folder / schema.file
    label = f"{schema.source}/{folder.name}/{schema.file}"
    data = _read_regular_file(path, f"{schema.source}: {label}")
    if not data.strip():
        raise DeliveryRejected(f"{schema.source}: {label}: empty file")
    checksum = hashlib.sha256(data).hexdigest()
    lines = split_lines(decode_delivery(data, f"{schema.source}: {label}"))
    del data
    reader = read_csv_delivery if schema.format == "csv" else read_jsonl_delivery
    return reader(lines, schema, label), checksum


# --- exchange database -----------------------------------------------------------------------

def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _needs_escape(chunk: pa.Array) -> bool:
    """Whether any byte is a quote, a backslash or a control character (none sits inside UTF-8)."""
    data = chunk.buffers()[2]
    if data is None:
        return False
    text = np.frombuffer(data, dtype=np.uint8)
    return bool(((text < 0x20) | (text == 0x22) | (text == 0x5C)).any())


def _json_escape(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if not any(_needs_escape(chunk) for chunk in values.chunks):  # nearly every column: nothing to do
        return values
    escaped = pc.replace_substring(values, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    return pc.replace_substring_regex(escaped, r"[\x00-\x1f]", " ")


EXCHANGE_BATCH_ROWS = 100_000
COPY_BLOCK_BYTES = 1 << 26  # parse the COPY stream in 64 MiB blocks, never the whole extract at once


def _text_array(values: tuple) -> pa.Array:
    """One fetched column batch as Arrow text: dates, numbers and text alike, NULL kept null."""
    try:
        return pa.array(values, type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.large_string())


def _rows_checksum(raw: pa.ChunkedArray) -> str:
    """sha256 over the rows' texts in sorted order (a table has no byte order of its own).

    Hashes the sorted rows' offsets, then their bytes slice by slice, so the sorted copy of a
    city-scale table never exists whole.
    """
    rows = raw.combine_chunks().cast(pa.large_string())
    order = pc.sort_indices(rows)
    lengths = pc.binary_length(rows).take(order).to_numpy(zero_copy_only=False).astype(np.int64)
    digest = hashlib.sha256()
    digest.update(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tobytes())
    for start in range(0, len(rows), CHUNK_LINES):
        part = rows.take(order.slice(start, CHUNK_LINES))
        offsets = np.frombuffer(part.buffers()[1], dtype=np.int64)[: len(part) + 1]
        if part.buffers()[2] is not None:
            digest.update(memoryview(part.buffers()[2])[offsets[0]:offsets[-1]])
    return digest.hexdigest()


def _copy_text_columns(conn, table_name: str, found: list[str], extract: Any) -> list[pa.ChunkedArray]:
    """PostgreSQL: the extract's rows through ``COPY ... TO STDOUT`` in CSV, parsed by Arrow.

    Several times faster than fetching Python rows; NULL and empty text both arrive as ``""``.
    """
    import pyarrow.csv as pacsv
    from psycopg import sql

    query = sql.SQL("COPY (SELECT {columns} FROM {table} WHERE extract_date = {day}) TO STDOUT (FORMAT csv)").format(
        columns=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in found),
        table=sql.Identifier(table_name), day=sql.Literal(extract))
    read = pacsv.ReadOptions(column_names=[f"c{j}" for j in range(len(found))], block_size=1 << 24)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types={f"c{j}": pa.large_string() for j in range(len(found))},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    chunks: list[list[pa.Array]] = [[] for _ in found]

    def parse_block(block: bytearray) -> None:
        table = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse,
                               convert_options=convert)
        for j in range(len(found)):
            chunks[j].extend(table.column(j).chunks)

    buffer = bytearray()
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(query) as copy:
        for row in copy:  # COPY sends one whole row per message, so a block never splits a row
            buffer += row
            if len(buffer) >= COPY_BLOCK_BYTES:
                parse_block(buffer)
                buffer = bytearray()
    if buffer:
        parse_block(buffer)
    return [pa.chunked_array(parts, type=pa.large_string()) for parts in chunks]


def _fetch_text_columns(conn, query) -> list[pa.ChunkedArray]:
    """Any other database: streamed batches, each column converted to Arrow text at once."""
    result = conn.execution_options(stream_results=True, yield_per=EXCHANGE_BATCH_ROWS).execute(query)
    batches: list[list[pa.Array]] = [[] for _ in result.keys()]
    for part in result.partitions():
        for j, values in enumerate(zip(*part)):
            batches[j].append(_text_array(values))
    return [pc.fill_null(pa.chunked_array(chunks, type=pa.large_string()), "") for chunks in batches]


def read_exchange_delivery(url: str, schema: Schema, as_of: dt.date) -> tuple[pd.DataFrame, str, dt.date]:
    """The snapshot in the exchange database: rows of the newest ``extract_date`` ≤ ``as_of``.

    Columns may carry the department's header or the English key. Returns the raw frame
    (``raw`` is the row as JSON text), a sha256 over the sorted rows, and the extract date.
    """
    import sqlalchemy as sa

    table_name = schema.source
    label = f"exchange table {table_name}"
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise UsageError(f"exchange database URL not usable: {type(exc).__name__}") from None
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table_name):
                raise DeliveryRejected(f"{schema.source}: {label}: no such table")
            table = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
            if "extract_date" not in table.c:
                raise DeliveryRejected(f"{schema.source}: {label}: required column 'extract_date' missing")
            extracts = conn.execute(sa.select(table.c.extract_date).distinct()).scalars().all()
            dated = [(day, value) for value in extracts if (day := _as_date(value)) and day <= as_of]
            if not dated:
                raise DeliveryRejected(f"{schema.source}: {label}: no extract on or before {as_of}")
            chosen_day, chosen_value = max(dated, key=lambda pair: pair[0])
            names = {c.header: c.key for c in schema.columns} | {c.key: c.key for c in schema.columns}
            found = [column.name for column in table.c if column.name != "extract_date"]
            _check_columns(schema, label, found, names)
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                columns = _copy_text_columns(conn, table_name, found, chosen_value)
            else:
                query = sa.select(*(table.c[name] for name in found)).where(table.c.extract_date == chosen_value)
                columns = _fetch_text_columns(conn, query)
    except sa.exc.SQLAlchemyError as exc:
        raise DeliveryRejected(f"{schema.source}: {label}: database error {type(exc).__name__}") from None
    finally:
        engine.dispose()
    rows = len(columns[0]) if columns else 0
    if rows == 0:
        raise DeliveryRejected(f"{schema.source}: {label}: empty extract {chosen_day}")
    def text(value: str) -> pa.Scalar:
        return pa.scalar(value, pa.large_string())

    pieces: list[Any] = [text("{")]
    for i, name in enumerate(found):
        prefix = (", " if i else "") + json.dumps(name, ensure_ascii=False) + ': "'
        pieces += [text(prefix), _json_escape(columns[i]), text('"')]
    pieces.append(text("}"))
    raw = pc.binary_join_element_wise(*pieces, text(""))
    del pieces
    checksum = _rows_checksum(raw)
    strings: dict[str, pd.Series] = {}
    for j, name in enumerate(found):
        strings[names[name]] = _to_str(columns[j])
        columns[j] = None
    for key in schema.keys:
        strings.setdefault(key, pd.Series("", index=pd.RangeIndex(rows), dtype="str"))
    keys = [strings[key].str.strip() for key in schema.natural_key]
    refs = table_name + ":" + keys[0].str.cat(keys[1:], sep="|") if len(keys) > 1 else table_name + ":" + keys[0]
    errors = pd.Series("", index=pd.RangeIndex(rows), dtype="str")
    return _raw_frame(strings, refs, _to_str(raw), errors), checksum, chosen_day


# --- casting and quarantine ------------------------------------------------------------------

def _strip(values: pd.Series) -> pd.Series:
    text = values.fillna("").astype("str").str.strip()
    return text.where(text != "", pd.NA)


def _cast_share(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``50%``, ``1/2``, ``0.5`` → 0.5; blank → NaN; anything else or outside (0, 1] invalid."""
    text = fold_fullwidth(text.fillna("")).str.replace(" ", "", regex=False)
    percent = text.str.extract(r"^([0-9]+(?:\.[0-9]+)?)%$")[0]
    fraction = text.str.extract(r"^([0-9]+)/([0-9]+)$")
    plain = text.str.extract(r"^([0-9]+(?:\.[0-9]+)?)$")[0]
    share = pd.to_numeric(plain, errors="coerce")
    share = share.fillna(pd.to_numeric(percent, errors="coerce") / 100)
    share = share.fillna(pd.to_numeric(fraction[0], errors="coerce") / pd.to_numeric(fraction[1], errors="coerce"))
    share = share.astype("float64")
    invalid = (text != "") & ~((share > 0) & (share <= 1))
    return share.where(~invalid), invalid


def _cast_month(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """YYYYMM (also ``2024-05``, ``2024/5``, ``202405.0``) as a ``YYYYMM`` string."""
    parts = fold_fullwidth(text.fillna("")).str.extract(r"^([0-9]{4})[-/年]?([0-9]{1,2})月?(?:\.0+)?$")
    month = pd.to_numeric(parts[1], errors="coerce")
    good = parts[0].notna() & month.between(1, 12)
    value = parts[0] + month.fillna(0).astype("int64").astype("str").str.zfill(2)
    return value.where(good, pd.NA).astype("str"), text.notna() & ~good


def cast_columns(raw: pd.DataFrame, schema: Schema,
                 extract_date: dt.date) -> tuple[pd.DataFrame, list[Failure]]:
    """Typed columns per the schema, and the failures of every row (not yet ordered).

    ``extract_date`` is the delivery's (folder date or ``extract_date``): an event column
    (``not_after_extract``) dated after it describes something that cannot have happened yet,
    so that row is ``INVALID_DATE`` like any other impossible date (sources.md "Dates").
    """
    typed: dict[str, pd.Series] = {}
    failures: list[Failure] = []
    for column in schema.columns:
        text = _strip(raw[column.key])
        if column.required:
            failures.append(Failure(MISSING_REQUIRED, text.isna(), f"{column.key}: required value missing"))
        if column.type in ("id", "org_or_id"):
            if column.type == "id":
                ids, reasons = normalize_resident_ids(text)
            else:
                ids, kinds, reasons = normalize_party_ids(text)
            typed[column.key] = ids
            if column.type == "org_or_id" and column.kind_column:
                typed[column.kind_column] = kinds
            failures.append(Failure(INVALID_ID_FORMAT, reasons.eq(INVALID_ID_FORMAT).fillna(False).astype(bool),
                                    f"{column.key}: not a resident ID in any accepted form"))
            failures.append(Failure(INVALID_ID_CHECKSUM, reasons.eq(INVALID_ID_CHECKSUM).fillna(False).astype(bool),
                                    f"{column.key}: check character does not match"))
        elif column.type in ("date", "datetime"):
            typed[column.key], invalid = parse_dates(text, keep_time=column.type == "datetime")
            failures.append(Failure(INVALID_DATE, invalid, f"{column.key}: not a possible date"))
            if column.not_after_extract:
                later = typed[column.key].dt.normalize() > pd.Timestamp(extract_date)
                failures.append(Failure(INVALID_DATE, later.fillna(False).astype(bool),
                                        f"{column.key}: after the delivery's extract date {extract_date}"))
        elif column.type == "code":
            value = text.replace(column.aliases) if column.aliases else text
            typed[column.key] = value
            failures.append(Failure(INVALID_CODE, value.notna() & ~value.isin(column.codes),
                                    f"{column.key}: value outside the schema's code list"))
        elif column.type == "credit_code":
            typed[column.key] = fold_fullwidth(text).str.upper().where(text.notna(), pd.NA)
        elif column.type == "int":
            cleaned = text.str.replace(r"\.0+$", "", regex=True)
            number = pd.to_numeric(cleaned.where(cleaned.str.fullmatch(r"[+-]?[0-9]+"), pd.NA), errors="coerce")
            typed[column.key] = number.astype("Int64")
            failures.append(Failure(INVALID_NUMBER, text.notna() & number.isna(), f"{column.key}: not an integer"))
        elif column.type == "float":
            number = pd.to_numeric(text.where(text.str.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)"), pd.NA), errors="coerce")
            typed[column.key] = number.astype("float64")
            failures.append(Failure(INVALID_NUMBER, text.notna() & number.isna(), f"{column.key}: not a number"))
        elif column.type == "share":
            typed[column.key], invalid = _cast_share(text)
            failures.append(Failure(INVALID_SHARE, invalid, f"{column.key}: not a share in (0, 1]"))
        elif column.type == "month":
            typed[column.key], invalid = _cast_month(text)
            failures.append(Failure(INVALID_DATE, invalid, f"{column.key}: not a year-month"))
        else:
            typed[column.key] = text
    return pd.DataFrame(typed, index=raw.index), failures


def first_failure(failures: list[Failure], index: pd.Index) -> tuple[pd.Series, pd.Series]:
    """Per row, the first failing check in contract order (reason code and detail), else NA."""
    reason = pd.Series(pd.NA, index=index, dtype="object")
    detail = pd.Series(pd.NA, index=index, dtype="object")
    rank = {code: i for i, code in enumerate(REASON_ORDER)}
    for failure in sorted(failures, key=lambda f: rank.get(f.reason, len(REASON_ORDER))):
        hit = failure.mask.reindex(index, fill_value=False).to_numpy(dtype=bool) & reason.isna().to_numpy()
        reason[hit] = failure.reason
        detail[hit] = failure.detail
    return reason, detail


def duplicate_rows(raw: pd.DataFrame, probe: str) -> np.ndarray:
    """True where a row's text equals an earlier row's.

    Equal rows share the ``probe`` column and the text length, so only rows sharing both are
    compared whole: hashing every long row text (an exchange row is JSON) would cost gigabytes
    at city scale.
    """
    text = raw["raw"]
    candidates = pd.DataFrame({"probe": raw[probe], "length": text.str.len()}).duplicated(keep=False).to_numpy()
    duplicate = np.zeros(len(text), dtype=bool)
    duplicate[candidates] = text[candidates].duplicated(keep="first").to_numpy(dtype=bool)
    return duplicate


def stage_with_schema(raw: pd.DataFrame, schema: Schema, extract_date: dt.date,
                      extra_failures: tuple[Failure, ...] = ()) -> tuple[Staged, pd.DataFrame]:
    """Dedupe, cast (events checked against ``extract_date``), and split into accepted and
    quarantined rows.

    Returns the ``Staged`` result and the typed frame of the accepted rows indexed like ``raw``
    (for a source module that reshapes them, like housing_contract's buyers).
    ``extra_failures`` are a source's own checks, masks indexed like ``raw``.
    """
    duplicate = duplicate_rows(raw, schema.natural_key[0])
    malformed = raw["parse_error"].fillna("") != ""
    typed, failures = cast_columns(raw, schema, extract_date)
    failures.append(Failure(MALFORMED_RECORD, malformed, ""))
    failures.extend(extra_failures)
    reason, detail = first_failure(failures, raw.index)
    detail = detail.where(reason != MALFORMED_RECORD, raw["parse_error"]).where(reason.notna(), pd.NA)
    failed = reason.notna().to_numpy(dtype=bool)
    bad, good = failed & ~duplicate, ~failed & ~duplicate
    quarantined = pd.DataFrame({
        "source": schema.source,
        "record_ref": raw["record_ref"][bad].astype("str"),
        "reason_code": reason[bad].astype("str"),
        "detail": detail[bad].astype("str"),
        "raw": raw["raw"][bad].astype("str"),
    }, columns=QUARANTINE_COLUMNS).reset_index(drop=True)
    columns = {}
    for key in list(typed.columns):  # filter column by column, freeing each typed column as we go
        columns[key] = typed.pop(key)[good]
    accepted = pd.DataFrame(columns)
    accepted["record_ref"] = raw["record_ref"][good].astype("str")
    staged = Staged(accepted=accepted.reset_index(drop=True), quarantined=quarantined,
                    rows_in=len(raw), rows_duplicate=int(duplicate.sum()))
    return staged, accepted


# --- entry point -----------------------------------------------------------------------------

def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)


def staging_version(source: str) -> str:
    """What a staged snapshot depends on besides the delivery: the schema and the staging code.

    A snapshot staged by other code or another schema is never reused.
    """
    from pipelines import registry

    declared = registry.source(source)
    digest = hashlib.sha256()
    for path in (declared.schema_path, Path(__file__), declared.special_module_path):
        if path is not None:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_source(source: str, *, landing: Path | None, exchange_url: str | None,
                 as_of: dt.date, out_dir: Path) -> dict:
    """Stage one source's delivery for ``as_of`` and write its snapshot under ``out_dir/source``.

    Writes ``accepted.parquet``, ``quarantine.parquet`` and ``snapshot.json``, each replaced
    atomically and only once the whole delivery has been read, so a rejected delivery leaves
    the last good snapshot untouched. Returns the snapshot dict (contracts.md).
    """
    from pipelines.registry import stage_function

    if (landing is None) == (exchange_url is None):
        raise UsageError("stage_source needs exactly one of a landing directory or an exchange URL")
    schema = load_schema(source)
    stage = stage_function(source)
    if landing is not None:
        folder = choose_delivery(Path(landing), source, as_of)
        raw, checksum = read_file_delivery(folder, schema)
        day = dt.date.fromisoformat(folder.name)
    else:
        raw, checksum, day = read_exchange_delivery(exchange_url, schema, as_of)
    delivery = day.isoformat()
    staged = stage(raw, day)
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
    log.info("%s %s: %d in, %d accepted, %d quarantined, %d duplicate", source, delivery,
             staged.rows_in, staged.rows_accepted, staged.rows_quarantined, staged.rows_duplicate)
    return snapshot
