"""
### zerocert: build and publish the enrollment warehouse

Runs when every staged source has refreshed (asset schedule), or on demand. Takes each source's
newest complete delivery for the as-of date (reusing the snapshot its staging DAG wrote from the
same delivery folder, staging it otherwise; idempotent),
validates it with its Great Expectations suite (a table-level failure stops the run before
anything is published), resolves every address and places it in school catchments, joins per
resident, computes every child's eligibility, and publishes all tables in one atomic switch.
The last good warehouse stays readable if any step fails.

After each publish it writes the education bureau's report (demand against capacity, the
forecast per catchment, data quality per department) to `<work_dir>/reports/<as_of>/report.html`.

Each DAG run has its own folder, `<work_dir>/runs/<as_of>/airflow-<run id>/`, the run id with
every character but letters, digits, `_`, `.` and `-` made `_` (the run
`manual__2027-08-15T01:00:00+00:00` works in `airflow-manual__2027-08-15T01_00_00_00_00`).

Look at:
- the run's **quality page**, `quality.html` in the run's folder (the newest for each as-of date
  also at `<work_dir>/validation/quality/<as_of>.html`): one HTML file that opens offline, with
  per source the rows in, accepted, duplicate and quarantined, the quarantine reasons with
  counts and the failed expectations, and after publish the rows per table. It is rewritten
  after each `validate_*` task (whose log names it) and after `publish`;
- `run_audit` and `source_snapshot` in the warehouse;
- the address review lists in the run's folder under `addresses/review/`;
- the report (after a publish).

Every task log carries its counts: rows per source, address texts per status, children per
level and per bucket, rows per published table. The Great Expectations results (masked JSON)
are under `<work_dir>/validation/<source>/validation.json`; their Data Docs index
(`<work_dir>/validation/data_docs/index.html`) loads its styles and run list from the internet
and shows nothing on a closed network.
To publish a delivery whose size moved beyond its source's threshold after checking it, trigger
with `accept_change` (the source) and `accept_reason`; the acceptance is kept in `run_audit`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task

SCHEMAS = Path(str(files("pipelines.data") / "schemas"))  # package data: a wheel or a DAG bundle alike
SOURCES = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))


def record_failed_run(context) -> None:
    """A task failed for good: note it in run_audit (the published tables stay as they were)."""
    from pipelines.airflow_glue import record_task_failure

    record_task_failure(context)


DEFAULT_ARGS = {
    "owner": "data-bureau",
    "retries": 2,
    "retry_delay": pendulum.duration(minutes=5),
    "on_failure_callback": record_failed_run,
}


@dag(
    dag_id="zerocert_warehouse",
    schedule=[Asset(f"zerocert://staged/{source}", group="zerocert") for source in SOURCES],
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["zerocert", "warehouse", "eligibility"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            description="as-of date YYYY-MM-DD; blank: zerocert_as_of if set, else the run's date",
        ),
        "accept_change": Param(
            None,
            type=["null", "string"],
            description="source(s), comma-separated, whose delivery may change in size "
            "beyond its threshold in this run (a person checked it); blank: none",
        ),
        "accept_reason": Param(
            None,
            type=["null", "string"],
            description="with accept_change: what was checked, and with whom (kept in run_audit)",
        ),
    },
)
def zerocert_warehouse():
    @task(doc_md="Resolve the run's configuration (variables, environment, defaults).")
    def configure(**context) -> dict:
        from pipelines.airflow_glue import settings_for_task, start_warehouse_run, user_errors_fail_fast

        with user_errors_fail_fast():
            return start_warehouse_run(settings_for_task(context))

    # One task per step of pipelines.run.STEPS (and the report after), each calling that step's
    # function; tests/test_dag_integrity.py checks they follow the declared order.
    @task(doc_md="Stage one source for the run's as-of date (reusing what its own DAG staged from the same delivery).")
    def stage(run: dict, source: str) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, stage

        with user_errors_fail_fast():
            return stage(Attempt.from_dict(run), source)

    @task(
        doc_md="Great Expectations suite of one source; a table-level failure stops the run. "
        "Rewrites the run's quality page (`quality.html` in the run's folder; the log names it)."
    )
    def validate(run: dict, source: str) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, validate

        with user_errors_fail_fast():
            return validate(Attempt.from_dict(run), source)

    @task(doc_md="Resolve every address text and place standard addresses in catchments.")
    def resolve_addresses(run: dict) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, resolve_addresses

        with user_errors_fail_fast():
            return resolve_addresses(Attempt.from_dict(run))

    @task(doc_md="Join per resident and compute eligibility (Parquet per table).")
    def join_and_decide(run: dict) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, join_and_decide

        with user_errors_fail_fast():
            return join_and_decide(Attempt.from_dict(run))

    @task(doc_md="Publish every table in one atomic switch.")
    def publish(run: dict, decided: dict) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, publish

        with user_errors_fail_fast():
            return publish(Attempt.from_dict(run), decided)

    @task(doc_md="Write the education bureau's HTML report from the published marts.")
    def report(run: dict, published: dict) -> dict:
        from pipelines.airflow_glue import user_errors_fail_fast
        from pipelines.run import Attempt, write_report

        with user_errors_fail_fast():
            return write_report(Attempt.from_dict(run))

    run = configure()
    validated = []
    for source in SOURCES:
        staged = stage.override(task_id=f"stage_{source}")(run, source)
        checked = validate.override(task_id=f"validate_{source}")(run, source)
        staged >> checked
        validated.append(checked)
    addresses = resolve_addresses(run)
    validated >> addresses
    decided = join_and_decide(run)
    addresses >> decided
    report(run, publish(run, decided))


dag = zerocert_warehouse()

if __name__ == "__main__":
    dag.test()
