"""The education bureau's marts: the whole city at once, from one run's tables.

``address_catchment``, ``school_demand``, ``district_summary``, ``source_quality`` and
``catchment_forecast`` (warehouse.md, "Supervision and planning"), and for analysts the same
with every small figure suppressed (``analyst_<mart>``). Meanings, the "best option" rule, the
forecast method and the suppression rule are written out in docs/marts.md; the functions here
are those definitions.

Pure transforms (frames in, frames out) first; then one file-level wrapper for the run's publish
step, which reads the run's Parquet and the previously published quality rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.addresses.match import REVIEW_STATUSES
from pipelines.engine.frames import member
from pipelines.engine.records import evidence_source, property_source
from pipelines.policy import LevelWindow, Policy
from pipelines.warehouse_schema import (
    ANALYST_MARTS,
    MART_TABLES,
    NO_SCHOOL_REASONS,
    QUARANTINE_REASONS,
    TABLES,
    reason_column,
)

log = logging.getLogger(__name__)

CATEGORIES = ("A1", "A2", "B", "C")  # best first (policy.md)
SUPPRESS_BELOW = 5  # analysts never see a figure under this (warehouse.md, "Who may read what")
QUALITY_RUNS_KEPT = 12  # published runs the quality scorecard remembers
LIVING_CHILD_STATUSES = ("正常", "迁出")  # hukou statuses of a living child (policy readings)
ACTIVE_HUKOU = "正常"


# --- address_catchment -----------------------------------------------------------------------


def address_catchment(placed: pd.DataFrame, enrollment_year: int) -> pd.DataFrame:
    """Where each standard address lies: the run's catchment placement with its year."""
    rows = placed[["address_code", "level", "school_code"]].astype("string").drop_duplicates()
    return rows.assign(enrollment_year=int(enrollment_year)).sort_values(
        ["address_code", "level", "school_code"], ignore_index=True
    )


# --- best options and school_demand ----------------------------------------------------------


def best_options(eligibility: pd.DataFrame) -> pd.DataFrame:
    """Each child's best option per level: one eligibility row.

    Best category first (A1, A2, B, C); within it the earliest priority date, since that is
    where the child ranks highest among applicants of the category; a tie (one property in two
    overlapping catchments) goes to the lower school code, so the choice is stable across runs.
    """
    rank = {category: i for i, category in enumerate(CATEGORIES)}
    rows = eligibility[["child_id", "level", "school_code", "category", "priority_date"]].copy()
    rows["_rank"] = rows["category"].map(rank).astype("float64")
    rows["priority_date"] = pd.to_datetime(rows["priority_date"])
    rows = rows.sort_values(
        ["child_id", "level", "_rank", "priority_date", "school_code"], na_position="last", kind="stable"
    )
    return rows.drop_duplicates(["child_id", "level"]).drop(columns="_rank").reset_index(drop=True)


def _places(schools: pd.DataFrame, *others: pd.DataFrame) -> pd.DataFrame:
    """Every (school_code, level) of the schools list or seen in the run, with district and capacity."""
    listed = schools[["school_code", "level", "district_code", "capacity"]]
    seen = [frame[["school_code", "level"]] for frame in others]
    places = pd.concat([listed[["school_code", "level"]], *seen]).astype("string").drop_duplicates()
    places = places.merge(
        listed.astype({"school_code": "string", "level": "string"}), on=["school_code", "level"], how="left"
    )
    places["capacity"] = pd.to_numeric(places["capacity"], errors="coerce").astype("Int64")
    return places.sort_values(["school_code", "level"], ignore_index=True)


def _ratio(numerator: pd.Series, capacity: pd.Series) -> pd.Series:
    capacity = capacity.astype("Float64")
    return (numerator.astype("Float64") / capacity.where(capacity > 0)).astype("float64")


