"""Forecast error measured on the synth's own future: the error measure on tiny frames, the
evolution's bookkeeping, and the mart's forecast scored end to end on a small evolving city."""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.cli import main
from pipelines.forecast_score import NO_MIGRATION, forecast_from, paired, percentage_errors, score, score_pairs
from pipelines.synth.evolution import evolve
from pipelines.synth.profile import EvolutionRates, load_profile, profile_from_dict

PEOPLE = 15000  # the smallest city whose districts hold cohorts of 20+, so the forecast adjusts for migration


# --- the error measure -----------------------------------------------------------------------


def test_mape_and_wape_of_a_few_units():
    e = percentage_errors(pd.Series([10.0, 20.0]), pd.Series([10.0, 10.0]))
    assert e == {"mape": pytest.approx(0.5), "wape": pytest.approx(0.5), "units": 2, "zero_actual_units": 0}


def test_a_zero_actual_is_left_out_of_the_mape_counted_apart_and_kept_in_the_wape():
    e = percentage_errors(pd.Series([5.0, 12.0]), pd.Series([0.0, 10.0]))
    assert e["mape"] == pytest.approx(0.2)
    assert e["wape"] == pytest.approx(0.7)  # (5 + 2) / 10
    assert (e["units"], e["zero_actual_units"]) == (1, 1)


def test_one_unit_and_no_unit_with_an_actual():
    assert percentage_errors(pd.Series([3.0]), pd.Series([4.0]))["mape"] == pytest.approx(0.25)
    none = percentage_errors(pd.Series([3.0, 0.0]), pd.Series([0.0, 0.0]))
    assert math.isnan(none["mape"]) and math.isnan(none["wape"])
    assert (none["units"], none["zero_actual_units"]) == (0, 2)


def test_districts_add_their_catchments_before_the_error_is_taken():
    pairs = pd.DataFrame(
        {
            "horizon": 1,
            "level": "primary",
            "school_code": ["S1", "S2", "S3"],
            "district_code": ["D1", "D1", "D2"],
            "forecast": [8.0, 12.0, 3.0],
            "actual": [10.0, 10.0, 0.0],
        }
    )
    row = score_pairs(pairs).iloc[0]
    assert row["mape_catchment"] == pytest.approx(0.2)  # S1 and S2 off by 20 %, S3 has no actual
    assert row["zero_actual_units_catchment"] == 1
    assert row["mape_district"] == pytest.approx(0.0)  # D1: 20 against 20; D2: no actual
    assert (row["units_catchment"], row["units_district"], row["zero_actual_units_district"]) == (2, 1, 1)


# --- the evolution ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short():
    return evolve(3000, 4, "default", years=2, keep_from=0)


def test_people_still_here_keep_their_birth_dates_and_age_with_the_calendar(short):
    first, last = short.snapshots[0], short.snapshots[2]
    assert (last.as_of.year - first.as_of.year, last.as_of.month, last.as_of.day) == (
        2,
        first.as_of.month,
        first.as_of.day,
    )
    both = first.citizen.merge(last.citizen, on="citizen_id", suffixes=("_then", "_now"))
    assert len(both) == len(first.citizen)  # the register keeps everyone; leavers become 迁出
    assert (both["birth_date_then"] == both["birth_date_now"]).all()
    stayed = both[(both["hukou_status_then"] == "正常") & (both["hukou_status_now"] == "正常")]
    assert len(stayed) > 0.8 * (first.citizen["hukou_status"] == "正常").sum()


def test_newcomers_are_the_year_s_births_and_arrivals_and_the_register_reconciles(short):
    for year in (1, 2):
        before, after = short.snapshots[year - 1], short.snapshots[year]
        flows = short.flows[short.flows["year"] == year].sum(numeric_only=True)
        new = after.citizen[~after.citizen["citizen_id"].isin(before.citizen["citizen_id"])]
        born_here = pd.to_datetime(new["birth_date"]) > pd.Timestamp(before.as_of)
        assert born_here.sum() == flows["births"] > 0
        assert (~born_here).sum() == flows["arrived_people"] > 0
        assert (pd.to_datetime(new["birth_date"]) <= pd.Timestamp(after.as_of)).all()
        then, now = (int((s.citizen["hukou_status"] == "正常").sum()) for s in (before, after))
        assert now == then + flows["births"] + flows["arrived_people"] - flows["left_people"]
        assert flows["left_people"] > 0 and flows["residents"] == now
        assert flows["moved_out_of_district"] == flows["moved_into_district"] > 0
        left = before.citizen.merge(after.citizen, on="citizen_id")
        assert ((left["hukou_status_x"] == "正常") & (left["hukou_status_y"] == "迁出")).sum() == flows["left_people"]


