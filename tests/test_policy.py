"""policy.yaml is checked at load: a bad policy names the key; the demo policy reads as policy.md says."""

import datetime as dt

import pytest
import yaml

from pipelines.errors import UsageError
from pipelines.policy import DEMO_POLICY_YAML, add_months, load_policy, policy_from_dict


def demo_doc():
    return yaml.safe_load(DEMO_POLICY_YAML)


def test_demo_policy_reads_as_policy_md():
    policy = policy_from_dict(demo_doc())
    assert policy.policy_id == "demo-2027"
    assert policy.cutoff_date == dt.date(2027, 7, 31)
    assert policy.level_of_birth(dt.date(2020, 9, 1)) == "primary"
    assert policy.level_of_birth(dt.date(2021, 9, 1)) is None
    assert policy.level_of_birth(dt.date(2015, 8, 31)) == "junior"
    assert policy.business_established_by == dt.date(2026, 7, 31)
    assert "住宅" in policy.property_uses


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("cutoff_date", "31/07/2027", "cutoff_date"),
        ("employment.min_local_months", -1, "employment.min_local_months"),
        ("property.uses", [], "property.uses"),
        ("levels.primary.birth_to", "2019-01-01", "levels.primary"),
    ],
)
def test_bad_values_name_their_key(key, value, named):
    doc = demo_doc()
    node = doc
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(UsageError, match=named.replace(".", r"\.")):
        policy_from_dict(doc)


def test_missing_key_is_named():
    doc = demo_doc()
    del doc["rental"]["status"]
    with pytest.raises(UsageError, match=r"rental\.status"):
        policy_from_dict(doc)


def test_overlapping_level_windows_are_rejected():
    doc = demo_doc()
    doc["levels"]["junior"]["birth_to"] = "2020-12-31"
    with pytest.raises(UsageError, match="overlap"):
        policy_from_dict(doc)


def test_load_policy_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_id: [unclosed", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_policy(bad)


@pytest.mark.parametrize(
    "day,months,expected",
    [
        (dt.date(2027, 7, 31), -12, dt.date(2026, 7, 31)),
        (dt.date(2027, 3, 31), -1, dt.date(2027, 2, 28)),
        (dt.date(2024, 3, 31), -1, dt.date(2024, 2, 29)),
        (dt.date(2027, 1, 15), -1, dt.date(2026, 12, 15)),
        (dt.date(2026, 12, 15), 1, dt.date(2027, 1, 15)),
    ],
)
def test_add_months_clamps_to_month_end(day, months, expected):
    assert add_months(day, months) == expected