def school_demand(eligibility: pd.DataFrame, schools: pd.DataFrame) -> pd.DataFrame:
    """One row per school, level and category (all four, zeros included).

    ``children``: distinct children eligible there in that category (a child eligible at two
    schools counts at both). ``best_children``: children for whom this school and category is
    the best option (each child counts once per level). ``demand_ratio`` and
    ``best_demand_ratio``: those counts summed over this and the better categories, over
    capacity. ``a1_exceeds_capacity``: the school's A1 children alone exceed its capacity.
    """
    keys = ["school_code", "level", "category"]
    children = eligibility.groupby(keys, observed=True)["child_id"].nunique().rename("children")
    best = best_options(eligibility).groupby(keys, observed=True)["child_id"].nunique().rename("best_children")
    places = _places(schools, eligibility)
    grid = places.merge(pd.DataFrame({"category": pd.array(CATEGORIES, dtype="string")}), how="cross")
    counted = pd.concat([children, best], axis=1).reset_index().astype({k: "string" for k in keys})
    odd = counted.loc[~counted["category"].isin(CATEGORIES), keys]  # a category policy.md lacks
    grid = pd.concat([grid, odd.merge(places, on=["school_code", "level"], how="left")], ignore_index=True)
    demand = grid.merge(counted, on=keys, how="left")
    for column in ("children", "best_children"):
        demand[column] = demand[column].fillna(0).astype("int64")
    order = {category: i for i, category in enumerate(CATEGORIES)}
    demand["_rank"] = demand["category"].map(order).fillna(len(CATEGORIES)).astype(int)
    demand = demand.sort_values(["school_code", "level", "_rank"], ignore_index=True)
    by_school = demand.groupby(["school_code", "level"], sort=False)
    demand["demand_ratio"] = _ratio(by_school["children"].cumsum(), demand["capacity"])
    demand["best_demand_ratio"] = _ratio(by_school["best_children"].cumsum(), demand["capacity"])
    a1 = (
        demand["children"]
        .where(demand["category"] == "A1", 0)
        .groupby([demand["school_code"], demand["level"]])
        .transform("sum")
    )
    demand["a1_exceeds_capacity"] = (a1 > demand["capacity"]).astype("boolean")
    return demand[[c for c in MART_TABLES["school_demand"].column_names if c != "run_id"]]


# --- district_summary ------------------------------------------------------------------------


def reason_lists(reasons: pd.Series) -> pd.Series:
    """The ``reasons`` JSON text of ineligibility rows as Python lists."""
    return reasons.map(lambda text: json.loads(text) if isinstance(text, str) else [])


def child_districts(
    eligibility: pd.DataFrame, ineligibility: pd.DataFrame, citizen: pd.DataFrame, schools: pd.DataFrame
) -> pd.DataFrame:
    """child_id, level, district_code, best_category, reasons: one row per school-age child.

    A child with a school belongs to the district of its best option's school; a child with no
    school to the district of its hukou region (the district that answers the family).
    """
    best = best_options(eligibility).merge(
        schools[["school_code", "level", "district_code"]].astype("string"), on=["school_code", "level"], how="left"
    )
    with_school = pd.DataFrame(
        {
            "child_id": best["child_id"],
            "level": best["level"],
            "district_code": best["district_code"],
            "best_category": best["category"],
            "reasons": [[] for _ in range(len(best))],
        }
    )
    decided = pd.MultiIndex.from_frame(best[["child_id", "level"]].astype("object"))
    keys = pd.MultiIndex.from_frame(ineligibility[["child_id", "level"]].astype("object"))
    none = ineligibility[~keys.isin(decided)]
    homes = citizen[["citizen_id", "hukou_region_code"]].drop_duplicates("citizen_id")
    none = none.merge(homes, left_on="child_id", right_on="citizen_id", how="left")
    without = pd.DataFrame(
        {
            "child_id": none["child_id"],
            "level": none["level"],
            "district_code": none["hukou_region_code"],
            "best_category": pd.NA,
            "reasons": reason_lists(none["reasons"]).to_numpy(),
        }
    )
    out = pd.concat([with_school, without], ignore_index=True)
    return out.astype({"child_id": "string", "level": "string", "district_code": "string", "best_category": "string"})


def awaiting_review(
    children: pd.DataFrame,
    citizen: pd.DataFrame,
    guardianship: pd.DataFrame,
    property_holding: pd.DataFrame,
    rental_holding: pd.DataFrame,
) -> pd.DataFrame:
    """child_id, level, source, address: each address that could change a child's answer and
    waits in the manual review list (ambiguous or unmatched).

    Those addresses are the qualifying properties of the child and its guardians, its
    guardians' qualifying rentals, and the child's own hukou address when the hukou is urban.
    """
    kids = children[["child_id", "level"]].drop_duplicates()
    guardians = kids.merge(guardianship[["child_id", "guardian_id"]], on="child_id")
    holders = pd.concat(
        [
            kids.assign(holder_id=kids["child_id"]),
            guardians.rename(columns={"guardian_id": "holder_id"})[["child_id", "level", "holder_id"]],
        ],
        ignore_index=True,
    )

    def waiting(frame: pd.DataFrame) -> pd.Series:
        return (frame["address_status"].isin(REVIEW_STATUSES) & frame["address"].notna()).fillna(False)

    props = property_holding[property_holding["qualifying"].fillna(False).astype(bool) & waiting(property_holding)]
    props = pd.DataFrame(
        {"holder_id": props["citizen_id"], "source": props["kind"].map(property_source()), "address": props["address"]}
    )
    rents = rental_holding[rental_holding["qualifying"].fillna(False).astype(bool) & waiting(rental_holding)]
    rents = pd.DataFrame({"holder_id": rents["citizen_id"], "source": "rental", "address": rents["address"]})
    own = citizen[
        citizen["urban_hukou"].fillna(False).astype(bool)
        & citizen["hukou_address_status"].isin(REVIEW_STATUSES)
        & citizen["hukou_address"].notna()
    ]
    hukou = kids.merge(
        pd.DataFrame({"child_id": own["citizen_id"], "source": "hukou", "address": own["hukou_address"]}), on="child_id"
    )
    found = pd.concat(
        [
            holders.merge(props, on="holder_id"),
            guardians.rename(columns={"guardian_id": "holder_id"}).merge(rents, on="holder_id"),
            hukou,
        ],
        ignore_index=True,
    )
    columns = ["child_id", "level", "source", "address"]
    return found[columns].astype("string").drop_duplicates().reset_index(drop=True)


