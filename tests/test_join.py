"""The join per resident: citizen, guardianship and holdings from tiny staged frames
(built by ``engine_world``, shared with the eligibility tests)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from engine_world import (
    CHILD,
    FATHER,
    MOTHER,
    OTHER,
    RURAL,
    business,
    contract,
    enterprise,
    family,
    insurance,
    person,
    rental,
    rid,
    staged,
    tables_of,
    title,
    who,
)

from pipelines.engine.buckets import household_bucket, person_bucket

# ---------------------------------------------------------------- citizen


def test_citizen_has_one_row_per_resident_and_leaves_out_companies():
    company = "91371100MA3C0AAA1X"
    frames = staged(
        hukou=family(),
        titles=[title(FATHER, "T1"), title(company, "T2", owner_kind="organization")],
        insured=[insurance(OTHER, 20)],
    )
    citizen = tables_of(frames)["citizen"]
    assert who(citizen["citizen_id"]) == ["child", "father", "mother", "other"]
    assert citizen["citizen_id"].is_unique


def test_sources_are_a_sorted_json_list_of_the_mentioning_sources():
    frames = staged(
        hukou=family(), titles=[title(FATHER, "T1")], rentals=[rental(FATHER, "R1")], insured=[insurance(FATHER, 20)]
    )
    citizen = tables_of(frames)["citizen"].set_index("citizen_id")
    assert json.loads(citizen.loc[FATHER, "sources"]) == ["hukou", "property_title", "rental", "social_insurance"]
    assert json.loads(citizen.loc[MOTHER, "sources"]) == ["hukou"]


def test_name_conflict_when_departments_disagree_and_hukou_name_wins():
    frames = staged(
        hukou=family(), titles=[title(FATHER, "T1", name="张叁")], insured=[insurance(MOTHER, 20, name="李四")]
    )
    citizen = tables_of(frames)["citizen"].set_index("citizen_id")
    assert bool(citizen.loc[FATHER, "name_conflict"]) is True
    assert citizen.loc[FATHER, "name"] == "张三"
    assert bool(citizen.loc[MOTHER, "name_conflict"]) is False


def test_person_outside_hukou_has_null_hukou_fields_and_no_urban_hukou():
    frames = staged(hukou=family(), insured=[insurance(OTHER, 20)])
    row = tables_of(frames)["citizen"].set_index("citizen_id").loc[OTHER]
    assert pd.isna(row["household_no"]) and pd.isna(row["hukou_status"]) and pd.isna(row["settled_date"])
    assert bool(row["urban_hukou"]) is False
    assert row["birth_date"] == pd.Timestamp("1970-05-05")


@pytest.mark.parametrize(
    "changes, urban",
    [
        ({}, True),
        ({"child_region": RURAL}, False),
        ({"child_status": "迁出"}, False),
        ({"settled": "2027-08-01"}, False),
    ],
)
def test_urban_hukou_needs_active_status_urban_region_and_settlement_by_cutoff(changes, urban):
    frames = staged(hukou=family(**changes))
    row = tables_of(frames)["citizen"].set_index("citizen_id").loc[CHILD]
    assert bool(row["urban_hukou"]) is urban


def test_hukou_address_code_comes_from_address_match():
    frames = staged(hukou=family(child_address="甲1号"))
    citizen = tables_of(frames)["citizen"].set_index("citizen_id")
    assert citizen.loc[CHILD, "hukou_address_code"] == "A1"
    assert citizen.loc[FATHER, "hukou_address_code"] == "A3"


# ---------------------------------------------------------------- holdings


def test_property_holding_marks_qualifying_by_use_status_and_date():
    frames = staged(
        hukou=family(),
        titles=[
            title(FATHER, "T-ok"),
            title(FATHER, "T-shop", use="商业"),
            title(FATHER, "T-old", status="历史"),
            title(FATHER, "T-late", date="2027-08-01"),
        ],
        contracts=[contract(MOTHER, "C-ok"), contract(MOTHER, "C-withdrawn", status="已撤销")],
    )
    holding = tables_of(frames)["property_holding"].set_index("record_key")
    assert holding["qualifying"].to_dict() == {
        "C-ok": True,
        "C-withdrawn": False,
        "T-late": False,
        "T-ok": True,
        "T-old": False,
        "T-shop": False,
    }
    assert holding.loc["C-ok", "kind"] == "contract" and holding.loc["T-ok", "kind"] == "title"
    assert who(holding.loc["C-ok", "citizen_id"]) == "mother"


def test_holding_addresses_take_code_and_status_from_their_source():
    frames = staged(
        hukou=family(),
        titles=[title(FATHER, "T1", address="乙2号"), title(FATHER, "T2", address="戊5号")],
        rentals=[rental(MOTHER, "R1", address="丁4号")],
    )
    tables = tables_of(frames)
    holding = tables["property_holding"].set_index("record_key")
    assert (holding.loc["T1", "address_code"], holding.loc["T1", "address_status"]) == ("A2", "normalized")
    assert pd.isna(holding.loc["T2", "address_code"]) and holding.loc["T2", "address_status"] == "ambiguous"
    assert tables["rental_holding"].iloc[0]["address_status"] == "unmatched"


def test_rental_qualifies_only_when_filed_by_cutoff_and_covering_it():
    frames = staged(
        hukou=family(),
        rentals=[
            rental(FATHER, "R-ok"),
            rental(FATHER, "R-ended", end="2027-06-30"),
            rental(FATHER, "R-late", registered="2027-08-02", start="2027-08-01"),
            rental(FATHER, "R-cancelled", status="已注销"),
        ],
    )
    holding = tables_of(frames)["rental_holding"].set_index("record_no")
    assert holding["qualifying"].to_dict() == {"R-cancelled": False, "R-ended": False, "R-late": False, "R-ok": True}


def test_employment_qualifies_by_months_and_business_age():
    frames = staged(
        hukou=family(),
        insured=[insurance(FATHER, 12), insurance(MOTHER, 11)],
        businesses=[
            business(FATHER, "B-old", established="2026-07-31"),
            business(MOTHER, "B-new", established="2026-08-01"),
        ],
        enterprises=[enterprise(MOTHER, "E-closed", status="注销")],
    )
    jobs = tables_of(frames)["employment"]
    by = {(r.citizen_id, r.kind, r.record_key): r.qualifying for r in jobs.itertuples()}
    assert by[(FATHER, "social_insurance", FATHER + ":企业职工基本养老保险")] is True
    assert by[(MOTHER, "social_insurance", MOTHER + ":企业职工基本养老保险")] is False
    assert by[(FATHER, "individual_business", "B-old")] is True
    assert by[(MOTHER, "individual_business", "B-new")] is False
    assert by[(MOTHER, "enterprise", "E-closed")] is False


# ---------------------------------------------------------------- guardianship


def test_household_rule_gives_head_and_spouse_when_guardian_fields_are_blank():
    guardianship = tables_of(staged(hukou=family()))["guardianship"]
    assert who(guardianship["guardian_id"]) == ["father", "mother"]
    assert set(guardianship["basis"]) == {"household"}
    assert who(guardianship["child_id"]) == ["child", "child"]


def test_guardian_fields_win_over_the_household():
    frames = staged(hukou=family(g1=OTHER, g1rel="其他") + [person(OTHER, "王五", "200000002", "户主")])
    guardianship = tables_of(frames)["guardianship"]
    assert [[who(g), r, b] for g, r, b in guardianship[["guardian_id", "relation", "basis"]].values.tolist()] == [
        ["other", "其他", "guardian_field"]
    ]


def test_no_household_guardians_for_a_grandchild_or_an_inactive_spouse():
    grandchild = rid("20210405", 41)
    rows = family() + [person(grandchild, "张孙", "100000001", "孙子")]
    rows[1]["status"] = "迁出"
    guardianship = tables_of(staged(hukou=rows))["guardianship"]
    assert [[who(c), who(g)] for c, g in guardianship[["child_id", "guardian_id"]].values.tolist()] == [
        ["child", "father"]
    ]


def test_cancelled_child_has_no_guardianship():
    guardianship = tables_of(staged(hukou=family(child_status="注销")))["guardianship"]
    assert guardianship.empty


def test_buckets_are_stable_and_keep_a_household_together():
    ids = pd.Series([FATHER, MOTHER, CHILD, OTHER])
    first = person_bucket(ids, 4)
    assert first.tolist() == person_bucket(ids.copy(), 4).tolist()
    assert first.tolist() == [int(i[-5:-1]) % 4 for i in ids]
    assert len(set(household_bucket(pd.Series(["100000001"] * 3), 5))) == 1
    assert set(person_bucket(ids, 1)) == {0}
