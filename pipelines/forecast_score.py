"""Forecast error measured, not assumed (issue 15, part 2).

``marts.catchment_forecast`` is run, unchanged, on a synth city as it was five years before
(``synth.evolution``), and each horizon's expected entrants are set against the children of that
cohort who actually lived in the catchment in its entry year. Error is the mean absolute
percentage error per horizon and level, over catchments and over districts (catchments summed to
their school's district, forecast and actual alike).

Zero actuals: a unit with no actual entrant has no percentage error; it is left out of the MAPE
and counted in ``zero_actual_units``. Beside the MAPE stands the weighted error
``WAPE = sum |forecast - actual| / sum actual``, which needs no such exclusion and which small
units cannot dominate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.marts import ForecastMethod, catchment_forecast
from pipelines.synth.evolution import Evolution, evolve

SCALES = ("catchment", "district")
THE_MART_METHOD = ForecastMethod()  # what catchment_forecast publishes
NO_MIGRATION = ForecastMethod(min_cohort=10**9, name="no-migration-adjustment")  # every factor 1


def percentage_errors(forecast: pd.Series, actual: pd.Series) -> dict:
    """mape, wape, units, zero_actual_units of paired forecasts and actuals (one per unit).

    A unit whose actual is zero is left out of ``mape`` and counted in ``zero_actual_units``;
    ``mape`` is NaN when no unit has an actual above zero, ``wape`` when the actuals sum to zero.
    """
    f = np.asarray(forecast, dtype=float)
    a = np.asarray(actual, dtype=float)
    scored = a > 0
    mape = float(np.mean(np.abs(f[scored] - a[scored]) / a[scored])) if scored.any() else math.nan
    total = a.sum()
    wape = float(np.abs(f - a).sum() / total) if total > 0 else math.nan
    return {"mape": mape, "wape": wape, "units": int(scored.sum()), "zero_actual_units": int((~scored).sum())}


def forecast_from(
    evolution: Evolution, years_before: int = 5, method: ForecastMethod = THE_MART_METHOD
) -> pd.DataFrame:
    """The mart's forecast made on the city ``years_before`` years before the last snapshot."""
    city = evolution.city_before(years_before)
    return catchment_forecast(
        city.citizen,
        city.guardianship,
        city.property_holding,
        city.rental_holding,
        evolution.address_catchment,
        evolution.schools,
        city.policy,
        method,
    )


def paired(evolution: Evolution, forecast: pd.DataFrame, origin: int) -> pd.DataFrame:
    """horizon, level, school_code, district_code, forecast, actual: one row per catchment and
    horizon 1.. the evolution has seen, actual from the snapshot of that entry year."""
    rows = []
    for horizon in range(1, evolution.last_year - origin + 1):
        if horizon not in set(forecast["horizon"]):
            continue
        actual = evolution.entrants(origin + horizon)
        f = forecast.loc[forecast["horizon"] == horizon, ["school_code", "level", "expected_entrants"]]
        f = f.astype({"school_code": "string", "level": "string"})
        both = actual.merge(f, on=["school_code", "level"], how="outer")
        rows.append(
            pd.DataFrame(
                {
                    "horizon": horizon,
                    "level": both["level"],
                    "school_code": both["school_code"],
                    "district_code": both["district_code"],
                    "forecast": both["expected_entrants"].fillna(0.0).to_numpy(dtype=float),
                    "actual": both["entrants"].fillna(0.0).to_numpy(dtype=float),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def score_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """horizon, level, and per scale (catchment, district): mape, wape, units, zero_actual_units."""
    out = []
    for (horizon, level), group in pairs.groupby(["horizon", "level"], sort=True):
        row = {"horizon": int(horizon), "level": level}
        districts = group.groupby("district_code", dropna=False)[["forecast", "actual"]].sum()
        for scale, frame in (("catchment", group), ("district", districts)):
            for key, value in percentage_errors(frame["forecast"], frame["actual"]).items():
                row[f"{key}_{scale}"] = value
        out.append(row)
    return pd.DataFrame(out)


def score(evolution: Evolution, method: ForecastMethod = THE_MART_METHOD, years_before: int = 5) -> pd.DataFrame:
    """The error table of the forecast made ``years_before`` years before the last snapshot."""
    origin = evolution.last_year - years_before
    return score_pairs(paired(evolution, forecast_from(evolution, years_before, method), origin))


def score_city(profile: str, seed: int, people: int, method: ForecastMethod = THE_MART_METHOD) -> pd.DataFrame:
    """Evolve the synth city of (profile, seed, people) and score the mart's forecast."""
    return score(evolve(people, seed, profile), method)


def render(table: pd.DataFrame) -> str:
    """The table ``zerocert forecast-score`` prints (MAPE and WAPE in percent)."""
    lines = [
        f"{'horizon':>7} {'level':<8} {'MAPE catchment':>14} {'MAPE district':>13} {'WAPE catchment':>14} "
        f"{'WAPE district':>13} {'catchments':>10} {'districts':>9} {'zero-actual':>11}"
    ]
    for r in table.itertuples():
        lines.append(
            f"{r.horizon:>7} {r.level:<8} {100 * r.mape_catchment:>13.1f}% {100 * r.mape_district:>12.1f}% "
            f"{100 * r.wape_catchment:>13.1f}% {100 * r.wape_district:>12.1f}% {r.units_catchment:>10} "
            f"{r.units_district:>9} {r.zero_actual_units_catchment:>11}"
        )
    return "\n".join(lines)