def _count(frame: pd.DataFrame, keys: list[str], name: str) -> pd.Series:
    return frame.groupby(keys, dropna=False, observed=True).size().rename(name)


def district_summary(
    eligibility: pd.DataFrame,
    ineligibility: pd.DataFrame,
    citizen: pd.DataFrame,
    guardianship: pd.DataFrame,
    property_holding: pd.DataFrame,
    rental_holding: pd.DataFrame,
    schools: pd.DataFrame,
) -> pd.DataFrame:
    """Per district and level (district as ``child_districts`` places a child).

    ``school_age_children`` = ``with_school`` + ``no_school`` (deceased children included, as
    ``no_school_child_deceased``); ``best_*`` split ``with_school`` by best category; each
    ``no_school_<reason>`` counts the children that reason applies to (a child may have several);
    ``decided_from_data`` + ``awaiting_address_review`` = ``school_age_children``, where a child
    awaits review when an address of ``awaiting_review`` concerns it; ``address_review_backlog``:
    distinct (source, address text) pairs its children wait on.
    """
    keys = ["district_code", "level"]
    kids = child_districts(eligibility, ineligibility, citizen, schools)
    waiting = awaiting_review(kids, citizen, guardianship, property_holding, rental_holding)
    pending = pd.MultiIndex.from_frame(waiting[["child_id", "level"]].astype("object"))
    kids["awaiting"] = pd.MultiIndex.from_frame(kids[["child_id", "level"]].astype("object")).isin(pending)
    figures = [
        _count(kids, keys, "school_age_children"),
        _count(kids[kids["best_category"].notna()], keys, "with_school"),
    ]
    figures += [_count(kids[kids["best_category"] == c], keys, f"best_{c.lower()}") for c in CATEGORIES]
    figures.append(_count(kids[kids["best_category"].isna()], keys, "no_school"))
    reasons = kids[["district_code", "level", "child_id", "reasons"]].explode("reasons").dropna(subset=["reasons"])
    known = reasons["reasons"].isin(NO_SCHOOL_REASONS)
    figures += [
        _count(reasons[reasons["reasons"] == code], keys, reason_column("no_school", code))
        for code in NO_SCHOOL_REASONS
    ]
    figures.append(reasons[~known].groupby(keys, dropna=False)["child_id"].nunique().rename("no_school_other_reason"))
    figures += [
        _count(kids[~kids["awaiting"]], keys, "decided_from_data"),
        _count(kids[kids["awaiting"]], keys, "awaiting_address_review"),
    ]
    texts = waiting.merge(kids[["child_id", "level", "district_code"]], on=["child_id", "level"])
    figures.append(
        texts.drop_duplicates([*keys, "source", "address"])
        .groupby(keys, dropna=False)
        .size()
        .rename("address_review_backlog")
    )
    summary = pd.concat(figures, axis=1).fillna(0).astype("int64").reset_index()
    summary["decided_from_data_share"] = summary["decided_from_data"] / summary["school_age_children"].where(
        summary["school_age_children"] > 0
    )
    summary = summary.astype({"district_code": "string", "level": "string"})
    columns = [c for c in MART_TABLES["district_summary"].column_names if c != "run_id"]
    return summary[columns].sort_values(keys, na_position="last", ignore_index=True)


# --- source_quality --------------------------------------------------------------------------

QUALITY_COLUMNS = [c for c in MART_TABLES["source_quality"].column_names if c != "run_id"]


