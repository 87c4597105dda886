"""The sources this installation knows, read from their one declaration.

A source is ``schemas/<key>.yaml`` (how its delivery is read: file, format, columns, codes,
schedule, and under ``roles:`` what the engine does with its rows) plus
``expectations/<key>.yaml`` (its Great Expectations suite and allowed row change). Everything
that needs to know which sources exist — staging, validation, addresses, the engine, the
DAGs, the synth — asks this module; nothing else lists sources.

``roles`` (all optional):

- ``persons``: the staged columns that name a resident, a list because a record can name
  several (a marriage names two): ``{id: <column>, name: <column>}``, and for a column that may
  also hold an organisation, ``subject: {column: <kind column>, is: <kind>}`` (rows of another
  kind are not residents; a blank kind leaves it to the ID's form). ``citizen.sources`` lists
  the source for everyone it names.
- ``address``: the staged column holding an address text, resolved into catchments.
- ``name_rank``: where departments spell a name differently, the citizen row shows the
  spelling of the lowest rank (a source without one comes after all ranked sources).
- ``population``: its accepted rows count the city's residents (sizes the engine's buckets).
- ``evidence``: what the policy reads from its rows, one of ``EVIDENCE``.

A source whose rows need parsing beyond the schema has a module ``pipelines/sources/<key>.py``
defining ``stage_<key>(raw, extract_date, duplicate=None) -> Staged`` (``raw`` may be a slice of
the delivery, ``duplicate`` its rows repeating an earlier one); every other source is staged by the
schema alone.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data import data_path
from pipelines.errors import UsageError
from pipelines.staging.schema import Schema, read_schema_doc, schema_from_doc
from pipelines.staging.stage import Staged, stage_with_schema

StageFunction = Callable[..., Staged]  # (raw, extract_date, duplicate=None) -> Staged

EVIDENCE = ("hukou", "title", "contract", "rental", "insurance", "business")
"""What the policy reads (policy.md): hukou registration, property by title or by purchase
contract, a rental registration, social insurance, a business operated or represented."""
ROLE_KEYS = ("persons", "address", "name_rank", "population", "evidence")
SPECIAL_STAGING = "pipelines.sources"


@dataclass(frozen=True)
class PersonColumns:
    """Where a record names a resident: the ID column and the name column beside it."""

    id: str
    name: str | None = None
    subject_column: str | None = None
    subject_kind: str | None = None


@dataclass(frozen=True)
class Source:
    key: str
    schema: Schema
    persons: tuple[PersonColumns, ...] = ()
    address: str | None = None
    name_rank: int | None = None
    population: bool = False
    evidence: str | None = None
    special_module: str | None = None  # dotted name of its staging module, when it has one

    @property
    def schema_path(self) -> Path:
        return schemas_dir() / f"{self.key}.yaml"

    @property
    def expectations_path(self) -> Path:
        return expectations_dir() / f"{self.key}.yaml"

    @property
    def special_module_path(self) -> Path | None:
        if self.special_module is None:
            return None
        return Path(importlib.util.find_spec(self.special_module).origin)


def schemas_dir() -> Path:
    return data_path("schemas")


def expectations_dir() -> Path:
    return data_path("expectations")


def _role_error(path: Path, message: str) -> UsageError:
    return UsageError(f"schema {path.name}: roles: {message}")


def _person_columns(path: Path, item: Any, columns: set[str] | None) -> PersonColumns:
    if not isinstance(item, dict) or "id" not in item or set(item) - {"id", "name", "subject"}:
        raise _role_error(path, f"persons: {item!r} needs id (and may give name, subject)")
    subject = item.get("subject") or {}
    if subject and (not isinstance(subject, dict) or set(subject) != {"column", "is"}):
        raise _role_error(path, "persons: subject needs column and is")
    person = PersonColumns(
        id=str(item["id"]),
        name=item.get("name") and str(item["name"]),
        subject_column=subject.get("column"),
        subject_kind=subject.get("is"),
    )
    named = [c for c in (person.id, person.name, person.subject_column) if c]
    unknown = [c for c in named if columns is not None and c not in columns]
    if unknown:
        raise _role_error(path, f"persons: no column {unknown[0]!r} in the schema")
    return person


def _parse_roles(path: Path, doc: Any, schema: Schema, special: bool) -> dict:
    roles = doc.get("roles") or {}
    if not isinstance(roles, dict):
        raise _role_error(path, "must be a mapping")
    unknown = sorted(set(roles) - set(ROLE_KEYS))
    if unknown:
        raise _role_error(path, f"unknown role {unknown[0]!r} (known: {', '.join(ROLE_KEYS)})")
    # a special staging module may add columns (one row per buyer): its roles are checked by its tests
    columns = None if special else set(schema.keys) | {c.kind_column for c in schema.columns if c.kind_column}
    persons = roles.get("persons") or []
    if not isinstance(persons, list):
        raise _role_error(path, "persons must be a list")
    address = roles.get("address")
    if address is not None and columns is not None and address not in columns:
        raise _role_error(path, f"address: no column {address!r} in the schema")
    rank = roles.get("name_rank")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise _role_error(path, "name_rank must be a whole number from 1")
    if not isinstance(roles.get("population", False), bool):
        raise _role_error(path, "population must be true or false")
    evidence = roles.get("evidence")
    if evidence is not None and evidence not in EVIDENCE:
        raise _role_error(path, f"evidence must be one of {', '.join(EVIDENCE)}")
    return {
        "persons": tuple(_person_columns(path, item, columns) for item in persons),
        "address": address,
        "name_rank": rank,
        "population": roles.get("population", False),
        "evidence": evidence,
    }


def _special_module(key: str) -> str | None:
    name = f"{SPECIAL_STAGING}.{key}"
    return name if importlib.util.find_spec(name) is not None else None


def load_source(key: str) -> Source:
    """One source's declaration, checked; a broken file is a one-line ``UsageError``."""
    path = schemas_dir() / f"{key}.yaml"
    doc = read_schema_doc(key, path)
    schema = schema_from_doc(key, path, doc)
    special = _special_module(key)
    return Source(
        key=key, schema=schema, special_module=special, **_parse_roles(path, doc, schema, special is not None)
    )


