"""Per-source staging functions on tiny raw frames: every repair rule and quarantine reason."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.registry import source_keys, stage_function
from pipelines.sources.housing_contract import stage_housing_contract
from pipelines.staging.schema import load_schema

FATHER = "11010519491231002X"
MOTHER = "110105198503030025"
CHILD = "110105201801010019"
EXTRACT = dt.date(2027, 8, 14)  # the delivery folder's date
stage_hukou = stage_function("hukou")
stage_property_title = stage_function("property_title")
stage_social_insurance = stage_function("social_insurance")


def raw_frame(source, rows):
    """Strings keyed by English column, as the readers hand them over; blanks where absent."""
    keys = load_schema(source).keys
    frame = pd.DataFrame([{k: row.get(k, "") for k in keys} for row in rows], dtype="str")
    frame["record_ref"] = [f"{source}.csv:{i + 2}" for i in range(len(rows))]
    frame["raw"] = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
    frame["parse_error"] = [row.get("_error", "") for row in rows]
    return frame


def hukou(**changes):
    row = {
        "citizen_id": FATHER,
        "name": "张三",
        "sex": "男",
        "birth_date": "1949-12-31",
        "household_no": "123456789",
        "relation_to_head": "户主",
        "status": "正常",
    }
    return row | changes


def reasons_of(staged):
    return dict(zip(staged.quarantined["record_ref"], staged.quarantined["reason_code"]))


def test_registry_has_the_seven_sources():
    assert source_keys() == sorted(
        [
            "hukou",
            "property_title",
            "housing_contract",
            "rental",
            "social_insurance",
            "individual_business",
            "enterprise",
        ]
    )
    assert stage_function("housing_contract") is stage_housing_contract


def test_sex_codes_and_guardians_normalized():
    staged = stage_hukou(
        raw_frame(
            "hukou",
            [
                hukou(sex="1"),
                hukou(citizen_id=MOTHER, sex="2"),
                hukou(
                    citizen_id=CHILD,
                    sex="女",
                    guardian1_id="110105491231002",
                    guardian1_relation="父亲",
                    guardian2_id=f" {MOTHER} ",
                    guardian2_relation="母亲",
                ),
            ],
        ),
        EXTRACT,
    )
    assert staged.accepted["sex"].tolist() == ["男", "女", "女"]
    assert staged.accepted.loc[2, ["guardian1_id", "guardian2_id"]].tolist() == [FATHER, MOTHER]
    assert pd.isna(staged.accepted.loc[0, "guardian1_id"])
    assert staged.quarantined.empty


def test_each_quarantine_reason_and_first_failure_order():
    staged = stage_hukou(
        raw_frame(
            "hukou",
            [
                hukou(sex="3"),  # INVALID_CODE
                hukou(birth_date="2019-02-30"),  # INVALID_DATE
                hukou(name=" "),  # MISSING_REQUIRED
                hukou(guardian1_id="3.71102E+17"),  # INVALID_ID_FORMAT (a guardian)
                hukou(citizen_id="110105194912310021", birth_date="x"),  # checksum comes before date
                hukou(status="迁出", _error="3 fields, expected 16"),  # MALFORMED_RECORD first of all
                hukou(citizen_id="110105194913310020", name=""),  # missing comes before ID format
            ],
        ),
        EXTRACT,
    )
    assert reasons_of(staged) == {
        "hukou.csv:2": "INVALID_CODE",
        "hukou.csv:3": "INVALID_DATE",
        "hukou.csv:4": "MISSING_REQUIRED",
        "hukou.csv:5": "INVALID_ID_FORMAT",
        "hukou.csv:6": "INVALID_ID_CHECKSUM",
        "hukou.csv:7": "MALFORMED_RECORD",
        "hukou.csv:8": "MISSING_REQUIRED",
    }
    details = staged.quarantined.set_index("record_ref")["detail"]
    assert details["hukou.csv:5"].startswith("guardian1_id")
    assert details["hukou.csv:7"] == "3 fields, expected 16"
    assert staged.accepted.empty and staged.rows_accepted == 0


def test_exact_duplicates_counted_not_quarantined():
    rows = [hukou(), hukou(), hukou(citizen_id=MOTHER), hukou()]
    staged = stage_hukou(raw_frame("hukou", rows), EXTRACT)
    assert (staged.rows_in, staged.rows_duplicate, staged.rows_accepted, staged.rows_quarantined) == (4, 2, 2, 0)
    assert staged.accepted["record_ref"].tolist() == ["hukou.csv:2", "hukou.csv:4"]


def title(**changes):
    row = {
        "certificate_no": "鲁(2019)某市不动产权第0012345号",
        "owner_name": "张三",
        "owner_id": FATHER,
        "co_ownership": "按份共有",
        "share": "",
        "use": "住宅",
        "floor_area": "89.5",
        "registered_date": "2019年7月31日",
        "title_status": "现势",
    }
    return row | changes


@pytest.mark.parametrize(
    "share, expected",
    [("", np.nan), ("50%", 0.5), ("1/2", 0.5), ("0.5", 0.5), ("1", 1.0), ("100%", 1.0), ("1/3", 1 / 3)],
)
def test_share_forms(share, expected):
    staged = stage_property_title(raw_frame("property_title", [title(share=share)]), EXTRACT)
    np.testing.assert_allclose(staged.accepted["share"].to_numpy(dtype=float), [expected])


@pytest.mark.parametrize("share", ["0", "150%", "3/2", "half", "1/0"])
def test_impossible_shares_are_quarantined(share):
    staged = stage_property_title(raw_frame("property_title", [title(share=share)]), EXTRACT)
    assert staged.quarantined["reason_code"].tolist() == ["INVALID_SHARE"]


def test_owner_kind_and_floor_area():
    staged = stage_property_title(
        raw_frame(
            "property_title",
            [
                title(),
                title(owner_id="91370100MA3C12346C", owner_name="某公司"),
                title(floor_area="八十"),
            ],
        ),
        EXTRACT,
    )
    assert staged.accepted["owner_kind"].tolist() == ["person", "organization"]
    assert staged.accepted["floor_area"].tolist() == [89.5, 89.5]
    assert reasons_of(staged) == {"property_title.csv:4": "INVALID_NUMBER"}


def test_social_insurance_months():
    row = {"citizen_id": FATHER, "scheme": "失业保险", "insurance_status": "参保缴费"}
    staged = stage_social_insurance(
        raw_frame(
            "social_insurance",
            [
                row | {"local_months": "36", "last_paid_month": "202605"},
                row | {"local_months": "36.0", "last_paid_month": "2026-5", "scheme": "工伤保险"},
                row | {"local_months": "3.6E1", "scheme": "城乡居民基本医疗保险"},
                row | {"last_paid_month": "202613", "scheme": "城乡居民基本养老保险"},
            ],
        ),
        EXTRACT,
    )
    assert staged.accepted["local_months"].tolist() == [36, 36]
    assert str(staged.accepted["local_months"].dtype) == "Int64"
    assert staged.accepted["last_paid_month"].tolist() == ["202605", "202605"]
    assert sorted(staged.quarantined["reason_code"]) == ["INVALID_DATE", "INVALID_NUMBER"]


def contract(contract_no, buyers, **changes):
    row = {
        "contract_no": contract_no,
        "buyers": json.dumps(buyers, ensure_ascii=False),
        "use": "住宅",
        "signed_date": "2020/5/1",
        "status": "已备案",
        "address": "某区某路1号",
    }
    return row | changes


def test_contracts_staged_one_row_per_buyer_and_quarantined_whole():
    staged = stage_housing_contract(
        raw_frame(
            "housing_contract",
            [
                contract("C1", [{"name": "张三", "id": "110105491231002"}, {"name": "李四", "id": MOTHER}]),
                contract("C2", [{"name": "张三", "id": FATHER}, {"name": "王五", "id": "110105194912310021"}]),
                contract("C3", []),
                contract("C4", {"name": "张三"}),
                contract("C5", [{"name": "张三", "id": FATHER}], status="已撤销"),
            ],
        ),
        EXTRACT,
    )
    accepted = staged.accepted
    assert accepted[["contract_no", "buyer_id", "buyers_count"]].values.tolist() == [
        ["C1", FATHER, 2],
        ["C1", MOTHER, 2],
        ["C5", FATHER, 1],
    ]
    assert accepted.loc[0, "signed_date"] == pd.Timestamp("2020-05-01")
    assert reasons_of(staged) == {
        "housing_contract.csv:3": "INVALID_ID_CHECKSUM",
        "housing_contract.csv:4": "MISSING_REQUIRED",
        "housing_contract.csv:5": "MALFORMED_RECORD",
    }
    assert (staged.rows_in, staged.rows_accepted, staged.rows_quarantined) == (5, 2, 3)


EVENT_COLUMNS = {  # sources.md "Dates": events that cannot postdate the extract
    "hukou": {"birth_date", "settled_date"},
    "property_title": {"registered_date"},
    "housing_contract": {"signed_date"},
    "rental": {"registered_date"},
    "social_insurance": {"first_insured_date"},
    "individual_business": {"established_date", "closed_date"},
    "enterprise": {"established_date", "approved_date"},
}


def test_schemas_mark_the_events_of_sources_md():
    marked = {source: {c.key for c in load_schema(source).columns if c.not_after_extract} for source in source_keys()}
    assert marked == EVENT_COLUMNS


def test_event_after_the_extract_date_quarantines_that_row_only():
    staged = stage_hukou(
        raw_frame(
            "hukou",
            [
                hukou(),
                hukou(citizen_id=MOTHER, birth_date="2027-08-14"),  # on the extract day: fine
                hukou(citizen_id=CHILD, birth_date="2027-08-15"),  # the day after: impossible
                hukou(citizen_id="110105198001010016", settled_date="20270901"),  # settled next month
            ],
        ),
        EXTRACT,
    )
    assert reasons_of(staged) == {"hukou.csv:4": "INVALID_DATE", "hukou.csv:5": "INVALID_DATE"}
    details = staged.quarantined.set_index("record_ref")["detail"]
    assert details["hukou.csv:4"] == "birth_date: after the delivery's extract date 2027-08-14"
    assert details["hukou.csv:5"].startswith("settled_date: after")
    assert staged.accepted["citizen_id"].tolist() == [FATHER, MOTHER]


def test_dates_that_may_lie_ahead_stay_accepted():
    stage_rental = stage_function("rental")
    row = {
        "record_no": "R1",
        "tenant_name": "张三",
        "tenant_id": FATHER,
        "address": "某区某路1号",
        "start_date": "2027-09-01",
        "end_date": "2029-08-31",
        "registered_date": "2027-08-01",
        "status": "有效",
    }
    staged = stage_rental(
        raw_frame("rental", [row, row | {"record_no": "R2", "registered_date": "2027-08-20"}]), EXTRACT
    )
    assert staged.accepted["record_no"].tolist() == ["R1"]
    assert reasons_of(staged) == {"rental.csv:3": "INVALID_DATE"}


def test_not_after_extract_needs_a_date_column(tmp_path):
    from pipelines.errors import UsageError

    (tmp_path / "x.yaml").write_text(
        "source: x\nfile: x.csv\nformat: csv\nnatural_key: [a]\n"
        "columns:\n  - {header: A, key: a, type: string, not_after_extract: true}\n",
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match="not_after_extract needs a date column"):
        load_schema("x", tmp_path)
