"""Readers: a delivery as strings, keyed by the schema's English column names.

Each reader offers a delivery's records in slices (``FileRecords``, ``ExchangeRecords``): raw
frames of one row per delivered record with the columns as text, plus ``record_ref``
(contracts.md), ``raw`` (the record as delivered, for the quarantine) and ``parse_error`` (why
a record could not be split, else empty). Nothing is typed here (see ``casting``). A header that
drifts from the schema rejects the whole delivery, so the last good snapshot stays in use.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import DeliveryRejected, UsageError
from pipelines.masking import mask_ids_in
from pipelines.staging.delivery import DeliveryFile, split_lines
from pipelines.staging.schema import Schema

MAX_LINE_CHARS = 1 << 20  # a record is a few hundred bytes; a 1 MiB line is not a record
QUOTE_CHARS = 24  # the most of a delivered text an error message quotes (masked)
CHUNK_LINES = 1 << 19  # parse in slices so the split's intermediates stay small at city scale


def _to_str(array: pa.Array) -> pd.Series:
    return pa.table({"v": array}).to_pandas()["v"].astype("str")


def _raw_frame(values: dict[str, pd.Series], refs: pd.Series, raw: pd.Series, errors: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame(values, index=refs.index)
    frame["record_ref"] = refs
    frame["raw"] = raw
    frame["parse_error"] = errors
    return frame.reset_index(drop=True)


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


def _holding_quote(chunk: pa.Array) -> np.ndarray:
    """Which lines hold a ``"``, found in the text bytes (quotes are rare) rather than line by line."""
    holding = np.zeros(len(chunk), dtype=bool)
    data = chunk.buffers()[2]
    if data is None or not len(chunk):
        return holding
    width = np.int64 if chunk.type == pa.large_string() else np.int32
    offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
    text = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
    at = np.flatnonzero(text == 0x22) + offsets[0]
    holding[np.searchsorted(offsets, at, side="right") - 1] = True
    return holding


def _split_chunk(chunk: pa.Array, separator: str, width: int) -> tuple[list[pa.Array], np.ndarray, np.ndarray]:
    """Columns of a slice's unquoted lines (null on other lines), per-line errors, quoted lines."""
    length = pc.binary_length(chunk).to_numpy(zero_copy_only=False)
    if (length > MAX_LINE_CHARS).any():  # characters counted only when the bytes could be too many
        length = pc.utf8_length(chunk).to_numpy(zero_copy_only=False)
    quoted = _holding_quote(chunk)
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
    fields, starts = parts.values, parts.offsets.to_numpy()[:-1].astype(np.int64)
    columns = [fields.take(pa.array(starts + j, mask=~plain)) for j in range(width)]
    return columns, errors, quoted & ~oversized


def _csv_header(first_line: str, schema: Schema, label: str) -> list[str]:
    """The header's column names, checked against the schema (drift rejects the delivery)."""
    if not first_line.strip():
        raise DeliveryRejected(f"{schema.source}: {label}: empty file")
    header = [name.strip() for name in next(csv.reader([first_line], delimiter=schema.separator))]
    _check_columns(schema, label, header, {c.header: c.key for c in schema.columns})
    return header


def csv_frame(lines: pa.Array, line_no: np.ndarray, header: list[str], schema: Schema) -> pd.DataFrame:
    """The raw frame of some CSV record lines; a line with the wrong field count is malformed.

    Unquoted lines (nearly all) are split in Arrow; only lines holding a ``"`` go through the
    ``csv`` module.
    """
    names = {c.header: c.key for c in schema.columns}
    width = len(header)
    columns, errors, quoted = _split_chunk(lines, schema.separator, width)
    quoted_rows = np.flatnonzero(quoted)
    quoted_values: list[list[str | None]] = [[] for _ in header]
    for i in quoted_rows:
        line = lines[int(i)].as_py()
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
        column = _to_str(columns[j])
        columns[j] = None
        if len(quoted_rows):
            column.iloc[quoted_rows] = quoted_values[j]
        keyed[names[name]] = column
    raw = _to_str(lines)
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


def jsonl_frame(lines: pa.Array, line_no: np.ndarray, schema: Schema) -> tuple[pd.DataFrame, set[str], int]:
    """The raw frame of some JSON Lines records, the keys they hold and how many parsed.

    A line that is not a JSON object is malformed; whether the keys drift from the schema is
    decided over the whole delivery (``FileRecords.frames``).
    """
    raw_lines = _to_str(lines)
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
    seen: set[str] = set()
    for record in records:
        if record is not None:
            seen.update(record)
    values = {
        key: pd.Series(
            [_json_text(r.get(key)) if r is not None else "" for r in records], index=raw_lines.index, dtype="str"
        )
        for key in schema.keys
    }
    refs = pd.Series(schema.file + ":", index=raw_lines.index) + pd.Series(line_no).astype("str")
    frame = _raw_frame(values, refs, raw_lines, pd.Series(errors, index=raw_lines.index, dtype="str"))
    return frame, seen, sum(record is not None for record in records)


