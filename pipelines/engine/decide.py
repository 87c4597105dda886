"""policy.md's decision: categories, priority dates, reasons, guardian eligibility, prefill.

The work is split along who the facts belong to, so each step can run on one hash bucket
(``pipelines.engine.buckets`` drives them; ``compute_eligibility`` chains them on whole frames):

1. ``person_facts`` (person bucket): each resident's qualifying properties and rentals placed
   in catchments, their stable employment, and the reasons their records fall short.
2. ``holder_edges`` (child bucket): each school-age child with itself and its guardians.
3. ``edge_facts`` (bucket of the holder, i.e. edges re-bucketed by guardian ID): the facts of
   step 1 attached to the child they may serve.
4. ``decide`` (child bucket): the best category per school, or the reasons for none.
5. ``guardian_eligibility`` (person bucket) and ``build_prefill`` (guardian bucket).

The rules themselves (which record qualifies, which category is open, which reason is told)
are ``rules``; this module places facts in catchments, follows guardian links and writes the
evidence. Dates are ``datetime64[ns]`` in frames and ISO ``YYYY-MM-DD`` text inside JSON.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.engine import rules
from pipelines.engine.citizens import PROPERTY_COLUMNS, RENTAL_COLUMNS
from pipelines.engine.frames import (
    arrow_text,
    as_text,
    json_text,
    member,
    produced_columns,
    run_starts,
    sort_rows,
    text_concat,
)
from pipelines.engine.records import DECEASED, evidence_source, property_source
from pipelines.engine.rules import (
    ADDRESS_UNMATCHED,
    CATEGORIES,
    CATEGORY_A_URBAN,
    CATEGORY_HUKOU,
    CATEGORY_RENTAL,
    CHILD_DECEASED,
    HOLDER_SCOPE,
    PROPERTY_OUTSIDE_ALL_CATCHMENTS,
    REASONS,
    RENTAL_OUTSIDE_ALL_CATCHMENTS,
)
from pipelines.policy import Policy

ALL_LEVELS = "*"  # a person reason that holds at every level
SELF, GUARDIAN = "self", "guardian"

ELIGIBILITY_COLUMNS = produced_columns("eligibility", with_run_id=True)
INELIGIBILITY_COLUMNS = produced_columns("ineligibility", with_run_id=True)
GUARDIAN_ELIGIBILITY_COLUMNS = produced_columns("guardian_eligibility", with_run_id=True)
PREFILL_COLUMNS = produced_columns("prefill", with_run_id=True)
FACT_COLUMNS = ["citizen_id", "level", "school_code", "date", "source", "record_key"]


# ---------------------------------------------------------------- helpers


def _iso(values: pd.Series) -> pd.Series:
    """ISO dates (object, None for NaT), vectorized."""
    return pd.Series(_iso_text(values).to_numpy(zero_copy_only=False), index=values.index, dtype="object")


def _iso_text(values: pd.Series) -> pa.Array:
    """ISO dates as Arrow text, null for NaT (each distinct day spelled once)."""
    dates = pd.Series(pd.to_datetime(values, errors="coerce"))
    codes, days = pd.factorize(dates)
    spelled = pa.array(np.datetime_as_string(np.asarray(days, dtype="datetime64[D]")), type=pa.large_string())
    return spelled.take(pa.array(codes, mask=codes < 0))


def _plain(values: pd.Series) -> list:
    """Python scalars for JSON: dates as ISO text, missing as None."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _iso(values).tolist()
    if isinstance(values.dtype, pd.StringDtype):
        return arrow_text(values).to_pylist()
    column = values.astype(object)
    column = column.where(column.notna(), None).tolist()
    if values.dtype != object:  # numpy and nullable columns give Python scalars already
        return column
    return [v.item() if isinstance(v, np.generic) else v for v in column]


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts (a tight comprehension over column lists, not ``iterrows``)."""
    lists = [_plain(frame[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*lists)]


def _grouped(keys: list[tuple], items: list) -> dict[tuple, list]:
    """Consecutive items with equal keys as one list (input already sorted by key)."""
    return {
        key: [item for _, item in group] for key, group in itertools.groupby(zip(keys, items), key=lambda pair: pair[0])
    }


def json_strings(values: pd.Series | pa.Array) -> pa.Array:
    """Each value as a JSON string literal (``ensure_ascii=False``) or ``null``, vectorized.

    Byte-identical to ``json.dumps`` for the same text; texts holding control characters
    (never seen in keys) take ``json.dumps`` itself.
    """
    text = values.cast(pa.large_string()) if isinstance(values, pa.Array) else arrow_text(values)
    if pc.any(pc.match_substring_regex(text, r"[\x00-\x1f]")).as_py():
        spelled = [None if v is None else json.dumps(v, ensure_ascii=False) for v in text.to_pylist()]
        literal = pa.array(spelled, type=pa.large_string())
    else:
        escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        literal = text_concat('"', escaped, '"')
    return literal.fill_null("null")


def _evidence(frame: pd.DataFrame, key_columns: list[str]) -> pd.DataFrame:
    """One JSON evidence list per key: every (source, record_key, date) fact in the group.

    The items are spelled with vectorized string operations, exactly as ``json_text`` would
    spell ``{"date": …, "record_key": …, "source": …}``, then joined per group.
    """
    if frame.empty:
        return pd.DataFrame(
            {**{c: pd.Series(dtype="object") for c in key_columns}, "evidence": pd.Series(dtype="object")}
        )
    columns = key_columns + ["source", "record_key", "date"]
    facts = sort_rows(frame[columns], columns, first_of=len(key_columns) + 2).reset_index(drop=True)
    items = text_concat(
        '{"date": ',
        json_strings(_iso_text(facts["date"])),
        ', "record_key": ',
        json_strings(facts["record_key"]),
        ', "source": ',
        json_strings(facts["source"]),
        "}",
    )
    starts = run_starts(facts, key_columns)
    groups = pa.LargeListArray.from_arrays(pa.array(np.append(starts, len(facts)), type=pa.int64()), items)
    joined = text_concat("[", pc.binary_join(groups, pa.scalar(", ", type=pa.large_string())), "]")
    out = facts[key_columns].iloc[starts].reset_index(drop=True)
    out["evidence"] = joined.to_pandas()
    return out


def _beside(rows: pd.DataFrame, evidence: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``rows.merge(evidence, on=keys)`` where both hold the same keys in the same order (one
    row per key): the columns side by side; any other case takes the merge."""
    rows = rows.reset_index(drop=True)
    aligned = len(rows) == len(evidence) and all(
        pc.all(pc.equal(arrow_text(rows[k]), arrow_text(evidence[k]))).as_py() is not False for k in keys
    )
    if not aligned or rows[keys].isna().any().any():
        return rows.merge(evidence, on=keys)
    return rows.assign(**{c: evidence[c].array for c in evidence.columns if c not in keys})


