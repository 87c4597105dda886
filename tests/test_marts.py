"""The supervision marts: pure transforms on small frames, then whole runs on a synthetic city
checked against its ground truth, on SQLite and PostgreSQL, and what an analyst may see."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from warehouse_reader import connect, read

from pipelines.engine import rules as engine
from pipelines.marts import (
    CATEGORIES,
    SUPPRESS_BELOW,
    SUPPRESSION,
    best_options,
    catchment_forecast,
    district_summary,
    forecast_guardianship,
    school_demand,
    source_quality,
    suppress,
)
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
from pipelines.staging import quarantine
from pipelines.warehouse_schema import (
    ANALYST_MARTS,
    MART_TABLES,
    NO_SCHOOL_REASONS,
    QUARANTINE_REASONS,
    TABLES,
    reason_column,
)

POLICY = policy_from_dict(yaml.safe_load(DEMO_POLICY_YAML))
SCHOOLS = pd.DataFrame(
    {
        "school_code": ["S1", "S2", "S3", "S4"],
        "level": "primary",
        "district_code": ["D1", "D1", "D2", "D2"],
        "capacity": pd.array([40, 40, 0, 30], "Int64"),
    }
)


def elig(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["child_id", "level", "school_code", "category", "priority_date"]).assign(
        priority_date=lambda f: pd.to_datetime(f["priority_date"])
    )


# --- best option and school_demand ------------------------------------------------------------


def test_best_option_is_best_category_then_earliest_priority_date_then_school_code():
    rows = elig(
        [
            ("K1", "primary", "S1", "C", "2010-01-01"),
            ("K1", "primary", "S2", "A1", "2020-01-01"),
            ("K2", "primary", "S1", "A1", "2021-01-01"),
            ("K2", "primary", "S2", "A1", "2019-05-01"),
            ("K3", "primary", "S2", "B", "2020-01-01"),
            ("K3", "primary", "S1", "B", "2020-01-01"),
            ("K4", "primary", "S3", "A2", None),
            ("K4", "primary", "S4", "A2", "2022-01-01"),
        ]
    )
    best = best_options(rows).set_index("child_id")["school_code"].to_dict()
    assert best == {"K1": "S2", "K2": "S2", "K3": "S1", "K4": "S4"}


def test_school_demand_counts_distinct_children_and_best_options_per_category():
    rows = elig(
        [
            ("K1", "primary", "S1", "A1", "2019-01-01"),
            ("K1", "primary", "S2", "C", "2019-01-01"),
            ("K2", "primary", "S1", "A1", "2020-01-01"),
            ("K2", "primary", "S2", "A1", "2018-01-01"),
            ("K3", "primary", "S2", "B", "2020-01-01"),
        ]
    )
    demand = school_demand(rows, SCHOOLS).set_index(["school_code", "category"])
    assert len(demand) == 4 * len(CATEGORIES)  # every school of the list, every category, zeros too
    assert demand.loc[("S1", "A1"), "children"] == 2 and demand.loc[("S1", "A1"), "best_children"] == 1
    assert demand.loc[("S2", "A1"), "children"] == 1 and demand.loc[("S2", "A1"), "best_children"] == 1
    assert demand.loc[("S2", "C"), "children"] == 1 and demand.loc[("S2", "C"), "best_children"] == 0
    assert demand["best_children"].sum() == 3  # each child once
    # this and better categories over capacity: S2 has A1 1, B 1, C 1 of 40 seats
    assert demand.loc[("S2", "A1"), "demand_ratio"] == pytest.approx(1 / 40)
    assert demand.loc[("S2", "B"), "demand_ratio"] == pytest.approx(2 / 40)
    assert demand.loc[("S2", "C"), "demand_ratio"] == pytest.approx(3 / 40)
    assert demand.loc[("S2", "C"), "best_demand_ratio"] == pytest.approx(2 / 40)
    assert pd.isna(demand.loc[("S3", "A1"), "demand_ratio"])  # no seats planned: no ratio
    assert not demand["a1_exceeds_capacity"].fillna(False).any()


def test_a1_children_beyond_capacity_are_flagged_on_every_category_row():
    rows = elig([(f"K{i}", "primary", "S4", "A1", "2019-01-01") for i in range(31)])
    demand = school_demand(rows, SCHOOLS)
    s4 = demand[demand["school_code"] == "S4"]
    assert s4["a1_exceeds_capacity"].all() and not demand[demand["school_code"] == "S1"]["a1_exceeds_capacity"].any()


# --- district_summary -------------------------------------------------------------------------


def district_frames():
    eligibility = elig(
        [
            ("K1", "primary", "S1", "A1", "2019-01-01"),
            ("K1", "primary", "S3", "C", "2015-01-01"),
            ("K2", "primary", "S1", "A1", "2020-01-01"),
            ("K2", "primary", "S3", "A1", "2018-01-01"),
            ("K3", "primary", "S3", "B", "2020-01-01"),
        ]
    )
    ineligibility = pd.DataFrame(
        {
            "child_id": ["K4", "K5"],
            "level": "primary",
            "reasons": ['["NO_GUARDIAN_LINK", "HUKOU_NOT_URBAN"]', '["CHILD_DECEASED"]'],
        }
    )
    citizen = pd.DataFrame(
        {
            "citizen_id": ["K1", "K2", "K3", "K4", "K5", "G3"],
            "hukou_region_code": ["D1", "D1", "D2", "D1", "D2", "D2"],
            "hukou_address": ["h1", "h2", "h3", "h4", "h5", "g"],
            "hukou_address_status": ["ambiguous", "exact", "exact", "unmatched", "exact", "exact"],
            "urban_hukou": [True, True, True, False, True, True],
        }
    )
    guardianship = pd.DataFrame({"child_id": ["K3"], "guardian_id": ["G3"]})
    property_holding = pd.DataFrame(
        {
            "citizen_id": ["G3", "G3"],
            "kind": ["title", "contract"],
            "address": ["p1", "p2"],
            "address_status": ["unmatched", "unmatched"],
            "qualifying": [True, False],
        }
    )
    rental_holding = pd.DataFrame(
        {"citizen_id": ["G3"], "address": ["r1"], "address_status": ["ambiguous"], "qualifying": [True]}
    )
    return eligibility, ineligibility, citizen, guardianship, property_holding, rental_holding


def test_district_summary_partitions_children_by_best_option_and_hukou_district():
    summary = district_summary(*district_frames(), SCHOOLS).set_index("district_code")
    d1, d2 = summary.loc["D1"], summary.loc["D2"]
    # K1 best A1 at S1 (D1); K2 best A1 at S3 (earlier date, D2); K3 B at S3; K4 no school, hukou D1
    assert (d1.school_age_children, d1.with_school, d1.best_a1, d1.no_school) == (2, 1, 1, 1)
    assert (d2.school_age_children, d2.with_school, d2.best_a1, d2.best_b, d2.no_school) == (3, 2, 1, 1, 1)
    assert d1.no_school_no_guardian_link == 1 and d1.no_school_hukou_not_urban == 1
    assert d2.no_school_child_deceased == 1 and d2.no_school_no_guardian_link == 0
    # K1's urban hukou address is ambiguous; K4's unmatched address is not urban, so it decides
    # nothing; K3 waits on its guardian's qualifying title and rental (the contract does not qualify)
    assert (d1.awaiting_address_review, d1.decided_from_data, d1.address_review_backlog) == (1, 1, 1)
    assert (d2.awaiting_address_review, d2.decided_from_data, d2.address_review_backlog) == (1, 2, 2)
    assert d1.decided_from_data_share == pytest.approx(0.5)
    for row in summary.itertuples():
        assert row.school_age_children == row.with_school + row.no_school
        assert row.with_school == row.best_a1 + row.best_a2 + row.best_b + row.best_c
        assert row.school_age_children == row.decided_from_data + row.awaiting_address_review


def test_a_reason_code_without_a_column_is_counted_as_other():
    eligibility, ineligibility, *rest = district_frames()
    ineligibility = ineligibility.assign(reasons=['["SOMETHING_NEW", "HUKOU_NOT_URBAN"]', '["CHILD_DECEASED"]'])
    summary = district_summary(eligibility, ineligibility, *rest, SCHOOLS).set_index("district_code")
    assert summary.loc["D1", "no_school_other_reason"] == 1 and summary.loc["D2", "no_school_other_reason"] == 0


def test_every_reason_code_of_the_engine_and_of_staging_has_its_column():
    assert set(engine.REASONS) <= set(NO_SCHOOL_REASONS)
    assert set(quarantine.REASON_ORDER) <= set(QUARANTINE_REASONS)
    summary, quality = MART_TABLES["district_summary"], MART_TABLES["source_quality"]
    assert {reason_column("no_school", c) for c in engine.REASONS} <= set(summary.column_names)
    assert {reason_column("quarantined", c) for c in quarantine.REASON_ORDER} <= set(quality.column_names)


# --- source_quality ---------------------------------------------------------------------------


def snapshot(rows_in: int, quarantined: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["hukou", "rental"],
            "delivery": ["2027-08-14", "2027-08-01"],
            "rows_in": [rows_in, 50],
            "rows_accepted": [rows_in - quarantined - 1, 50],
            "rows_quarantined": [quarantined, 0],
            "rows_duplicate": [1, 0],
        }
    )


def test_source_quality_scores_each_source_and_keeps_the_history_of_published_runs():
    quarantine = pd.DataFrame({"source": ["hukou"] * 3, "reason_code": ["INVALID_DATE", "INVALID_DATE", "LATER_CODE"]})
    first = source_quality(snapshot(100, 3), quarantine, run_id="r1", as_of=dt.date(2027, 8, 15))
    hukou = first.set_index("source").loc["hukou"]
    assert (hukou.rows_in, hukou.rows_accepted, hukou.rows_quarantined, hukou.rows_duplicate) == (100, 96, 3, 1)
    assert (hukou.quarantined_invalid_date, hukou.quarantined_other_reason) == (2, 1)
    reasons = [c for c in first.columns if c.startswith("quarantined_")]
    assert (first[reasons].sum(axis=1) == first["rows_quarantined"]).all()
    assert first.set_index("source")["delivery_age_days"].to_dict() == {"hukou": 1, "rental": 14}
    assert hukou.accepted_share == pytest.approx(0.96)

    second = source_quality(
        snapshot(120, 0),
        quarantine.iloc[:0],
        run_id="r2",
        as_of=dt.date(2027, 8, 16),
        history=first.assign(run_id="r1"),
    )
    assert second.groupby("measured_run_id").size().to_dict() == {"r1": 2, "r2": 2}
    rerun = source_quality(
        snapshot(120, 0), quarantine.iloc[:0], run_id="r2", as_of=dt.date(2027, 8, 16), history=second
    )
    pd.testing.assert_frame_equal(rerun, second)  # a rerun replaces its own rows
    kept = source_quality(
        snapshot(130, 0), quarantine.iloc[:0], run_id="r3", as_of=dt.date(2027, 8, 17), history=second, keep_runs=2
    )
    assert sorted(kept["measured_run_id"].unique()) == ["r2", "r3"]


# --- catchment_forecast -----------------------------------------------------------------------


def cohort_city(counts: dict[str, list[int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Children per primary forecast cohort (horizon 0..5) living, by hukou address, in a catchment."""
    rows, n = [], 0
    for school, per_horizon in counts.items():
        for horizon, count in enumerate(per_horizon):
            for _ in range(count):
                n += 1
                rows.append(
                    {
                        "citizen_id": f"K{n}",
                        "birth_date": pd.Timestamp(2021 + horizon, 1, 15),
                        "hukou_status": "正常",
                        "hukou_address_code": f"A-{school}",
                    }
                )
    catchments = pd.DataFrame(
        {"address_code": [f"A-{s}" for s in counts], "level": "primary", "school_code": list(counts)}
    )
    return pd.DataFrame(rows), catchments