class FileRecords:
    """The records of one delivery file, read in slices, twice if need be: their texts as
    delivered (``texts``: which records repeat an earlier one), then their raw frames
    (``frames``). Only a slice is held at a time, so staging a city's file takes the memory of
    a slice, not of the file.

    Opening it reads the file once (checksum, encoding, and for CSV the header, whose drift
    rejects the delivery at once); a GB18030 file's UTF-8 spill goes in ``spill_dir`` until the
    records are closed. Blank lines carry no record and are skipped; a record's ``record_ref``
    is its physical line number.
    """

    def __init__(self, folder: Path, schema: Schema, spill_dir: Path | None = None) -> None:
        self.schema = schema
        self.label = f"{schema.source}/{folder.name}/{schema.file}"
        file = DeliveryFile(folder / schema.file, f"{schema.source}: {self.label}")
        spill = Path(spill_dir or tempfile.gettempdir()) / f".{schema.source}.utf8.{os.getpid()}.tmp"
        self._text = file.scan(schema.encoding, spill)
        self.checksum = self._text.checksum
        try:
            if not self._text.has_text:
                raise DeliveryRejected(f"{schema.source}: {self.label}: empty file")
            self._header: list[str] | None = None
            if schema.format == "csv":
                with contextlib.closing(self._text.text_blocks()) as blocks:  # the file is closed at once
                    first_line = split_lines(next(blocks))[0].as_py()
                self._header = _csv_header(first_line, schema, self.label)
        except BaseException:
            self._text.remove_spill()
            raise

    def __enter__(self) -> FileRecords:
        return self

    def __exit__(self, *exc) -> None:
        self._text.remove_spill()

    def _lines(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """Record lines in slices of at most ``CHUNK_LINES``, with their line numbers."""
        number, header = 0, self._header is not None
        for block in self._text.text_blocks():
            lines = split_lines(block)
            for start in range(0, len(lines), CHUNK_LINES):
                chunk = lines.slice(start, CHUNK_LINES)
                line_no = np.arange(number + 1, number + 1 + len(chunk))
                number += len(chunk)
                if header:
                    chunk, line_no, header = chunk.slice(1), line_no[1:], False
                blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(chunk)), 0).to_numpy(zero_copy_only=False)
                if blank.any():
                    chunk, line_no = chunk.filter(pa.array(~blank)), line_no[~blank]
                if len(chunk):
                    yield chunk, line_no

    def texts(self) -> Iterator[pa.Array]:
        """Each record's text as delivered, a slice at a time, in the order of ``frames``."""
        records = 0
        for lines, _ in self._lines():
            records += len(lines)
            yield lines
        if not records:
            what = "no data rows (header only)" if self._header is not None else "empty file"
            raise DeliveryRejected(f"{self.schema.source}: {self.label}: {what}")

    def frames(self) -> Iterator[pd.DataFrame]:
        """The records' raw frames (``readers``), a slice at a time."""
        if self._header is not None:
            for lines, line_no in self._lines():
                yield csv_frame(lines, line_no, self._header, self.schema)
            return
        seen: set[str] = set()
        parsed = 0
        for lines, line_no in self._lines():
            frame, keys, count = jsonl_frame(lines, line_no, self.schema)
            seen |= keys
            parsed += count
            yield frame
        if not parsed:
            raise DeliveryRejected(f"{self.schema.source}: {self.label}: no parsable record")
        names = {c.key: c.key for c in self.schema.columns}
        present = [key for key in self.schema.keys if key in seen] + sorted(seen - set(names))
        _check_columns(self.schema, self.label, present, names)


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
            digest.update(memoryview(part.buffers()[2])[offsets[0] : offsets[-1]])
    return digest.hexdigest()


def _copy_text_columns(conn, table_name: str, found: list[str], extract: Any) -> list[pa.ChunkedArray]:
    """PostgreSQL: the extract's rows through ``COPY ... TO STDOUT`` in CSV, parsed by Arrow.

    Several times faster than fetching Python rows; NULL and empty text both arrive as ``""``.
    """
    import pyarrow.csv as pacsv
    from psycopg import sql

    query = sql.SQL("COPY (SELECT {columns} FROM {table} WHERE extract_date = {day}) TO STDOUT (FORMAT csv)").format(
        columns=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in found),
        table=sql.Identifier(table_name),
        day=sql.Literal(extract),
    )
    read = pacsv.ReadOptions(column_names=[f"c{j}" for j in range(len(found))], block_size=1 << 24)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types={f"c{j}": pa.large_string() for j in range(len(found))},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    chunks: list[list[pa.Array]] = [[] for _ in found]

    def parse_block(block: bytearray) -> None:
        table = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert)
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


class ExchangeRecords:
    """The rows of one exchange extract, held whole (the database hands them over as one
    result), offered in slices like ``FileRecords``."""

    def __init__(self, raw: pd.DataFrame, checksum: str) -> None:
        self._raw, self.checksum = raw, checksum

    def __enter__(self) -> ExchangeRecords:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def texts(self) -> Iterator[pa.Array]:
        for frame in self.frames():
            yield pa.array(frame["raw"])

    def frames(self) -> Iterator[pd.DataFrame]:
        for start in range(0, len(self._raw), CHUNK_LINES):
            yield self._raw.iloc[start : start + CHUNK_LINES].reset_index(drop=True)


def read_exchange_delivery(url: str, schema: Schema, as_of: dt.date) -> tuple[ExchangeRecords, dt.date]:
    """The snapshot in the exchange database: rows of the newest ``extract_date`` ≤ ``as_of``.

    Columns may carry the department's header or the English key. Returns the records (``raw``
    is the row as JSON text; the checksum is a sha256 over the sorted rows) and the extract date.
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
    return ExchangeRecords(_raw_frame(strings, refs, _to_str(raw), errors), checksum), chosen_day
