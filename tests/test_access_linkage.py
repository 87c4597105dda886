"""The linkage attack of issue 13, repeated on a real run's own outputs: analyst rows joined with
property registration dates and the catchment map link no child to its guardian.

The attacker holds ``analyst_eligibility`` (pseudonymous child, school, category, priority
period), every property's owner, registration date and address (``property_holding``) and the
catchment map (``address_catchment``). For an A-category row, a guardian is a candidate when
one of their properties lies in the school's catchment and was registered in the row's period;
a child key is linked when no other key shows the same rows and exactly one guardian is a
candidate for all of them. Run first on the analyst table as it used to be (exact dates), to
show the attack works on this city, then on what the run published.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.access import MIN_GROUP, pseudonymize
from pipelines.cli import main
from pipelines.synth import synthesize
from pipelines.warehouse import read_table
from pipelines.warehouse_schema import TABLES

pytestmark = pytest.mark.e2e

KEY = "linkage-test-key-0123456789"
A_CATEGORIES = ("A1", "A2")


@pytest.fixture(scope="module")
def run_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("linkage")
    synthesize(root / "city", people=15000, seed=7)  # realistic cohorts: enough children per school
    url = f"sqlite:///{root / 'warehouse.sqlite'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ZEROCERT_HMAC_KEY", KEY)
        env.delenv("ZEROCERT_HMAC_KEY_FILE", raising=False)
        status = main(
            [
                "run",
                "--landing",
                str(root / "city" / "landing"),
                "--reference",
                str(root / "city" / "reference"),
                "--warehouse",
                url,
                "--as-of",
                "2027-08-15",
                "--work-dir",
                str(root / "work"),
            ]
        )
    assert status == 0

    def table(name: str) -> pd.DataFrame:
        return pd.DataFrame(read_table(url, name), columns=TABLES[name].column_names)

    catchment = pd.read_parquet(next((root / "work").rglob("address_catchment.parquet")))
    return {
        name: table(name)
        for name in ("analyst_eligibility", "analyst_citizen", "eligibility", "property_holding", "guardianship")
    } | {"catchment": catchment}


def period_like(shown: str | None, day: dt.date) -> bool:
    """Whether a date falls in a published period: '2019-03-14', '2019-03', '2019-Q1', '2019', none."""
    if shown is None or pd.isna(shown):
        return True
    if len(shown) == 10:
        return day.isoformat() == shown
    if len(shown) == 7 and shown[4] == "-" and shown[5] != "Q":
        return day.strftime("%Y-%m") == shown
    if "Q" in shown:
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}" == shown
    return str(day.year) == shown


def linkage_attack(analyst: pd.DataFrame, properties: pd.DataFrame, catchment: pd.DataFrame) -> dict[str, str]:
    """child_key -> the one guardian ID the attacker pins on it."""
    registered = properties.dropna(subset=["record_date", "address_code"]).merge(
        catchment[["address_code", "level", "school_code"]], on="address_code"
    )
    registered["record_date"] = pd.to_datetime(registered["record_date"]).dt.date
    by_school = {key: group for key, group in registered.groupby(["level", "school_code"])}
    shown = analyst.astype("string").fillna("∅")
    signature = (
        (shown["level"] + "|" + shown["school_code"] + "|" + shown["category"] + "|" + shown["priority_period"])
        .groupby(analyst["child_key"])
        .agg(lambda s: "\n".join(sorted(s)))
    )
    alone = set(signature[signature.map(signature.value_counts()) == 1].index)
    links = {}
    for child_key, rows in analyst[analyst["category"].isin(A_CATEGORIES)].groupby("child_key"):
        if child_key not in alone:
            continue
        candidates = None
        for row in rows.itertuples():
            there = by_school.get((row.level, row.school_code))
            owners = (
                set()
                if there is None
                else {
                    owner
                    for owner, day in zip(there["citizen_id"], there["record_date"])
                    if period_like(row.priority_period, day)
                }
            )
            candidates = owners if candidates is None else candidates & owners
        if candidates and len(candidates) == 1:
            links[child_key] = next(iter(candidates))
    return links


def correct_links(links: dict[str, str], outputs: dict, child_key_of: pd.Series) -> int:
    """Links that name a real guardian of the child (the attacker cannot check; we can)."""
    pairs = outputs["guardianship"][["child_id", "guardian_id"]]
    truth = set(zip(pairs["child_id"].map(child_key_of), pairs["guardian_id"]))
    truth |= set(zip(outputs["eligibility"]["child_id"].map(child_key_of), outputs["eligibility"]["basis_guardian_id"]))
    return sum((key, guardian) in truth for key, guardian in links.items())


def test_exact_dates_link_children_to_guardians_so_the_attack_is_real(run_outputs):
    """The analyst table as it was before issue 13: exact priority dates, the plain HMAC key."""
    eligibility = run_outputs["eligibility"]
    children = pd.Series(eligibility["child_id"].unique())
    child_key_of = pd.Series(pseudonymize(children, KEY.encode()).to_numpy(), index=children.to_numpy())
    exact = pd.DataFrame(
        {
            "child_key": eligibility["child_id"].map(child_key_of),
            "level": eligibility["level"],
            "school_code": eligibility["school_code"],
            "category": eligibility["category"],
            "priority_period": pd.to_datetime(eligibility["priority_date"]).dt.strftime("%Y-%m-%d"),
        }
    )
    links = linkage_attack(exact, run_outputs["property_holding"], run_outputs["catchment"])
    correct = correct_links(links, run_outputs, child_key_of)
    assert correct >= 10, f"{len(links)} links, {correct} correct"


def test_published_analyst_tables_link_no_one(run_outputs):
    analyst = run_outputs["analyst_eligibility"]
    assert len(analyst) > 0
    periods = analyst["priority_period"].dropna()
    assert periods.str.fullmatch(r"\d{4}(-\d{2}|-Q[1-4])?").all()  # a month at the finest
    links = linkage_attack(analyst, run_outputs["property_holding"], run_outputs["catchment"])
    assert len(links) == 0
    shown = analyst.astype("string").fillna("∅")
    signature = (
        (shown["level"] + "|" + shown["school_code"] + "|" + shown["category"] + "|" + shown["priority_period"])
        .groupby(analyst["child_key"])
        .agg(lambda s: "\n".join(sorted(s)))
    )
    assert signature.value_counts().min() >= MIN_GROUP
    # the keys do not join the citizen table, whose attributes would split the groups again
    joined = len(set(analyst["child_key"]) & set(run_outputs["analyst_citizen"]["citizen_key"]))
    assert joined == 0


def test_published_analyst_citizen_combinations_describe_five_people(run_outputs):
    citizens = run_outputs["analyst_citizen"]
    columns = ["sex", "birth_year", "hukou_status", "hukou_region_code", "urban_hukou"]
    shown = citizens[columns].astype("string").fillna("∅")
    informative = (shown != "∅").any(axis=1)
    sizes = shown[informative].value_counts()
    assert sizes.min() >= MIN_GROUP and informative.mean() > 0.5
