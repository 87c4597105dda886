"""policy.md's rules, each stated once: the predicates, the categories and the reason codes.

A record predicate (qualifying property, qualifying rental, stable employment) is a ``Rule``
of named ``Part``\\s; judging rows gives, per row, whether the rule holds and which reason
codes its failing parts tell. The per-citizen tables store ``holds`` as ``qualifying``; the
decision step lists what is ``told`` as the person's reasons. Thresholds, lists and dates come
from ``Policy`` only; the department codes from ``records``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.engine.records import (
    CHILD_STATUSES,
    HUKOU_ACTIVE,
    TITLE_KIND,
    business_sources,
    evidence_source,
)
from pipelines.policy import Policy

CATEGORIES = ("A1", "A2", "B", "C")  # best first (policy.md)
CATEGORY_A_URBAN, CATEGORY_A_OTHER, CATEGORY_RENTAL, CATEGORY_HUKOU = CATEGORIES

# Reason codes, in the order a child's reasons are listed.
NO_GUARDIAN_LINK = "NO_GUARDIAN_LINK"
NO_QUALIFYING_PROPERTY = "NO_QUALIFYING_PROPERTY"
PROPERTY_AFTER_CUTOFF = "PROPERTY_AFTER_CUTOFF"
PROPERTY_NOT_RESIDENTIAL = "PROPERTY_NOT_RESIDENTIAL"
PROPERTY_NOT_CURRENT = "PROPERTY_NOT_CURRENT"
PROPERTY_OUTSIDE_ALL_CATCHMENTS = "PROPERTY_OUTSIDE_ALL_CATCHMENTS"
PROPERTY_EXCLUDES_RENTAL_AND_HUKOU = "PROPERTY_EXCLUDES_RENTAL_AND_HUKOU"
NO_QUALIFYING_RENTAL = "NO_QUALIFYING_RENTAL"
RENTAL_AFTER_CUTOFF = "RENTAL_AFTER_CUTOFF"
RENTAL_NOT_COVERING_CUTOFF = "RENTAL_NOT_COVERING_CUTOFF"
RENTAL_OUTSIDE_ALL_CATCHMENTS = "RENTAL_OUTSIDE_ALL_CATCHMENTS"
NO_STABLE_EMPLOYMENT = "NO_STABLE_EMPLOYMENT"
INSUFFICIENT_INSURANCE_MONTHS = "INSUFFICIENT_INSURANCE_MONTHS"
BUSINESS_TOO_RECENT = "BUSINESS_TOO_RECENT"
HUKOU_NOT_URBAN = "HUKOU_NOT_URBAN"
HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS = "HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS"
ADDRESS_UNMATCHED = "ADDRESS_UNMATCHED"
CHILD_DECEASED = "CHILD_DECEASED"
REASONS = (
    NO_GUARDIAN_LINK,
    NO_QUALIFYING_PROPERTY,
    PROPERTY_AFTER_CUTOFF,
    PROPERTY_NOT_RESIDENTIAL,
    PROPERTY_NOT_CURRENT,
    PROPERTY_OUTSIDE_ALL_CATCHMENTS,
    PROPERTY_EXCLUDES_RENTAL_AND_HUKOU,
    NO_QUALIFYING_RENTAL,
    RENTAL_AFTER_CUTOFF,
    RENTAL_NOT_COVERING_CUTOFF,
    RENTAL_OUTSIDE_ALL_CATCHMENTS,
    NO_STABLE_EMPLOYMENT,
    INSUFFICIENT_INSURANCE_MONTHS,
    BUSINESS_TOO_RECENT,
    HUKOU_NOT_URBAN,
    HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS,
    ADDRESS_UNMATCHED,
    CHILD_DECEASED,
)

# Whose records a record reason may come from: the child's or a guardian's (``holder``), or a
# guardian's only (``guardian``; category B never rests on the child's own rental or job).
HOLDER_SCOPE, GUARDIAN_SCOPE = "holder", "guardian"


# ---------------------------------------------------------------- rules of named parts


@dataclass(frozen=True)
class Part:
    """One condition of a rule and the reason code that tells its failure (None: no code does).

    A failure is told only while no part named in ``unless`` fails too: a superseded
    commercial title is not the kind of record the property reasons are about.
    """

    name: str
    reason: str | None = None
    unless: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Per row: whether the rule holds, and for each reason code the rows it is told for."""

    holds: np.ndarray
    told: dict[str, np.ndarray]
    scope: str


