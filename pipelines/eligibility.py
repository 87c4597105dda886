"""The eligibility engine: policy.md's categories, reasons, guardian eligibility and prefill.

The work is split along who the facts belong to, so each step can run on one hash bucket:

1. ``person_facts`` (person bucket): each resident's qualifying properties and rentals placed
   in catchments, their stable employment, and the reasons their records fall short.
2. ``holder_edges`` (child bucket): each school-age child with itself and its guardians.
3. ``edge_facts`` (bucket of the holder, i.e. edges re-bucketed by guardian ID): the facts of
   step 1 attached to the child they may serve.
4. ``decide`` (child bucket): the best category per school, or the reasons for none.
5. ``guardian_eligibility`` (person bucket) and ``build_prefill`` (guardian bucket).

``compute_eligibility`` chains them on whole frames; ``run_engine`` chains them bucket by
bucket with Parquet between the steps. Dates are ``datetime64[ns]`` in frames and ISO
``YYYY-MM-DD`` text inside JSON. Nothing here is a policy literal: every list, threshold and
date comes from ``Policy``; the Chinese codes below are the departments' code lists.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import join
from pipelines.join import json_text
from pipelines.policy import Policy

CATEGORIES = ("A1", "A2", "B", "C")  # best first (policy.md)
CATEGORY_A_URBAN, CATEGORY_A_OTHER, CATEGORY_RENTAL, CATEGORY_HUKOU = CATEGORIES
DECEASED = "死亡"
BUSINESS_KINDS = ("individual_business", "enterprise")
PROPERTY_SOURCE = {"title": "property_title", "contract": "housing_contract"}

# Reason codes, in the order they are listed. When each applies is defined in ``_child_reasons``
# and ``person_facts``; the checks there are the definitions.
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
REASONS = (NO_GUARDIAN_LINK, NO_QUALIFYING_PROPERTY, PROPERTY_AFTER_CUTOFF,
           PROPERTY_NOT_RESIDENTIAL, PROPERTY_NOT_CURRENT, PROPERTY_OUTSIDE_ALL_CATCHMENTS,
           PROPERTY_EXCLUDES_RENTAL_AND_HUKOU, NO_QUALIFYING_RENTAL, RENTAL_AFTER_CUTOFF,
           RENTAL_NOT_COVERING_CUTOFF, RENTAL_OUTSIDE_ALL_CATCHMENTS, NO_STABLE_EMPLOYMENT,
           INSUFFICIENT_INSURANCE_MONTHS, BUSINESS_TOO_RECENT, HUKOU_NOT_URBAN,
           HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS, ADDRESS_UNMATCHED, CHILD_DECEASED)
ALL_LEVELS = "*"  # a person reason that holds at every level
SELF, GUARDIAN = "self", "guardian"
HOLDER_SCOPE, GUARDIAN_SCOPE = "holder", "guardian"  # whose records the reason may come from

ELIGIBILITY_COLUMNS = ["child_id", "level", "school_code", "category", "priority_date",
                       "basis_guardian_id", "evidence", "policy_id", "run_id"]
INELIGIBILITY_COLUMNS = ["child_id", "level", "reasons", "policy_id", "run_id"]
GUARDIAN_ELIGIBILITY_COLUMNS = ["guardian_id", "level", "school_code", "basis", "priority_date",
                                "evidence", "policy_id", "run_id"]
PREFILL_COLUMNS = ["guardian_id", "document", "policy_id", "run_id"]
FACT_COLUMNS = ["citizen_id", "level", "school_code", "date", "source", "record_key"]


# ---------------------------------------------------------------- helpers

def _iso(values: pd.Series) -> pd.Series:
    """ISO dates (object, None for NaT), vectorized."""
    dates = pd.Series(pd.to_datetime(values, errors="coerce"))
    return dates.dt.strftime("%Y-%m-%d").astype(object).where(dates.notna(), None)


def _plain(values: pd.Series) -> list:
    """Python scalars for JSON: dates as ISO text, missing as None."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _iso(values).tolist()
    column = values.astype(object)
    column = column.where(column.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in column]


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts (a tight comprehension over column lists, not ``iterrows``)."""
    lists = [_plain(frame[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*lists)]


def _grouped(keys: list[tuple], items: list) -> dict[tuple, list]:
    """Consecutive items with equal keys as one list (input already sorted by key)."""
    return {key: [item for _, item in group]
            for key, group in itertools.groupby(zip(keys, items), key=lambda pair: pair[0])}


def json_strings(values: pd.Series) -> pd.Series:
    """Each value as a JSON string literal (``ensure_ascii=False``) or ``null``, vectorized.

    Byte-identical to ``json.dumps`` for the same value; texts holding control characters
    (never seen in keys) take ``json.dumps`` itself.
    """
    column = values.astype(object)
    missing = column.isna()
    text = column.where(~missing, "").astype(str)
    if text.str.contains(r"[\x00-\x1f]", regex=True).any():
        literal = text.map(lambda v: json.dumps(v, ensure_ascii=False))
    else:
        literal = '"' + text.str.replace("\\", "\\\\", regex=False).str.replace('"', '\\"', regex=False) + '"'
    return literal.astype(object).where(~missing, "null")


def _evidence(frame: pd.DataFrame, key_columns: list[str]) -> pd.DataFrame:
    """One JSON evidence list per key: every (source, record_key, date) fact in the group.

    The items are spelled with vectorized string operations, exactly as ``json_text`` would
    spell ``{"date": …, "record_key": …, "source": …}``, then joined per group.
    """
    if frame.empty:
        return pd.DataFrame({**{c: pd.Series(dtype="object") for c in key_columns},
                             "evidence": pd.Series(dtype="object")})
    facts = (frame[key_columns + ["source", "record_key", "date"]]
             .sort_values(key_columns + ["source", "record_key", "date"], kind="stable")
             .drop_duplicates(key_columns + ["source", "record_key"], ignore_index=True))
    items = ('{"date": ' + json_strings(_iso(facts["date"])) + ', "record_key": '
             + json_strings(facts["record_key"]) + ', "source": ' + json_strings(facts["source"]) + "}")
    keys = facts[key_columns]
    starts = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy())
    ends = np.append(starts[1:], len(facts))
    items = items.tolist()
    out = keys.iloc[starts].reset_index(drop=True)
    out["evidence"] = ["[" + ", ".join(items[s:e]) + "]" for s, e in zip(starts.tolist(), ends.tolist())]
    return out


def catchments_for(address_catchment: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """address_code, level, school_code of this policy's year and levels, without repeats."""
    rows = address_catchment
    if "enrollment_year" in rows.columns:
        rows = rows[rows["enrollment_year"].astype("Int64") == policy.enrollment_year]
    rows = rows[rows["level"].isin([w.level for w in policy.levels])]
    return (rows[["address_code", "level", "school_code"]].astype("object").drop_duplicates()
            .reset_index(drop=True))


