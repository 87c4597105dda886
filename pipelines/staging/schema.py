"""A source's schema: ``schemas/<source>.yaml`` read and checked once, at start-up.

The schema is the one place a source's headers, English keys, types, required columns and code
lists live; every later layer of staging is driven by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.data import data_path
from pipelines.errors import UsageError

SCHEMA_DIR = data_path("schemas")
COLUMN_TYPES = (
    "id",
    "org_or_id",
    "credit_code",
    "string",
    "code",
    "date",
    "datetime",
    "int",
    "float",
    "share",
    "month",
    "json",
)
FORMATS = ("csv", "jsonl")
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030")  # what delivery.DeliveryFile reads
DEFAULT_MAX_DELIVERY_AGE_DAYS = 7  # a daily source a week behind has missed more than a holiday


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
    # a run whose newest delivery is older than this (days before the as-of date) records a warning
    max_delivery_age_days: int = DEFAULT_MAX_DELIVERY_AGE_DAYS

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
    unknown = set(item) - {"header", "key", "type", "required", "codes", "aliases", "kind_column", "not_after_extract"}
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
        header=str(item["header"]),
        key=str(item["key"]),
        type=item["type"],
        required=item.get("required", False),
        codes=codes,
        aliases=aliases,
        kind_column=item.get("kind_column"),
        not_after_extract=item.get("not_after_extract", False),
    )


def load_schema(source: str, schema_dir: Path | None = None) -> Schema:
    """Read and check ``schemas/<source>.yaml``; a broken file is a one-line ``UsageError``."""
    path = (schema_dir or SCHEMA_DIR) / f"{source}.yaml"
    return schema_from_doc(source, path, read_schema_doc(source, path))


def read_schema_doc(source: str, path: Path) -> Any:
    """The parsed YAML of a schema file (the registry reads its roles from the same document)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"schema {path}: no such file (unknown source {source!r})") from None
    except yaml.YAMLError as exc:
        raise _schema_error(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None


def schema_from_doc(source: str, path: Path, doc: Any) -> Schema:
    """Check a parsed schema document and build the ``Schema``; errors name the file."""
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
    encoding = str(doc.get("encoding", "utf-8"))
    if encoding not in ENCODINGS:
        raise _schema_error(path, f"encoding must be one of {', '.join(ENCODINGS)}")
    max_age = doc.get("max_delivery_age_days", DEFAULT_MAX_DELIVERY_AGE_DAYS)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise _schema_error(path, f"max_delivery_age_days must be a whole number of days from 0, got {max_age!r}")
    return Schema(
        source=source,
        file=str(doc["file"]),
        format=doc["format"],
        separator=separator,
        encoding=encoding,
        natural_key=natural_key,
        columns=columns,
        max_delivery_age_days=max_age,
    )


def load_schemas(schema_dir: Path | None = None) -> dict[str, Schema]:
    """Every schema in the directory, checked at start-up so a broken one fails before any work."""
    directory = schema_dir or SCHEMA_DIR
    return {path.stem: load_schema(path.stem, directory) for path in sorted(directory.glob("*.yaml"))}
