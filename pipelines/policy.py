"""The enrollment policy (policy.md) as a typed, checked value.

Every category threshold, status list and date window lives in ``policy.yaml``; code reads
them only through ``Policy``. A bad policy file is a ``UsageError`` naming the key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.data import reference_policy_text
from pipelines.errors import UsageError


@dataclass(frozen=True)
class LevelWindow:
    level: str
    birth_from: dt.date
    birth_to: dt.date


@dataclass(frozen=True)
class Policy:
    policy_id: str
    enrollment_year: int
    cutoff_date: dt.date
    urban_region_codes: tuple[str, ...]
    levels: tuple[LevelWindow, ...]
    property_uses: tuple[str, ...]
    title_status: tuple[str, ...]
    contract_status: tuple[str, ...]
    rental_status: tuple[str, ...]
    insurance_schemes: tuple[str, ...]
    insurance_status: tuple[str, ...]
    min_local_months: int
    business_status: tuple[str, ...]
    min_business_months: int

    @property
    def business_established_by(self) -> dt.date:
        """Latest establishment date that still counts as stable: cutoff − min_business_months."""
        return add_months(self.cutoff_date, -self.min_business_months)

    def level_of_birth(self, birth: dt.date) -> str | None:
        for window in self.levels:
            if window.birth_from <= birth <= window.birth_to:
                return window.level
        return None

    def codes_named(self) -> dict[str, tuple[str, ...]]:
        """Policy key -> the codes it lists, for each key of ``CODE_LISTS``."""
        return {key: getattr(self, field) for key, (field, _) in CODE_LISTS.items()}


CODE_LISTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "property.uses": ("property_uses", (("title", "use"), ("contract", "use"))),
    "property.title_status": ("title_status", (("title", "title_status"),)),
    "property.contract_status": ("contract_status", (("contract", "status"),)),
    "rental.status": ("rental_status", (("rental", "status"),)),
    "employment.insurance_schemes": ("insurance_schemes", (("insurance", "scheme"),)),
    "employment.insurance_status": ("insurance_status", (("insurance", "insurance_status"),)),
    "employment.business_status": ("business_status", (("business", "reg_status"),)),
}
"""Policy key -> (its ``Policy`` field, the code columns it is compared with as (evidence role,
staged column)). A code no such column can hold matches no row, so the policy would quietly
exclude everyone it meant to admit; preflight checks every listed code against these columns'
code lists (pipelines/registry.py finds the sources by their evidence role)."""


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar month arithmetic, clamping to the month's last day (2027-03-31 − 1 → 02-28)."""
    month_index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(month_index, 12)
    month += 1
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last_day))


def _get(doc: dict, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UsageError(f"policy: missing key '{dotted}'")
        node = node[part]
    return node


def _date(doc: dict, dotted: str) -> dt.date:
    value = _get(doc, dotted)
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise UsageError(f"policy: key '{dotted}' must be a date YYYY-MM-DD, got {value!r}") from None


def _strings(doc: dict, dotted: str) -> tuple[str, ...]:
    value = _get(doc, dotted)
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int)) for v in value):
        raise UsageError(f"policy: key '{dotted}' must be a non-empty list of values")
    return tuple(str(v) for v in value)


def _int(doc: dict, dotted: str, minimum: int = 0) -> int:
    value = _get(doc, dotted)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"policy: key '{dotted}' must be an integer ≥ {minimum}, got {value!r}")
    return value


def policy_from_dict(doc: Any) -> Policy:
    """Check a parsed policy document and build the ``Policy``; errors name the key."""
    if not isinstance(doc, dict):
        raise UsageError("policy: the file must be a YAML mapping")
    policy_id = _get(doc, "policy_id")
    if not isinstance(policy_id, str) or not policy_id.strip():
        raise UsageError("policy: key 'policy_id' must be a non-empty string")
    levels_doc = _get(doc, "levels")
    if not isinstance(levels_doc, dict) or not levels_doc:
        raise UsageError("policy: key 'levels' must map level names to birth windows")
    levels = []
    for name in levels_doc:
        window = LevelWindow(str(name), _date(doc, f"levels.{name}.birth_from"), _date(doc, f"levels.{name}.birth_to"))
        if window.birth_from > window.birth_to:
            raise UsageError(f"policy: key 'levels.{name}': birth_from is after birth_to")
        levels.append(window)
    ordered = sorted(levels, key=lambda w: w.birth_from)
    for earlier, later in zip(ordered, ordered[1:]):
        if later.birth_from <= earlier.birth_to:
            raise UsageError(f"policy: key 'levels': windows of {earlier.level} and {later.level} overlap")
    return Policy(
        policy_id=policy_id.strip(),
        enrollment_year=_int(doc, "enrollment_year", 1900),
        cutoff_date=_date(doc, "cutoff_date"),
        urban_region_codes=_strings(doc, "urban_region_codes"),
        levels=tuple(levels),
        property_uses=_strings(doc, "property.uses"),
        title_status=_strings(doc, "property.title_status"),
        contract_status=_strings(doc, "property.contract_status"),
        rental_status=_strings(doc, "rental.status"),
        insurance_schemes=_strings(doc, "employment.insurance_schemes"),
        insurance_status=_strings(doc, "employment.insurance_status"),
        min_local_months=_int(doc, "employment.min_local_months"),
        business_status=_strings(doc, "employment.business_status"),
        min_business_months=_int(doc, "employment.min_business_months"),
    )


class _PolicyLoader(yaml.SafeLoader):
    """YAML as ``yaml.safe_load`` reads it, except that an impossible date (2027-07-32) stays
    text, so ``_date`` names its key instead of YAML raising a bare ValueError."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_PolicyLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"policy: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"policy: cannot read {path}: {exc}") from None
    try:
        doc = yaml.load(text, Loader=_PolicyLoader)
    except yaml.YAMLError as exc:
        raise UsageError(f"policy: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return policy_from_dict(doc)


DEMO_POLICY_YAML = reference_policy_text()
"""The reference policy (``pipelines/data/policy.yaml``), as the demo and the synth write it."""
