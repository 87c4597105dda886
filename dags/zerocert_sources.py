"""
### zerocert: one staging DAG per departmental source

Each DAG runs on its source's own schedule (`schedule:` in `schemas/<source>.yaml`), pulls the
newest complete delivery of one source (landing folder with `_SUCCESS`, or the exchange
database), repairs it, quarantines what cannot be repaired, writes a Parquet snapshot, and
publishes the asset `zerocert://staged/<source>`. The warehouse DAG runs when the sources
have refreshed.

What was staged is in `<work_dir>/staged/<as_of>/<source>/` (`snapshot.json` with the counts,
`quarantine.parquet` with each quarantined row's reason); the task log gives rows in, accepted,
quarantined and duplicate. Once the warehouse DAG has validated the sources, its quality page
`<work_dir>/validation/quality/<as_of>.html` (opens offline) shows per source those counts, the
quarantine reasons with counts and the failed expectations.

Configuration: Airflow variables `zerocert_landing`, `zerocert_exchange_url`,
`zerocert_reference`, `zerocert_warehouse_url`, `zerocert_policy`, `zerocert_as_of`,
`zerocert_work_dir` (the two databases also as the connections `zerocert_warehouse` and
`zerocert_exchange`), or the `ZEROCERT_*` environment variables; none are needed for the demo.
One that is defined but cannot be read fails the task instead of falling back to a default. A
delivery older than the schema's `max_delivery_age_days` is staged with a WARNING in the log.
Sources are the files in `schemas/` (docs/adding-a-source.md): a new one gets its DAG here
without editing this file.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task

SCHEMAS = Path(str(files("pipelines.data") / "schemas"))  # package data: a wheel or a DAG bundle alike
SOURCES = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))
# The wait between retries is Airflow's `[core] default_task_retry_delay` (300 s unless configured;
# the Celery fault test shortens it), not a value of ours.
DEFAULT_ARGS = {"owner": "data-bureau", "retries": 2}


def source_schedule(source: str) -> str:
    """The cron line in ``schemas/<source>.yaml`` (read as text: no YAML parser at parse time)."""
    text = (SCHEMAS / f"{source}.yaml").read_text(encoding="utf-8")
    found = re.search(r'^schedule:\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "@daily"


def staged_asset(source: str) -> Asset:
    return Asset(f"zerocert://staged/{source}", group="zerocert")


def source_dag(source: str):
    @dag(
        dag_id=f"zerocert_source_{source}",
        schedule=source_schedule(source),
        start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
        catchup=False,
        max_active_runs=1,
        tags=["zerocert", "staging", source],
        default_args=DEFAULT_ARGS,
        doc_md=__doc__,
        params={
            "as_of": Param(
                None,
                type=["null", "string"],
                description="as-of date YYYY-MM-DD; blank: zerocert_as_of if set, else the run's date",
            )
        },
    )
    def stage_dag():
        @task(outlets=[staged_asset(source)], doc_md=f"Stage `{source}`: repair, quarantine, Parquet snapshot.")
        def stage(**context) -> dict:
            from pipelines.airflow_glue import settings_for_task, user_errors_fail_fast
            from pipelines.run import stage_for_source_dag

            with user_errors_fail_fast():
                return stage_for_source_dag(source, settings_for_task(context))

        stage()

    return stage_dag()


for _source in SOURCES:
    globals()[f"zerocert_source_{_source}"] = source_dag(_source)

if __name__ == "__main__":
    for _source in SOURCES:
        globals()[f"zerocert_source_{_source}"].test()