@dataclass(frozen=True)
class Rule:
    """A predicate that holds when every part holds; ``scope`` says whose records it judges."""

    name: str
    parts: tuple[Part, ...]
    scope: str

    def judge(self, values: Mapping[str, object]) -> Verdict:
        """``values``: per part name, True / False / NA (unknown: neither holds nor is told)."""
        known = {part.name: pd.array(values[part.name], dtype="boolean") for part in self.parts}
        holds = np.logical_and.reduce([v.fillna(False).to_numpy(dtype=bool) for v in known.values()])
        fails = {name: (~v).fillna(False).to_numpy(dtype=bool) for name, v in known.items()}
        told: dict[str, np.ndarray] = {}
        for part in self.parts:
            if part.reason is not None:
                mask = fails[part.name] & ~np.logical_or.reduce([fails[o] for o in part.unless] or [False])
                told[part.reason] = told.get(part.reason, np.zeros(len(mask), dtype=bool)) | mask
        return Verdict(holds, told, self.scope)


def _on_or_before(dates: pd.Series, day: pd.Timestamp) -> pd.Series:
    """True / False, NA where the date is unknown."""
    return pd.Series(dates <= day, dtype="boolean").mask(dates.isna().to_numpy())


QUALIFYING_PROPERTY = Rule(
    "qualifying property",
    (
        Part("listed status", PROPERTY_NOT_CURRENT, unless=("listed use",)),
        Part("listed use", PROPERTY_NOT_RESIDENTIAL, unless=("listed status",)),
        Part("dated by the cutoff", PROPERTY_AFTER_CUTOFF, unless=("listed status", "listed use")),
    ),
    scope=HOLDER_SCOPE,
)


def qualifying_property(rows: pd.DataFrame, policy: Policy) -> Verdict:
    """policy.md's qualifying property: a title or contract in a listed status (each kind its
    own list) and use, registered or signed on or before the cutoff. Its address does not enter
    (an unplaceable property is still held). Rows: ``kind``, ``status``, ``use``, ``record_date``.

    PROPERTY_NOT_CURRENT: a listed use in a status not listed (a superseded title, a withdrawn
    or cancelled contract); PROPERTY_NOT_RESIDENTIAL: a listed status with a use not listed;
    PROPERTY_AFTER_CUTOFF: listed status and use, dated after the cutoff.
    """
    status = np.where(
        rows["kind"].eq(TITLE_KIND),
        rows["status"].isin(policy.title_status),
        rows["status"].isin(policy.contract_status),
    )
    return QUALIFYING_PROPERTY.judge(
        {
            "listed status": status,
            "listed use": rows["use"].isin(policy.property_uses).to_numpy(),
            "dated by the cutoff": _on_or_before(rows["record_date"], pd.Timestamp(policy.cutoff_date)),
        }
    )


QUALIFYING_RENTAL = Rule(
    "qualifying rental",
    (
        Part("listed status"),
        Part("filed by the cutoff", RENTAL_AFTER_CUTOFF, unless=("listed status",)),
        Part("lease covers the cutoff", RENTAL_NOT_COVERING_CUTOFF, unless=("listed status", "filed by the cutoff")),
    ),
    scope=GUARDIAN_SCOPE,
)


def qualifying_rental(rows: pd.DataFrame, policy: Policy) -> Verdict:
    """policy.md's qualifying rental: a registration in a listed status, filed on or before the
    cutoff, whose lease runs on the cutoff date (a lease without its dates does not).
    Rows: ``status``, ``registered_date``, ``start_date``, ``end_date``.

    RENTAL_AFTER_CUTOFF: a listed status filed after the cutoff; RENTAL_NOT_COVERING_CUTOFF: a
    listed status not filed late whose lease does not run on the cutoff date.
    """
    cutoff = pd.Timestamp(policy.cutoff_date)
    return QUALIFYING_RENTAL.judge(
        {
            "listed status": rows["status"].isin(policy.rental_status).to_numpy(),
            "filed by the cutoff": _on_or_before(rows["registered_date"], cutoff),
            "lease covers the cutoff": ((rows["start_date"] <= cutoff) & (rows["end_date"] >= cutoff)).to_numpy(),
        }
    )


STABLE_INSURANCE = Rule(
    "stable employment by insurance",
    (
        Part("listed scheme"),
        Part("listed status"),
        Part("enough local months", INSUFFICIENT_INSURANCE_MONTHS, unless=("listed scheme", "listed status")),
    ),
    scope=GUARDIAN_SCOPE,
)

STABLE_BUSINESS = Rule(
    "stable employment by business",
    (
        Part("listed status"),
        Part("established early enough", BUSINESS_TOO_RECENT, unless=("listed status",)),
    ),
    scope=GUARDIAN_SCOPE,
)