def catchments_for(address_catchment: pd.DataFrame, policy: Policy, codes: pd.Series | None = None) -> pd.DataFrame:
    """address_code, level, school_code of this policy's year and levels, without repeats.

    With ``codes``, only the catchments of those addresses: a bucket looks up its own people's
    addresses, so its work grows with the bucket, not with the city's address table.
    """
    rows = address_catchment
    if codes is not None:
        rows = rows[member(rows["address_code"], codes)]
    if "enrollment_year" in rows.columns:
        rows = rows[rows["enrollment_year"].astype("Int64") == policy.enrollment_year]
    rows = rows[rows["level"].isin([w.level for w in policy.levels])]
    rows = rows[["address_code", "level", "school_code"]]
    return rows.assign(**{c: as_text(rows[c]) for c in rows.columns}).drop_duplicates().reset_index(drop=True)


def _outside(codes: pd.DataFrame, catchments: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """(citizen_id, level) for each placed address that lies in no catchment of the level."""
    parts = []
    for window in policy.levels:
        covered = catchments.loc[catchments["level"] == window.level, "address_code"]
        rows = codes[~member(codes["address_code"], covered)]
        parts.append(pd.DataFrame({"citizen_id": rows["citizen_id"], "level": window.level}))
    return pd.concat(parts, ignore_index=True)


def _reasons(citizen_ids: pd.Series, reason: str, scope: str, level: object = ALL_LEVELS) -> pd.DataFrame:
    return pd.DataFrame({"citizen_id": as_text(citizen_ids).array, "level": level, "reason": reason, "scope": scope})


def _told(records: pd.DataFrame, verdict: rules.Verdict) -> pd.DataFrame:
    """The reasons a rule tells of each person's records, at every level."""
    parts = [_reasons(records.loc[mask, "citizen_id"], reason, verdict.scope) for reason, mask in verdict.told.items()]
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- step 1: per person


def person_facts(
    tables: dict[str, pd.DataFrame], address_catchment: pd.DataFrame, policy: Policy
) -> dict[str, pd.DataFrame]:
    """What each person's own records can do for a child, from the per-citizen tables.

    Returns ``placed_property`` / ``placed_rental`` (a qualifying record per school whose
    catchment holds its address), ``stable_jobs`` (qualifying employment), ``person_flags``
    (has_property anywhere, has_rental anywhere, stable_employment) and ``person_reasons``:
    what ``rules.qualifying_property`` / ``qualifying_rental`` / ``stable_employment`` tell of
    the person's records, and where a qualifying record is placed:

    - ADDRESS_UNMATCHED: a qualifying property or rental whose address has no single code.
    - PROPERTY_OUTSIDE_ALL_CATCHMENTS / RENTAL_OUTSIDE_ALL_CATCHMENTS (per level): a qualifying
      property / rental placed at an address no catchment of the level contains.

    Each reason carries the scope of its rule (``rules.HOLDER_SCOPE`` for property, the
    guardian scope for rental and employment).
    """
    properties = tables["property_holding"]
    rentals = tables["rental_holding"]
    jobs = tables["employment"]

    qualifying = properties[properties["qualifying"]]
    placed = qualifying[qualifying["address_code"].notna()]
    good_rentals = rentals[rentals["qualifying"]]
    placed_rentals = good_rentals[good_rentals["address_code"].notna()]
    catchments = catchments_for(
        address_catchment, policy, codes=pd.concat([placed["address_code"], placed_rentals["address_code"]])
    )
    placed_property = placed.merge(catchments, on="address_code").assign(
        date=lambda f: f["record_date"], source=lambda f: f["kind"].map(property_source())
    )[FACT_COLUMNS]

    placed_rental = placed_rentals.merge(catchments, on="address_code").assign(
        date=lambda f: f["registered_date"], source=evidence_source("rental"), record_key=lambda f: f["record_no"]
    )[FACT_COLUMNS]

    stable = jobs[jobs["qualifying"]]
    stable_jobs = pd.DataFrame(
        {
            "citizen_id": stable["citizen_id"],
            "source": stable["kind"],
            "record_key": stable["record_key"],
            "date": stable["since"],
        }
    )

    people = pd.Index(pd.concat([properties["citizen_id"], rentals["citizen_id"], jobs["citizen_id"]]).unique())
    person_flags = pd.DataFrame({"citizen_id": as_text(pd.Series(people)).array})
    person_flags["has_property"] = member(person_flags["citizen_id"], qualifying["citizen_id"])
    person_flags["has_rental"] = member(person_flags["citizen_id"], good_rentals["citizen_id"])
    person_flags["stable_employment"] = member(person_flags["citizen_id"], stable["citizen_id"])

    property_outside = _outside(placed, catchments, policy)
    rental_outside = _outside(placed_rentals, catchments, policy)
    told = [
        _told(properties, rules.qualifying_property(properties, policy)),
        _told(rentals, rules.qualifying_rental(rentals, policy)),
        _told(jobs, rules.stable_employment(jobs, policy)),
    ]
    person_reasons = (
        pd.concat(
            [
                *told,
                _reasons(
                    qualifying.loc[qualifying["address_code"].isna(), "citizen_id"],
                    ADDRESS_UNMATCHED,
                    rules.QUALIFYING_PROPERTY.scope,
                ),
                _reasons(
                    good_rentals.loc[good_rentals["address_code"].isna(), "citizen_id"],
                    ADDRESS_UNMATCHED,
                    rules.QUALIFYING_RENTAL.scope,
                ),
                _reasons(
                    property_outside["citizen_id"],
                    PROPERTY_OUTSIDE_ALL_CATCHMENTS,
                    rules.QUALIFYING_PROPERTY.scope,
                    property_outside["level"].to_numpy(),
                ),
                _reasons(
                    rental_outside["citizen_id"],
                    RENTAL_OUTSIDE_ALL_CATCHMENTS,
                    rules.QUALIFYING_RENTAL.scope,
                    rental_outside["level"].to_numpy(),
                ),
            ],
            ignore_index=True,
        )
        .astype("object")
        .drop_duplicates()
        .reset_index(drop=True)
    )

    return {
        "placed_property": placed_property.reset_index(drop=True),
        "placed_rental": placed_rental.reset_index(drop=True),
        "stable_jobs": stable_jobs.reset_index(drop=True),
        "person_flags": person_flags,
        "person_reasons": person_reasons,
    }


# ---------------------------------------------------------------- step 2: children and edges


def school_age_children(citizen: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """The residents ``rules.school_level`` makes school-age children, with their level."""
    level = rules.school_level(pd.to_datetime(citizen["birth_date"]), citizen["hukou_status"], policy)
    children = citizen[level.notna()]
    return children.assign(child_id=children["citizen_id"], level=level[children.index])[
        [
            "child_id",
            "level",
            "name",
            "birth_date",
            "hukou_status",
            "household_no",
            "urban_hukou",
            "hukou_address_code",
            "settled_date",
        ]
    ].sort_values("child_id", ignore_index=True)


def holder_edges(children: pd.DataFrame, guardianship: pd.DataFrame) -> pd.DataFrame:
    """child_id, level, holder_id, role: the child itself and each guardian (living children)."""
    living = children[children["hukou_status"] != DECEASED]
    own = pd.DataFrame(
        {"child_id": living["child_id"], "level": living["level"], "holder_id": living["child_id"], "role": SELF}
    )
    linked = living[["child_id", "level"]].merge(guardianship[["child_id", "guardian_id"]], on="child_id")
    guardians = pd.DataFrame(
        {"child_id": linked["child_id"], "level": linked["level"], "holder_id": linked["guardian_id"], "role": GUARDIAN}
    )
    return (
        pd.concat([own, guardians], ignore_index=True)
        .astype("object")
        .sort_values(["child_id", "role", "holder_id"], ignore_index=True)
    )


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
    flags = flags.assign(
        has_rental=flags["has_rental"] & (flags["role"] == GUARDIAN),
        stable_employment=flags["stable_employment"] & (flags["role"] == GUARDIAN),
    )
    reasons = keyed.merge(facts["person_reasons"], on="citizen_id", suffixes=("", "_reason"))
    reasons = reasons[
        ((reasons["level_reason"] == ALL_LEVELS) | (reasons["level_reason"] == reasons["level"]))
        & ((reasons["scope"] == HOLDER_SCOPE) | (reasons["role"] == GUARDIAN))
    ]
    rename = {"citizen_id": "holder_id"}
    return {
        "edge_guardians": guardians.rename(columns=rename)[["child_id", "level", "holder_id"]],
        "edge_property": properties.rename(columns=rename),
        "edge_rental": rentals.rename(columns=rename),
        "edge_jobs": jobs.rename(columns=rename),
        "edge_flags": flags.rename(columns=rename)[
            ["child_id", "level", "has_property", "has_rental", "stable_employment"]
        ],
        "edge_reasons": reasons[["child_id", "level", "reason"]].drop_duplicates(),
    }


# ---------------------------------------------------------------- step 4: decide per child


def _best_holder(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per key, the earliest fact's date and holder (the child's own record wins a tie)."""
    ordered = rows.assign(own=(rows["role"] == SELF).astype(int)).sort_values(
        keys + ["date", "own", "holder_id", "source", "record_key"],
        ascending=[True] * len(keys) + [True, False, True, True, True],
        kind="stable",
    )
    first = ordered.drop_duplicates(keys)
    basis = first["holder_id"].where(first["role"] == GUARDIAN, None)
    return pd.DataFrame(
        {
            **{k: first[k].to_numpy() for k in keys},
            "priority_date": first["date"].to_numpy(),
            "basis_guardian_id": basis.to_numpy(),
        }
    )


def _hukou_facts(children: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "child_id": children["child_id"],
            "level": children["level"],
            "source": evidence_source("hukou"),
            "record_key": children["household_no"],
            "date": children["settled_date"],
        }
    )


def decide(
    children: pd.DataFrame, facts: dict[str, pd.DataFrame], address_catchment: pd.DataFrame, policy: Policy, run_id: str
) -> dict[str, pd.DataFrame]:
    """Eligibility rows (best category per school) and ineligibility rows, per child bucket.

    A1/A2: a qualifying property of the child or a guardian in S's catchment (A1 with urban
    hukou; evidence adds the hukou). B: no qualifying property anywhere, a guardian's
    qualifying rental in S's catchment and any guardian's stable employment (evidence: those
    rentals and every stable job). C: urban hukou, hukou address in S's catchment and no
    qualifying property. Deceased children get only CHILD_DECEASED.
    """
    keys = ["child_id", "level", "school_code"]
    living = children[children["hukou_status"] != DECEASED]
    catchments = catchments_for(address_catchment, policy, codes=living["hukou_address_code"])
    flags = (
        facts["edge_flags"]
        .groupby(["child_id", "level"])[["has_property", "has_rental", "stable_employment"]]
        .any()
        .reset_index()
    )
    living = living.merge(flags, on=["child_id", "level"], how="left")
    for column in ("has_property", "has_rental", "stable_employment"):
        living[column] = living[column].astype("boolean").fillna(False).astype(bool)
    urban = living.set_index("child_id")["urban_hukou"]

    property_rows = facts["edge_property"]
    a_rows = _best_holder(property_rows, keys)
    a_rows["category"] = rules.property_category(a_rows["child_id"].map(urban))
    a_hukou = _hukou_facts(living).merge(
        a_rows.loc[a_rows["category"] == CATEGORY_A_URBAN, keys], on=["child_id", "level"]
    )
    a_evidence = _evidence(pd.concat([property_rows[keys + ["source", "record_key", "date"]], a_hukou]), keys)

    open_b = living.loc[rules.open_to_rental(living), ["child_id", "level"]]
    rental_rows = facts["edge_rental"].merge(open_b, on=["child_id", "level"])
    b_rows = _best_holder(rental_rows, keys).assign(category=CATEGORY_RENTAL)
    b_jobs = facts["edge_jobs"][["child_id", "level", "source", "record_key", "date"]].merge(
        b_rows[keys], on=["child_id", "level"]
    )
    b_evidence = _evidence(pd.concat([rental_rows[keys + ["source", "record_key", "date"]], b_jobs]), keys)

    open_c = living[rules.open_to_hukou(living)]
    c_rows = open_c.merge(catchments, left_on=["hukou_address_code", "level"], right_on=["address_code", "level"])
    c_facts = _hukou_facts(c_rows).assign(school_code=c_rows["school_code"].to_numpy())
    c_evidence = _evidence(c_facts, keys)
    c_rows = pd.DataFrame(
        {
            "child_id": c_rows["child_id"],
            "level": c_rows["level"],
            "school_code": c_rows["school_code"],
            "priority_date": c_rows["settled_date"],
            "basis_guardian_id": None,
            "category": CATEGORY_HUKOU,
        }
    )

    rank = {category: i for i, category in enumerate(CATEGORIES)}
    evidence = pd.concat(
        [
            a_evidence.assign(category=CATEGORY_A_URBAN),
            a_evidence.assign(category=rules.CATEGORY_A_OTHER),
            b_evidence.assign(category=CATEGORY_RENTAL),
            c_evidence.assign(category=CATEGORY_HUKOU),
        ],
        ignore_index=True,
    )
    rows = pd.concat([a_rows, b_rows, c_rows], ignore_index=True)
    rows = rows.assign(rank=rows["category"].map(rank)).sort_values(keys + ["rank"], kind="stable")
    rows = rows.drop_duplicates(keys).merge(evidence, on=keys + ["category"], how="left")
    eligibility = rows.assign(
        policy_id=policy.policy_id,
        run_id=run_id,
        priority_date=pd.to_datetime(rows["priority_date"]).astype("datetime64[ns]"),
    )
    eligibility = eligibility[ELIGIBILITY_COLUMNS].sort_values(keys, ignore_index=True)
    basis = eligibility["basis_guardian_id"].astype(object)
    eligibility["basis_guardian_id"] = basis.where(basis.notna(), None)

    without = living[
        ~living.set_index(["child_id", "level"]).index.isin(eligibility.set_index(["child_id", "level"]).index)
    ]
    reasons = _child_reasons(without, facts, catchments)
    dead = children.loc[children["hukou_status"] == DECEASED, ["child_id", "level"]].assign(reason=CHILD_DECEASED)
    reasons = pd.concat([reasons, dead], ignore_index=True)
    order = {reason: i for i, reason in enumerate(REASONS)}
    reasons = reasons.assign(order=reasons["reason"].map(order).fillna(len(REASONS))).sort_values(
        ["child_id", "level", "order", "reason"], kind="stable"
    )
    grouped = _grouped(list(zip(reasons["child_id"].tolist(), reasons["level"].tolist())), reasons["reason"].tolist())
    ineligibility = pd.DataFrame(list(grouped.keys()), columns=["child_id", "level"], dtype="object")
    ineligibility["reasons"] = pd.Series([json_text(v) for v in grouped.values()], dtype="object")
    ineligibility = ineligibility.assign(policy_id=policy.policy_id, run_id=run_id)
    return {
        "eligibility": eligibility,
        "ineligibility": ineligibility[INELIGIBILITY_COLUMNS].sort_values(["child_id", "level"], ignore_index=True),
    }


def _child_reasons(children: pd.DataFrame, facts: dict[str, pd.DataFrame], catchments: pd.DataFrame) -> pd.DataFrame:
    """Every reason that applies to a living child with no school at its level: the child's own
    (``rules.no_school_reasons``) and every person reason of its holders' records."""
    covered = catchments.assign(inside=True)[["address_code", "level", "inside"]].drop_duplicates(
        ["address_code", "level"]
    )
    placed = children.merge(
        covered, left_on=["hukou_address_code", "level"], right_on=["address_code", "level"], how="left"
    )
    flags = pd.DataFrame(
        {
            "has_guardian": member(children["child_id"], facts["edge_guardians"]["child_id"]),
            "has_property": children["has_property"].to_numpy(dtype=bool),
            "has_rental": children["has_rental"].to_numpy(dtype=bool),
            "stable_employment": children["stable_employment"].to_numpy(dtype=bool),
            "urban_hukou": children["urban_hukou"].to_numpy(dtype=bool),
            "hukou_coded": children["hukou_address_code"].notna().to_numpy(dtype=bool),
            "hukou_inside": placed["inside"].astype("boolean").fillna(False).astype(bool).to_numpy(),
        }
    )
    parts = [
        children.loc[mask, ["child_id", "level"]].assign(reason=code) for mask, code in rules.no_school_reasons(flags)
    ]
    holder = facts["edge_reasons"].merge(children[["child_id", "level"]], on=["child_id", "level"])
    parts.append(holder[["child_id", "level", "reason"]])
    return pd.concat(parts, ignore_index=True).astype("object").drop_duplicates()


# ---------------------------------------------------------------- step 5: adults and prefill


def guardian_eligibility(
    facts: dict[str, pd.DataFrame], citizen: pd.DataFrame, policy: Policy, run_id: str
) -> pd.DataFrame:
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
    properties = properties[~member(properties["guardian_id"], children)]
    by_property = sort_rows(properties[keys + ["date"]], keys + ["date"], first_of=len(keys))
    by_property = _beside(by_property.assign(basis="property"), _evidence(properties, keys), keys)

    open_rental = flags.index[rules.open_to_rental(flags)]
    rentals = facts["placed_rental"].rename(columns={"citizen_id": "guardian_id"})
    rentals = rentals[member(rentals["guardian_id"], open_rental) & ~member(rentals["guardian_id"], children)]
    jobs = (
        facts["stable_jobs"]
        .rename(columns={"citizen_id": "guardian_id"})
        .merge(rentals[keys].drop_duplicates(), on="guardian_id")
    )
    by_rental = sort_rows(rentals[keys + ["date"]], keys + ["date"], first_of=len(keys))
    by_rental = _beside(
        by_rental.assign(basis="rental"), _evidence(pd.concat([rentals, jobs], ignore_index=True), keys), keys
    )

    rows = pd.concat([by_property, by_rental], ignore_index=True).rename(columns={"date": "priority_date"})
    rows = rows.assign(
        policy_id=policy.policy_id,
        run_id=run_id,
        priority_date=pd.to_datetime(rows["priority_date"]).astype("datetime64[ns]"),
    )
    return sort_rows(rows[GUARDIAN_ELIGIBILITY_COLUMNS], keys).reset_index(drop=True)


def build_prefill(
    guardianship: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    children: pd.DataFrame,
    decided: dict[str, pd.DataFrame],
    policy: Policy,
    run_id: str,
) -> pd.DataFrame:
    """One JSON document per guardian: what the parent's phone shows after typing their ID.

    ``tables`` holds the guardians' own citizen/property/rental/employment rows (guardian
    bucket); ``children`` and ``decided`` the linked children and their outcome.
    """
    edges = guardianship.sort_values(["guardian_id", "child_id"], kind="stable")
    guardian_ids = edges["guardian_id"].drop_duplicates()
    if guardian_ids.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PREFILL_COLUMNS})

    def per_person(frame: pd.DataFrame, columns: list[str], order: list[str]) -> dict:
        rows = sort_rows(frame[member(frame["citizen_id"], guardian_ids)], ["citizen_id"] + order)
        return {
            k[0]: v for k, v in _grouped([(c,) for c in rows["citizen_id"].tolist()], _records(rows, columns)).items()
        }

    citizen = tables["citizen"]
    people = citizen[member(citizen["citizen_id"], guardian_ids)]
    hukou_columns = [
        "household_no",
        "hukou_status",
        "hukou_region_code",
        "hukou_address",
        "hukou_address_code",
        "settled_date",
        "urban_hukou",
    ]
    person = dict(
        zip(
            people["citizen_id"].tolist(),
            _records(people, ["name", "sex", "birth_date", "name_conflict"] + hukou_columns),
        )
    )
    properties = per_person(
        tables["property_holding"],
        [c for c in PROPERTY_COLUMNS if c not in ("citizen_id", "record_ref")],
        ["kind", "record_key"],
    )
    rentals = per_person(
        tables["rental_holding"],
        [c for c in RENTAL_COLUMNS if c not in ("citizen_id", "record_ref")],
        ["record_no"],
    )
    jobs = per_person(
        tables["employment"],
        ["kind", "record_key", "org_code", "since", "local_months", "status", "qualifying"],
        ["kind", "record_key"],
    )

    eligibility = decided["eligibility"].sort_values(["child_id", "level", "school_code"], kind="stable")
    schools = _grouped(
        list(zip(eligibility["child_id"].tolist(), eligibility["level"].tolist())),
        _records(eligibility, ["school_code", "category", "priority_date", "basis_guardian_id"]),
    )
    reasons = {
        (c, lv): r
        for c, lv, r in zip(
            decided["ineligibility"]["child_id"].tolist(),
            decided["ineligibility"]["level"].tolist(),
            decided["ineligibility"]["reasons"].tolist(),
        )
    }
    kids = edges.merge(children[["child_id", "level", "name", "birth_date", "hukou_status"]], on="child_id", how="left")
    kid_records = _records(kids, ["child_id", "level", "name", "birth_date", "hukou_status", "relation", "basis"])
    for record in kid_records:
        key = (record["child_id"], record["level"])
        record["schools"] = schools.get(key, [])
        record["reasons"] = json.loads(reasons[key]) if key in reasons else []
    per_guardian = _grouped([(g,) for g in kids["guardian_id"].tolist()], kid_records)

    documents = []
    for guardian_id in guardian_ids.tolist():
        own = person.get(guardian_id, {})
        documents.append(
            json_text(
                {
                    "guardian_id": guardian_id,
                    "policy_id": policy.policy_id,
                    "name": own.get("name"),
                    "sex": own.get("sex"),
                    "birth_date": own.get("birth_date"),
                    "name_conflict": own.get("name_conflict"),
                    "hukou": ({c: own.get(c) for c in hukou_columns} if own.get("household_no") is not None else None),
                    "properties": properties.get(guardian_id, []),
                    "rentals": rentals.get(guardian_id, []),
                    "employment": jobs.get(guardian_id, []),
                    "children": per_guardian.get((guardian_id,), []),
                }
            )
        )
    out = pd.DataFrame({"guardian_id": guardian_ids.to_numpy(), "document": documents})
    return out.assign(policy_id=policy.policy_id, run_id=run_id)[PREFILL_COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------- whole frames


def compute_eligibility(
    tables: dict[str, pd.DataFrame], address_catchment: pd.DataFrame, policy: Policy, run_id: str
) -> dict[str, pd.DataFrame]:
    """eligibility, ineligibility, guardian_eligibility, prefill (warehouse.md) in one bucket."""
    facts = person_facts(tables, address_catchment, policy)
    children = school_age_children(tables["citizen"], policy)
    guardianship = tables["guardianship"]
    linked = edge_facts(holder_edges(children, guardianship), facts)
    decided = decide(children, linked, address_catchment, policy, run_id)
    return {
        **decided,
        "guardian_eligibility": guardian_eligibility(facts, tables["citizen"], policy, run_id),
        "prefill": build_prefill(guardianship, tables, children, decided, policy, run_id),
    }