NO_HOLDINGS = pd.DataFrame(
    {
        "citizen_id": pd.Series(dtype=object),
        "address_code": pd.Series(dtype=object),
        "qualifying": pd.Series(dtype=bool),
    }
)
NO_GUARDIANS = pd.DataFrame({"child_id": pd.Series(dtype=object), "guardian_id": pd.Series(dtype=object)})


def forecast(citizen, catchments, guardianship=NO_GUARDIANS, properties=NO_HOLDINGS, rentals=NO_HOLDINGS):
    out = catchment_forecast(citizen, guardianship, properties, rentals, catchments, SCHOOLS, POLICY)
    return out[out["level"] == "primary"].set_index(["school_code", "entry_year"])


def test_a_birth_decline_shared_by_the_whole_city_is_forecast_as_fewer_entrants():
    falling = [40, 36, 32, 28, 24, 20]
    citizen, catchments = cohort_city({"S1": falling, "S2": falling})
    out = forecast(citizen, catchments)
    s1 = out.loc["S1"]
    assert s1.index.tolist() == list(range(2027, 2033))
    assert s1["children_now"].tolist() == falling
    assert s1["migration_factor"].tolist() == pytest.approx([1.0] * 6)
    assert s1["expected_entrants"].tolist() == pytest.approx(falling)
    assert s1["migration_basis"].tolist() == ["none"] + ["catchment"] * 5
    assert s1.loc[2030, "utilisation"] == pytest.approx(28 / 40)
    assert s1.loc[2027, "born_from"] == pd.Timestamp("2020-09-01")
    assert s1.loc[2032, "born_to"] == pd.Timestamp("2026-08-31")


