"""The source registry: one declaration per source, and everything else agrees with it."""

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines import registry
from pipelines.errors import UsageError
from pipelines.synth import profile as synth_profile
from pipelines.synth.deliveries import delivery_format

REPO = Path(__file__).resolve().parent.parent


def test_the_package_data_is_the_repositorys_schemas_and_expectations():
    """The design card's folders are what the package reads (links, or copies in a wheel)."""
    for folder, packaged in (("schemas", registry.schemas_dir()), ("expectations", registry.expectations_dir())):
        mine = {p.name: p.read_bytes() for p in (REPO / folder).glob("*.yaml")}
        assert mine and mine == {p.name: p.read_bytes() for p in packaged.glob("*.yaml")}


def test_schemas_expectations_and_registry_name_the_same_sources():
    schemas = sorted(p.stem for p in (REPO / "schemas").glob("*.yaml"))
    suites = {
        p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))["source"] for p in (REPO / "expectations").glob("*.yaml")
    }
    assert registry.source_keys() == schemas
    assert sorted(suites) == schemas and all(key == source for key, source in suites.items())


def test_the_synth_writes_every_declared_source_in_its_declared_format():
    assert sorted(synth_profile.SOURCES) == registry.source_keys()
    for key in registry.source_keys():
        schema = registry.source(key).schema
        fmt = delivery_format(key)
        assert (fmt.file, fmt.encoding) == (schema.file, schema.encoding)
        assert fmt.headers == tuple(c.header for c in schema.columns)


def test_every_source_dag_is_a_declared_source(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "zerocert_sources.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [f"zerocert_source_{key}" for key in registry.source_keys()]


def test_roles_of_the_seven_sources():
    """What used to be code: persons, addresses, name authority, population, evidence."""
    assert registry.population_source() == "hukou"
    assert registry.name_authority()[:2] == ["hukou", "social_insurance"]
    assert registry.with_evidence("business") == ["enterprise", "individual_business"]
    assert registry.with_evidence("title") == ["property_title"]
    assert set(registry.address_columns()) == set(registry.source_keys()) - {"social_insurance"}
    title = registry.source("property_title").persons
    assert [(p.id, p.name, p.subject_column, p.subject_kind) for p in title] == [
        ("owner_id", "owner_name", "owner_kind", "person")
    ]


def test_a_special_module_only_where_rows_need_custom_parsing():
    special = {key for key, s in registry.sources().items() if s.special_module}
    assert special == {"housing_contract"}
    assert registry.stage_function("housing_contract").__name__ == "stage_housing_contract"


def test_contract_roles_name_columns_its_staging_produces():
    """The buyers' columns exist only after the contract's own staging: check them there."""
    raw = pd.DataFrame(
        {
            "contract_no": ["HT1"],
            "buyers": [json.dumps([{"name": "张三", "id": "11010519491231002X"}])],
            "seller": [""],
            "project_name": [""],
            "address": ["东港区海滨二路1号"],
            "use": ["住宅"],
            "signed_date": ["2020-01-01"],
            "status": ["已备案"],
            "record_ref": ["housing_contract.jsonl:1"],
            "raw": ["{}"],
            "parse_error": [""],
        }
    )
    staged = registry.stage_function("housing_contract")(raw, dt.date(2027, 8, 1))
    declared = registry.source("housing_contract")
    named = {c for p in declared.persons for c in (p.id, p.name)} | {declared.address}
    assert named <= set(staged.accepted.columns)
    assert staged.accepted["buyer_id"].tolist() == ["11010519491231002X"]


@pytest.fixture
def schema_folder(tmp_path, monkeypatch):
    """A copy of the schemas the registry reads instead of the package's."""
    folder = tmp_path / "schemas"
    shutil.copytree(registry.schemas_dir(), folder)
    monkeypatch.setattr(registry, "schemas_dir", lambda: folder)
    registry.sources.cache_clear()
    yield folder
    registry.sources.cache_clear()


def _edit_roles(folder: Path, key: str, roles: dict) -> None:
    path = folder / f"{key}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["roles"] = roles
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize(
    "roles, message",
    [
        ({"persons": [{"id": "owner"}]}, "persons: no column 'owner' in the schema"),
        ({"address": "street"}, "address: no column 'street'"),
        ({"evidence": "marriage"}, "evidence must be one of"),
        ({"name_rank": 0}, "name_rank must be a whole number"),
        ({"persons": [{"name": "owner_name"}]}, "needs id"),
        ({"owner": "owner_id"}, "unknown role 'owner'"),
    ],
)
def test_a_broken_role_is_a_one_line_error_naming_the_file(schema_folder, roles, message):
    _edit_roles(schema_folder, "rental", roles)
    with pytest.raises(UsageError, match=message) as caught:
        registry.sources()
    assert "rental.yaml" in str(caught.value) and "\n" not in str(caught.value)


def test_exactly_one_source_counts_the_population(schema_folder):
    _edit_roles(schema_folder, "rental", {"population": True})
    with pytest.raises(UsageError, match="exactly one source must have roles: population: true"):
        registry.sources()


def test_a_source_declared_by_files_alone_is_staged_by_its_schema(schema_folder):
    (schema_folder / "marriage.yaml").write_text(
        """
source: marriage
schedule: "0 2 * * *"
file: marriage.csv
format: csv
encoding: utf-8
natural_key: [certificate_no]
roles:
  persons: [{id: husband_id, name: husband_name}, {id: wife_id, name: wife_name}]
columns:
  - {header: 结婚证字号, key: certificate_no, type: string, required: true}
  - {header: 男方身份证号, key: husband_id, type: id, required: true}
  - {header: 男方姓名, key: husband_name, type: string}
  - {header: 女方身份证号, key: wife_id, type: id, required: true}
  - {header: 女方姓名, key: wife_name, type: string}
  - {header: 登记日期, key: registered_date, type: date, not_after_extract: true}
""",
        encoding="utf-8",
    )
    assert "marriage" in registry.source_keys()
    raw = pd.DataFrame(
        {
            "certificate_no": ["J1", "J2"],
            "husband_id": ["11010519491231002X", "123"],
            "husband_name": ["张三", "李四"],
            "wife_id": ["110105198503030025", "110105198503030025"],
            "wife_name": ["王芳", "王芳"],
            "registered_date": ["2010-05-01", "2030-01-01"],
            "record_ref": ["marriage.csv:2", "marriage.csv:3"],
            "raw": ["a", "b"],
            "parse_error": ["", ""],
        }
    )
    staged = registry.stage_function("marriage")(raw, dt.date(2027, 8, 1))
    assert staged.accepted["certificate_no"].tolist() == ["J1"]
    assert staged.quarantined["reason_code"].tolist() == ["INVALID_ID_FORMAT"]
