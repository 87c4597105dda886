"""The DAG files parse cleanly and follow the project's rules (docs, tags, retries, owner)."""

import ast
import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_staging_dag_per_source_and_a_warehouse_dag(dagbag):
    sources = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))
    assert len(sources) >= 7
    expected = {f"zerocert_source_{s}" for s in sources} | {"zerocert_warehouse"}
    assert expected <= set(dagbag.dag_ids)


def test_every_dag_has_docs_tags_owner_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, dag_id
        assert "zerocert" in dag.tags, dag_id
        for t in dag.tasks:
            assert t.retries >= 2, (dag_id, t.task_id)
            assert t.owner == "data-bureau", (dag_id, t.task_id)


def test_each_source_dag_runs_on_its_own_schedule_from_its_schema(dagbag):
    import yaml

    for path in SCHEMAS.glob("*.yaml"):
        declared = yaml.safe_load(path.read_text(encoding="utf-8"))["schedule"]
        assert dagbag.dags[f"zerocert_source_{path.stem}"].timetable.expression == declared


def test_warehouse_dag_is_scheduled_on_every_staged_source(dagbag):
    dag = dagbag.dags["zerocert_warehouse"]
    uris = {a.uri for a in dag.timetable.asset_condition.objects}
    sources = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))
    assert uris == {f"zerocert://staged/{s}" for s in sources}
    staging_outlets = {
        o.uri
        for d in dagbag.dags.values()
        if d.dag_id.startswith("zerocert_source_")
        for t in d.tasks
        for o in t.outlets
    }
    assert staging_outlets == uris


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_import_only_airflow_at_top_level(path):
    """Top-level imports stay cheap: Airflow, pendulum and the standard library, never pipelines
    (the DAGs find the sources through importlib.resources, reading package data only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            root = name.split(".")[0]
            assert root in {"airflow", "pendulum", "__future__", "importlib", "pathlib", "re"}, (path.name, name)
    assert 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


def test_warehouse_dag_runs_the_declared_steps_in_order(dagbag):
    """One task per declared step (and source), each calling that step's function, each after the
    step before it: the DAG runs what ``zerocert run`` runs."""
    from pipelines.run import WAREHOUSE_DAG_STEPS, source_keys

    dag = dagbag.dags["zerocert_warehouse"]
    sources = source_keys()
    declared = [(step, task_id) for step in WAREHOUSE_DAG_STEPS for task_id in step.task_ids(sources)]
    assert {t.task_id for t in dag.tasks} == {"configure"} | {task_id for _, task_id in declared}
    for step, task_id in declared:
        names = dag.get_task(task_id).python_callable.__code__.co_names
        assert step.do.__module__ in names and step.do.__name__ in names, (task_id, step.do.__name__)
    for before, step in zip(WAREHOUSE_DAG_STEPS, WAREHOUSE_DAG_STEPS[1:]):
        for source in sources if step.per_source else [None]:
            task = dag.get_task(step.task_ids([source])[0] if source else step.name)
            upstream = task.get_flat_relative_ids(upstream=True)
            needed = [f"{before.name}_{source}"] if source and before.per_source else before.task_ids(sources)
            assert set(needed) <= upstream, (task.task_id, sorted(set(needed) - upstream))


def test_per_bucket_steps_are_tasks_mapped_over_the_planned_buckets(dagbag):
    """Each step done per bucket is one task mapped over what ``bucket_inputs`` returns, each
    instance named "bucket N of M" in the UI."""
    from pipelines.run import BUCKET_PLAN, WAREHOUSE_DAG_STEPS

    dag = dagbag.dags["zerocert_warehouse"]
    per_bucket = [step.name for step in WAREHOUSE_DAG_STEPS if step.per_bucket]
    assert "decide_bucket" in per_bucket
    for task in dag.tasks:
        mapped = task.task_id in per_bucket
        assert getattr(task, "is_mapped", False) == mapped, task.task_id
        if mapped:
            (source,) = [upstream.task_id for upstream in task.iter_mapped_dependencies()]
            assert source == BUCKET_PLAN, task.task_id
            assert "bucket {{" in task.map_index_template and "bucket_count" in task.map_index_template


def test_tasks_wait_between_retries_as_airflow_is_configured(dagbag):
    """No DAG sets ``retry_delay``: Airflow's ``[core] default_task_retry_delay`` applies."""
    import datetime as dt

    from airflow.configuration import conf

    delay = dt.timedelta(seconds=conf.getint("core", "default_task_retry_delay"))
    for dag_id, dag in dagbag.dags.items():
        for t in dag.tasks:
            assert t.retry_delay == delay, (dag_id, t.task_id)
    for path in DAGS.glob("*.py"):
        assert "retry_delay" not in path.read_text(encoding="utf-8").replace("default_task_retry_delay", ""), path.name