def test_an_area_whose_older_cohorts_outnumber_the_citys_gains_entrants_by_that_ratio():
    # S1's six-year-olds outnumber its five-year-olds by 5:4 while the city's cohorts are level:
    # families move in there before school age; S2 loses them
    citizen, catchments = cohort_city({"S1": [50, 40, 40, 40, 40, 40], "S2": [30, 40, 40, 40, 40, 40]})
    out = forecast(citizen, catchments)
    assert out.loc["S1", "expected_entrants"].tolist() == pytest.approx([50] * 6)
    assert out.loc["S2", "expected_entrants"].tolist() == pytest.approx([30] * 6)
    assert out.loc[("S1", 2029), "migration_factor"] == pytest.approx(1.25)


def test_small_catchments_borrow_their_districts_ratios_and_tiny_districts_none():
    # S3, S4 (district D2) hold under 20 children per cohort each; D2 together holds 24+
    citizen, catchments = cohort_city(
        {"S1": [40] * 6, "S2": [40] * 6, "S3": [15, 12, 12, 12, 12, 12], "S4": [15, 12, 12, 12, 12, 12]}
    )
    out = forecast(citizen, catchments)
    city_step = (40 + 40 + 15 + 15) / (40 + 40 + 12 + 12)
    assert out.loc[("S3", 2028), "migration_basis"] == "district"
    assert out.loc[("S3", 2028), "migration_factor"] == pytest.approx((30 / 24) / city_step)
    assert out.loc[("S1", 2028), "migration_factor"] == pytest.approx(1 / city_step)
    citizen, catchments = cohort_city({"S1": [40] * 6, "S2": [40] * 6, "S3": [5] * 6})
    assert forecast(citizen, catchments).loc[("S3", 2029), "migration_basis"] == "city"
    assert forecast(citizen, catchments).loc[("S3", 2029), "migration_factor"] == pytest.approx(1.0)