def _outside(codes: pd.DataFrame, catchments: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """(citizen_id, level) for each placed address that lies in no catchment of the level."""
    parts = []
    for window in policy.levels:
        covered = catchments.loc[catchments["level"] == window.level, "address_code"]
        rows = codes[~join.member(codes["address_code"], covered)]
        parts.append(pd.DataFrame({"citizen_id": rows["citizen_id"], "level": window.level}))
    return pd.concat(parts, ignore_index=True)


def _reasons(citizen_ids: pd.Series, reason: str, scope: str, level: object = ALL_LEVELS) -> pd.DataFrame:
    return pd.DataFrame({"citizen_id": citizen_ids.to_numpy(), "level": level, "reason": reason,
                         "scope": scope})


# ---------------------------------------------------------------- step 1: per person

def person_facts(tables: dict[str, pd.DataFrame], address_catchment: pd.DataFrame,
                 policy: Policy) -> dict[str, pd.DataFrame]:
    """What each person's own records can do for a child, from the per-citizen tables.

    Returns ``placed_property`` / ``placed_rental`` (a qualifying record per school whose
    catchment holds its address), ``stable_jobs`` (qualifying employment), ``person_flags``
    (has_property anywhere, has_rental anywhere, stable_employment) and ``person_reasons``:

    - PROPERTY_AFTER_CUTOFF: a title/contract in a listed status and use, dated after cutoff.
    - PROPERTY_NOT_RESIDENTIAL: a title/contract in a listed status whose use is not listed.
    - PROPERTY_NOT_CURRENT: a title/contract of a listed use whose status is not listed
      (a superseded title, a withdrawn or cancelled contract).
    - ADDRESS_UNMATCHED: a qualifying property or rental whose address has no single code.
    - PROPERTY_OUTSIDE_ALL_CATCHMENTS / RENTAL_OUTSIDE_ALL_CATCHMENTS (per level): a qualifying
      property / rental placed at an address no catchment of the level contains.
    - RENTAL_AFTER_CUTOFF: a rental in a listed status filed after the cutoff.
    - RENTAL_NOT_COVERING_CUTOFF: a rental in a listed status filed by the cutoff whose lease
      does not run on the cutoff date.
    - INSUFFICIENT_INSURANCE_MONTHS: a listed scheme in a listed status with fewer local months
      than required.
    - BUSINESS_TOO_RECENT: a business or enterprise in a listed status established after
      cutoff − min_business_months.

    Property reasons have scope ``holder`` (the child's or a guardian's records); rental and
    employment reasons scope ``guardian`` (only guardians' records count for category B).
    """
    cutoff = pd.Timestamp(policy.cutoff_date)
    catchments = catchments_for(address_catchment, policy)
    properties = tables["property_holding"]
    rentals = tables["rental_holding"]
    jobs = tables["employment"]

    qualifying = properties[properties["qualifying"]]
    placed = qualifying[qualifying["address_code"].notna()]
    placed_property = placed.merge(catchments, on="address_code").assign(
        date=lambda f: f["record_date"], source=lambda f: f["kind"].map(PROPERTY_SOURCE))[FACT_COLUMNS]

    good_rentals = rentals[rentals["qualifying"]]
    placed_rentals = good_rentals[good_rentals["address_code"].notna()]
    placed_rental = placed_rentals.merge(catchments, on="address_code").assign(
        date=lambda f: f["registered_date"], source="rental",
        record_key=lambda f: f["record_no"])[FACT_COLUMNS]

    stable = jobs[jobs["qualifying"]]
    stable_jobs = pd.DataFrame({"citizen_id": stable["citizen_id"], "source": stable["kind"],
                                "record_key": stable["record_key"], "date": stable["since"]})

    people = pd.Index(pd.concat([properties["citizen_id"], rentals["citizen_id"],
                                 jobs["citizen_id"]]).unique())
    person_flags = pd.DataFrame({"citizen_id": people.astype("object")})
    person_flags["has_property"] = join.member(person_flags["citizen_id"], qualifying["citizen_id"])
    person_flags["has_rental"] = join.member(person_flags["citizen_id"], good_rentals["citizen_id"])
    person_flags["stable_employment"] = join.member(person_flags["citizen_id"], stable["citizen_id"])

    listed_status = np.where(properties["kind"].eq("title"),
                             properties["status"].isin(policy.title_status),
                             properties["status"].isin(policy.contract_status))
    listed_use = properties["use"].isin(policy.property_uses).to_numpy()
    late = (properties["record_date"] > cutoff).fillna(False).to_numpy()
    rental_listed = rentals["status"].isin(policy.rental_status)
    rental_late = (rentals["registered_date"] > cutoff).fillna(False)
    covering = ((rentals["start_date"] <= cutoff) & (rentals["end_date"] >= cutoff)).fillna(False)
    insured = jobs[jobs["kind"].eq("social_insurance") & jobs["scheme"].isin(policy.insurance_schemes)
                   & jobs["status"].isin(policy.insurance_status)]
    short = insured[(insured["local_months"].fillna(0) < policy.min_local_months).to_numpy(dtype=bool)]
    businesses = jobs[jobs["kind"].isin(BUSINESS_KINDS) & jobs["status"].isin(policy.business_status)]
    recent = businesses[~(businesses["since"] <= pd.Timestamp(policy.business_established_by)).fillna(False)]

    property_outside = _outside(placed, catchments, policy)
    rental_outside = _outside(placed_rentals, catchments, policy)
    person_reasons = pd.concat([
        _reasons(properties.loc[listed_status & listed_use & late, "citizen_id"], PROPERTY_AFTER_CUTOFF, HOLDER_SCOPE),
        _reasons(properties.loc[listed_status & ~listed_use, "citizen_id"], PROPERTY_NOT_RESIDENTIAL, HOLDER_SCOPE),
        _reasons(properties.loc[~listed_status & listed_use, "citizen_id"], PROPERTY_NOT_CURRENT, HOLDER_SCOPE),
        _reasons(qualifying.loc[qualifying["address_code"].isna(), "citizen_id"], ADDRESS_UNMATCHED, HOLDER_SCOPE),
        _reasons(good_rentals.loc[good_rentals["address_code"].isna(), "citizen_id"], ADDRESS_UNMATCHED,
                 GUARDIAN_SCOPE),
        _reasons(property_outside["citizen_id"], PROPERTY_OUTSIDE_ALL_CATCHMENTS, HOLDER_SCOPE,
                 property_outside["level"].to_numpy()),
        _reasons(rental_outside["citizen_id"], RENTAL_OUTSIDE_ALL_CATCHMENTS, GUARDIAN_SCOPE,
                 rental_outside["level"].to_numpy()),
        _reasons(rentals.loc[rental_listed & rental_late, "citizen_id"], RENTAL_AFTER_CUTOFF, GUARDIAN_SCOPE),
        _reasons(rentals.loc[rental_listed & ~rental_late & ~covering, "citizen_id"],
                 RENTAL_NOT_COVERING_CUTOFF, GUARDIAN_SCOPE),
        _reasons(short["citizen_id"], INSUFFICIENT_INSURANCE_MONTHS, GUARDIAN_SCOPE),
        _reasons(recent["citizen_id"], BUSINESS_TOO_RECENT, GUARDIAN_SCOPE),
    ], ignore_index=True).astype("object").drop_duplicates().reset_index(drop=True)

    return {"placed_property": placed_property.reset_index(drop=True),
            "placed_rental": placed_rental.reset_index(drop=True),
            "stable_jobs": stable_jobs.reset_index(drop=True),
            "person_flags": person_flags, "person_reasons": person_reasons}


# ---------------------------------------------------------------- step 2: children and edges

def school_age_children(citizen: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Hukou residents born in a level window, with status 正常/迁出/死亡 (注销 is no child)."""
    birth = pd.to_datetime(citizen["birth_date"])
    level = pd.Series(None, index=citizen.index, dtype="object")
    for window in policy.levels:
        inside = (birth >= pd.Timestamp(window.birth_from)) & (birth <= pd.Timestamp(window.birth_to))
        level = level.where(~inside.fillna(False), window.level)
    children = citizen[level.notna() & citizen["hukou_status"].isin(join.CHILD_STATUSES)]
    return (children.assign(child_id=children["citizen_id"], level=level[children.index])
            [["child_id", "level", "name", "birth_date", "hukou_status", "household_no",
              "urban_hukou", "hukou_address_code", "settled_date"]]
            .sort_values("child_id", ignore_index=True))


def holder_edges(children: pd.DataFrame, guardianship: pd.DataFrame) -> pd.DataFrame:
    """child_id, level, holder_id, role: the child itself and each guardian (living children)."""
    living = children[children["hukou_status"] != DECEASED]
    own = pd.DataFrame({"child_id": living["child_id"], "level": living["level"],
                        "holder_id": living["child_id"], "role": SELF})
    linked = living[["child_id", "level"]].merge(guardianship[["child_id", "guardian_id"]], on="child_id")
    guardians = pd.DataFrame({"child_id": linked["child_id"], "level": linked["level"],
                              "holder_id": linked["guardian_id"], "role": GUARDIAN})
    return (pd.concat([own, guardians], ignore_index=True).astype("object")
            .sort_values(["child_id", "role", "holder_id"], ignore_index=True))


# ---------------------------------------------------------------- step 3: facts on edges

def edge_facts(edges: pd.DataFrame, facts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Attach each holder's facts to the child they serve (run per bucket of ``holder_id``).

    Rentals and jobs only travel along guardian edges: category B rests on a guardian's rental
    and a guardian's employment (policy.md), never the child's own.
    """
    keyed = edges.rename(columns={"holder_id": "citizen_id"})
    guardians = keyed[keyed["role"] == GUARDIAN]
    properties = keyed.merge(facts["placed_property"], on=["citizen_id", "level"])
    rentals = guardians.merge(facts["placed_rental"], on=["citizen_id", "level"])
    jobs = guardians.merge(facts["stable_jobs"], on="citizen_id")
    flags = keyed.merge(facts["person_flags"], on="citizen_id")
    flags = flags.assign(has_rental=flags["has_rental"] & (flags["role"] == GUARDIAN),
                         stable_employment=flags["stable_employment"] & (flags["role"] == GUARDIAN))
    reasons = keyed.merge(facts["person_reasons"], on="citizen_id", suffixes=("", "_reason"))
    reasons = reasons[((reasons["level_reason"] == ALL_LEVELS) | (reasons["level_reason"] == reasons["level"]))
                      & ((reasons["scope"] == HOLDER_SCOPE) | (reasons["role"] == GUARDIAN))]
    rename = {"citizen_id": "holder_id"}
    return {"edge_guardians": guardians.rename(columns=rename)[["child_id", "level", "holder_id"]],
            "edge_property": properties.rename(columns=rename),
            "edge_rental": rentals.rename(columns=rename),
            "edge_jobs": jobs.rename(columns=rename),
            "edge_flags": flags.rename(columns=rename)[["child_id", "level", "has_property",
                                                        "has_rental", "stable_employment"]],
            "edge_reasons": reasons[["child_id", "level", "reason"]].drop_duplicates()}


# ---------------------------------------------------------------- step 4: decide per child

def _best_holder(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per key, the earliest fact's date and holder (the child's own record wins a tie)."""
    ordered = rows.assign(own=(rows["role"] == SELF).astype(int)).sort_values(
        keys + ["date", "own", "holder_id", "source", "record_key"],
        ascending=[True] * len(keys) + [True, False, True, True, True], kind="stable")
    first = ordered.drop_duplicates(keys)
    basis = first["holder_id"].where(first["role"] == GUARDIAN, None)
    return pd.DataFrame({**{k: first[k].to_numpy() for k in keys},
                         "priority_date": first["date"].to_numpy(), "basis_guardian_id": basis.to_numpy()})


def _hukou_facts(children: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"child_id": children["child_id"], "level": children["level"],
                         "source": "hukou", "record_key": children["household_no"],
                         "date": children["settled_date"]})


def decide(children: pd.DataFrame, facts: dict[str, pd.DataFrame], address_catchment: pd.DataFrame,
           policy: Policy, run_id: str) -> dict[str, pd.DataFrame]:
    """Eligibility rows (best category per school) and ineligibility rows, per child bucket.

    A1/A2: a qualifying property of the child or a guardian in S's catchment (A1 with urban
    hukou; evidence adds the hukou). B: no qualifying property anywhere, a guardian's
    qualifying rental in S's catchment and any guardian's stable employment (evidence: those
    rentals and every stable job). C: urban hukou, hukou address in S's catchment and no
    qualifying property. Deceased children get only CHILD_DECEASED.
    """
    keys = ["child_id", "level", "school_code"]
    catchments = catchments_for(address_catchment, policy)
    living = children[children["hukou_status"] != DECEASED]
    flags = (facts["edge_flags"].groupby(["child_id", "level"])[["has_property", "has_rental", "stable_employment"]]
             .any().reset_index())
    living = living.merge(flags, on=["child_id", "level"], how="left")
    for column in ("has_property", "has_rental", "stable_employment"):
        living[column] = living[column].astype("boolean").fillna(False).astype(bool)
    urban = living.set_index("child_id")["urban_hukou"]

    property_rows = facts["edge_property"]
    a_rows = _best_holder(property_rows, keys)
    a_rows["category"] = np.where(a_rows["child_id"].map(urban).fillna(False).astype(bool),
                                  CATEGORY_A_URBAN, CATEGORY_A_OTHER)
    a_hukou = _hukou_facts(living).merge(a_rows.loc[a_rows["category"] == CATEGORY_A_URBAN, keys],
                                         on=["child_id", "level"])
    a_evidence = _evidence(pd.concat([property_rows[keys + ["source", "record_key", "date"]], a_hukou]), keys)

    open_b = living.loc[~living["has_property"] & living["stable_employment"], ["child_id", "level"]]
    rental_rows = facts["edge_rental"].merge(open_b, on=["child_id", "level"])
    b_rows = _best_holder(rental_rows, keys).assign(category=CATEGORY_RENTAL)
    b_jobs = facts["edge_jobs"][["child_id", "level", "source", "record_key", "date"]].merge(
        b_rows[keys], on=["child_id", "level"])
    b_evidence = _evidence(pd.concat([rental_rows[keys + ["source", "record_key", "date"]], b_jobs]), keys)

    open_c = living[~living["has_property"] & living["urban_hukou"] & living["hukou_address_code"].notna()]
    c_rows = open_c.merge(catchments, left_on=["hukou_address_code", "level"],
                          right_on=["address_code", "level"])
    c_facts = _hukou_facts(c_rows).assign(school_code=c_rows["school_code"].to_numpy())
    c_evidence = _evidence(c_facts, keys)
    c_rows = pd.DataFrame({"child_id": c_rows["child_id"], "level": c_rows["level"],
                           "school_code": c_rows["school_code"], "priority_date": c_rows["settled_date"],
                           "basis_guardian_id": None, "category": CATEGORY_HUKOU})

    rank = {category: i for i, category in enumerate(CATEGORIES)}
    evidence = pd.concat([a_evidence.assign(category=CATEGORY_A_URBAN),
                          a_evidence.assign(category=CATEGORY_A_OTHER),
                          b_evidence.assign(category=CATEGORY_RENTAL),
                          c_evidence.assign(category=CATEGORY_HUKOU)], ignore_index=True)
    rows = pd.concat([a_rows, b_rows, c_rows], ignore_index=True)
    rows = rows.assign(rank=rows["category"].map(rank)).sort_values(keys + ["rank"], kind="stable")
    rows = rows.drop_duplicates(keys).merge(evidence, on=keys + ["category"], how="left")
    eligibility = rows.assign(policy_id=policy.policy_id, run_id=run_id,
                              priority_date=pd.to_datetime(rows["priority_date"]).astype("datetime64[ns]"))
    eligibility = eligibility[ELIGIBILITY_COLUMNS].sort_values(keys, ignore_index=True)
    basis = eligibility["basis_guardian_id"].astype(object)
    eligibility["basis_guardian_id"] = basis.where(basis.notna(), None)

    without = living[~living.set_index(["child_id", "level"]).index.isin(
        eligibility.set_index(["child_id", "level"]).index)]
    reasons = _child_reasons(without, facts, catchments)
    dead = children.loc[children["hukou_status"] == DECEASED, ["child_id", "level"]].assign(reason=CHILD_DECEASED)
    reasons = pd.concat([reasons, dead], ignore_index=True)
    order = {reason: i for i, reason in enumerate(REASONS)}
    reasons = (reasons.assign(order=reasons["reason"].map(order).fillna(len(REASONS)))
               .sort_values(["child_id", "level", "order", "reason"], kind="stable"))
    grouped = _grouped(list(zip(reasons["child_id"].tolist(), reasons["level"].tolist())),
                       reasons["reason"].tolist())
    ineligibility = pd.DataFrame(list(grouped.keys()), columns=["child_id", "level"], dtype="object")
    ineligibility["reasons"] = [json_text(v) for v in grouped.values()]
    ineligibility = ineligibility.assign(policy_id=policy.policy_id, run_id=run_id)
    return {"eligibility": eligibility,
            "ineligibility": ineligibility[INELIGIBILITY_COLUMNS].sort_values(["child_id", "level"],
                                                                              ignore_index=True)}


def _child_reasons(children: pd.DataFrame, facts: dict[str, pd.DataFrame],
                   catchments: pd.DataFrame) -> pd.DataFrame:
    """Every reason that applies to a living child with no school at its level.

    - NO_GUARDIAN_LINK: no guardian (neither guardian fields nor the household rule).
    - NO_QUALIFYING_PROPERTY: neither the child nor a guardian holds a qualifying property.
    - PROPERTY_EXCLUDES_RENTAL_AND_HUKOU: one does (so B and C are closed) but it places the
      child in no catchment.
    - NO_QUALIFYING_RENTAL: no guardian holds a qualifying rental anywhere.
    - NO_STABLE_EMPLOYMENT: no guardian has stable employment.
    - HUKOU_NOT_URBAN: the child's hukou is not urban (status, region or settled date).
    - HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS: urban hukou placed at an address in no catchment
      of the level. ADDRESS_UNMATCHED: urban hukou whose address has no single code.
    - plus every person reason (``person_facts``) of the child's and the guardians' records.
    """
    has_guardian = pd.Series(join.member(children["child_id"], facts["edge_guardians"]["child_id"]),
                             index=children.index)
    covered = catchments.assign(inside=True)[["address_code", "level", "inside"]].drop_duplicates(
        ["address_code", "level"])
    placed = children.merge(covered, left_on=["hukou_address_code", "level"],
                            right_on=["address_code", "level"], how="left")
    inside = placed["inside"].astype("boolean").fillna(False).astype(bool).to_numpy()
    urban = children["urban_hukou"].to_numpy(dtype=bool)
    coded = children["hukou_address_code"].notna().to_numpy()
    checks = [
        (~has_guardian.to_numpy(dtype=bool), NO_GUARDIAN_LINK),
        (~children["has_property"].to_numpy(dtype=bool), NO_QUALIFYING_PROPERTY),
        (children["has_property"].to_numpy(dtype=bool), PROPERTY_EXCLUDES_RENTAL_AND_HUKOU),
        (~children["has_rental"].to_numpy(dtype=bool), NO_QUALIFYING_RENTAL),
        (~children["stable_employment"].to_numpy(dtype=bool), NO_STABLE_EMPLOYMENT),
        (~urban, HUKOU_NOT_URBAN),
        (urban & coded & ~inside, HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS),
        (urban & ~coded, ADDRESS_UNMATCHED),
    ]
    parts = [children.loc[mask, ["child_id", "level"]].assign(reason=code) for mask, code in checks]
    holder = facts["edge_reasons"].merge(children[["child_id", "level"]], on=["child_id", "level"])
    parts.append(holder[["child_id", "level", "reason"]])
    return pd.concat(parts, ignore_index=True).astype("object").drop_duplicates()


# ---------------------------------------------------------------- step 5: adults and prefill

def guardian_eligibility(facts: dict[str, pd.DataFrame], citizen: pd.DataFrame, policy: Policy,
                         run_id: str) -> pd.DataFrame:
    """What each adult's own records would qualify a child of theirs for (person bucket).

    Reading: basis ``property`` — one row per school (of each level) whose catchment holds a
    qualifying property of theirs; priority date the earliest such property. Basis ``rental``
    — only for a person who holds no qualifying property anywhere and has stable employment
    of their own (the other parent is unknown when the child is not linked), one row per
    school of a qualifying rental; priority date its earliest filing; evidence the rentals and
    the jobs. The hukou route (C) depends on the child's own hukou and is not listed. School-
    age children of the policy windows are not adults and get no rows.
    """
    keys = ["guardian_id", "level", "school_code"]
    children = school_age_children(citizen, policy)["child_id"] if not citizen.empty else pd.Series(dtype="object")
    flags = facts["person_flags"].set_index("citizen_id")

    properties = facts["placed_property"].rename(columns={"citizen_id": "guardian_id"})
    properties = properties[~join.member(properties["guardian_id"], children)]
    by_property = properties.sort_values(keys + ["date"], kind="stable").drop_duplicates(keys)
    by_property = by_property[keys + ["date"]].assign(basis="property").merge(_evidence(properties, keys), on=keys)

    open_rental = flags.index[flags["stable_employment"] & ~flags["has_property"]]
    rentals = facts["placed_rental"].rename(columns={"citizen_id": "guardian_id"})
    rentals = rentals[join.member(rentals["guardian_id"], open_rental) & ~join.member(rentals["guardian_id"], children)]
    jobs = facts["stable_jobs"].rename(columns={"citizen_id": "guardian_id"}).merge(
        rentals[keys].drop_duplicates(), on="guardian_id")
    by_rental = rentals.sort_values(keys + ["date"], kind="stable").drop_duplicates(keys)
    by_rental = by_rental[keys + ["date"]].assign(basis="rental").merge(
        _evidence(pd.concat([rentals, jobs], ignore_index=True), keys), on=keys)

    rows = pd.concat([by_property, by_rental], ignore_index=True).rename(columns={"date": "priority_date"})
    rows = rows.assign(policy_id=policy.policy_id, run_id=run_id,
                       priority_date=pd.to_datetime(rows["priority_date"]).astype("datetime64[ns]"))
    return rows[GUARDIAN_ELIGIBILITY_COLUMNS].sort_values(keys, ignore_index=True)


def build_prefill(guardianship: pd.DataFrame, tables: dict[str, pd.DataFrame], children: pd.DataFrame,
                  decided: dict[str, pd.DataFrame], policy: Policy, run_id: str) -> pd.DataFrame:
    """One JSON document per guardian: what the parent's phone shows after typing their ID.

    ``tables`` holds the guardians' own citizen/property/rental/employment rows (guardian
    bucket); ``children`` and ``decided`` the linked children and their outcome.
    """
    edges = guardianship.sort_values(["guardian_id", "child_id"], kind="stable")
    guardian_ids = edges["guardian_id"].drop_duplicates()
    if guardian_ids.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PREFILL_COLUMNS})

    def per_person(frame: pd.DataFrame, columns: list[str], order: list[str]) -> dict:
        rows = frame[join.member(frame["citizen_id"], guardian_ids)].sort_values(["citizen_id"] + order, kind="stable")
        return {k[0]: v for k, v in _grouped([(c,) for c in rows["citizen_id"].tolist()],
                                             _records(rows, columns)).items()}

    citizen = tables["citizen"]
    people = citizen[join.member(citizen["citizen_id"], guardian_ids)]
    hukou_columns = ["household_no", "hukou_status", "hukou_region_code", "hukou_address",
                     "hukou_address_code", "settled_date", "urban_hukou"]
    person = dict(zip(people["citizen_id"].tolist(),
                      _records(people, ["name", "sex", "birth_date", "name_conflict"] + hukou_columns)))
    properties = per_person(tables["property_holding"], [
        "kind", "record_key", "use", "status", "record_date", "share", "address", "address_code",
        "address_status", "qualifying"], ["kind", "record_key"])
    rentals = per_person(tables["rental_holding"], [
        "record_no", "address", "address_code", "address_status", "start_date", "end_date",
        "registered_date", "status", "qualifying"], ["record_no"])
    jobs = per_person(tables["employment"], [
        "kind", "record_key", "org_code", "since", "local_months", "status", "qualifying"],
        ["kind", "record_key"])

    eligibility = decided["eligibility"].sort_values(["child_id", "level", "school_code"], kind="stable")
    schools = _grouped(list(zip(eligibility["child_id"].tolist(), eligibility["level"].tolist())),
                       _records(eligibility, ["school_code", "category", "priority_date", "basis_guardian_id"]))
    reasons = {(c, lv): r for c, lv, r in zip(decided["ineligibility"]["child_id"].tolist(),
                                             decided["ineligibility"]["level"].tolist(),
                                             decided["ineligibility"]["reasons"].tolist())}
    kids = edges.merge(children[["child_id", "level", "name", "birth_date", "hukou_status"]],
                       on="child_id", how="left")
    kid_records = _records(kids, ["child_id", "level", "name", "birth_date", "hukou_status",
                                  "relation", "basis"])
    for record in kid_records:
        key = (record["child_id"], record["level"])
        record["schools"] = schools.get(key, [])
        record["reasons"] = json.loads(reasons[key]) if key in reasons else []
    per_guardian = _grouped([(g,) for g in kids["guardian_id"].tolist()], kid_records)

    documents = []
    for guardian_id in guardian_ids.tolist():
        own = person.get(guardian_id, {})
        documents.append(json_text({
            "guardian_id": guardian_id, "policy_id": policy.policy_id,
            "name": own.get("name"), "sex": own.get("sex"), "birth_date": own.get("birth_date"),
            "name_conflict": own.get("name_conflict"),
            "hukou": ({c: own.get(c) for c in hukou_columns} if own.get("household_no") is not None else None),
            "properties": properties.get(guardian_id, []), "rentals": rentals.get(guardian_id, []),
            "employment": jobs.get(guardian_id, []),
            "children": per_guardian.get((guardian_id,), []),
        }))
    out = pd.DataFrame({"guardian_id": guardian_ids.to_numpy(), "document": documents})
    return out.assign(policy_id=policy.policy_id, run_id=run_id)[PREFILL_COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------- whole frames

def compute_eligibility(tables: dict[str, pd.DataFrame], address_catchment: pd.DataFrame,
                        policy: Policy, run_id: str) -> dict[str, pd.DataFrame]:
    """eligibility, ineligibility, guardian_eligibility, prefill (warehouse.md) in one bucket."""
    facts = person_facts(tables, address_catchment, policy)
    children = school_age_children(tables["citizen"], policy)
    guardianship = tables["guardianship"]
    linked = edge_facts(holder_edges(children, guardianship), facts)
    decided = decide(children, linked, address_catchment, policy, run_id)
    return {**decided,
            "guardian_eligibility": guardian_eligibility(facts, tables["citizen"], policy, run_id),
            "prefill": build_prefill(guardianship, tables, children, decided, policy, run_id)}


# ---------------------------------------------------------------- driver, bucket by bucket

PERSON_TABLES = ("citizen", "property_holding", "rental_holding", "employment")
FACT_TABLES = ("placed_property", "placed_rental", "stable_jobs", "person_flags", "person_reasons")
EDGE_TABLES = ("edge_guardians", "edge_property", "edge_rental", "edge_jobs", "edge_flags", "edge_reasons")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _read_parts(paths: list[Path]) -> pd.DataFrame | None:
    """The parts written for one bucket, as one frame (None when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths if p.exists()]
    if not tables:
        return None
    filled = [t for t in tables if t.num_rows] or tables[:1]  # empty parts may carry guessed types
    return pa.concat_tables(filled, promote_options="permissive").to_pandas()


