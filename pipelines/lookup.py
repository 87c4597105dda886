"""``zerocert lookup ID``: what the parent's phone shows, or a child's eligibility.

The typed ID is repaired like a delivered one (spaces, full-width, lowercase x, 15 digits) and
then bound as a query parameter: hostile input can only ever be "not found" or a usage error.
"""

from __future__ import annotations

import json

import pandas as pd
import sqlalchemy as sa

from pipelines.errors import NotFound, UsageError
from pipelines.resident_id import mask_id, normalize_resident_ids
from pipelines.warehouse_schema import SCHEMA

MAX_INPUT = 64


def normalize_typed_id(text: str) -> str:
    """One typed ID to its 18-character form, or a UsageError saying why (masked)."""
    if len(text) > MAX_INPUT:
        raise UsageError("not a resident ID: the input is too long")
    if not text.strip():
        raise UsageError("not a resident ID: the input is blank")
    ids, reasons = normalize_resident_ids(pd.Series([text], dtype=object))
    reason_code = reasons.iloc[0]
    if pd.notna(reason_code) or pd.isna(ids.iloc[0]):
        reason = "wrong check character" if reason_code == "INVALID_ID_CHECKSUM" else "not in any ID form"
        raise UsageError(f"not a resident ID ({reason}): {mask_id(text.strip())}")
    return str(ids.iloc[0])


def _table(engine: sa.Engine, name: str) -> str:
    return f"{SCHEMA}.{name}" if engine.dialect.name == "postgresql" else name


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def lookup(url: str, typed_id: str) -> dict:
    """The prefill document when the ID is a guardian's; the eligibility rows when a child's."""
    resident = normalize_typed_id(typed_id)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            prefill = db.execute(sa.text(f"SELECT document FROM {_table(engine, 'prefill')} WHERE guardian_id = :id"),
                                 {"id": resident}).scalar()
            rows = db.execute(sa.text(
                f"SELECT level, school_code, category, priority_date, basis_guardian_id, evidence, policy_id "
                f"FROM {_table(engine, 'eligibility')} WHERE child_id = :id ORDER BY level, category, school_code"),
                {"id": resident}).mappings().all()
            reasons = db.execute(sa.text(
                f"SELECT level, reasons, policy_id FROM {_table(engine, 'ineligibility')} WHERE child_id = :id "
                f"ORDER BY level"), {"id": resident}).mappings().all()
    except sa.exc.OperationalError as exc:
        raise UsageError(f"cannot read the warehouse: {str(exc.orig).splitlines()[0]}") from None
    except sa.exc.ProgrammingError:
        raise UsageError("the warehouse has no published run yet") from None
    finally:
        engine.dispose()
    if prefill is None and not rows and not reasons:
        raise NotFound(f"not found: no guardian or child {mask_id(resident)} in the published run")
    document: dict = {"id": resident}
    if prefill is not None:
        document["as_guardian"] = _json(prefill)
    if rows or reasons:
        document["as_child"] = {
            "eligibility": [{**dict(r), "priority_date": str(r["priority_date"]), "evidence": _json(r["evidence"])}
                            for r in rows],
            "ineligibility": [{**dict(r), "reasons": _json(r["reasons"])} for r in reasons],
        }
    return document