def test_a_guardians_property_places_a_child_before_its_hukou_address_and_overlaps_share_it():
    citizen, catchments = cohort_city({"S1": [1], "S2": [0], "S3": [0]})
    catchments = pd.concat(
        [catchments, pd.DataFrame({"address_code": ["P", "P"], "level": "primary", "school_code": ["S2", "S3"]})]
    )
    guardians = pd.DataFrame({"child_id": ["K1"], "guardian_id": ["G1"]})
    properties = pd.DataFrame({"citizen_id": ["G1", "G1"], "address_code": ["P", "A-S1"], "qualifying": [True, False]})
    out = forecast(citizen, catchments, guardians, properties)
    now = out.xs(2027, level="entry_year")["children_now"]
    assert now.to_dict() == {"S1": 0.0, "S2": 0.5, "S3": 0.5, "S4": 0.0}


def test_younger_cohorts_get_their_guardians_by_the_joins_rule(tmp_path):
    hukou = pd.DataFrame(
        {
            "citizen_id": ["K1", "K2", "F2", "M2", "X"],
            "birth_date": pd.to_datetime(["2023-03-01", "2025-01-01", "1990-01-01", "1991-01-01", "2010-01-01"]),
            "household_no": ["H1", "H2", "H2", "H2", "H3"],
            "relation_to_head": ["子", "女", "户主", "配偶", "子"],
            "status": "正常",
            "guardian1_id": ["G1", None, None, None, "G9"],
            "guardian1_relation": ["父亲", None, None, None, "父亲"],
            "guardian2_id": None,
            "guardian2_relation": None,
            "updated_at": pd.Timestamp("2027-01-01"),
            "record_ref": ["h:2", "h:3", "h:4", "h:5", "h:6"],
        }
    )
    path = tmp_path / "hukou.parquet"
    hukou.to_parquet(path)
    links = forecast_guardianship(path, POLICY, horizons=5)
    assert set(map(tuple, links[["child_id", "guardian_id"]].to_numpy())) == {("K1", "G1"), ("K2", "F2"), ("K2", "M2")}