def _split(frame: pd.DataFrame, bucket_of: np.ndarray, buckets: int, directory: Path, name: str) -> None:
    """Write one Parquet per bucket: ``directory/<bucket>/<name>.parquet``."""
    for bucket in range(buckets):
        _write(frame[bucket_of == bucket], directory / str(bucket) / f"{name}.parquet")


def _split_file(path: Path, column: str, bucket_fn, buckets: int, directory: Path, name: str) -> None:
    """Split a staged Parquet by bucket in Arrow form (compact strings; one column to pandas)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    bucket_of = bucket_fn(table.column(column).to_pandas(), buckets)
    for bucket in range(buckets):
        target = directory / str(bucket) / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(bucket_of == bucket)), target)


def _publish(parts: list[Path], path: Path, keys: list[str]) -> Path:
    """Concatenate a table's bucket parts into one Parquet, rows sorted by key."""
    frame = _read_parts(parts)
    if len(parts) > 1:  # one part is already in key order
        frame = frame.sort_values(keys, kind="stable", ignore_index=True)
    _write(frame, path)
    return path


def run_engine(staged_dir: Path, address_dir: Path, policy: Policy, run_id: str, out_dir: Path,
               buckets: int = 1) -> dict[str, Path]:
    """Join and eligibility from staged Parquet to one Parquet per warehouse table.

    Each step holds one bucket at a time: staged rows are split by the bucket of the person
    they are about (hukou also by household for the household rule); facts are built per
    person bucket; child–guardian edges are re-bucketed by the holder's ID to pick up the
    holder's facts, then by child ID to decide. Intermediate Parquet lives under
    ``out_dir/_work`` and is removed at the end. Returns table name → path.
    """
    staged_dir, address_dir, out_dir = Path(staged_dir), Path(address_dir), Path(out_dir)
    buckets = max(1, int(buckets))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="_work", dir=out_dir))
    try:
        address_match = pd.read_parquet(address_dir / "address_match.parquet")
        address_catchment = catchments_for(pd.read_parquet(address_dir / "address_catchment.parquet"), policy)

        for source in join.SOURCES:
            path = staged_dir / source / "accepted.parquet"
            if path.exists():
                _split_file(path, join.PERSON_COLUMNS[source][0], join.person_bucket, buckets,
                            work / "staged", source)
                if source == "hukou":
                    _split_file(path, "household_no", join.household_bucket, buckets, work / "household", source)

        children_parts, guardianship_parts = [], []
        for bucket in range(buckets):
            part_dir = work / "staged" / str(bucket)
            frames = {s: pd.read_parquet(p) for s in join.SOURCES if (p := part_dir / f"{s}.parquet").exists()}
            tables = join.build_person_tables(frames, address_match, policy)
            facts = person_facts(tables, address_catchment, policy)
            for name, table in {**tables, **facts}.items():
                _write(table, work / "person" / str(bucket) / f"{name}.parquet")
            _write(guardian_eligibility(facts, tables["citizen"], policy, run_id),
                   work / "person" / str(bucket) / "guardian_eligibility.parquet")
            children_parts.append(school_age_children(tables["citizen"], policy))
            hukou = work / "household" / str(bucket) / "hukou.parquet"
            if hukou.exists():
                guardianship_parts.append(join.build_guardianship(pd.read_parquet(hukou), policy))
            del frames, tables, facts
        children = pd.concat(children_parts, ignore_index=True).sort_values("child_id", ignore_index=True)
        guardianship = (pd.concat(guardianship_parts, ignore_index=True) if guardianship_parts
                        else join.build_guardianship(pd.DataFrame(), policy))
        guardianship = guardianship.sort_values(["child_id", "guardian_id"], ignore_index=True)
        _write(guardianship, work / "guardianship.parquet")

        edges = holder_edges(children, guardianship)
        holder_of = join.person_bucket(edges["holder_id"], buckets)
        for bucket in range(buckets):
            person_dir = work / "person" / str(bucket)
            facts = {name: pd.read_parquet(person_dir / f"{name}.parquet") for name in FACT_TABLES}
            for name, table in edge_facts(edges[holder_of == bucket], facts).items():
                _split(table, join.person_bucket(table["child_id"], buckets), buckets,
                       work / "edges" / f"from{bucket}", name)

        child_of = join.person_bucket(children["child_id"], buckets)
        for bucket in range(buckets):
            linked = {name: _read_parts([work / "edges" / f"from{h}" / str(bucket) / f"{name}.parquet"
                                         for h in range(buckets)]) for name in EDGE_TABLES}
            decided = decide(children[child_of == bucket], linked, address_catchment, policy, run_id)
            for name, table in decided.items():
                _write(table, work / "decided" / str(bucket) / f"{name}.parquet")

        decided_all = {name: _read_parts([work / "decided" / str(b) / f"{name}.parquet" for b in range(buckets)])
                       for name in ("eligibility", "ineligibility")}
        guardian_of = join.person_bucket(guardianship["guardian_id"], buckets)
        for bucket in range(buckets):
            person_dir = work / "person" / str(bucket)
            tables = {name: pd.read_parquet(person_dir / f"{name}.parquet") for name in PERSON_TABLES}
            _write(build_prefill(guardianship[guardian_of == bucket], tables, children, decided_all, policy, run_id),
                   person_dir / "prefill.parquet")

        def parts(name: str, where: str = "person") -> list[Path]:
            return [work / where / str(b) / f"{name}.parquet" for b in range(buckets)]

        published = {
            "citizen": _publish(parts("citizen"), out_dir / "citizen.parquet", ["citizen_id"]),
            "guardianship": _publish([work / "guardianship.parquet"], out_dir / "guardianship.parquet",
                                     ["child_id", "guardian_id"]),
            "property_holding": _publish(parts("property_holding"), out_dir / "property_holding.parquet",
                                         ["citizen_id", "kind", "record_key"]),
            "rental_holding": _publish(parts("rental_holding"), out_dir / "rental_holding.parquet",
                                       ["citizen_id", "record_no"]),
            "employment": _publish(parts("employment"), out_dir / "employment.parquet",
                                   ["citizen_id", "kind", "record_key"]),
            "eligibility": _publish(parts("eligibility", "decided"), out_dir / "eligibility.parquet",
                                    ["child_id", "level", "school_code"]),
            "ineligibility": _publish(parts("ineligibility", "decided"), out_dir / "ineligibility.parquet",
                                      ["child_id", "level"]),
            "guardian_eligibility": _publish(parts("guardian_eligibility"), out_dir / "guardian_eligibility.parquet",
                                             ["guardian_id", "level", "school_code"]),
            "prefill": _publish(parts("prefill"), out_dir / "prefill.parquet", ["guardian_id"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return published
