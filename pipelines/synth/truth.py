"""Ground truth: policy.md (as read in docs/contracts.md "Policy readings") applied to the clean
facts that survived the damage, with addresses placed where the truth says they resolve.

Written independently of the engine on purpose: the truth is what the engine is judged against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.policy import Policy

CATEGORY_RANK = {"A1": 0, "A2": 0, "B": 1, "C": 2}
ROW = ["child_id", "level", "school_code", "category", "priority_date"]


def compute_truth(
    policy: Policy,
    hukou: pd.DataFrame,
    properties: pd.DataFrame,
    rentals: pd.DataFrame,
    insurance: pd.DataFrame,
    firms: pd.DataFrame,
    membership: pd.DataFrame,
) -> dict:
    """Eligibility (with each row's priority date) and ineligibility per policy, plus the reasons
    (for the summary only).

    hukou: citizen_id, birth_date, status, relation, household_no, region, settled_date, guardian1_id,
    guardian2_id, address_code ('' if unresolvable). properties: holder_id, kind (title/contract), use,
    status, record_date, address_code. rentals: tenant_id, status, registered_date, start_date,
    end_date, address_code. insurance: citizen_id, scheme, insurance_status, local_months.
    firms: person_id, reg_status, established_date. membership: address_code, level, school_code.
    """
    cutoff = pd.Timestamp(policy.cutoff_date)
    h = hukou.copy()
    h["birth_date"] = pd.to_datetime(h["birth_date"])
    frames = []
    for w in policy.levels:
        inside = (h["birth_date"] >= pd.Timestamp(w.birth_from)) & (h["birth_date"] <= pd.Timestamp(w.birth_to))
        frames.append(h.loc[inside & h["status"].isin(["正常", "迁出", "死亡"])].assign(level=w.level))
    kids = pd.concat(frames, ignore_index=True)
    deceased = kids.loc[kids["status"] == "死亡", ["citizen_id", "level"]]
    kids = kids.loc[kids["status"] != "死亡"].reset_index(drop=True)
    kids["urban"] = (
        (kids["status"] == "正常")
        & kids["region"].isin(policy.urban_region_codes)
        & (pd.to_datetime(kids["settled_date"]) <= cutoff)
    )

    # guardians: the guardian fields, else (子/女) the household's 户主 and 配偶 with status 正常
    named = pd.concat(
        [
            kids[["citizen_id", "guardian1_id"]].rename(columns={"guardian1_id": "guardian_id"}),
            kids[["citizen_id", "guardian2_id"]].rename(columns={"guardian2_id": "guardian_id"}),
        ]
    )
    named = named[named["guardian_id"] != ""]
    has_named = _in(kids["citizen_id"], named["citizen_id"])
    by_household = kids.loc[~has_named & kids["relation"].isin(["子", "女"]), ["citizen_id", "household_no"]]
    heads = h.loc[h["relation"].isin(["户主", "配偶"]) & (h["status"] == "正常"), ["household_no", "citizen_id"]]
    by_household = by_household.merge(heads.rename(columns={"citizen_id": "guardian_id"}), on="household_no")
    guardians = pd.concat([named, by_household[["citizen_id", "guardian_id"]]]).drop_duplicates()
    guardians = guardians.rename(columns={"citizen_id": "child_id"})
    child_ids = kids[["citizen_id"]].drop_duplicates().rename(columns={"citizen_id": "child_id"})
    holders = pd.concat(
        [
            child_ids.assign(holder_id=child_ids["child_id"], is_guardian=False),
            guardians.rename(columns={"guardian_id": "holder_id"}).assign(is_guardian=True),
        ]
    )

    uses = properties["use"].isin(policy.property_uses)
    status_ok = np.where(
        properties["kind"] == "title",
        properties["status"].isin(policy.title_status),
        properties["status"].isin(policy.contract_status),
    )
    dated = pd.to_datetime(properties["record_date"]) <= cutoff
    prop = properties.assign(qualifying=uses & status_ok & dated)
    qp = prop[prop["qualifying"]]
    held = holders.merge(qp, on="holder_id")
    held_children = set(held["child_id"])

    kid_level = kids[["citizen_id", "level", "urban", "address_code", "settled_date"]].rename(
        columns={"citizen_id": "child_id"}
    )
    a = held.merge(kid_level[["child_id", "level", "urban"]], on="child_id").merge(
        membership, on=["address_code", "level"]
    )
    a = a.assign(category=np.where(a["urban"], "A1", "A2"), priority_date=a["record_date"])[ROW]

    rent_ok = (
        rentals["status"].isin(policy.rental_status)
        & (pd.to_datetime(rentals["registered_date"]) <= cutoff)
        & (pd.to_datetime(rentals["start_date"]) <= cutoff)
        & (pd.to_datetime(rentals["end_date"]) >= cutoff)
    )
    qr = rentals[rent_ok].rename(columns={"tenant_id": "holder_id"})
    stable_si = insurance.loc[
        insurance["scheme"].isin(policy.insurance_schemes)
        & insurance["insurance_status"].isin(policy.insurance_status)
        & (insurance["local_months"] >= policy.min_local_months),
        "citizen_id",
    ]
    firm_by = pd.Timestamp(policy.business_established_by)
    stable_firm = firms.loc[
        firms["reg_status"].isin(policy.business_status) & (pd.to_datetime(firms["established_date"]) <= firm_by),
        "person_id",
    ]
    stable = set(stable_si) | set(stable_firm)
    g = holders[holders["is_guardian"]]
    employed_children = set(g.loc[_in(g["holder_id"], stable), "child_id"])
    b = (
        g.merge(qr, on="holder_id")
        .merge(kid_level[["child_id", "level"]], on="child_id")
        .merge(membership, on=["address_code", "level"])
    )
    b = b[~_in(b["child_id"], held_children) & _in(b["child_id"], employed_children)]
    b = b.assign(category="B", priority_date=b["registered_date"])[ROW]

    c = kid_level[kid_level["urban"] & ~_in(kid_level["child_id"], held_children)].merge(
        membership, on=["address_code", "level"]
    )
    c = c.assign(category="C", priority_date=c["settled_date"])[ROW]

    # per school the best category; its priority date the earliest fact of that category there
    rows = pd.concat([a, b, c], ignore_index=True)
    rows["priority_date"] = pd.to_datetime(rows["priority_date"])
    rows = rows.groupby(ROW[:4], as_index=False, sort=False)["priority_date"].min()
    rows["rank"] = rows["category"].map(CATEGORY_RANK)
    rows = rows.sort_values(["child_id", "level", "school_code", "rank"]).drop_duplicates(
        ["child_id", "level", "school_code"]
    )
    eligibility = rows[ROW].reset_index(drop=True)
    eligibility["priority_date"] = eligibility["priority_date"].dt.strftime("%Y-%m-%d")

    levels = kid_level[["child_id", "level"]].drop_duplicates()
    with_row = eligibility[["child_id", "level"]].drop_duplicates()
    none = levels.merge(with_row, how="left", indicator=True)
    none = none.loc[none["_merge"] == "left_only", ["child_id", "level"]]
    ineligible = pd.concat([none, deceased.rename(columns={"citizen_id": "child_id"})], ignore_index=True)
    ineligible = ineligible.drop_duplicates().sort_values(["child_id", "level"], ignore_index=True)

    reasons = _reasons(
        policy, none, kid_level, guardians, holders, prop, qp, rentals, rent_ok, insurance, stable, membership, cutoff
    )
    reasons["CHILD_DECEASED"] = len(deceased)
    return {"eligibility": eligibility, "ineligible": ineligible, "reasons": reasons}


def _reasons(
    policy, none, kid_level, guardians, holders, prop, qp, rentals, rent_ok, insurance, stable, membership, cutoff
) -> dict[str, int]:
    """How many ineligible children each reason of policy.md applies to (a coverage check)."""
    ids = set(none["child_id"])
    hold = holders[_in(holders["child_id"], ids)]
    g = hold[hold["is_guardian"]]
    their_props = hold.merge(prop, on="holder_id")
    their_qp = hold.merge(qp, on="holder_id")
    placed = membership[["address_code", "level"]].drop_duplicates().assign(placed=True)
    rentals_g = g.merge(rentals.assign(ok=rent_ok).rename(columns={"tenant_id": "holder_id"}), on="holder_id")
    covering = (pd.to_datetime(rentals_g["start_date"]) <= cutoff) & (pd.to_datetime(rentals_g["end_date"]) >= cutoff)
    short = insurance[
        insurance["scheme"].isin(policy.insurance_schemes)
        & insurance["insurance_status"].isin(policy.insurance_status)
        & (insurance["local_months"] < policy.min_local_months)
    ]
    k = kid_level[_in(kid_level["child_id"], ids)]
    out = {
        "NO_GUARDIAN_LINK": len(ids - set(guardians["child_id"])),
        "NO_QUALIFYING_PROPERTY": len(ids - set(their_qp["child_id"])),
        "PROPERTY_AFTER_CUTOFF": their_props.loc[
            pd.to_datetime(their_props["record_date"]) > cutoff, "child_id"
        ].nunique(),
        "PROPERTY_NOT_RESIDENTIAL": their_props.loc[
            ~their_props["use"].isin(policy.property_uses), "child_id"
        ].nunique(),
        "PROPERTY_OUTSIDE_ALL_CATCHMENTS": _outside(their_qp.merge(none, on="child_id"), placed),
        "ADDRESS_UNMATCHED": their_qp.loc[their_qp["address_code"] == "", "child_id"].nunique(),
        "NO_QUALIFYING_RENTAL": len(ids - set(rentals_g.loc[rentals_g["ok"], "child_id"])),
        "RENTAL_NOT_COVERING_CUTOFF": rentals_g.loc[~covering, "child_id"].nunique(),
        "NO_STABLE_EMPLOYMENT": len(ids - set(g.loc[_in(g["holder_id"], stable), "child_id"])),
        "INSUFFICIENT_INSURANCE_MONTHS": g.loc[_in(g["holder_id"], short["citizen_id"]), "child_id"].nunique(),
        "HUKOU_NOT_URBAN": int((~k["urban"]).sum()),
        "HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS": _outside(k[k["urban"]], placed),
    }
    return out


def _outside(rows: pd.DataFrame, placed: pd.DataFrame) -> int:
    """Children with a resolved address that lies in no catchment of the child's level."""
    rows = rows[rows["address_code"] != ""].merge(placed, on=["address_code", "level"], how="left")
    return int(rows.loc[rows["placed"].isna(), "child_id"].nunique())


def _in(values: pd.Series, members) -> np.ndarray:
    """``values.isin(members)`` through a hash table (pandas' Arrow-string isin loops in Python)."""
    pool = (
        np.fromiter(members, dtype=object, count=len(members))
        if isinstance(members, set)
        else np.asarray(members, dtype=object)
    )
    return pd.Series(values.to_numpy(dtype=object), dtype=object).isin(pool).to_numpy()