# --- suppression ------------------------------------------------------------------------------


def test_analysts_see_no_count_under_5_and_no_sum_that_gives_one_away():
    rng = np.random.default_rng(3)
    frames = [district_summary(*district_frames(), SCHOOLS)]
    for _ in range(40):  # random summaries with many small cells
        row = frames[0].iloc[[0]].copy()
        parts = rng.integers(0, 12, 6)
        row[["best_a1", "best_a2", "best_b", "best_c", "no_school", "awaiting_address_review"]] = parts
        row["with_school"] = parts[:4].sum()
        row["school_age_children"] = parts[:5].sum()
        row["decided_from_data"] = row["school_age_children"] - parts[5]
        frames.append(row)
    summary = pd.concat(frames, ignore_index=True)
    summary = summary[summary["decided_from_data"] >= 0]
    shown = suppress("district_summary", summary)
    counts = SUPPRESSION["district_summary"].counts
    values = shown[list(counts)].astype("float64")
    assert not (values < SUPPRESS_BELOW).any().any()
    for total, parts in SUPPRESSION["district_summary"].sums:
        known = shown[total].notna()
        rest = shown.loc[known, total] - shown.loc[known, list(parts)].fillna(0).sum(axis=1)
        hidden_any = shown.loc[known, list(parts)].isna().any(axis=1)
        assert (rest[hidden_any] >= SUPPRESS_BELOW).all(), total
    assert shown.loc[shown["decided_from_data"].isna(), "decided_from_data_share"].isna().all()
    assert (shown["suppressed"] == values.isna().any(axis=1)).all()


def test_demand_ratios_that_would_show_a_hidden_count_are_hidden():
    rows = elig(
        [(f"K{i}", "primary", "S1", "A1", "2019-01-01") for i in range(3)]
        + [(f"L{i}", "primary", "S1", "A2", "2019-01-01") for i in range(9)]
    )
    shown = suppress("school_demand", school_demand(rows, SCHOOLS)).set_index(["school_code", "category"])
    assert pd.isna(shown.loc[("S1", "A1"), "children"]) and shown.loc[("S1", "A2"), "children"] == 9
    assert pd.isna(shown.loc[("S1", "A2"), "demand_ratio"])  # 12/40 minus 9 shown would reveal 3
    assert shown.loc[("S1", "A1"), "suppressed"] and shown.loc[("S1", "A1"), "capacity"] == 40


