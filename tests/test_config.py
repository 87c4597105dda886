"""Settings come from flags, then Airflow variables, then ZEROCERT_*, then the embedded default."""

import datetime as dt

import pytest

from pipelines.config import resolve_settings, settings_from_dict
from pipelines.errors import UsageError


@pytest.fixture()
def home(tmp_path):
    (tmp_path / "city" / "landing").mkdir(parents=True)
    (tmp_path / "city" / "reference").mkdir(parents=True)
    (tmp_path / "city" / "reference" / "policy.yaml").write_text("policy_id: x\n", encoding="utf-8")
    return tmp_path


def test_embedded_default_needs_no_configuration(home):
    s = resolve_settings(environ={"ZEROCERT_HOME": str(home)}, today=dt.date(2027, 8, 1))
    assert s.landing == (home / "city" / "landing").resolve()
    assert s.warehouse_url == f"sqlite:///{home.resolve() / 'warehouse.sqlite'}"
    assert s.as_of == dt.date(2027, 8, 1)
    assert settings_from_dict(s.as_dict()) == s


def test_explicit_beats_variable_beats_environment(home):
    env = {"ZEROCERT_HOME": str(home), "ZEROCERT_AS_OF": "2027-01-01", "ZEROCERT_WAREHOUSE_URL": "sqlite:///env.db"}
    variables = {"zerocert_warehouse_url": "sqlite:///var.db"}
    s = resolve_settings({"as_of": "2027-08-15"}, lookup=variables.get, environ=env)
    assert s.as_of == dt.date(2027, 8, 15)
    assert s.warehouse_url == "sqlite:///var.db"


@pytest.mark.parametrize(
    "explicit,message",
    [
        ({"as_of": "15/08/2027"}, "YYYY-MM-DD"),
        ({"landing": "/nonexistent/landing"}, "landing directory not found"),
        ({"landing": "/tmp", "exchange_url": "sqlite://"}, "not both"),
        ({"reference": "/nonexistent/ref"}, "reference directory not found"),
    ],
)
def test_bad_configuration_is_a_usage_error(home, explicit, message):
    with pytest.raises(UsageError, match=message):
        resolve_settings(explicit, environ={"ZEROCERT_HOME": str(home)})