def stable_employment(rows: pd.DataFrame, policy: Policy) -> Verdict:
    """policy.md's stable employment, per employment row by its ``kind``.

    Insurance: a listed scheme in a listed status with at least ``min_local_months`` local
    months (a missing count is none: short of any requirement). Business or enterprise: a listed
    status, established on or before cutoff − ``min_business_months`` (an unknown date is not).
    Rows: ``kind``, ``scheme``, ``status``, ``local_months``, ``since``.

    INSUFFICIENT_INSURANCE_MONTHS: listed scheme and status, too few months; BUSINESS_TOO_RECENT:
    a listed status established later than that.
    """
    months = pd.array(rows["local_months"], dtype="Int64")
    enough = pd.Series(months >= policy.min_local_months, dtype="boolean")
    if policy.min_local_months > 0:
        enough = enough.fillna(False)
    insurance = STABLE_INSURANCE.judge(
        {
            "listed scheme": rows["scheme"].isin(policy.insurance_schemes).to_numpy(),
            "listed status": rows["status"].isin(policy.insurance_status).to_numpy(),
            "enough local months": enough,
        }
    )
    business = STABLE_BUSINESS.judge(
        {
            "listed status": rows["status"].isin(policy.business_status).to_numpy(),
            "established early enough": (rows["since"] <= pd.Timestamp(policy.business_established_by)).to_numpy(),
        }
    )
    is_insurance = rows["kind"].eq(evidence_source("insurance")).to_numpy(dtype=bool)
    is_business = rows["kind"].isin(business_sources()).to_numpy(dtype=bool)
    told = {code: mask & is_insurance for code, mask in insurance.told.items()}
    told |= {code: mask & is_business for code, mask in business.told.items()}
    return Verdict((insurance.holds & is_insurance) | (business.holds & is_business), told, GUARDIAN_SCOPE)


# ---------------------------------------------------------------- the child's own facts


def urban_hukou(hukou: pd.DataFrame, policy: Policy) -> pd.Series:
    """policy.md: active, in an urban county, settled at this address on or before the cutoff."""
    settled = pd.to_datetime(hukou["settled_date"], errors="coerce").astype("datetime64[ns]")
    return (
        (
            hukou["status"].eq(HUKOU_ACTIVE)
            & hukou["hukou_region_code"].astype("str").isin(policy.urban_region_codes)
            & (settled <= pd.Timestamp(policy.cutoff_date))
        )
        .fillna(False)
        .astype(bool)
    )


def school_level(birth: pd.Series, hukou_status: pd.Series, policy: Policy) -> pd.Series:
    """The level a resident is a school-age child of (None when none): born inside the level's
    window with a hukou status of 正常/迁出/死亡 (注销 is no child)."""
    level = pd.Series(None, index=birth.index, dtype="object")
    for window in policy.levels:
        inside = (birth >= pd.Timestamp(window.birth_from)) & (birth <= pd.Timestamp(window.birth_to))
        level = level.where(~inside.fillna(False), window.level)
    return level.where(hukou_status.isin(CHILD_STATUSES), None)


# ---------------------------------------------------------------- categories and no-school reasons


def property_category(urban: pd.Series) -> np.ndarray:
    """A qualifying property of the child or a guardian in the catchment: A1 with urban hukou, else A2."""
    return np.where(urban.fillna(False).astype(bool), CATEGORY_A_URBAN, CATEGORY_A_OTHER)


def open_to_rental(flags: pd.DataFrame) -> pd.Series:
    """B is open without a qualifying property anywhere and with a guardian's stable employment;
    a guardian's qualifying rental in the catchment then gives B there."""
    return ~flags["has_property"] & flags["stable_employment"]


def open_to_hukou(children: pd.DataFrame) -> pd.Series:
    """C is open without a qualifying property and with urban hukou placed at a standard address;
    the catchments holding that address then give C."""
    return ~children["has_property"] & children["urban_hukou"] & children["hukou_address_code"].notna()


def no_school_reasons(children: pd.DataFrame) -> list[tuple[np.ndarray, str]]:
    """The child's own reasons for no school at a level, each with the rows it applies to.

    Columns (bool): ``has_guardian``, ``has_property``, ``has_rental``, ``stable_employment``,
    ``urban_hukou``, ``hukou_coded`` (a single standard code), ``hukou_inside`` (a catchment of
    the level holds it). The reasons of the holders' records come on top (``Rule.scope``).
    """

    def flag(column: str) -> np.ndarray:
        return children[column].to_numpy(dtype=bool)

    urban, coded = flag("urban_hukou"), flag("hukou_coded")
    return [
        (~flag("has_guardian"), NO_GUARDIAN_LINK),
        (~flag("has_property"), NO_QUALIFYING_PROPERTY),
        (flag("has_property"), PROPERTY_EXCLUDES_RENTAL_AND_HUKOU),  # B and C closed, A placed nowhere
        (~flag("has_rental"), NO_QUALIFYING_RENTAL),
        (~flag("stable_employment"), NO_STABLE_EMPLOYMENT),
        (~urban, HUKOU_NOT_URBAN),
        (urban & coded & ~flag("hukou_inside"), HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS),
        (urban & ~coded, ADDRESS_UNMATCHED),
    ]