def test_forecast_figures_are_hidden_together():
    citizen, catchments = cohort_city({"S1": [40, 3, 40, 40, 40, 40], "S2": [40] * 6})
    out = catchment_forecast(citizen, NO_GUARDIANS, NO_HOLDINGS, NO_HOLDINGS, catchments, SCHOOLS, POLICY)
    shown = suppress("catchment_forecast", out).set_index(["school_code", "level", "entry_year"])
    small = shown.loc[("S1", "primary", 2028)]
    assert small["suppressed"] and all(
        pd.isna(small[c]) for c in ("children_now", "expected_entrants", "migration_factor", "utilisation")
    )
    assert shown.loc[("S1", "primary", 2029), "expected_entrants"] >= SUPPRESS_BELOW


# --- whole runs on a synthetic city -----------------------------------------------------------

PEOPLE = 6000  # realistic cohorts: ~150 eligibility rows
RANK = {c: i for i, c in enumerate(CATEGORIES)}


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("marts_city")
    synthesize(out, PEOPLE, seed=5)
    return out


def run_city(city: Path, url: str, work: Path) -> None:
    from pipelines.cli import main

    assert (
        main(
            [
                "run",
                "--landing",
                str(city / "landing"),
                "--reference",
                str(city / "reference"),
                "--warehouse",
                url,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(work),
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def sqlite_warehouse(city, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("marts_sqlite")
    url = f"sqlite:///{folder / 'wh.sqlite'}"
    run_city(city, url, folder / "work")
    return url


def truth_children(city: Path, url: str) -> pd.DataFrame:
    """child_id, level, district_code, best_category from the truth files.

    The truth fixes each child's (school, category, priority date) rows; the best option among
    them is the best category, then the earliest priority date, then the school code. A child
    with no school belongs to its hukou region's district.
    """
    rows = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)
    schools = pd.read_csv(city / "reference" / "schools.csv", dtype=str)
    rows["rank"] = rows["category"].map(RANK)
    rows["priority_date"] = pd.to_datetime(rows["priority_date"])
    best = (
        rows.sort_values(["child_id", "level", "rank", "priority_date", "school_code"])
        .drop_duplicates(["child_id", "level"])
        .merge(schools[["school_code", "district_code"]], on="school_code")
    )
    none = pd.read_csv(city / "truth" / "ineligible.csv", dtype=str)
    homes = read(url, "SELECT citizen_id AS child_id, hukou_region_code AS district_code FROM citizen")
    none = none.merge(homes, on="child_id", how="left").assign(category=None)
    return pd.concat(
        [
            best[["child_id", "level", "district_code", "category"]],
            none[["child_id", "level", "district_code", "category"]],
        ],
        ignore_index=True,
    )


@pytest.mark.e2e
def test_school_demand_children_equal_the_truths_distinct_children(city, sqlite_warehouse):
    truth = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)
    expected = truth.groupby(["school_code", "level", "category"])["child_id"].nunique()
    demand = read(sqlite_warehouse, "SELECT * FROM school_demand").set_index(["school_code", "level", "category"])
    assert expected.sum() > 100
    got = demand["children"]
    assert got[got > 0].sort_index().to_dict() == expected.sort_index().to_dict()
    schools = pd.read_csv(city / "reference" / "schools.csv", dtype=str)
    assert len(demand) == len(schools) * len(CATEGORIES)
    best = truth.assign(rank=truth["category"].map(RANK)).groupby(["child_id", "level"])["rank"].min()
    best_by_category = best.map(dict(enumerate(CATEGORIES))).reset_index().groupby(["level", "rank"]).size()
    assert (
        demand.groupby(["level", "category"])["best_children"].sum()[lambda s: s > 0].to_dict()
        == best_by_category.to_dict()
    )


@pytest.mark.e2e
def test_district_summary_counts_equal_the_truths(city, sqlite_warehouse):
    kids = truth_children(city, sqlite_warehouse)
    summary = read(sqlite_warehouse, "SELECT * FROM district_summary").set_index(["district_code", "level"])
    assert len(kids) > 100 and kids["district_code"].notna().all()
    keys = ["district_code", "level"]
    expected = {
        "school_age_children": kids.groupby(keys).size(),
        "no_school": kids[kids["category"].isna()].groupby(keys).size(),
        **{f"best_{c.lower()}": kids[kids["category"] == c].groupby(keys).size() for c in CATEGORIES},
    }
    for column, counts in expected.items():
        got = summary[column]
        assert got[got > 0].sort_index().to_dict() == counts.sort_index().to_dict(), column
    reasons = read(sqlite_warehouse, "SELECT reasons FROM ineligibility")["reasons"].map(json.loads).explode()
    for code, children in reasons.value_counts().items():
        assert summary[reason_column("no_school", code)].sum() == children, code
    assert (summary["decided_from_data"] + summary["awaiting_address_review"] == summary["school_age_children"]).all()


@pytest.mark.e2e
def test_forecast_covers_every_catchment_and_entry_year_and_starts_from_the_children_there(city, sqlite_warehouse):
    forecast_ = read(sqlite_warehouse, "SELECT * FROM catchment_forecast")
    schools = pd.read_csv(city / "reference" / "schools.csv", dtype=str)
    assert len(forecast_) == len(schools) * 6
    assert sorted(forecast_["entry_year"].unique()) == list(range(2027, 2033))
    assert (forecast_["expected_entrants"] >= 0).all() and forecast_["method"].str.startswith("residence-cohort").all()
    # this year's cohort: every child the truth gives a school has a property, rental or hukou
    # address in a catchment, so lives in one; a child with no school may live in one too
    now = forecast_[forecast_["horizon"] == 0]["children_now"].sum()
    eligible = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)[["child_id", "level"]].drop_duplicates()
    ineligible = pd.read_csv(city / "truth" / "ineligible.csv", dtype=str)
    assert len(eligible) <= now <= len(eligible) + len(ineligible)


@pytest.mark.e2e
def test_a_second_run_keeps_the_first_runs_scorecard(city, sqlite_warehouse, tmp_path):
    import shutil

    from pipelines.cli import main

    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    shutil.copy(sqlite_warehouse.removeprefix("sqlite:///"), tmp_path / "wh.sqlite")
    assert (
        main(
            [
                "run",
                "--landing",
                str(city / "landing"),
                "--reference",
                str(city / "reference"),
                "--warehouse",
                url,
                "--as-of",
                "2027-08-16",
                "--work-dir",
                str(tmp_path / "work"),
            ]
        )
        == 0
    )
    quality = read(url, "SELECT * FROM source_quality")
    assert quality.groupby("as_of")["source"].nunique().to_dict() == {"2027-08-15": 7, "2027-08-16": 7}
    snapshot = read(url, "SELECT source, rows_in, rows_quarantined FROM source_snapshot").set_index("source")
    latest = quality[quality["as_of"] == "2027-08-16"].set_index("source")
    assert latest["rows_in"].to_dict() == snapshot["rows_in"].to_dict()
    reasons = [c for c in quality.columns if c.startswith("quarantined_")]
    assert (latest[reasons].sum(axis=1) == snapshot["rows_quarantined"]).all()
    age = (pd.Timestamp("2027-08-16") - pd.to_datetime(latest["delivery"])).dt.days
    assert (latest["delivery_age_days"] == age).all()


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_new_warehouse_has_the_marts_migration_and_every_mart(dialect, tmp_path, request):
    from pipelines.warehouse import ensure_warehouse

    url = f"sqlite:///{tmp_path / 'new.sqlite'}" if dialect == "sqlite" else request.getfixturevalue("pg_database")()
    ensure_warehouse(url)
    engine_ = sa.create_engine(url)
    schema = "zerocert" if dialect == "postgresql" else None
    with engine_.connect() as db:
        versions = db.execute(sa.text("SELECT version, name FROM schema_version ORDER BY version")).all()
    inspector = sa.inspect(engine_)
    for name in [*MART_TABLES, *ANALYST_MARTS]:
        assert [c["name"] for c in inspector.get_columns(name, schema=schema)] == TABLES[name].column_names, name
    engine_.dispose()
    assert (4, "supervision_marts") in [tuple(v) for v in versions]


def comparable(values: pd.Series) -> list:
    """One spelling per value across the dialects: SQLite keeps booleans as 0/1, dates as text."""

    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)):
            return round(float(v), 9)
        return str(v)[:10] if isinstance(v, (dt.date, pd.Timestamp)) else str(v)

    return [one(v) for v in values.astype(object)]


