"""The warehouse DAG keeps secrets out of Airflow and announces what it published.

A deployment hands the warehouse over as the Airflow connection ``zerocert_warehouse``, a
PostgreSQL URL with a password. The DAG runs with ``airflow dags test`` on a small city; then its
metadata database (every table, XCom, rendered fields and serialized DAGs included, and the raw
file) and every log are searched for that password. The same run checks the assets of the
published tables and the warning of a stale delivery; a variable that cannot be read stops the
run with a clear error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pipelines.errors import UsageError

AS_OF = "2027-08-20"  # the synth's newest deliveries are dated 2027-08-16: 4 days old, hukou allows 3
PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
DENYING_BACKEND = '''
from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
from airflow.secrets import BaseSecretsBackend


class DenyingBackend(BaseSecretsBackend):
    """A secrets backend that refuses the landing variable, as a vault without the grant would."""

    def get_variable(self, key):
        if key == "zerocert_landing":
            raise AirflowSecretsBackendAccessDenied("permission denied for secret zerocert_landing")
        return None

    def get_conn_value(self, conn_id):
        return None
'''


@pytest.fixture(scope="module")
def warehouse_role():
    """A PostgreSQL role with a password owning a database of its own; dropped afterwards."""
    import psycopg

    name = f"zerocert_secret_{os.getpid()}_{secrets.token_hex(3)}"
    password = f"pw-{secrets.token_hex(12)}"
    with psycopg.connect(**PG, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        admin.execute(f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' TEMPLATE template0")
        try:
            yield {"role": name, "password": password, "uri": f"postgresql://{name}:{password}@127.0.0.1:5432/{name}"}
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def airflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        return subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory, warehouse_role) -> dict:
    """One warehouse DAG run on a small city, publishing through the connection with a password."""
    from pipelines.demo import demo_environment
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("secrets")
    synthesize(out / "city", 400, seed=5)
    env = {
        **demo_environment(out, AS_OF),
        "ZEROCERT_WAREHOUSE_URL": "",
        "AIRFLOW_CONN_ZEROCERT_WAREHOUSE": warehouse_role["uri"],
    }
    assert airflow(["db", "migrate"], env, out / "logs" / "db-migrate.log").returncode == 0
    done = airflow(["dags", "test", "zerocert_warehouse"], env, out / "logs" / "zerocert_warehouse.log")
    text = (out / "logs" / "zerocert_warehouse.log").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0 and "DagRunState.FAILED" not in text, text[-3000:]
    return {"out": out, "env": env, "log": text, "metadata": out / "airflow" / "airflow.db", **warehouse_role}


def published_run(demo: dict) -> dict:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=5432, user=demo["role"], dbname=demo["role"]) as db:
        row = db.execute(
            "SELECT run_id, row_counts, warnings FROM zerocert.run_audit WHERE status = 'published' "
            "ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None, "the run did not publish through the connection zerocert_warehouse"
    return {"run_id": row[0], "row_counts": row[1], "warnings": row[2]}


def metadata_rows(path: Path) -> dict[str, list[str]]:
    """Every row of every table of Airflow's metadata database as text (compressed blobs opened)."""

    def text(value: object) -> str:
        if isinstance(value, bytes):
            try:
                value = zlib.decompress(value)
            except zlib.error:
                pass
            return value.decode("utf-8", errors="replace")
        return str(value)

    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [" ".join(text(v) for v in row) for row in db.execute(f'SELECT * FROM "{t}"')] for t in tables}
    finally:
        db.close()


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_warehouse_password_is_nowhere_in_airflow(demo):
    published_run(demo)  # the run did use the connection with the password
    password, role = demo["password"], demo["role"]
    rows = metadata_rows(demo["metadata"])
    assert rows["xcom"], "the run left no XCom to search"
    leaked = sorted(t for t, values in rows.items() if any(password in v for v in values))
    assert not leaked, f"the warehouse password is in the metadata tables {leaked}"
    assert any(role in v for v in rows["xcom"])  # the publish result names the warehouse, password hidden
    raw = demo["metadata"].parent.glob("airflow.db*")  # the file itself, freed pages and journal included
    assert not [p.name for p in raw if password.encode() in p.read_bytes()]
    files = [p for p in (demo["out"] / "airflow").rglob("*") if p.is_file() and not p.name.startswith("airflow.db")]
    files += [p for p in (demo["out"] / "logs").rglob("*") if p.is_file()]
    files += [p for p in (demo["out"] / "work").rglob("*") if p.is_file()]
    assert len(files) > 20
    assert not [str(p.relative_to(demo["out"])) for p in files if password.encode() in p.read_bytes()]


@pytest.mark.e2e
@pytest.mark.postgres
def test_xcom_carries_the_as_of_date_and_the_attempt_not_the_settings(demo):
    db = sqlite3.connect(demo["metadata"])
    try:
        [value] = db.execute("SELECT value FROM xcom WHERE task_id = 'configure' AND key = 'return_value'").fetchone()
    finally:
        db.close()
    attempt = json.loads(value)
    assert set(attempt) == {"as_of", "attempt", "started_at", "reuse_staged"}
    assert attempt["as_of"] == AS_OF and attempt["attempt"].startswith("airflow-manual__")