@functools.cache
def sources() -> dict[str, Source]:
    """Every declared source by key, in key order; checked at first use."""
    found = {path.stem: load_source(path.stem) for path in sorted(schemas_dir().glob("*.yaml"))}
    populations = [key for key, source in found.items() if source.population]
    if len(populations) != 1:
        raise UsageError(
            f"schemas: exactly one source must have roles: population: true (found {', '.join(populations) or 'none'})"
        )
    return found


def source_keys() -> list[str]:
    return list(sources())


def source(key: str) -> Source:
    known = sources()
    if key not in known:
        raise UsageError(f"unknown source {key!r} (known: {', '.join(known)})")
    return known[key]


def population_source() -> str:
    """The source whose accepted rows count the residents."""
    return next(key for key, s in sources().items() if s.population)


def with_evidence(evidence: str) -> list[str]:
    """The sources the policy reads as ``evidence`` (see ``EVIDENCE``), in key order."""
    return [key for key, s in sources().items() if s.evidence == evidence]


def name_authority() -> list[str]:
    """Sources in the order their spelling of a name is trusted."""
    ranked = sorted(sources().values(), key=lambda s: (s.name_rank is None, s.name_rank or 0, s.key))
    return [s.key for s in ranked]


def address_columns() -> dict[str, str]:
    """Source → the staged column holding its address text."""
    return {key: s.address for key, s in sources().items() if s.address}


def person_columns() -> dict[str, tuple[PersonColumns, ...]]:
    """Source → where its records name residents."""
    return {key: s.persons for key, s in sources().items() if s.persons}


def stage_function(key: str) -> StageFunction:
    """The source's special ``stage_<key>``, or staging by its schema alone."""
    declared = source(key)
    if declared.special_module:
        return getattr(importlib.import_module(declared.special_module), f"stage_{key}")
    return functools.partial(_stage_by_schema, declared.schema)


def _stage_by_schema(
    schema: Schema, raw: pd.DataFrame, extract_date: dt.date, duplicate: np.ndarray | None = None
) -> Staged:
    staged, _ = stage_with_schema(raw, schema, extract_date, duplicate=duplicate)
    return staged
