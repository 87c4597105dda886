"""policy.md's record predicates: whether each row holds, and which reason its failing part tells."""

from __future__ import annotations

import pandas as pd
import yaml

from pipelines.engine import rules
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict

POLICY = policy_from_dict(yaml.safe_load(DEMO_POLICY_YAML))  # cutoff 2027-07-31


def told(verdict: rules.Verdict) -> list[set[str]]:
    """Per row, the reason codes the rule tells of it."""
    return [{code for code, mask in verdict.told.items() if mask[i]} for i in range(len(verdict.holds))]


def test_property_tells_the_one_failing_part_and_nothing_for_a_record_of_another_kind():
    rows = pd.DataFrame(
        {
            "kind": ["title", "title", "title", "contract", "title", "title"],
            "status": ["现势", "历史", "现势", "已备案", "历史", "现势"],
            "use": ["住宅", "住宅", "商业", "住宅", "商业", "住宅"],
            "record_date": pd.to_datetime(["2020-01-01", "2020-01-01", "2020-01-01", "2027-08-01", "2020-01-01", None]),
        }
    )
    verdict = rules.qualifying_property(rows, POLICY)
    assert verdict.holds.tolist() == [True, False, False, False, False, False]
    assert told(verdict) == [
        set(),
        {rules.PROPERTY_NOT_CURRENT},
        {rules.PROPERTY_NOT_RESIDENTIAL},
        {rules.PROPERTY_AFTER_CUTOFF},
        set(),
        set(),
    ]  # unknown date: not late
    assert verdict.scope == rules.HOLDER_SCOPE


def test_rental_filed_late_is_not_also_told_as_not_covering_the_cutoff():
    rows = pd.DataFrame(
        {
            "status": ["有效", "有效", "有效", "已注销"],
            "registered_date": pd.to_datetime(["2027-01-01", "2027-08-01", "2027-01-01", "2027-01-01"]),
            "start_date": pd.to_datetime(["2027-01-01", "2027-08-01", "2026-01-01", "2027-01-01"]),
            "end_date": pd.to_datetime(["2028-01-01", "2028-08-01", "2026-12-31", "2028-01-01"]),
        }
    )
    verdict = rules.qualifying_rental(rows, POLICY)
    assert verdict.holds.tolist() == [True, False, False, False]
    assert told(verdict) == [set(), {rules.RENTAL_AFTER_CUTOFF}, {rules.RENTAL_NOT_COVERING_CUTOFF}, set()]
    assert verdict.scope == rules.GUARDIAN_SCOPE


def test_employment_is_judged_by_the_rule_of_its_kind():
    rows = pd.DataFrame(
        {
            "kind": ["social_insurance", "social_insurance", "social_insurance", "enterprise", "enterprise"],
            "scheme": ["企业职工基本养老保险", "企业职工基本养老保险", "企业职工基本养老保险", None, None],
            "status": ["参保缴费", "参保缴费", "参保缴费", "存续", "存续"],
            "local_months": pd.array([12, 11, None, None, None], dtype="Int64"),
            "since": pd.to_datetime(["2010-01-01", "2010-01-01", "2010-01-01", "2026-07-31", "2026-08-01"]),
        }
    )
    verdict = rules.stable_employment(rows, POLICY)
    assert verdict.holds.tolist() == [True, False, False, True, False]
    assert told(verdict) == [
        set(),
        {rules.INSUFFICIENT_INSURANCE_MONTHS},
        {rules.INSUFFICIENT_INSURANCE_MONTHS},
        set(),
        {rules.BUSINESS_TOO_RECENT},
    ]