def test_a_newborn_is_linked_to_guardians_of_its_household_and_lives_somewhere(short):
    last = short.snapshots[2]
    babies = last.citizen[pd.to_datetime(last.citizen["birth_date"]) > pd.Timestamp(short.snapshots[1].as_of)]
    linked = babies["citizen_id"].isin(last.guardianship["child_id"])
    assert linked.all()
    assert babies["hukou_address_code"].notna().all()


def test_one_seed_gives_the_same_evolution_and_another_a_different_one(short):
    again = evolve(3000, 4, "default", years=2, keep_from=0)
    pd.testing.assert_frame_equal(again.flows, short.flows)
    other = evolve(3000, 5, "default", years=2, keep_from=0)
    assert not other.flows[["births", "left_people"]].equals(short.flows[["births", "left_people"]])


def test_city_before_counts_back_from_the_last_year(short):
    assert short.city_before(2).year == 0 and short.city_before(0).year == 2
    with pytest.raises(KeyError):
        short.city_before(3)


def test_a_profile_may_set_evolution_rates_and_a_bad_one_names_its_key():
    doc = yaml.safe_load((resources.files("pipelines.synth") / "profiles" / "default.yaml").read_text(encoding="utf-8"))
    assert load_profile("default").evolution == EvolutionRates()  # shipped profiles: the defaults
    mine = profile_from_dict({**doc, "evolution": {"move_out": 0.05, "burn_in_years": 3}})
    assert mine.evolution == dataclasses.replace(EvolutionRates(), move_out=0.05, burn_in_years=3)
    with pytest.raises(Exception, match="evolution.move_in"):
        profile_from_dict({**doc, "evolution": {"move_in": 2}})
    with pytest.raises(Exception, match="unknown key 'speed'"):
        profile_from_dict({**doc, "evolution": {"speed": 1}})


# --- scoring end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def living():
    return evolve(PEOPLE, 3, "default")


def test_scoring_gives_finite_errors_per_horizon_and_level_at_both_scales(living):
    table = score(living)
    assert sorted(set(table["horizon"])) == [1, 2, 3, 4, 5]
    assert set(table["level"]) == {"primary", "junior"} and len(table) == 10
    for scale in ("catchment", "district"):
        assert np.isfinite(table[f"mape_{scale}"]).all() and (table[f"mape_{scale}"] >= 0).all()
        assert np.isfinite(table[f"wape_{scale}"]).all()
        assert (table[f"units_{scale}"] > 0).all()
    assert (table["units_district"] <= table["units_catchment"]).all()
    assert (table["mape_catchment"] > 0).all()  # families moved, so a five-year-old city is wrong somewhere


def test_actual_entrants_are_the_cohort_living_in_the_city_in_its_entry_year(living):
    origin = living.last_year - 5
    pairs = paired(living, forecast_from(living), origin)
    for horizon in range(1, 6):
        entry = living.snapshots[origin + horizon]
        actual = pairs.loc[pairs["horizon"] == horizon].groupby("level")["actual"].sum()
        window = {w.level: w for w in entry.policy.levels}
        for level, total in actual.items():
            born = pd.to_datetime(entry.citizen["birth_date"])
            cohort = (
                (born >= pd.Timestamp(window[level].birth_from))
                & (born <= pd.Timestamp(window[level].birth_to))
                & (entry.citizen["hukou_status"] == "正常")
            )
            assert 0.6 * cohort.sum() < total <= cohort.sum() + 1e-6


def test_without_migration_the_naive_forecast_is_exact_and_the_adjusted_one_is_not():
    still = dataclasses.replace(
        load_profile("default"), evolution=EvolutionRates(move_out=0.0, move_in=0.0, move_within=0.0, burn_in_years=0)
    )
    frozen = evolve(PEOPLE, 3, still)
    naive = score(frozen, NO_MIGRATION)
    assert (naive["mape_catchment"] == 0).all() and (naive["mape_district"] == 0).all()
    adjusted = score(frozen)  # reads noise in the age profile as migration
    assert (adjusted["wape_district"] > 0.005).any()


def test_a_forecast_without_migration_adjustment_scores_differently_on_a_moving_city(living):
    right, broken = score(living), score(living, NO_MIGRATION)
    assert not np.allclose(right["mape_catchment"], broken["mape_catchment"], atol=0.005)
    assert not np.allclose(right["mape_district"], broken["mape_district"], atol=0.005)


def test_the_cli_prints_one_row_per_horizon_and_level(capsys):
    assert main(["forecast-score", "--profile", "weifang", "--seed", "2", "--people", "3000"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["horizon", "level", "MAPE", "catchment"]
    rows = [line.split() for line in lines[1:]]
    assert sorted((int(r[0]), r[1]) for r in rows) == [(h, lv) for h in range(1, 6) for lv in ("junior", "primary")]
    assert main(["forecast-score", "--people", "10"]) == 2
