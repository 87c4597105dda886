"""
### zerocert: build and publish the enrollment warehouse

Runs when every staged source has refreshed (asset schedule), or on demand. Takes each source's
newest complete delivery for the as-of date (reusing the snapshot its staging DAG wrote from the
same delivery folder, staging it otherwise; idempotent),
validates it with its Great Expectations suite (a table-level failure stops the run before
anything is published), resolves every address and places it in school catchments, joins per
resident, computes every child's eligibility, and publishes all tables in one atomic switch.
The last good warehouse stays readable if any step fails.

Each publish emits one asset per published table, `zerocert://warehouse/<table>`, its event's
extra holding `run_id`, `as_of`, the table's `rows` and the run's `warnings`: an enrollment
system's sync DAG can be scheduled on them. A source whose newest delivery is older than its
`max_delivery_age_days` (`schemas/<source>.yaml`) does not stop the run: its staging and publish
logs say so as a WARNING, and the warning is kept in `run_audit.warnings` and the asset events.

Configuration: the Airflow variables and connections (`zerocert_warehouse`, `zerocert_exchange`)
the source DAGs' docs list, or `ZEROCERT_*`. Every task reads them itself; XCom carries only the
as-of date, the attempt's folder and paths of work files, never a URL or password. A variable or
connection that is defined but cannot be read fails the task; it never falls back to a default.

Join and decide run bucket by bucket: `bucket_inputs` splits the staged rows by the bucket of
the person they are about (`zerocert_engine_buckets`, or one bucket per 500,000 residents), and
`join_bucket`, `link_bucket`, `decide_bucket` and `prefill_bucket` are each mapped over the
buckets (each instance named "bucket N of M"), with `route_edges` between join and link and
`gather_buckets` writing one Parquet per table at the end. They hand each other files in the
attempt's `engine/` folder, which stays until publish, so a cleared bucket reruns alone and
rewrites the same files.

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
The same goes for a published table the run would empty or shrink by more than
`zerocert_max_table_shrink` (`accept_change` eligibility). The configure task checks the whole
configuration first (pipelines/preflight.py) and fails at once on a mistake.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task

SCHEMAS = Path(str(files("pipelines.data") / "schemas"))  # package data: a wheel or a DAG bundle alike
SOURCES = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))
# The published tables, from the reference DDL that pipelines/warehouse_schema.py generates from its
# registry (package data, kept in step by tests/test_publish_schema.py): no pipelines import here.
PUBLISHED_DDL = (files("pipelines.data") / "published_tables.sqlite.sql").read_text(encoding="utf-8")
PUBLISHED_TABLES = re.findall(r"^CREATE TABLE (\w+) \(", PUBLISHED_DDL, re.MULTILINE)
WAREHOUSE_ASSETS = [Asset(f"zerocert://warehouse/{table}", group="zerocert") for table in PUBLISHED_TABLES]


def record_failed_run(context) -> None:
    """A task failed for good: note it in run_audit (the published tables stay as they were)."""
    from pipelines.airflow_glue import record_task_failure

    record_task_failure(context)


# The wait between retries is Airflow's `[core] default_task_retry_delay` (300 s unless configured;
# the Celery fault test shortens it), not a value of ours.
DEFAULT_ARGS = {
    "owner": "data-bureau",
    "retries": 2,
    "on_failure_callback": record_failed_run,
}
# A per-bucket task's name in the UI, "bucket 3 of 12", from its own arguments (rendered before it
# runs, so a running or killed bucket is named too).
BUCKET_LABEL = "bucket {{ task.op_kwargs['bucket'] + 1 }} of {{ task.op_kwargs['bucket_count'] }}"


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
            description="source(s) or published table(s), comma-separated, that may change in size "
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
    @task(
        doc_md="Check the run's configuration (variables, connections, environment, defaults) and start "
        "the attempt. Passes on only the as-of date and the attempt's folder and start: every task "
        "reads its own settings, so no URL or password reaches XCom."
    )
    def configure(**context) -> dict:
        from pipelines.airflow_glue import settings_for_task, start_warehouse_run, user_errors_fail_fast

        with user_errors_fail_fast():
            return start_warehouse_run(settings_for_task(context))

    # One task per step of pipelines.run.STEPS (and the report after), each calling that step's
    # function; tests/test_dag_integrity.py checks they follow the declared order.
    @task(doc_md="Stage one source for the run's as-of date (reusing what its own DAG staged from the same delivery).")
    def stage(run: dict, source: str, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import stage

        with user_errors_fail_fast():
            return stage(attempt_for_task(context, run), source)

    @task(
        doc_md="Great Expectations suite of one source; a table-level failure stops the run. "
        "Rewrites the run's quality page (`quality.html` in the run's folder; the log names it)."
    )
    def validate(run: dict, source: str, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import validate

        with user_errors_fail_fast():
            return validate(attempt_for_task(context, run), source)

    @task(doc_md="Resolve every address text and place standard addresses in catchments.")
    def resolve_addresses(run: dict, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import resolve_addresses

        with user_errors_fail_fast():
            return resolve_addresses(attempt_for_task(context, run))

    # Join and decide: the engine's stages (pipelines/engine/buckets.py), each bucket its own mapped
    # task instance; they hand each other files in the attempt's engine folder, never data in XCom.
    @task(
        doc_md="Split the staged rows by the bucket of the person they are about (hukou also by household) "
        "into the attempt's engine folder, and plan the buckets: `zerocert_engine_buckets`, or one per "
        "500,000 residents. Passes on one `{bucket, bucket_count}` per bucket, which the per-bucket "
        "tasks map over.",
    )
    def bucket_inputs(run: dict, **context) -> list[dict]:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import bucket_inputs

        with user_errors_fail_fast():
            return bucket_inputs(attempt_for_task(context, run))["buckets"]

    @task(
        map_index_template=BUCKET_LABEL,
        doc_md="One bucket of residents: citizen, holdings and employment tables, their facts, "
        "guardian eligibility, the school-age children and the households' guardianship.",
    )
    def join_bucket(run: dict, bucket: int, bucket_count: int, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import join_bucket

        with user_errors_fail_fast():
            return join_bucket(attempt_for_task(context, run), bucket)

    @task(
        doc_md="Every bucket's children and guardianship together; each child's edges (to itself and "
        "its guardians) routed to the bucket of the holder whose records they pick up."
    )
    def route_edges(run: dict, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import route_edges

        with user_errors_fail_fast():
            return route_edges(attempt_for_task(context, run))

    @task(
        map_index_template=BUCKET_LABEL,
        doc_md="One bucket of holders: their placed properties, rentals, jobs and reasons on the edges "
        "that reach them, routed to the children's buckets.",
    )
    def link_bucket(run: dict, bucket: int, bucket_count: int, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import link_bucket

        with user_errors_fail_fast():
            return link_bucket(attempt_for_task(context, run), bucket)

    @task(
        map_index_template=BUCKET_LABEL,
        doc_md="One bucket of school-age children: eligibility (best category per school) and "
        "ineligibility with reasons. Its log has the bucket's counts.",
    )
    def decide_bucket(run: dict, bucket: int, bucket_count: int, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import decide_bucket

        with user_errors_fail_fast():
            return decide_bucket(attempt_for_task(context, run), bucket)

    @task(
        map_index_template=BUCKET_LABEL,
        doc_md="One bucket of guardians: the prefill document each parent's phone shows.",
    )
    def prefill_bucket(run: dict, bucket: int, bucket_count: int, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import prefill_bucket

        with user_errors_fail_fast():
            return prefill_bucket(attempt_for_task(context, run), bucket)

    @task(doc_md="One Parquet per engine table from every bucket's parts, rows in key order; children per level.")
    def gather_buckets(run: dict, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import gather_buckets

        with user_errors_fail_fast():
            return gather_buckets(attempt_for_task(context, run))

    @task(
        outlets=WAREHOUSE_ASSETS,
        doc_md="Publish every table in one atomic switch. Each table's asset `zerocert://warehouse/<table>` "
        "gets an event whose extra holds `run_id`, `as_of`, the table's `rows` and the run's `warnings` "
        "(a source's newest delivery older than its schema allows); the warnings are also WARNING lines "
        "of this log and in `run_audit.warnings`.",
    )
    def publish(run: dict, gathered: dict, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast, warehouse_asset_extra
        from pipelines.run import publish

        with user_errors_fail_fast():
            published = publish(attempt_for_task(context, run), gathered)
        for asset in WAREHOUSE_ASSETS:
            table = asset.uri.rsplit("/", 1)[-1]
            context["outlet_events"][asset].extra = warehouse_asset_extra(published, table, run["as_of"])
        return published

    @task(doc_md="Write the education bureau's HTML report from the published marts.")
    def report(run: dict, published: dict, **context) -> dict:
        from pipelines.airflow_glue import attempt_for_task, user_errors_fail_fast
        from pipelines.run import write_report

        with user_errors_fail_fast():
            return write_report(attempt_for_task(context, run))

    run = configure()
    validated = []
    for source in SOURCES:
        staged = stage.override(task_id=f"stage_{source}")(run, source)
        checked = validate.override(task_id=f"validate_{source}")(run, source)
        staged >> checked
        validated.append(checked)
    addresses = resolve_addresses(run)
    validated >> addresses
    plan = bucket_inputs(run)
    addresses >> plan

    def per_bucket(step):
        return step.partial(run=run).expand_kwargs(plan)

    joined = per_bucket(join_bucket)
    routed = route_edges(run)
    joined >> routed
    linked = per_bucket(link_bucket)
    routed >> linked
    decided = per_bucket(decide_bucket)
    linked >> decided
    prefilled = per_bucket(prefill_bucket)
    decided >> prefilled
    gathered = gather_buckets(run)
    prefilled >> gathered
    report(run, publish(run, gathered))


dag = zerocert_warehouse()

if __name__ == "__main__":
    dag.test()
