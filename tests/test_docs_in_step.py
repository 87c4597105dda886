"""The user reference in docs/ says what the code does: each declaration the code reads is named there.

A column added to a schema, a policy key, a published table or a command option that the docs
do not mention fails here, naming what to document and where.
"""

import argparse
import re
from pathlib import Path

import pytest
import yaml

from pipelines.access import ANALYST_TABLES
from pipelines.addresses.registry import REGISTRY_COLUMNS
from pipelines.cli import build_parser
from pipelines.data import data_path
from pipelines.engine.rules import CATEGORIES, REASONS
from pipelines.registry import sources
from pipelines.staging.quarantine import REASON_ORDER
from pipelines.warehouse_schema import ANALYST_MARTS, MART_TABLES, PUBLISHED_TABLES, TABLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(document: str, heading: str) -> str:
    """From the line starting with ``heading`` (included) to the next heading of its level or higher."""
    level = len(heading) - len(heading.lstrip("#"))
    found = re.search(rf"^{re.escape(heading)}.*$", document, re.M)
    assert found is not None, f"no heading {heading!r}"
    end = re.search(rf"^#{{1,{level}}} ", document[found.end() :], re.M)
    return document[found.start() : found.end() + end.start()] if end else document[found.start() :]


def table_row(document: str, name: str) -> str:
    row = next((line for line in document.splitlines() if line.startswith(f"| `{name}` |")), None)
    assert row is not None, f"no table row for `{name}`"
    return row


# ---------------------------------------------------------------- sources.md


@pytest.mark.parametrize("key", sorted(sources()))
def test_every_column_and_code_of_a_source_is_in_sources_md(key):
    schema = sources()[key].schema
    part = section(text("sources.md"), f"### `{key}`")
    assert f"`{schema.file}`" in part
    for column in schema.columns:
        start = f"| {column.header} | `{column.key}` |"
        row = next((line for line in part.splitlines() if line.startswith(start)), None)
        assert row is not None, f"sources.md, {key}: no row for column {column.header} ({column.key})"
        assert f"| {column.type} |" in row, f"sources.md, {key}.{column.key}: type {column.type}"
        assert ("| yes |" in row) == column.required, f"sources.md, {key}.{column.key}: required"
        for code in column.codes:
            assert code in row, f"sources.md, {key}.{column.key}: code {code}"
        for alias in column.aliases:
            assert f"`{alias}`" in row, f"sources.md, {key}.{column.key}: alias {alias}"
        assert ("an event" in row) == column.not_after_extract, f"sources.md, {key}.{column.key}: an event"
    for natural in schema.natural_key:
        assert f"`{natural}`" in part.split("| header |")[0], f"sources.md, {key}: key {natural}"


@pytest.mark.parametrize("key", sorted(sources()))
def test_every_source_s_delivery_and_threshold_is_in_sources_md(key):
    schema = sources()[key].schema
    declared = yaml.safe_load((data_path("schemas") / f"{key}.yaml").read_text(encoding="utf-8"))
    expectations = yaml.safe_load((data_path("expectations") / f"{key}.yaml").read_text(encoding="utf-8"))
    row = table_row(section(text("sources.md"), "## How a delivery arrives"), key)
    fraction = expectations["table_checks"]["max_change_fraction"]
    assert f"`{schema.file}`" in row and f"`{declared['schedule']}`" in row
    assert f"| {fraction * 100:g} % |" in row, f"sources.md: {key}'s max_change_fraction {fraction}"


def test_quarantine_reasons_types_and_registry_columns_are_in_sources_md():
    document = text("sources.md")
    reasons = section(document, "## Quarantine reason codes")
    listed = re.findall(r"^\| `([A-Z_]+)` \|", reasons, re.M)
    assert listed == list(REASON_ORDER), "sources.md lists the reasons in the order a row is quarantined by"
    types = section(document, "## Column types")
    for kind in {column.type for source in sources().values() for column in source.schema.columns}:
        assert f"| `{kind}` |" in types, f"sources.md: column type {kind}"
    reference = section(document, "## Reference data")
    for column in REGISTRY_COLUMNS:
        assert f"`{column}`" in reference, f"sources.md: addresses.csv column {column}"


# ---------------------------------------------------------------- policy.md


def leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    else:
        yield path


def test_every_policy_key_is_in_policy_md():
    document = text("policy.md")
    policy = yaml.safe_load(data_path("policy.yaml").read_text(encoding="utf-8"))
    for path in leaves(policy):
        if path[0] == "levels":
            assert f"`{path[1]}`" in document, f"policy.md: level {path[1]}"
            path = ("levels", "<level>", *path[2:])
        assert f"| `{'.'.join(path)}` |" in document, f"policy.md: key {'.'.join(path)}"


def test_every_reason_and_category_is_in_policy_md():
    document = text("policy.md")
    listed = re.findall(r"^\| `([A-Z_]+)` \|", section(document, "## Reason codes"), re.M)
    assert listed == list(REASONS), "policy.md lists the engine's reason codes, in its order"
    for category in CATEGORIES:
        assert f"| **{category}** |" in document, f"policy.md: category {category}"


# ---------------------------------------------------------------- warehouse.md


def test_every_published_table_and_its_columns_are_in_warehouse_md():
    document = text("warehouse.md")
    for name in PUBLISHED_TABLES:
        assert f"`{name}`" in document, f"warehouse.md: table {name}"
    for name, table in TABLES.items():
        if name in MART_TABLES or name in ANALYST_MARTS:
            continue  # their columns are docs/marts.md's
        row = table_row(document, name)
        for column in table.column_names:
            assert f"`{column}`" in row, f"warehouse.md: {name}.{column}"
    marts = text("marts.md")
    for name in MART_TABLES:
        assert f"`{name}`" in marts, f"marts.md: table {name}"


def test_what_analysts_may_read_is_in_warehouse_md():
    roles = section(text("warehouse.md"), "## Who may read what")
    analyst = table_row(roles, "analyst")
    assert re.findall(r"`([a-z_]+)`", analyst.split("only:")[1]) == list(ANALYST_TABLES)


# ---------------------------------------------------------------- commands.md


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_and_option_is_in_commands_md(name):
    part = section(text("commands.md"), f"## `zerocert {name}`")
    for action in subcommands()[name]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            option = max(action.option_strings, key=len)
            assert f"`{option}" in part, f"commands.md, zerocert {name}: option {option}"
        else:
            assert f"`{action.dest.upper()}`" in part, f"commands.md, zerocert {name}: argument {action.dest}"


# ---------------------------------------------------------------- the README points there


def test_the_readme_links_the_docs_and_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("sources.md", "policy.md", "warehouse.md", "commands.md"):
        assert f"(docs/{name})" in readme, f"README: no link to docs/{name}"
    for target in re.findall(r"\]\(([^)#]+)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links {target}, which is not in the repository"
    assert "shared/spec" not in readme
