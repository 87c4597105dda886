"""The join per resident: citizen, guardianship and holdings from tiny staged frames.

The builders here make frames that follow docs/contracts.md's staged-frame contract; the
eligibility tests reuse them.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from pipelines.engine.buckets import household_bucket, person_bucket
from pipelines.engine.citizens import build_citizen_tables
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
from pipelines.resident_id import check_character, mask_id

URBAN, RURAL = "371102", "371321"


def policy_with(**changes):
    """The demo policy with dotted keys replaced, e.g. ``{"employment.min_local_months": 11}``."""
    doc = yaml.safe_load(DEMO_POLICY_YAML)
    for dotted, value in changes.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return policy_from_dict(doc)


POLICY = policy_with()


def rid(birth: str, seq: int, region: str = URBAN) -> str:
    """A valid 18-character resident ID for a birth date YYYYMMDD and a sequence number."""
    first17 = f"{region}{birth}{seq:03d}"
    return first17 + check_character(first17)


def ts(text):
    return pd.Timestamp(text) if text else pd.NaT


def frame(rows: list[dict], columns: list[str], dates: tuple[str, ...] = ()) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=columns).astype("object")
    for column in dates:
        data[column] = pd.to_datetime(data[column]).astype("datetime64[ns]")
    data["record_ref"] = [f"x:{i + 2}" for i in range(len(data))]
    return data


HUKOU = ["citizen_id", "name", "sex", "birth_date", "ethnicity", "household_no", "relation_to_head",
         "hukou_address", "hukou_region_code", "settled_date", "guardian1_id", "guardian1_relation",
         "guardian2_id", "guardian2_relation", "status", "updated_at"]


def person(citizen_id, name, household_no, relation, *, status="正常", region=URBAN,
           settled="2018-05-01", address="丙3号", g1=None, g1rel=None, g2=None, g2rel=None) -> dict:
    birth = pd.Timestamp(citizen_id[6:14])
    return {"citizen_id": citizen_id, "name": name, "sex": "男", "birth_date": birth, "ethnicity": "汉",
            "household_no": household_no, "relation_to_head": relation, "hukou_address": address,
            "hukou_region_code": region, "settled_date": ts(settled), "guardian1_id": g1,
            "guardian1_relation": g1rel, "guardian2_id": g2, "guardian2_relation": g2rel,
            "status": status, "updated_at": pd.Timestamp("2026-01-01")}


def title(owner_id, certificate_no, *, address="甲1号", use="住宅", status="现势", date="2019-03-01",
          owner_kind="person", name="某") -> dict:
    return {"certificate_no": certificate_no, "unit_no": "U" * 28, "owner_name": name, "owner_id": owner_id,
            "owner_kind": owner_kind, "co_ownership": "单独所有", "share": float("nan"), "address": address,
            "use": use, "floor_area": 90.0, "registered_date": ts(date), "title_status": status}


def contract(buyer_id, contract_no, *, address="甲1号", use="住宅", status="已备案", date="2020-01-01",
             name="某") -> dict:
    return {"contract_no": contract_no, "buyer_id": buyer_id, "buyer_name": name, "seller": "某公司",
            "project_name": "某苑", "address": address, "use": use, "signed_date": ts(date),
            "status": status, "buyers_count": 1}


def rental(tenant_id, record_no, *, address="甲1号", start="2026-09-01", end="2028-08-31",
           registered="2026-09-05", status="有效", name="某") -> dict:
    return {"record_no": record_no, "tenant_name": name, "tenant_id": tenant_id, "landlord_id": None,
            "address": address, "start_date": ts(start), "end_date": ts(end),
            "registered_date": ts(registered), "status": status}


def insurance(citizen_id, months, *, scheme="企业职工基本养老保险", status="参保缴费", name="某") -> dict:
    return {"citizen_id": citizen_id, "name": name, "scheme": scheme, "insurance_status": status,
            "employer_name": "某公司", "employer_code": "91371100MA3C00000X",
            "first_insured_date": ts("2020-01-01"), "local_months": months, "last_paid_month": "202611"}


def business(operator_id, credit_code, *, established="2020-01-01", status="存续", name="某") -> dict:
    return {"credit_code": credit_code, "trade_name": "某店", "operator_name": name, "operator_id": operator_id,
            "address": "甲1号", "form": "个人经营", "established_date": ts(established), "reg_status": status,
            "closed_date": pd.NaT}


def enterprise(rep_id, credit_code, *, established="2020-01-01", status="存续", name="某") -> dict:
    return {"credit_code": credit_code, "name": "某公司", "company_type": "有限责任公司",
            "legal_rep_name": name, "legal_rep_id": rep_id, "address": "甲1号",
            "established_date": ts(established), "reg_status": status, "approved_date": ts("2020-01-01")}


def staged(hukou=(), titles=(), contracts=(), rentals=(), insured=(), businesses=(), enterprises=()):
    """The seven staged frames of docs/contracts.md from lists of row dicts."""
    out = {
        "hukou": frame(list(hukou), HUKOU, ("birth_date", "settled_date", "updated_at")),
        "property_title": frame(list(titles), list(title("x", "x")), ("registered_date",)),
        "housing_contract": frame(list(contracts), list(contract("x", "x")), ("signed_date",)),
        "rental": frame(list(rentals), list(rental("x", "x")), ("start_date", "end_date", "registered_date")),
        "social_insurance": frame(list(insured), list(insurance("x", 1)), ("first_insured_date",)),
        "individual_business": frame(list(businesses), list(business("x", "x")), ("established_date", "closed_date")),
        "enterprise": frame(list(enterprises), list(enterprise("x", "x")), ("established_date", "approved_date")),
    }
    out["social_insurance"]["local_months"] = out["social_insurance"]["local_months"].astype("Int64")
    out["property_title"]["share"] = out["property_title"]["share"].astype("float64")
    return out


# 甲1 lies in school S1's catchment, 乙2 in S1's and S2's (overlap), 丙3 in none, 丁4 is unmatched.
ADDRESS_MATCH_TEXTS = {"甲1号": ("A1", "exact"), "乙2号": ("A2", "normalized"), "丙3号": ("A3", "exact"),
                       "丁4号": (None, "unmatched"), "戊5号": (None, "ambiguous")}


def address_match() -> pd.DataFrame:
    sources = ["hukou", "property_title", "housing_contract", "rental", "individual_business", "enterprise"]
    rows = [{"source": s, "address": text, "address_code": code, "status": status, "candidates": "[]",
             "score": 1.0} for s in sources for text, (code, status) in ADDRESS_MATCH_TEXTS.items()]
    return pd.DataFrame(rows)


def address_catchment() -> pd.DataFrame:
    return pd.DataFrame([
        {"address_code": "A1", "level": "primary", "school_code": "S1"},
        {"address_code": "A2", "level": "primary", "school_code": "S1"},
        {"address_code": "A2", "level": "primary", "school_code": "S2"},
        {"address_code": "A1", "level": "junior", "school_code": "J1"},
    ])


FATHER = rid("19880101", 11)
MOTHER = rid("19890202", 22)
CHILD = rid("20210301", 31)
OTHER = rid("19700505", 51)
ROLES = {FATHER: "father", MOTHER: "mother", CHILD: "child", OTHER: "other"}


def who(value):
    """What assertions compare instead of IDs, so test output never shows a whole resident ID."""
    if isinstance(value, (list, tuple, set, pd.Series, pd.Index)):
        return sorted(who(v) for v in value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return ROLES.get(value, mask_id(value))


def family(child_status="正常", child_region=URBAN, child_address="丙3号", **child_fields) -> list[dict]:
    return [person(FATHER, "张三", "100000001", "户主"),
            person(MOTHER, "李四", "100000001", "配偶"),
            person(CHILD, "张小", "100000001", "子", status=child_status, region=child_region,
                   address=child_address, **child_fields)]


def tables_of(frames, policy=POLICY):
    return build_citizen_tables(frames, address_match(), policy)


# ---------------------------------------------------------------- citizen

def test_citizen_has_one_row_per_resident_and_leaves_out_companies():
    company = "91371100MA3C0AAA1X"
    frames = staged(hukou=family(), titles=[title(FATHER, "T1"), title(company, "T2", owner_kind="organization")],
                    insured=[insurance(OTHER, 20)])
    citizen = tables_of(frames)["citizen"]
    assert who(citizen["citizen_id"]) == ["child", "father", "mother", "other"]
    assert citizen["citizen_id"].is_unique


def test_sources_are_a_sorted_json_list_of_the_mentioning_sources():
    frames = staged(hukou=family(), titles=[title(FATHER, "T1")], rentals=[rental(FATHER, "R1")],
                    insured=[insurance(FATHER, 20)])
    citizen = tables_of(frames)["citizen"].set_index("citizen_id")
    assert json.loads(citizen.loc[FATHER, "sources"]) == ["hukou", "property_title", "rental", "social_insurance"]
    assert json.loads(citizen.loc[MOTHER, "sources"]) == ["hukou"]


def test_name_conflict_when_departments_disagree_and_hukou_name_wins():
    frames = staged(hukou=family(), titles=[title(FATHER, "T1", name="张叁")], insured=[insurance(MOTHER, 20, name="李四")])
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


@pytest.mark.parametrize("changes, urban", [
    ({}, True),
    ({"child_region": RURAL}, False),
    ({"child_status": "迁出"}, False),
    ({"settled": "2027-08-01"}, False),
])
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
    frames = staged(hukou=family(), titles=[
        title(FATHER, "T-ok"), title(FATHER, "T-shop", use="商业"), title(FATHER, "T-old", status="历史"),
        title(FATHER, "T-late", date="2027-08-01")],
        contracts=[contract(MOTHER, "C-ok"), contract(MOTHER, "C-withdrawn", status="已撤销")])
    holding = tables_of(frames)["property_holding"].set_index("record_key")
    assert holding["qualifying"].to_dict() == {"C-ok": True, "C-withdrawn": False, "T-late": False,
                                               "T-ok": True, "T-old": False, "T-shop": False}
    assert holding.loc["C-ok", "kind"] == "contract" and holding.loc["T-ok", "kind"] == "title"
    assert who(holding.loc["C-ok", "citizen_id"]) == "mother"


def test_holding_addresses_take_code_and_status_from_their_source():
    frames = staged(hukou=family(), titles=[title(FATHER, "T1", address="乙2号"), title(FATHER, "T2", address="戊5号")],
                    rentals=[rental(MOTHER, "R1", address="丁4号")])
    tables = tables_of(frames)
    holding = tables["property_holding"].set_index("record_key")
    assert (holding.loc["T1", "address_code"], holding.loc["T1", "address_status"]) == ("A2", "normalized")
    assert pd.isna(holding.loc["T2", "address_code"]) and holding.loc["T2", "address_status"] == "ambiguous"
    assert tables["rental_holding"].iloc[0]["address_status"] == "unmatched"


def test_rental_qualifies_only_when_filed_by_cutoff_and_covering_it():
    frames = staged(hukou=family(), rentals=[
        rental(FATHER, "R-ok"), rental(FATHER, "R-ended", end="2027-06-30"),
        rental(FATHER, "R-late", registered="2027-08-02", start="2027-08-01"),
        rental(FATHER, "R-cancelled", status="已注销")])
    holding = tables_of(frames)["rental_holding"].set_index("record_no")
    assert holding["qualifying"].to_dict() == {"R-cancelled": False, "R-ended": False, "R-late": False, "R-ok": True}


def test_employment_qualifies_by_months_and_business_age():
    frames = staged(hukou=family(), insured=[insurance(FATHER, 12), insurance(MOTHER, 11)],
                    businesses=[business(FATHER, "B-old", established="2026-07-31"),
                                business(MOTHER, "B-new", established="2026-08-01")],
                    enterprises=[enterprise(MOTHER, "E-closed", status="注销")])
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
    assert [[who(g), r, b] for g, r, b in guardianship[["guardian_id", "relation", "basis"]].values.tolist()] \
        == [["other", "其他", "guardian_field"]]


def test_no_household_guardians_for_a_grandchild_or_an_inactive_spouse():
    grandchild = rid("20210405", 41)
    rows = family() + [person(grandchild, "张孙", "100000001", "孙子")]
    rows[1]["status"] = "迁出"
    guardianship = tables_of(staged(hukou=rows))["guardianship"]
    assert [[who(c), who(g)] for c, g in guardianship[["child_id", "guardian_id"]].values.tolist()] \
        == [["child", "father"]]


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