@pytest.fixture(scope="module")
def pg_warehouse(city, pg_database, tmp_path_factory) -> str:
    from pipelines.access import create_roles

    url = pg_database()
    run_city(city, url, tmp_path_factory.mktemp("marts_pg") / "work")
    create_roles(url, hmac_key=b"marts-test-lookup-audit-key")  # cluster-wide roles: idempotent under concurrency
    return url


@pytest.mark.e2e
@pytest.mark.postgres
def test_marts_on_postgresql_equal_those_on_sqlite(sqlite_warehouse, pg_warehouse):
    for name in [*MART_TABLES, *ANALYST_MARTS]:
        if name == "source_quality" or name == "analyst_source_quality":
            continue  # delivery ages equal, run history equal: compared on the figures below
        keys = list(TABLES[name].primary_key) or ["district_code", "level"]
        sql = f"SELECT * FROM {name}"
        lite = read(sqlite_warehouse, sql).drop(columns="run_id").sort_values(keys, ignore_index=True)
        pg = read(pg_warehouse, sql).drop(columns="run_id").sort_values(keys, ignore_index=True)
        assert len(lite) == len(pg) > 0, name
        for column in lite.columns:
            assert comparable(lite[column]) == comparable(pg[column]), (name, column)
    sql = "SELECT source, rows_in, rows_accepted, quarantined_invalid_date FROM source_quality ORDER BY source"
    assert read(pg_warehouse, sql).equals(read(sqlite_warehouse, sql))