def source_quality(
    source_snapshot: pd.DataFrame,
    quarantine: pd.DataFrame,
    *,
    run_id: str,
    as_of,
    history: pd.DataFrame | None = None,
    keep_runs: int = QUALITY_RUNS_KEPT,
) -> pd.DataFrame:
    """Each department's scorecard for this run, after the scorecards of earlier published runs.

    Published tables hold one run, so the history travels inside the table: the previous
    publish's rows (``history``) are carried forward, a rerun of the same run replaces its own
    rows, and only the latest ``keep_runs`` runs (by as-of date) stay. Each quarantined record
    has one reason code, so the ``quarantined_*`` columns add up to ``rows_quarantined``.
    """
    as_of = pd.Timestamp(as_of)
    snap = source_snapshot.copy()
    delivery = pd.to_datetime(snap["delivery"], errors="coerce")
    rows = pd.DataFrame(
        {
            "source": snap["source"].astype("string"),
            "measured_run_id": run_id,
            "as_of": as_of,
            "delivery": delivery,
            "delivery_age_days": (as_of - delivery).dt.days.astype("Int64"),
            **{c: snap[c].astype("int64") for c in ("rows_in", "rows_accepted", "rows_duplicate", "rows_quarantined")},
        }
    )
    reason = quarantine["reason_code"].where(quarantine["reason_code"].isin(QUARANTINE_REASONS), "OTHER_REASON")
    by_reason = pd.crosstab(quarantine["source"], reason)
    for code in (*QUARANTINE_REASONS, "OTHER_REASON"):
        column = reason_column("quarantined", code)
        rows[column] = rows["source"].map(by_reason[code] if code in by_reason else {}).fillna(0).astype("int64")
    rows["accepted_share"] = rows["rows_accepted"] / rows["rows_in"].where(rows["rows_in"] > 0)
    if history is not None and len(history):
        earlier = history[QUALITY_COLUMNS].copy()
        earlier = earlier[earlier["measured_run_id"] != run_id]
        for column in ("as_of", "delivery"):
            earlier[column] = pd.to_datetime(earlier[column])
        rows = pd.concat([earlier.astype(rows.dtypes.to_dict()), rows], ignore_index=True)
    runs = (
        rows[["as_of", "measured_run_id"]]
        .drop_duplicates()
        .sort_values(["as_of", "measured_run_id"])
        .tail(keep_runs)["measured_run_id"]
    )
    rows = rows[rows["measured_run_id"].isin(runs)]
    return rows[QUALITY_COLUMNS].sort_values(["as_of", "measured_run_id", "source"], ignore_index=True)


# --- catchment_forecast ----------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastMethod:
    """The forecast's parameters; ``describe`` is what each row records as ``method``."""

    horizons: int = 5  # entry years after the enrollment year
    min_cohort: int = 20  # children a cohort needs in an area before its own ratio is trusted
    name: str = "residence-cohort-ratio/1"

    def describe(self) -> str:
        return (
            f"{self.name}: children of the entry cohort living in the catchment now (property > "
            f"rental > hukou address) x adjacent-cohort ratios relative to the city's "
            f"(catchment; district below {self.min_cohort} children; else none); docs/marts.md"
        )


def entry_cohorts(policy: Policy, horizons: int) -> pd.DataFrame:
    """level, horizon, entry_year, born_from, born_to: the birth window entering each year."""
    rows = []
    for window in policy.levels:
        for k in range(horizons + 1):
            shift = pd.DateOffset(years=k)
            rows.append(
                {
                    "level": window.level,
                    "horizon": k,
                    "entry_year": policy.enrollment_year + k,
                    "born_from": pd.Timestamp(window.birth_from) + shift,
                    "born_to": pd.Timestamp(window.birth_to) + shift,
                }
            )
    return pd.DataFrame(rows)


def forecast_policy(policy: Policy, horizons: int) -> Policy:
    """The policy with each level's window repeated for every forecast cohort, so the join's
    guardian rule (``citizens.build_guardianship``) links the younger children too."""
    cohorts = entry_cohorts(policy, horizons)
    windows = tuple(LevelWindow(r.level, r.born_from.date(), r.born_to.date()) for r in cohorts.itertuples())
    return dataclasses.replace(policy, levels=windows)


