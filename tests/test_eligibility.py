"""The eligibility engine on tiny families: each policy edge case of policy.md."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from engine_world import (
    CHILD,
    FATHER,
    MOTHER,
    OTHER,
    POLICY,
    ROLES,
    RURAL,
    address_catchment,
    address_match,
    business,
    contract,
    family,
    insurance,
    person,
    policy_with,
    rental,
    rid,
    staged,
    tables_of,
    title,
    who,
)

from pipelines.engine.buckets import run_engine
from pipelines.engine.decide import compute_eligibility


def run(frames, policy=POLICY):
    return compute_eligibility(tables_of(frames, policy), address_catchment(), policy, "run-1")


def schools(result, child=CHILD):
    rows = result["eligibility"][result["eligibility"]["child_id"] == child]
    return {r.school_code: r.category for r in rows.itertuples()}


def row(result, school, child=CHILD):
    rows = result["eligibility"]
    return rows[(rows["child_id"] == child) & (rows["school_code"] == school)].iloc[0]


def reasons(result, child=CHILD):
    rows = result["ineligibility"][result["ineligibility"]["child_id"] == child]
    assert len(rows) == 1, "expected one ineligibility row per child and level"
    return set(json.loads(rows.iloc[0]["reasons"]))


def evidence_keys(value):
    """(source, record_key) of each evidence item, IDs inside keys shown as roles."""

    def shown(key):
        for citizen_id, role in ROLES.items():
            key = key.replace(citizen_id, role)
        return key

    return {(e["source"], shown(e["record_key"])) for e in json.loads(value)}


# ---------------------------------------------------------------- category A


def test_guardian_property_with_urban_hukou_gives_a1_with_property_and_hukou_evidence():
    result = run(staged(hukou=family(), titles=[title(FATHER, "T1", date="2019-03-01")]))
    assert schools(result) == {"S1": "A1"}
    hit = row(result, "S1")
    assert hit["priority_date"] == pd.Timestamp("2019-03-01")
    assert who(hit["basis_guardian_id"]) == "father"
    assert evidence_keys(hit["evidence"]) == {("property_title", "T1"), ("hukou", "100000001")}
    assert (hit["policy_id"], hit["run_id"], hit["level"]) == ("demo-2027", "run-1", "primary")
    assert result["ineligibility"].empty


def test_same_property_without_urban_hukou_gives_a2_without_hukou_evidence():
    result = run(staged(hukou=family(child_region=RURAL), titles=[title(FATHER, "T1")]))
    assert schools(result) == {"S1": "A2"}
    assert evidence_keys(row(result, "S1")["evidence"]) == {("property_title", "T1")}


def test_filed_contract_counts_and_withdrawn_contract_does_not():
    assert schools(run(staged(hukou=family(), contracts=[contract(MOTHER, "C1")]))) == {"S1": "A1"}
    result = run(staged(hukou=family(), contracts=[contract(MOTHER, "C1", status="已撤销")]))
    assert schools(result) == {}
    assert {"NO_QUALIFYING_PROPERTY", "PROPERTY_NOT_CURRENT"} <= reasons(result)


def test_property_registered_after_cutoff_gives_no_a_and_says_so():
    result = run(staged(hukou=family(), titles=[title(FATHER, "T1", date="2027-08-01")]))
    assert schools(result) == {}
    assert {"PROPERTY_AFTER_CUTOFF", "NO_QUALIFYING_PROPERTY"} <= reasons(result)


def test_non_residential_and_superseded_titles_do_not_qualify():
    shop = run(staged(hukou=family(), titles=[title(FATHER, "T1", use="商业")]))
    assert schools(shop) == {} and "PROPERTY_NOT_RESIDENTIAL" in reasons(shop)
    old = run(staged(hukou=family(), titles=[title(FATHER, "T1", status="历史")]))
    assert schools(old) == {} and "PROPERTY_NOT_CURRENT" in reasons(old)


def test_grandparent_property_without_guardian_link_gives_nothing():
    grandfather = rid("19600101", 61)
    grandchild = rid("20210405", 41)
    rows = [person(grandfather, "张老", "100000009", "户主"), person(grandchild, "张孙", "100000009", "孙子")]
    result = run(
        staged(hukou=rows, titles=[title(grandfather, "T1")]),
    )
    assert schools(result, grandchild) == {}
    assert {"NO_GUARDIAN_LINK", "NO_QUALIFYING_PROPERTY"} <= reasons(result, grandchild)


def test_grandparent_in_the_household_is_not_a_guardian_of_the_heads_child():
    grandfather = rid("19600101", 61)
    rows = family() + [person(grandfather, "张老", "100000001", "父亲")]
    result = run(staged(hukou=rows, titles=[title(grandfather, "T1")]))
    assert schools(result) == {}


def test_guardian_fields_replace_the_household():
    rows = family(g1=OTHER, g1rel="其他") + [person(OTHER, "王五", "200000002", "户主")]
    assert schools(run(staged(hukou=rows, titles=[title(FATHER, "T1")]))) == {}
    assert schools(run(staged(hukou=rows, titles=[title(OTHER, "T1")]))) == {"S1": "A1"}


def test_overlapping_catchments_give_two_schools():
    result = run(staged(hukou=family(), titles=[title(FATHER, "T1", address="乙2号")]))
    assert schools(result) == {"S1": "A1", "S2": "A1"}


def test_priority_is_the_earliest_property_in_that_catchment_and_names_its_holder():
    result = run(
        staged(
            hukou=family(),
            titles=[
                title(FATHER, "T1", date="2019-03-01"),
                title(MOTHER, "T2", date="2016-06-01"),
                title(FATHER, "T3", address="乙2号", date="2018-01-01"),
            ],
        )
    )
    s1, s2 = row(result, "S1"), row(result, "S2")
    assert (s1["priority_date"], who(s1["basis_guardian_id"])) == (pd.Timestamp("2016-06-01"), "mother")
    assert {k for _, k in evidence_keys(s1["evidence"])} == {"T1", "T2", "T3", "100000001"}
    assert (s2["priority_date"], who(s2["basis_guardian_id"])) == (pd.Timestamp("2018-01-01"), "father")
    assert {k for _, k in evidence_keys(s2["evidence"])} == {"T3", "100000001"}


def test_childs_own_property_has_no_basis_guardian():
    result = run(staged(hukou=family(), titles=[title(CHILD, "T1")]))
    assert schools(result) == {"S1": "A1"}
    assert pd.isna(row(result, "S1")["basis_guardian_id"])


def test_unmatched_property_address_is_held_but_places_nowhere():
    result = run(
        staged(
            hukou=family(child_address="甲1号"),
            titles=[title(FATHER, "T1", address="丁4号")],
            rentals=[rental(FATHER, "R1")],
            insured=[insurance(MOTHER, 30)],
        )
    )
    assert schools(result) == {}
    assert {"ADDRESS_UNMATCHED", "PROPERTY_EXCLUDES_RENTAL_AND_HUKOU"} <= reasons(result)
    assert "NO_QUALIFYING_PROPERTY" not in reasons(result)


# ---------------------------------------------------------------- category B


def test_rental_with_stable_employment_gives_b_with_rental_and_job_evidence():
    result = run(
        staged(hukou=family(), rentals=[rental(FATHER, "R1", registered="2026-09-05")], insured=[insurance(MOTHER, 12)])
    )
    assert schools(result) == {"S1": "B"}
    hit = row(result, "S1")
    assert (hit["priority_date"], who(hit["basis_guardian_id"])) == (pd.Timestamp("2026-09-05"), "father")
    assert evidence_keys(hit["evidence"]) == {("rental", "R1"), ("social_insurance", "mother:企业职工基本养老保险")}


def test_eleven_insurance_months_are_not_stable_employment():
    result = run(staged(hukou=family(), rentals=[rental(FATHER, "R1")], insured=[insurance(MOTHER, 11)]))
    assert schools(result) == {}
    assert {"INSUFFICIENT_INSURANCE_MONTHS", "NO_STABLE_EMPLOYMENT"} <= reasons(result)


def test_policy_min_local_months_decides_the_same_family():
    frames = staged(hukou=family(), rentals=[rental(FATHER, "R1")], insured=[insurance(MOTHER, 11)])
    assert schools(run(frames, policy_with(**{"employment.min_local_months": 11}))) == {"S1": "B"}


def test_policy_cutoff_decides_whether_a_property_counts():
    frames = staged(hukou=family(), titles=[title(FATHER, "T1", date="2027-08-01")])
    assert schools(run(frames, policy_with(cutoff_date="2027-08-31"))) == {"S1": "A1"}


def test_business_established_too_recently_is_not_stable():
    recent = run(
        staged(
            hukou=family(),
            rentals=[rental(FATHER, "R1")],
            businesses=[business(FATHER, "B1", established="2026-08-01")],
        )
    )
    assert schools(recent) == {} and "BUSINESS_TOO_RECENT" in reasons(recent)
    settled = run(
        staged(
            hukou=family(),
            rentals=[rental(FATHER, "R1")],
            businesses=[business(FATHER, "B1", established="2026-07-31")],
        )
    )
    assert schools(settled) == {"S1": "B"}


def test_rental_not_covering_cutoff_gives_no_b():
    result = run(
        staged(hukou=family(), rentals=[rental(FATHER, "R1", end="2027-06-30")], insured=[insurance(MOTHER, 30)])
    )
    assert schools(result) == {}
    assert {"RENTAL_NOT_COVERING_CUTOFF", "NO_QUALIFYING_RENTAL"} <= reasons(result)


def test_any_property_anywhere_excludes_b():
    result = run(
        staged(
            hukou=family(),
            titles=[title(MOTHER, "T1", address="丙3号")],
            rentals=[rental(FATHER, "R1")],
            insured=[insurance(MOTHER, 30)],
        )
    )
    assert schools(result) == {}
    assert {"PROPERTY_OUTSIDE_ALL_CATCHMENTS", "PROPERTY_EXCLUDES_RENTAL_AND_HUKOU"} <= reasons(result)


def test_childs_own_rental_does_not_count_for_b():
    result = run(staged(hukou=family(), rentals=[rental(CHILD, "R1")], insured=[insurance(MOTHER, 30)]))
    assert schools(result) == {} and "NO_QUALIFYING_RENTAL" in reasons(result)


# ---------------------------------------------------------------- category C and children


def test_urban_hukou_in_catchment_gives_c_dated_by_settlement():
    result = run(staged(hukou=family(child_address="甲1号", settled="2022-02-02")))
    assert schools(result) == {"S1": "C"}
    hit = row(result, "S1")
    assert hit["priority_date"] == pd.Timestamp("2022-02-02") and pd.isna(hit["basis_guardian_id"])
    assert evidence_keys(hit["evidence"]) == {("hukou", "100000001")}


def test_rural_hukou_in_catchment_gives_no_c():
    result = run(staged(hukou=family(child_address="甲1号", child_region=RURAL)))
    assert schools(result) == {}
    assert "HUKOU_NOT_URBAN" in reasons(result)


def test_b_beats_c_for_the_same_school():
    result = run(
        staged(hukou=family(child_address="甲1号"), rentals=[rental(FATHER, "R1")], insured=[insurance(FATHER, 30)])
    )
    assert schools(result) == {"S1": "B"}


def test_hukou_address_outside_catchments_is_a_reason():
    result = run(staged(hukou=family(child_address="丙3号")))
    assert "HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS" in reasons(result)


def test_deceased_child_gets_only_child_deceased():
    result = run(staged(hukou=family(child_status="死亡"), titles=[title(FATHER, "T1")]))
    assert schools(result) == {}
    assert reasons(result) == {"CHILD_DECEASED"}


def test_cancelled_child_gets_no_rows_at_all():
    result = run(staged(hukou=family(child_status="注销"), titles=[title(FATHER, "T1")]))
    assert "child" not in who(list(result["eligibility"]["child_id"]) + list(result["ineligibility"]["child_id"]))


def test_junior_child_is_judged_at_the_junior_level():
    older = rid("20150101", 71)
    rows = family() + [person(older, "张大", "100000001", "女")]
    result = run(staged(hukou=rows, titles=[title(FATHER, "T1")]))
    junior = result["eligibility"][result["eligibility"]["child_id"] == older]
    assert junior[["level", "school_code", "category"]].values.tolist() == [["junior", "J1", "A1"]]


# ---------------------------------------------------------------- adults, prefill, driver


def test_guardian_eligibility_lists_property_schools_and_employed_renters():
    renter = rid("19920303", 81)
    idle = rid("19930404", 91)
    frames = staged(
        hukou=family(),
        titles=[title(FATHER, "T1", address="乙2号")],
        rentals=[rental(renter, "R1"), rental(idle, "R2")],
        insured=[insurance(renter, 30)],
    )
    adults = run(frames)["guardian_eligibility"]
    got = {(who(r.guardian_id), r.level, r.school_code, r.basis) for r in adults.itertuples()}
    assert got == {
        ("father", "primary", "S1", "property"),
        ("father", "primary", "S2", "property"),
        (who(renter), "primary", "S1", "rental"),
        (who(renter), "junior", "J1", "rental"),
    }
    assert set(adults["run_id"]) == {"run-1"}


def test_prefill_has_one_document_per_guardian_with_children_and_schools():
    result = run(staged(hukou=family(), titles=[title(FATHER, "T1")], insured=[insurance(MOTHER, 30)]))
    prefill = result["prefill"].set_index("guardian_id")
    assert who(prefill.index) == ["father", "mother"]
    father = json.loads(prefill.loc[FATHER, "document"])
    assert [p["record_key"] for p in father["properties"]] == ["T1"]
    assert father["hukou"]["household_no"] == "100000001"
    (kid,) = father["children"]
    assert who(kid["child_id"]) == "child"
    assert [(s["school_code"], s["category"]) for s in kid["schools"]] == [("S1", "A1")]
    mother = json.loads(prefill.loc[MOTHER, "document"])
    assert mother["employment"][0]["qualifying"] is True


def test_reruns_are_identical():
    frames = staged(
        hukou=family(child_address="甲1号"),
        titles=[title(FATHER, "T1", address="乙2号")],
        rentals=[rental(MOTHER, "R1")],
    )
    first, second = run(frames), run(frames)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])


def write_inputs(tmp_path, frames):
    staged_dir, address_dir = tmp_path / "staged", tmp_path / "addresses"
    for source, data in frames.items():
        (staged_dir / source).mkdir(parents=True)
        data.to_parquet(staged_dir / source / "accepted.parquet")
    address_dir.mkdir()
    address_match().to_parquet(address_dir / "address_match.parquet")
    address_catchment().to_parquet(address_dir / "address_catchment.parquet")
    return staged_dir, address_dir


@pytest.mark.parametrize("buckets", [1, 3])
def test_run_engine_gives_the_same_tables_for_any_bucket_count(tmp_path, buckets):
    older = rid("20150101", 71)
    frames = staged(
        hukou=family(child_address="甲1号")
        + [person(older, "张大", "100000001", "女"), person(OTHER, "王五", "200000002", "户主")],
        titles=[title(FATHER, "T1", address="乙2号"), title(OTHER, "T2")],
        rentals=[rental(MOTHER, "R1"), rental(OTHER, "R2")],
        insured=[insurance(OTHER, 30)],
    )
    staged_dir, address_dir = write_inputs(tmp_path, frames)
    paths = run_engine(staged_dir, address_dir, POLICY, "run-1", tmp_path / "out", buckets=buckets)
    expected = {**tables_of(frames), **run(frames)}
    assert set(paths) == set(expected)
    for name, path in paths.items():
        got = pd.read_parquet(path)
        want = expected[name]
        assert len(got) == len(want), name
        assert sorted(map(str, got.to_dict("records"))) == sorted(map(str, want.to_dict("records"))), name


def test_evidence_text_is_exactly_the_shared_json_spelling():
    from pipelines.engine.decide import _evidence
    from pipelines.engine.frames import json_text

    facts = pd.DataFrame(
        {
            "child_id": ["c", "c"],
            "source": ["property_title", "rental"],
            "record_key": ['鲁(2019)某市"第1号"\\', "ZL1"],
            "date": [pd.Timestamp("2019-03-01"), pd.NaT],
        }
    )
    (text,) = _evidence(facts, ["child_id"])["evidence"]
    assert text == json_text(
        [
            {"source": "property_title", "record_key": '鲁(2019)某市"第1号"\\', "date": "2019-03-01"},
            {"source": "rental", "record_key": "ZL1", "date": None},
        ]
    )


def test_b_evidence_lists_each_guardians_insurance_record():
    result = run(
        staged(hukou=family(), rentals=[rental(FATHER, "R1")], insured=[insurance(FATHER, 30), insurance(MOTHER, 30)])
    )
    assert evidence_keys(row(result, "S1")["evidence"]) == {
        ("rental", "R1"),
        ("social_insurance", "father:企业职工基本养老保险"),
        ("social_insurance", "mother:企业职工基本养老保险"),
    }