COUNTS = {name: SUPPRESSION[name.removeprefix("analyst_")].counts for name in ANALYST_MARTS}


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_analyst_sees_no_cell_under_5_and_not_the_exact_marts(pg_warehouse):
    import psycopg

    with connect(pg_warehouse, "analyst") as conn:
        hidden = 0
        for name in ANALYST_MARTS:
            cur = conn.execute(f"SELECT * FROM zerocert.{name}")
            columns = [d.name for d in cur.description]
            rows = pd.DataFrame(cur.fetchall(), columns=columns)
            assert len(rows), name
            figures = rows[list(COUNTS[name])].astype("float64")
            assert not (figures < SUPPRESS_BELOW).any().any(), name
            assert rows.loc[figures.isna().any(axis=1), "suppressed"].all(), name
            hidden += int(figures.isna().sum().sum())
        assert hidden > 0  # a 3 000-person city has small cells: the rule had work to do
        catchments = conn.execute("SELECT count(*) FROM zerocert.address_catchment").fetchone()[0]
        assert catchments > 100
        for name in [n for n in MART_TABLES if n != "address_catchment"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM zerocert.{name} LIMIT 1")


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_report_reads_postgresql_as_the_owner_and_refuses_the_analyst_in_one_line(
    pg_warehouse, city, tmp_path, capsys
):
    from pipelines.cli import main

    reference = str(city / "reference")
    assert main(["report", "--warehouse", pg_warehouse, "--reference", reference, "--out", str(tmp_path / "a")]) == 0
    assert "data:image/png" in (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    capsys.readouterr()
    analyst = pg_warehouse.replace("://postgres@", "://analyst@")
    assert main(["report", "--warehouse", analyst, "--reference", reference, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerocert: ") and "\n" not in err and "zerocert_etl" in err


@pytest.mark.e2e
def test_a_scorecard_table_of_another_shape_restarts_the_history_instead_of_failing(sqlite_warehouse, tmp_path, caplog):
    import shutil
    import sqlite3

    from pipelines.marts import previous_quality

    path = tmp_path / "wh.sqlite"
    shutil.copy(sqlite_warehouse.removeprefix("sqlite:///"), path)
    assert len(previous_quality(f"sqlite:///{path}")) == 7
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE source_quality DROP COLUMN accepted_share")
    assert previous_quality(f"sqlite:///{path}") is None
    assert "history starts anew" in caplog.text
