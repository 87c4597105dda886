"""Tiny staged frames for the engine: the seven sources of docs/contracts.md's staged-frame
contract built from row dicts, the address match and catchments they resolve into, and one
family (father, mother, child) with the roles assertions show instead of IDs. The join and the
eligibility tests build their cases from these."""

from __future__ import annotations

import pandas as pd
import yaml
from resident_ids import resident_id

from pipelines.engine.citizens import build_citizen_tables
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
from pipelines.resident_id import mask_id

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
    return resident_id(f"{region}{birth}{seq:03d}")


def ts(text):
    return pd.Timestamp(text) if text else pd.NaT


def frame(rows: list[dict], columns: list[str], dates: tuple[str, ...] = ()) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=columns).astype("object")
    for column in dates:
        data[column] = pd.to_datetime(data[column]).astype("datetime64[ns]")
    data["record_ref"] = [f"x:{i + 2}" for i in range(len(data))]
    return data


HUKOU = [
    "citizen_id",
    "name",
    "sex",
    "birth_date",
    "ethnicity",
    "household_no",
    "relation_to_head",
    "hukou_address",
    "hukou_region_code",
    "settled_date",
    "guardian1_id",
    "guardian1_relation",
    "guardian2_id",
    "guardian2_relation",
    "status",
    "updated_at",
]


def person(
    citizen_id,
    name,
    household_no,
    relation,
    *,
    status="正常",
    region=URBAN,
    settled="2018-05-01",
    address="丙3号",
    g1=None,
    g1rel=None,
    g2=None,
    g2rel=None,
) -> dict:
    birth = pd.Timestamp(citizen_id[6:14])
    return {
        "citizen_id": citizen_id,
        "name": name,
        "sex": "男",
        "birth_date": birth,
        "ethnicity": "汉",
        "household_no": household_no,
        "relation_to_head": relation,
        "hukou_address": address,
        "hukou_region_code": region,
        "settled_date": ts(settled),
        "guardian1_id": g1,
        "guardian1_relation": g1rel,
        "guardian2_id": g2,
        "guardian2_relation": g2rel,
        "status": status,
        "updated_at": pd.Timestamp("2026-01-01"),
    }


def title(
    owner_id,
    certificate_no,
    *,
    address="甲1号",
    use="住宅",
    status="现势",
    date="2019-03-01",
    owner_kind="person",
    name="某",
) -> dict:
    return {
        "certificate_no": certificate_no,
        "unit_no": "U" * 28,
        "owner_name": name,
        "owner_id": owner_id,
        "owner_kind": owner_kind,
        "co_ownership": "单独所有",
        "share": float("nan"),
        "address": address,
        "use": use,
        "floor_area": 90.0,
        "registered_date": ts(date),
        "title_status": status,
    }


def contract(
    buyer_id, contract_no, *, address="甲1号", use="住宅", status="已备案", date="2020-01-01", name="某"
) -> dict:
    return {
        "contract_no": contract_no,
        "buyer_id": buyer_id,
        "buyer_name": name,
        "seller": "某公司",
        "project_name": "某苑",
        "address": address,
        "use": use,
        "signed_date": ts(date),
        "status": status,
        "buyers_count": 1,
    }


def rental(
    tenant_id,
    record_no,
    *,
    address="甲1号",
    start="2026-09-01",
    end="2028-08-31",
    registered="2026-09-05",
    status="有效",
    name="某",
) -> dict:
    return {
        "record_no": record_no,
        "tenant_name": name,
        "tenant_id": tenant_id,
        "landlord_id": None,
        "address": address,
        "start_date": ts(start),
        "end_date": ts(end),
        "registered_date": ts(registered),
        "status": status,
    }


def insurance(citizen_id, months, *, scheme="企业职工基本养老保险", status="参保缴费", name="某") -> dict:
    return {
        "citizen_id": citizen_id,
        "name": name,
        "scheme": scheme,
        "insurance_status": status,
        "employer_name": "某公司",
        "employer_code": "91371100MA3C00000X",
        "first_insured_date": ts("2020-01-01"),
        "local_months": months,
        "last_paid_month": "202611",
    }


def business(operator_id, credit_code, *, established="2020-01-01", status="存续", name="某") -> dict:
    return {
        "credit_code": credit_code,
        "trade_name": "某店",
        "operator_name": name,
        "operator_id": operator_id,
        "address": "甲1号",
        "form": "个人经营",
        "established_date": ts(established),
        "reg_status": status,
        "closed_date": pd.NaT,
    }


def enterprise(rep_id, credit_code, *, established="2020-01-01", status="存续", name="某") -> dict:
    return {
        "credit_code": credit_code,
        "name": "某公司",
        "company_type": "有限责任公司",
        "legal_rep_name": name,
        "legal_rep_id": rep_id,
        "address": "甲1号",
        "established_date": ts(established),
        "reg_status": status,
        "approved_date": ts("2020-01-01"),
    }


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
ADDRESS_MATCH_TEXTS = {
    "甲1号": ("A1", "exact"),
    "乙2号": ("A2", "normalized"),
    "丙3号": ("A3", "exact"),
    "丁4号": (None, "unmatched"),
    "戊5号": (None, "ambiguous"),
}


def address_match() -> pd.DataFrame:
    sources = ["hukou", "property_title", "housing_contract", "rental", "individual_business", "enterprise"]
    rows = [
        {"source": s, "address": text, "address_code": code, "status": status, "candidates": "[]", "score": 1.0}
        for s in sources
        for text, (code, status) in ADDRESS_MATCH_TEXTS.items()
    ]
    return pd.DataFrame(rows)


def address_catchment() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"address_code": "A1", "level": "primary", "school_code": "S1"},
            {"address_code": "A2", "level": "primary", "school_code": "S1"},
            {"address_code": "A2", "level": "primary", "school_code": "S2"},
            {"address_code": "A1", "level": "junior", "school_code": "J1"},
        ]
    )


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
    return [
        person(FATHER, "张三", "100000001", "户主"),
        person(MOTHER, "李四", "100000001", "配偶"),
        person(
            CHILD,
            "张小",
            "100000001",
            "子",
            status=child_status,
            region=child_region,
            address=child_address,
            **child_fields,
        ),
    ]


def tables_of(frames, policy=POLICY):
    return build_citizen_tables(frames, address_match(), policy)