def cohort_children(citizen: pd.DataFrame, cohorts: pd.DataFrame) -> pd.DataFrame:
    """child_id, level, horizon, hukou_active, hukou_address_code: living children per cohort."""
    living = citizen[citizen["hukou_status"].isin(LIVING_CHILD_STATUSES)]
    birth = pd.to_datetime(living["birth_date"])
    parts = []
    for cohort in cohorts.itertuples():
        inside = living[((birth >= cohort.born_from) & (birth <= cohort.born_to)).fillna(False).to_numpy()]
        parts.append(
            pd.DataFrame(
                {
                    "child_id": inside["citizen_id"].to_numpy(),
                    "level": cohort.level,
                    "horizon": cohort.horizon,
                    "hukou_active": (inside["hukou_status"] == ACTIVE_HUKOU).to_numpy(),
                    "hukou_address_code": inside["hukou_address_code"].to_numpy(),
                }
            )
        )
    columns = ["child_id", "level", "horizon", "hukou_active", "hukou_address_code"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def residence_places(
    children: pd.DataFrame,
    guardianship: pd.DataFrame,
    property_holding: pd.DataFrame,
    rental_holding: pd.DataFrame,
    address_catchment: pd.DataFrame,
) -> pd.DataFrame:
    """child_id, level, horizon, school_code, weight: where each child lives, as catchments.

    The strongest evidence that places the child in some catchment of its level wins: a
    qualifying property of the child or a guardian, else a guardian's qualifying rental, else
    the child's own active hukou address (the order of categories A, B, C). Several catchments at
    that strength (two properties, overlapping catchments) share the child equally.

    Each (child, level, horizon) is numbered once, so the choice of the strongest evidence
    groups integers rather than IDs (a city's cohorts are a million such rows).
    """
    keys = ["child_id", "level", "horizon"]
    kids = children.drop_duplicates(keys, ignore_index=True)
    slots = pd.DataFrame({"slot": np.arange(len(kids)), "holder_id": kids["child_id"], "level": kids["level"]})
    links = guardianship[["child_id", "guardian_id"]].drop_duplicates()
    guardians = slots.merge(links, left_on="holder_id", right_on="child_id")[["slot", "level", "guardian_id"]]
    guardians = guardians.rename(columns={"guardian_id": "holder_id"})
    holders = pd.concat([slots, guardians], ignore_index=True)

    def codes(frame: pd.DataFrame) -> pd.DataFrame:
        """The holders' qualifying addresses: a city's holdings cut to the cohorts' families first."""
        good = frame["qualifying"].fillna(False).astype(bool).to_numpy() & frame["address_code"].notna().to_numpy()
        good &= member(frame["citizen_id"], holders["holder_id"])
        return pd.DataFrame(
            {"holder_id": frame["citizen_id"][good], "address_code": frame["address_code"][good]}
        ).drop_duplicates()

    on_hukou = (kids["hukou_active"].astype(bool) & kids["hukou_address_code"].notna()).to_numpy()
    columns = ["slot", "level", "address_code", "strength"]
    evidence = pd.concat(
        [
            holders.merge(codes(property_holding), on="holder_id").assign(strength=0)[columns],
            guardians.merge(codes(rental_holding), on="holder_id").assign(strength=1)[columns],
            pd.DataFrame(
                {
                    "slot": np.flatnonzero(on_hukou),
                    "level": kids["level"].to_numpy()[on_hukou],
                    "address_code": kids["hukou_address_code"].to_numpy()[on_hukou],
                    "strength": 2,
                }
            ),
        ],
        ignore_index=True,
    )
    catchments = address_catchment.loc[
        member(address_catchment["address_code"], evidence["address_code"]), ["address_code", "level", "school_code"]
    ].drop_duplicates()
    placed = evidence.merge(catchments, on=["address_code", "level"])
    placed = placed[placed["strength"] == placed.groupby("slot")["strength"].transform("min")]
    placed = placed[["slot", "school_code"]].drop_duplicates()
    weight = 1.0 / placed.groupby("slot")["school_code"].transform("size")
    rows = kids.take(placed["slot"].to_numpy())
    return pd.DataFrame(
        {
            "child_id": rows["child_id"].to_numpy(),
            "level": rows["level"].to_numpy(),
            "horizon": rows["horizon"].to_numpy(),
            "school_code": placed["school_code"].to_numpy(),
            "weight": weight.to_numpy(),
        }
    )


_BASES = ("catchment", "district", "city")  # finest first


def catchment_forecast(
    citizen: pd.DataFrame,
    guardianship: pd.DataFrame,
    property_holding: pd.DataFrame,
    rental_holding: pd.DataFrame,
    address_catchment: pd.DataFrame,
    schools: pd.DataFrame,
    policy: Policy,
    method: ForecastMethod = ForecastMethod(),
) -> pd.DataFrame:
    """Expected entrants per catchment, level and entry year (enrollment year .. + horizons).

    ``children_now``: children of the cohort entering that year who live in the catchment now
    (``residence_places``). ``migration_factor``: how the cohort is expected to grow or shrink
    there until it enters, from the city's own age profile: for each year of age still ahead,
    the ratio of the one-year-older cohort to this one in the area, divided by the same ratio
    for the whole city (which carries the birth trend), multiplied over the years. The area is
    the catchment when both cohorts have at least ``method.min_cohort`` children there, else
    its district, else no adjustment (``migration_basis`` records the coarsest used).
    ``expected_entrants`` = ``children_now`` x ``migration_factor``; ``utilisation`` divides it
    by this year's capacity.

    ``guardianship`` must link the younger cohorts' guardians too (``forecast_policy``).
    """
    cohorts = entry_cohorts(policy, method.horizons)
    kids = cohort_children(citizen, cohorts)
    placed = residence_places(kids, guardianship, property_holding, rental_holding, address_catchment)
    places = _places(schools, placed)
    horizons = np.arange(method.horizons + 1)
    keys = pd.MultiIndex.from_frame(places[["school_code", "level"]].astype("object"))
    counts = placed.groupby(["school_code", "level", "horizon"])["weight"].sum().unstack("horizon")
    counts.index = pd.MultiIndex.from_frame(counts.index.to_frame().astype("object"))
    local = counts.reindex(index=keys, columns=horizons).fillna(0.0).to_numpy(dtype=float)
    district_key = places["district_code"].astype("object").where(places["district_code"].notna(), None)
    frame = pd.DataFrame(local, columns=horizons)
    frame["_district"], frame["_level"] = district_key.to_numpy(), places["level"].astype("object").to_numpy()
    district = (
        frame.groupby(["_district", "_level"], dropna=False)[list(horizons)].transform("sum").to_numpy(dtype=float)
    )
    city_counts = kids.groupby(["level", "horizon"]).size().unstack("horizon").reindex(columns=horizons).fillna(0)
    city = city_counts.reindex(places["level"].astype("object")).fillna(0).to_numpy(dtype=float)

    def step_ratio(counts: np.ndarray) -> np.ndarray:
        older, younger = counts[:, :-1], counts[:, 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(younger > 0, older / younger, np.nan)

    city_step = step_ratio(city)
    relative = {}
    for name, area in (("catchment", local), ("district", district)):
        with np.errstate(divide="ignore", invalid="ignore"):
            relative[name] = step_ratio(area) / city_step
    trusted = {
        name: (area[:, :-1] >= method.min_cohort) & (area[:, 1:] >= method.min_cohort) & np.isfinite(relative[name])
        for name, area in (("catchment", local), ("district", district))
    }
    step = np.where(
        trusted["catchment"], relative["catchment"], np.where(trusted["district"], relative["district"], 1.0)
    )
    basis = np.where(trusted["catchment"], 0, np.where(trusted["district"], 1, 2))
    factor = np.concatenate([np.ones((len(places), 1)), np.cumprod(step, axis=1)], axis=1)
    coarsest = np.concatenate([np.zeros((len(places), 1), dtype=int), np.maximum.accumulate(basis, axis=1)], axis=1)

    out = places.loc[places.index.repeat(len(horizons))].reset_index(drop=True)
    out = out.merge(
        cohorts, left_on=["level", np.tile(horizons, len(places))], right_on=["level", "horizon"], how="left"
    )
    out["children_now"] = local.reshape(-1)
    out["migration_factor"] = factor.reshape(-1)
    labels = np.array(_BASES, dtype=object)[coarsest.reshape(-1)]
    out["migration_basis"] = np.where(out["horizon"] == 0, "none", labels)
    out["expected_entrants"] = out["children_now"] * out["migration_factor"]
    out["utilisation"] = _ratio(out["expected_entrants"], out["capacity"])
    out["method"] = method.describe()
    out = out.dropna(subset=["entry_year"]).astype({"entry_year": "int64", "horizon": "int64"})
    columns = [c for c in MART_TABLES["catchment_forecast"].column_names if c != "run_id"]
    return out[columns].sort_values(["school_code", "level", "entry_year"], ignore_index=True)


# --- analysts: suppression -------------------------------------------------------------------


@dataclass(frozen=True)
class Suppression:
    """Which figures of a mart are counts, which sums of them appear in the same row, and which
    derived figures would give a hidden count away."""

    counts: tuple[str, ...]
    sums: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (total, parts) with total = sum(parts)
    derived: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (figure, counts it reveals)
    together: tuple[str, ...] = ()  # figures hidden all at once when one of them is


SUPPRESSION: dict[str, Suppression] = {
    "school_demand": Suppression(counts=("children", "best_children")),
    "district_summary": Suppression(
        counts=tuple(c.name for c in MART_TABLES["district_summary"].columns if c.type == "int"),
        sums=(
            ("school_age_children", ("with_school", "no_school")),
            ("with_school", tuple(f"best_{c.lower()}" for c in CATEGORIES)),
            ("school_age_children", ("decided_from_data", "awaiting_address_review")),
        ),
        derived=(("decided_from_data_share", ("decided_from_data", "awaiting_address_review")),),
    ),
    "source_quality": Suppression(
        counts=(
            "rows_in",
            "rows_accepted",
            "rows_duplicate",
            "rows_quarantined",
            *(reason_column("quarantined", c) for c in (*QUARANTINE_REASONS, "OTHER_REASON")),
        ),
        sums=(
            ("rows_in", ("rows_accepted", "rows_duplicate", "rows_quarantined")),
            ("rows_quarantined", tuple(reason_column("quarantined", c) for c in (*QUARANTINE_REASONS, "OTHER_REASON"))),
        ),
        derived=(("accepted_share", ("rows_accepted", "rows_in")),),
    ),
    "catchment_forecast": Suppression(
        counts=("children_now", "expected_entrants"),
        together=("children_now", "expected_entrants", "migration_factor", "utilisation"),
    ),
}


def _hide_one_more(values: pd.DataFrame, hidden: pd.DataFrame, total: str, parts: tuple[str, ...]) -> bool:
    """Where a shown total's hidden parts add up to less than the threshold (one hidden part
    always does), hide its smallest shown part too: else the total minus the shown parts would
    give the hidden ones away. True if anything changed."""
    part_hidden = hidden[list(parts)].to_numpy()
    part_values = values[list(parts)].fillna(0).to_numpy(dtype=float)
    hidden_sum = np.where(part_hidden, part_values, 0).sum(axis=1)
    shown_values = np.where(part_hidden, np.inf, part_values)
    exposed = (
        part_hidden.any(axis=1)
        & (hidden_sum < SUPPRESS_BELOW)
        & ~hidden[total].to_numpy()
        & np.isfinite(shown_values.min(axis=1))
    )
    rows = np.flatnonzero(exposed)
    for row, column in zip(rows, shown_values.argmin(axis=1)[rows]):
        hidden.iat[row, hidden.columns.get_loc(parts[column])] = True
    return len(rows) > 0


def suppress(mart: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``analyst_<mart>``: every count under ``SUPPRESS_BELOW`` (zero included) becomes NULL.

    Then, within each row, a shown total whose hidden parts add up to less than the threshold
    hides its next-smallest part (repeatedly); a derived figure (share, ratio) is hidden with any
    count it would reveal; ``suppressed`` flags rows with a hidden figure. Sums across rows or
    tables are not protected (docs/marts.md).
    """
    rule = SUPPRESSION[mart]
    frame = frame.reset_index(drop=True)
    values = frame[list(rule.counts)].astype("float64")
    hidden = values.isna() | (values < SUPPRESS_BELOW)
    while any(_hide_one_more(values, hidden, total, parts) for total, parts in rule.sums):
        pass
    out = frame.copy()
    for column in rule.counts:
        out[column] = out[column].where(~hidden[column])
    for figure, reveals in rule.derived:
        out[figure] = out[figure].where(~hidden[list(reveals)].any(axis=1))
    if rule.together:
        any_hidden = hidden[[c for c in rule.together if c in hidden]].any(axis=1)
        for column in rule.together:
            out[column] = out[column].where(~any_hidden)
    if mart == "school_demand":
        out = _suppress_demand_ratios(frame, out, hidden)
    out["suppressed"] = hidden.any(axis=1).to_numpy() | (out.isna() & frame.notna()).any(axis=1).to_numpy()
    for column in rule.counts:
        if TABLES[mart].columns[TABLES[mart].column_names.index(column)].type == "int":
            out[column] = out[column].astype("Int64")
    return out


def _suppress_demand_ratios(frame: pd.DataFrame, out: pd.DataFrame, hidden: pd.DataFrame) -> pd.DataFrame:
    """A demand ratio sums this and the better categories: it is hidden when that sum is under
    the threshold or any count in it is hidden (the difference of two ratios would show it)."""
    by_school = [frame["school_code"], frame["level"]]
    for ratio, count in (("demand_ratio", "children"), ("best_demand_ratio", "best_children")):
        running = frame[count].groupby(by_school).cumsum()
        any_hidden = hidden[count].astype(int).groupby(by_school).cummax().astype(bool)
        out[ratio] = out[ratio].where(~any_hidden & (running >= SUPPRESS_BELOW))
    return out


# --- all marts of one run --------------------------------------------------------------------


def build_mart_frames(
    frames: Mapping[str, pd.DataFrame],
    *,
    schools: pd.DataFrame,
    placed: pd.DataFrame,
    policy: Policy,
    run_id: str,
    as_of,
    forecast_guardianship: pd.DataFrame | None = None,
    quality_history: pd.DataFrame | None = None,
    method: ForecastMethod = ForecastMethod(),
) -> dict[str, pd.DataFrame]:
    """Every mart and its analyst copy, from the run's tables (``frames``), the schools list
    (``access.school_table`` form) and the catchment placement of standard addresses."""
    catchments = address_catchment(placed, policy.enrollment_year)
    guardians = frames["guardianship"] if forecast_guardianship is None else forecast_guardianship
    marts = {
        "address_catchment": catchments,
        "school_demand": school_demand(frames["eligibility"], schools),
        "district_summary": district_summary(
            frames["eligibility"],
            frames["ineligibility"],
            frames["citizen"],
            frames["guardianship"],
            frames["property_holding"],
            frames["rental_holding"],
            schools,
        ),
        "source_quality": source_quality(
            frames["source_snapshot"], frames["quarantine"], run_id=run_id, as_of=as_of, history=quality_history
        ),
        "catchment_forecast": catchment_forecast(
            frames["citizen"],
            guardians,
            frames["property_holding"],
            frames["rental_holding"],
            catchments,
            schools,
            policy,
            method,
        ),
    }
    for name in ANALYST_MARTS:
        marts[name] = suppress(name.removeprefix("analyst_"), marts[name.removeprefix("analyst_")])
    return marts


# --- files -----------------------------------------------------------------------------------

_NEEDED = {
    "eligibility": ["child_id", "level", "school_code", "category", "priority_date"],
    "ineligibility": ["child_id", "level", "reasons"],
    "citizen": [
        "citizen_id",
        "birth_date",
        "hukou_status",
        "hukou_region_code",
        "hukou_address",
        "hukou_address_code",
        "hukou_address_status",
        "urban_hukou",
    ],
    "guardianship": ["child_id", "guardian_id"],
    "property_holding": ["citizen_id", "kind", "address", "address_code", "address_status", "qualifying"],
    "rental_holding": ["citizen_id", "address", "address_code", "address_status", "qualifying"],
    "source_snapshot": ["source", "delivery", "rows_in", "rows_accepted", "rows_quarantined", "rows_duplicate"],
    "quarantine": ["source", "reason_code"],
}


def forecast_guardianship(staged_hukou: Path, policy: Policy, horizons: int) -> pd.DataFrame:
    """Guardians of every forecast cohort, by the join's own rule, from the staged hukou rows.

    Only the cohorts' rows and the heads and spouses of their households are read (two filtered
    Parquet reads), so a city of millions costs a few hundred thousand rows here.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines.engine import citizens, records

    wide = forecast_policy(policy, horizons)
    since = pd.Timestamp(min(w.birth_from for w in wide.levels))
    until = pd.Timestamp(max(w.birth_to for w in wide.levels))
    born = [("birth_date", ">=", since), ("birth_date", "<=", until)]
    households = (
        pc.unique(pq.read_table(staged_hukou, columns=["household_no"], filters=born).column("household_no"))
        .drop_null()
        .to_pylist()
    )
    heads = [
        ("household_no", "in", households),
        ("relation_to_head", "in", [records.HEAD_OF_HOUSEHOLD, records.SPOUSE_OF_HEAD]),
    ]
    rows = pq.read_table(
        staged_hukou, columns=citizens.HUKOU_FOR_GUARDIANSHIP, filters=[born, heads] if households else [born]
    ).to_pandas()
    return citizens.build_guardianship(rows, wide)


def previous_quality(url: str) -> pd.DataFrame | None:
    """The scorecard rows the warehouse publishes now (None before the first run).

    A live table of another shape (a release that changed its columns) starts the history anew
    rather than failing the run.
    """
    from pipelines.warehouse import ensure_warehouse, live_columns, read_current_run, read_table

    ensure_warehouse(url)
    if read_current_run(url) is None:
        return None
    live = live_columns(url, "source_quality")
    columns = MART_TABLES["source_quality"].column_names
    if live != columns:
        log.warning("marts: the published source_quality has other columns; its history starts anew")
        return None
    return pd.DataFrame(read_table(url, "source_quality"), columns=columns)


def write_mart_tables(
    tables: Mapping[str, Path],
    *,
    schools_csv: Path,
    placed: pd.DataFrame,
    policy: Policy,
    run_id: str,
    as_of,
    out_dir: Path,
    staged_hukou: Path | None = None,
    quality_history: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Read the run's Parquet tables, build every mart, write each as Parquet; name -> path."""
    from pipelines.access import school_table
    from pipelines.errors import UsageError

    missing = [name for name in _NEEDED if name not in tables]
    if missing:
        raise UsageError(f"the marts need the run's {missing[0]} table")
    try:
        schools = school_table(pd.read_csv(schools_csv, dtype=str, keep_default_na=False))
    except FileNotFoundError:
        raise UsageError(f"no schools list at {schools_csv}") from None
    method = ForecastMethod()
    cohorts = entry_cohorts(policy, method.horizons)
    born = [("birth_date", ">=", cohorts["born_from"].min()), ("birth_date", "<=", cohorts["born_to"].max())]
    frames = {
        name: pd.read_parquet(tables[name], columns=columns, filters=born if name == "citizen" else None)
        for name, columns in _NEEDED.items()
    }  # of the citizens, only the children matter here
    guardians = None
    if staged_hukou is not None and Path(staged_hukou).exists():
        guardians = forecast_guardianship(Path(staged_hukou), policy, method.horizons)
    else:
        log.warning("marts: no staged hukou rows; the forecast links guardians of this year's cohort only")
    marts = build_mart_frames(
        frames,
        schools=schools,
        placed=placed,
        policy=policy,
        run_id=run_id,
        as_of=as_of,
        forecast_guardianship=guardians,
        quality_history=quality_history,
        method=method,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in marts.items():
        written[name] = out_dir / f"{name}.parquet"
        frame.to_parquet(written[name], index=False)
    log.info("marts: %s", ", ".join(f"{name} {len(frame)} rows" for name, frame in marts.items()))
    return written


def build_mart_tables(tables: Mapping[str, Path], settings, run_id: str) -> dict[str, Path]:
    """The marts of one ``zerocert run`` (its publish step), under ``layout.marts_dir``."""
    from pipelines.policy import load_policy

    policy = load_policy(settings.policy_path)
    layout = settings.layout
    placed = pd.read_parquet(layout.address_catchment)
    return write_mart_tables(
        tables,
        schools_csv=settings.reference / "schools.csv",
        placed=placed,
        policy=policy,
        run_id=run_id,
        as_of=settings.as_of,
        out_dir=layout.marts_dir,
        staged_hukou=layout.accepted_rows(evidence_source("hukou")),
        quality_history=previous_quality(settings.warehouse_url),
    )