@pytest.mark.e2e
@pytest.mark.postgres
def test_each_published_table_has_an_asset_event_with_the_run_id_and_its_rows(demo):
    from pipelines.warehouse_schema import PUBLISHED_TABLES

    run = published_run(demo)
    db = sqlite3.connect(demo["metadata"])
    try:
        events = db.execute(
            "SELECT asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset_event.source_dag_id = 'zerocert_warehouse' AND asset_event.source_task_id = 'publish'"
        ).fetchall()
    finally:
        db.close()
    extras = {uri.removeprefix("zerocert://warehouse/"): json.loads(extra) for uri, extra in events}
    assert sorted(extras) == sorted(PUBLISHED_TABLES)
    for table, extra in extras.items():
        assert extra["run_id"] == run["run_id"] and extra["as_of"] == AS_OF, table
        assert extra["rows"] == run["row_counts"][table], table
    assert extras["eligibility"]["rows"] > 0 and extras["citizen"]["rows"] > 0


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_stale_delivery_is_published_with_a_warning_in_run_audit_the_log_and_the_assets(demo):
    run = published_run(demo)
    assert [(w["source"], w["warning"], w["delivery"], w["age_days"]) for w in run["warnings"]] == [
        ("hukou", "stale_delivery", "2027-08-16", 4)
    ]
    message = run["warnings"][0]["message"]
    assert "allows 3" in message
    [line] = [line for line in demo["log"].splitlines() if f"published despite: {message}" in line]
    assert "warning" in line.lower().replace(message.lower(), "")
    db = sqlite3.connect(demo["metadata"])
    try:
        [extra] = db.execute(
            "SELECT asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset.uri = 'zerocert://warehouse/eligibility'"
        ).fetchone()
    finally:
        db.close()
    assert json.loads(extra)["warnings"] == [message]


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_variable_that_cannot_be_read_fails_the_run_clearly(demo, tmp_path):
    """The landing variable is refused by the secrets backend: configure fails naming it, and
    nothing runs on the default landing folder instead."""
    (tmp_path / "denying_backend.py").write_text(DENYING_BACKEND, encoding="utf-8")
    env = {
        **demo["env"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW__SECRETS__BACKEND": "denying_backend.DenyingBackend",
    }
    airflow(["dags", "test", "zerocert_warehouse"], env, tmp_path / "denied.log")
    text = (tmp_path / "denied.log").read_text(encoding="utf-8", errors="replace")
    assert "Airflow variable zerocert_landing cannot be read" in text, text[-3000:]
    assert "permission denied for secret zerocert_landing" in text
    assert "DagRunState.FAILED" in text or "state=failed" in text


def test_a_defined_connection_that_cannot_be_read_is_an_error_and_an_absent_one_is_not(monkeypatch):
    from airflow.sdk import Connection, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    from pipelines.airflow_glue import airflow_setting

    monkeypatch.setattr(Variable, "get", classmethod(lambda cls, key, default=None: default))

    def absent(cls, conn_id):
        raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")

    monkeypatch.setattr(Connection, "get", classmethod(absent))
    assert airflow_setting("zerocert_warehouse_url") is None  # not configured: the environment or default

    def broken(cls, conn_id):
        raise ValueError("cannot parse postgresql://etl:hunter2@db.example:5432/w")

    monkeypatch.setattr(Connection, "get", classmethod(broken))
    with pytest.raises(UsageError, match="Airflow connection zerocert_warehouse cannot be read") as failed:
        airflow_setting("zerocert_warehouse_url")
    assert "hunter2" not in str(failed.value) and "etl:***@db.example" in str(failed.value)


def test_only_a_delivery_older_than_its_source_allows_is_stale():
    from pipelines.run import stale_delivery

    as_of = dt.date(2027, 8, 20)
    assert stale_delivery("hukou", "2027-08-17", as_of, 3) is None
    warning = stale_delivery("hukou", "2027-08-16", as_of, 3)
    assert (warning["source"], warning["age_days"], warning["max_delivery_age_days"]) == ("hukou", 4, 3)
    assert "2027-08-16" in warning["message"] and "allows 3" in warning["message"]


def test_every_source_declares_how_old_its_newest_delivery_may_be(tmp_path):
    import shutil

    from pipelines.staging.schema import SCHEMA_DIR, load_schema, load_schemas

    declared = {key: schema.max_delivery_age_days for key, schema in load_schemas().items()}
    assert declared["hukou"] == 3 and all(1 <= days <= 14 for days in declared.values()), declared
    shutil.copy(SCHEMA_DIR / "rental.yaml", tmp_path / "rental.yaml")
    text = (tmp_path / "rental.yaml").read_text(encoding="utf-8")
    (tmp_path / "rental.yaml").write_text(text.replace("max_delivery_age_days: 7", "max_delivery_age_days: soon"))
    with pytest.raises(UsageError, match="max_delivery_age_days must be a whole number"):
        load_schema("rental", tmp_path)


def test_run_audit_keeps_the_warnings_of_a_run(tmp_path):
    import sqlite3

    from pipelines.warehouse import record_failed_run

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    warning = {"warning": "stale_delivery", "source": "hukou", "message": "hukou: the newest delivery is 4 days old"}
    run = {
        "run_id": "r1",
        "as_of": "2027-08-20",
        "policy_id": "p",
        "started_at": "2027-08-20T01:00:00+00:00",
        "code_version": "test",
        "warnings": [warning],
    }
    record_failed_run(url, run, "validation failed")
    [stored] = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT warnings FROM run_audit").fetchone()
    assert json.loads(stored) == [warning]


def test_publish_declares_one_asset_per_published_table(tmp_path_factory):
    """The DAG file reads the table names from package data; they are the registry's tables."""
    import importlib.util

    from pipelines.warehouse_schema import PUBLISHED_TABLES

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    path = Path(__file__).resolve().parent.parent / "dags" / "zerocert_warehouse.py"
    spec = importlib.util.spec_from_file_location("zerocert_warehouse_dag_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outlets = [asset.uri for asset in module.dag.get_task("publish").outlets]
    assert outlets == [f"zerocert://warehouse/{table}" for table in PUBLISHED_TABLES]
