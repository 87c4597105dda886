"""One run, as named steps: stage → validate → addresses → join and decide → publish.

The steps are declared once, in order, in ``STEPS``, each bound to the one function that does
it; ``zerocert run`` (``run_pipeline``), ``zerocert bench`` and the warehouse DAG (one task per
step and source; one task mapped over the engine's buckets for a step done per bucket) all
drive those functions. Join and decide are the engine's stages (pipelines/engine/buckets.py):
``bucket_inputs`` plans the buckets (``zerocert_engine_buckets``, or from the city's size),
then each per-bucket step runs once per bucket, with small whole-run steps between them.
Each reads and writes files in the attempt's folder (``Settings.layout``, pipelines/layout.py)
and returns a small dict, so the Airflow tasks pass paths through XCom. Steps are idempotent
for a given as-of date: rerunning one (or one bucket of one) rewrites its own outputs from its
inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import __version__, registry
from pipelines.config import Settings
from pipelines.errors import UsageError, ZerocertError
from pipelines.layout import SNAPSHOT_FILE, RunLayout
from pipelines.policy import load_policy
from pipelines.preflight import REFERENCE_FILES, guard_published_tables, preflight
from pipelines.warehouse_schema import PUBLISHED_TABLES

log = logging.getLogger(__name__)


def source_keys() -> list[str]:
    """The sources this installation knows (one schema file each; pipelines/registry.py)."""
    return registry.source_keys()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_configuration(settings: Settings) -> dict:
    """Everything a run depends on, checked before any work (pipelines/preflight.py): a bad
    file, database or setting stops the run with one line, exit 2, nothing written."""
    from pipelines.staging.schema import load_schemas
    from pipelines.validation import DEFAULT_EXPECTATIONS_DIR, load_expectation_suites

    policy = load_policy(settings.policy_path)
    schemas = load_schemas()
    suites = load_expectation_suites(DEFAULT_EXPECTATIONS_DIR)
    missing = sorted(set(schemas) - set(suites))
    if missing:
        raise UsageError(f"no expectation suite for source(s): {', '.join(missing)} (add expectations/<source>.yaml)")
    unknown = sorted(set(settings.accepted_changes) - set(schemas) - set(PUBLISHED_TABLES))
    if unknown:
        raise UsageError(
            f"--accept-change: unknown source(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(schemas))}; or a published table such as eligibility)"
        )
    preflight(settings, policy)
    return {"policy_id": policy.policy_id, "sources": sorted(schemas)}


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run as each step is given it.

    Its settings name the attempt's own folder; ``started_at`` goes into run_audit;
    ``reuse_staged`` lets staging link what the source DAGs staged (the warehouse DAG does).
    """

    settings: Settings
    started_at: dt.datetime
    reuse_staged: bool = False

    @property
    def layout(self) -> RunLayout:
        return self.settings.layout

    def as_dict(self) -> dict:
        """What the warehouse DAG's tasks hand each other through XCom: the as-of date, the
        attempt's folder name and start, never a setting read from a Variable or Connection.

        XCom lands in Airflow's metadata database and its UI; a warehouse URL would carry its
        password there. Each task resolves its own settings (``from_dict``).
        """
        return {
            "as_of": self.settings.as_of.isoformat(),
            "attempt": self.settings.attempt,
            "started_at": self.started_at.isoformat(),
            "reuse_staged": self.reuse_staged,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object], settings: Settings) -> Attempt:
        """The attempt ``doc`` describes, with the task's own ``settings`` held to its as-of date
        and folder (a variable changed mid-run cannot move a later task to another date)."""
        pinned = dataclasses.replace(
            settings, as_of=dt.date.fromisoformat(str(doc["as_of"])), attempt=str(doc["attempt"])
        )
        return cls(pinned, dt.datetime.fromisoformat(str(doc["started_at"])), bool(doc.get("reuse_staged")))


# --- step 1: stage -----------------------------------------------------------------------------

SNAPSHOT_SUMMARY = ("source", "delivery", "checksum", "rows_in", "rows_accepted", "rows_quarantined", "rows_duplicate")


def _stage_into(source: str, settings: Settings, out_dir: Path) -> dict:
    from pipelines.staging.snapshot import stage_source

    snapshot = stage_source(
        source, landing=settings.landing, exchange_url=settings.exchange_url, as_of=settings.as_of, out_dir=out_dir
    )
    return {k: snapshot[k] for k in SNAPSHOT_SUMMARY}


def stage_for_source_dag(source: str, settings: Settings) -> dict:
    """A source DAG's staging: into the as-of date's shared folder, for the warehouse to reuse."""
    return _warn_if_stale(_stage_into(source, settings, settings.layout.shared_staged_dir), settings.as_of)


def stale_delivery(source: str, delivery: str, as_of: dt.date, max_age_days: int) -> dict | None:
    """The warning for a delivery dated more than ``max_age_days`` before the as-of date, or None.

    A late department is not a reason to stop the city's run; it is a reason to say so where
    the run is audited (run_audit.warnings) and seen (the publish task's log, the asset events).
    """
    age = (as_of - dt.date.fromisoformat(delivery)).days
    if age <= max_age_days:
        return None
    return {
        "warning": "stale_delivery",
        "source": source,
        "delivery": delivery,
        "age_days": age,
        "max_delivery_age_days": max_age_days,
        "message": f"{source}: the newest delivery, {delivery}, is {age} days older than the as-of date "
        f"{as_of} (its schema allows {max_age_days})",
    }


def _staleness(source: str, delivery: str, as_of: dt.date) -> dict | None:
    return stale_delivery(source, delivery, as_of, registry.source(source).schema.max_delivery_age_days)


def _warn_if_stale(summary: dict, as_of: dt.date) -> dict:
    if found := _staleness(summary["source"], summary["delivery"], as_of):
        log.warning("%s; the run goes on and records it in run_audit", found["message"])
    return summary


def delivery_warnings(settings: Settings) -> list[dict]:
    """The stale-delivery warnings of every source this attempt has staged, in source order."""
    found = []
    for source in source_keys():
        path = settings.layout.snapshot_file(source)
        if path.exists() and (warning := _staleness(source, _read_json(path)["delivery"], settings.as_of)):
            found.append(warning)
    return found


def stage(attempt: Attempt, source: str) -> dict:
    """Stage one source's newest complete delivery on or before the as-of date into the attempt.

    With ``reuse_staged``, what the source's own DAG staged for this as-of date from the same
    delivery folder, by the same staging code, is linked into the attempt instead (a landing
    folder with ``_SUCCESS`` never changes). The exchange form is always read afresh.
    """
    from pipelines.staging.delivery import choose_delivery
    from pipelines.staging.snapshot import staging_version

    settings, layout = attempt.settings, attempt.layout
    shared = layout.shared_staged(source)
    if attempt.reuse_staged and settings.landing is not None and (shared / SNAPSHOT_FILE).exists():
        snapshot = _read_json(shared / SNAPSHOT_FILE)
        same = snapshot["delivery"] == choose_delivery(settings.landing, source, settings.as_of).name and snapshot.get(
            "staging_version"
        ) == staging_version(source)
        if same:
            _link_snapshot(shared, layout.staged(source))
            log.info(
                "%s: delivery %s already staged for %s, reused: %d in, %d accepted, %d quarantined, %d duplicate",
                source,
                snapshot["delivery"],
                settings.as_of,
                snapshot["rows_in"],
                snapshot["rows_accepted"],
                snapshot["rows_quarantined"],
                snapshot["rows_duplicate"],
            )
            return _warn_if_stale({k: snapshot[k] for k in SNAPSHOT_SUMMARY}, settings.as_of)
    return _warn_if_stale(_stage_into(source, settings, layout.staged_dir), settings.as_of)


def _link_snapshot(shared: Path, target: Path) -> None:
    """The attempt's own copy of a shared snapshot (hard links: no bytes copied)."""
    target.mkdir(parents=True, exist_ok=True)
    snapshot = _read_json(shared / SNAPSHOT_FILE)
    for key in ("accepted_path", "quarantine_path"):
        name = Path(snapshot[key]).name
        (target / name).unlink(missing_ok=True)
        try:
            os.link(shared / name, target / name)
        except OSError:
            shutil.copy2(shared / name, target / name)
        snapshot[key] = str(target / name)
    (target / SNAPSHOT_FILE).write_text(
        json.dumps(snapshot, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
    )


def staged_snapshot(source: str, settings: Settings) -> dict:
    return _read_json(settings.layout.snapshot_file(source))


# --- step 2: validate --------------------------------------------------------------------------


def previous_accepted_rows(settings: Settings, source: str) -> int | None:
    """Accepted rows of this source in the published run, for the row-count-change check."""
    from pipelines.warehouse import read_current_run, read_table
    from pipelines.warehouse_schema import TABLES

    if read_current_run(settings.warehouse_url) is None:
        return None
    columns = TABLES["source_snapshot"].column_names
    for row in read_table(settings.warehouse_url, "source_snapshot"):
        record = dict(zip(columns, row))
        if record["source"] == source:
            return int(record["rows_accepted"])
    return None


def validate(attempt: Attempt, source: str) -> dict:
    """Run the source's expectation suite on its staged rows; raises ValidationFailed.

    A size change the engineer accepted for this run is kept beside the run's files, for
    publish to record in run_audit.
    """
    from pipelines.errors import ValidationFailed
    from pipelines.quality_page import record_validation, write_quality_page
    from pipelines.validation import read_checked_rows, suite_for, validate_staged

    settings = attempt.settings
    snapshot = staged_snapshot(source, settings)
    spec, suites = suite_for(source)
    accepted = read_checked_rows(spec, Path(snapshot["accepted_path"]))
    try:
        result = validate_staged(
            source,
            accepted,
            suites=suites,
            as_of=settings.as_of,
            previous_rows=previous_accepted_rows(settings, source),
            results_dir=settings.layout.validation_dir,
            accept_change_reason=settings.accepted_changes.get(source),
            quality_page=settings.layout.quality_page,
        )
    except ValidationFailed as failed:
        record_validation(settings.layout, source, getattr(failed, "report", None) or {"source": source})
        log.info("%s: quality page %s", source, write_quality_page(settings.layout))
        raise
    record_validation(settings.layout, source, result)
    page = write_quality_page(settings.layout)
    log.info("%s: quality page %s", source, page)
    record = settings.layout.accepted_change(source)
    record.unlink(missing_ok=True)
    if result["accepted_change"]:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(result["accepted_change"], ensure_ascii=False), encoding="utf-8")
    return {
        "source": source,
        "success": bool(result["success"]),
        "docs_path": str(result.get("docs_path", "")),
        "quality_page": str(page),
        "accepted_change": result["accepted_change"],
    }


# --- step 3: addresses -------------------------------------------------------------------------


def resolve_addresses(attempt: Attempt) -> dict:
    """Match every distinct address text of every source and place standard addresses in catchments."""
    from pipelines.addresses import AddressRegistry, build_address_match, place_in_catchments, write_review_list

    settings, layout = attempt.settings, attempt.layout
    policy = load_policy(settings.policy_path)
    known = AddressRegistry.load(settings.reference / "addresses.csv")
    staged = {}  # each source's distinct texts: a city repeats an address over its households' rows
    for source, column in registry.address_columns().items():
        path = layout.accepted_rows(source)
        if path.exists():
            staged[source] = pd.read_parquet(path, columns=[column]).drop_duplicates(ignore_index=True)
    address_match = build_address_match(staged, known)
    del staged
    layout.addresses_dir.mkdir(parents=True, exist_ok=True)
    address_match.to_parquet(layout.address_match, index=False)
    catchment = place_in_catchments(known, settings.reference / "catchments.geojson", policy.enrollment_year)
    catchment.to_parquet(layout.address_catchment, index=False)
    review = write_review_list(address_match, layout.review_dir, known)
    counts = address_match["status"].value_counts().to_dict()
    log.info("addresses: %s texts, by status %s", len(address_match), counts)
    return {
        "texts": int(len(address_match)),
        "by_status": {k: int(v) for k, v in counts.items()},
        "review_lists": [str(p) for p in review],
    }


# --- step 4: join and decide, bucket by bucket (pipelines/engine/buckets.py) --------------------


def run_id_for(settings: Settings) -> str:
    """Deterministic: the same as-of date, deliveries, reference, policy and code give the same
    run_id; a change to any of them gives another."""
    digest = hashlib.sha256()
    digest.update(__version__.encode())
    digest.update(settings.policy_path.read_bytes())
    for name in REFERENCE_FILES:
        with open(settings.reference / name, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    for source in source_keys():
        digest.update(staged_snapshot(source, settings)["checksum"].encode())
    return f"{settings.as_of:%Y%m%d}-{digest.hexdigest()[:10]}"


RESIDENTS_PER_BUCKET = 500_000


def engine_buckets(residents: int) -> int:
    """About half a million residents per bucket keeps the engine near 4 GB at any city size."""
    return max(1, -(-int(residents) // RESIDENTS_PER_BUCKET))


def bucket_count(settings: Settings) -> int:
    """The engine's buckets: ``zerocert_engine_buckets`` / ``ZEROCERT_ENGINE_BUCKETS`` when set
    (more than 0), else from the city's size (``engine_buckets``)."""
    if settings.engine_buckets > 0:
        return settings.engine_buckets
    return engine_buckets(staged_snapshot(registry.population_source(), settings)["rows_accepted"])


def engine_work(attempt: Attempt):
    """The attempt's engine work folder, where the engine's stages hand each other their bucket
    files: ``RunLayout.engine_work_dir``, or under ``zerocert_engine_work_url`` when set."""
    from pipelines.engine.buckets import WorkFolder

    return WorkFolder(attempt.layout.engine_work_location(attempt.settings.engine_work_url))


def bucket_inputs(attempt: Attempt) -> dict:
    """Split the staged rows by bucket and plan the engine's per-bucket steps.

    Returns the run id and the buckets the per-bucket steps run over, each as
    ``{"bucket": b, "bucket_count": n}`` (b from 0): the keyword arguments the warehouse DAG maps
    its per-bucket tasks over.
    """
    from pipelines.engine.buckets import bucket_inputs as split_inputs

    settings = attempt.settings
    run_id = run_id_for(settings)
    plan = split_inputs(
        settings.layout.staged_dir,
        engine_work(attempt),
        bucket_count(settings),
        run_id,
        address_dir=attempt.layout.addresses_dir,
    )
    count = int(plan["buckets"])
    return {
        "run_id": run_id,
        "bucket_count": count,
        "buckets": [{"bucket": bucket, "bucket_count": count} for bucket in range(count)],
    }


def join_bucket(attempt: Attempt, bucket: int) -> dict:
    """One person bucket's citizen, holdings and employment tables, facts and children."""
    from pipelines.engine.buckets import join_bucket as join

    return join(engine_work(attempt), attempt.layout.addresses_dir, load_policy(attempt.settings.policy_path), bucket)


def route_edges(attempt: Attempt) -> dict:
    """Every bucket's children and guardianship together; their edges routed to the holders' buckets."""
    from pipelines.engine.buckets import route_edges as route

    return route(engine_work(attempt), load_policy(attempt.settings.policy_path))


def link_bucket(attempt: Attempt, bucket: int) -> dict:
    """One holder bucket's facts on the edges that reach it, routed to the children's buckets."""
    from pipelines.engine.buckets import link_bucket as link

    return link(engine_work(attempt), bucket)


def decide_bucket(attempt: Attempt, bucket: int) -> dict:
    """Eligibility and ineligibility of one bucket's school-age children."""
    from pipelines.engine.buckets import decide_bucket as decide

    return decide(engine_work(attempt), attempt.layout.addresses_dir, load_policy(attempt.settings.policy_path), bucket)


def prefill_bucket(attempt: Attempt, bucket: int) -> dict:
    """The prefill documents of one bucket's guardians."""
    from pipelines.engine.buckets import prefill_bucket as prefill

    return prefill(engine_work(attempt), load_policy(attempt.settings.policy_path), bucket)


def gather_buckets(attempt: Attempt) -> dict:
    """The engine's tables, one Parquet each under the run folder, from every bucket's parts."""
    from pipelines.engine.buckets import gather_buckets as gather
    from pipelines.engine.buckets import read_plan

    work = engine_work(attempt)
    plan = read_plan(work)
    paths = gather(work, attempt.layout.tables_dir)
    log.info(
        "join and decide: run %s in %d bucket(s), rows per table %s",
        plan["run_id"],
        plan["buckets"],
        {name: pq.ParquetFile(path).metadata.num_rows for name, path in paths.items()},
    )
    return {"run_id": plan["run_id"], "tables": {name: str(path) for name, path in paths.items()}}


# --- step 5: publish ---------------------------------------------------------------------------


def _with_run_id(path: Path, run_id: str, out: Path) -> Path:
    table = pq.read_table(path)
    if "run_id" in table.column_names:
        table = table.drop_columns(["run_id"])
    table = table.append_column("run_id", pa.array([run_id] * table.num_rows, type=pa.string()))
    pq.write_table(table, out)
    return out


def audit_tables(settings: Settings, run_id: str) -> dict[str, Path]:
    """quarantine, source_snapshot and address_match for this run, as Parquet."""
    out = settings.layout.tables_dir
    out.mkdir(parents=True, exist_ok=True)
    snapshots, quarantines = [], []
    for source in source_keys():
        snap = staged_snapshot(source, settings)
        snapshots.append({k: snap[k] for k in SNAPSHOT_SUMMARY})
        quarantines.append(pd.read_parquet(snap["quarantine_path"]))
    pd.DataFrame(snapshots).to_parquet(out / "source_snapshot.pre.parquet", index=False)
    pd.concat(quarantines, ignore_index=True).to_parquet(out / "quarantine.pre.parquet", index=False)
    return {
        "source_snapshot": _with_run_id(out / "source_snapshot.pre.parquet", run_id, out / "source_snapshot.parquet"),
        "quarantine": _with_run_id(out / "quarantine.pre.parquet", run_id, out / "quarantine.parquet"),
        "address_match": _with_run_id(settings.layout.address_match, run_id, out / "address_match.parquet"),
    }


def run_record(
    settings: Settings, run_id: str, started_at: dt.datetime, accepted_tables: Sequence[Mapping] = ()
) -> dict:
    """The run_audit record; ``accepted_changes`` holds the sources' accepted size changes and
    ``accepted_tables``, the published tables' (``guard_published_tables``)."""
    accepted = [
        _read_json(path) for source in source_keys() if (path := settings.layout.accepted_change(source)).exists()
    ] + [dict(change) for change in accepted_tables]
    return {
        "run_id": run_id,
        "as_of": settings.as_of,
        "policy_id": load_policy(settings.policy_path).policy_id,
        "started_at": started_at,
        "code_version": __version__,
        "accepted_changes": accepted,
        "warnings": delivery_warnings(settings),
    }


def table_rows(tables: Mapping[str, Path]) -> dict[str, int]:
    """Rows of each table about to be published (a table not given is published empty)."""
    return {name: pq.ParquetFile(tables[name]).metadata.num_rows if name in tables else 0 for name in PUBLISHED_TABLES}


def _remove_engine_work(attempt: Attempt) -> None:
    """The engine's bucket files, which nothing reads after the switch; a failure to remove them
    is a warning, never a failed publish."""
    from pipelines.engine.buckets import shown_location

    try:
        engine_work(attempt).clear()
    except Exception as exc:
        reason = shown_location(str(exc), strip_query=False)[:200]
        log.warning("could not remove the engine's work folder: %s: %s", type(exc).__name__, reason)


def publish(attempt: Attempt, decided: dict) -> dict:
    """Load every table and switch the warehouse to this run in one transaction.

    A table emptied, or shrunk beyond ``max_table_shrink`` of the published run, is refused
    unless accepted (``--accept-change TABLE``); after an accepted source size change the
    tables may follow it, but none may be emptied (pipelines/preflight.py).
    """
    from pipelines.warehouse import ensure_warehouse, publish_run

    settings = attempt.settings
    run_id = decided["run_id"]
    tables = {name: Path(path) for name, path in decided["tables"].items()}
    tables.update(audit_tables(settings, run_id))
    from pipelines.access import build_access_tables, hmac_key_from_config

    tables.update(
        build_access_tables(
            tables, settings.reference / "schools.csv", hmac_key_from_config(), settings.layout.access_tables_dir
        )
    )
    from pipelines.marts import build_mart_tables

    tables.update(build_mart_tables(tables, settings, run_id))
    from pipelines.quality_page import write_quality_page

    sources_accepted = any(settings.layout.accepted_change(source).exists() for source in source_keys())
    accepted = guard_published_tables(
        published_row_counts(settings),
        table_rows(tables),
        None if sources_accepted else settings.max_table_shrink,
        settings.accepted_changes,
    )
    for change in accepted:
        log.warning(
            "table %s: %d rows -> %d accepted by an engineer (%s)",
            change["table"],
            change["previous_rows"],
            change["rows"],
            change["reason"],
        )
    ensure_warehouse(settings.warehouse_url)
    record = run_record(settings, run_id, attempt.started_at, accepted)
    counts = publish_run(settings.warehouse_url, record, tables)
    log.info("published run %s to %s", run_id, redact_url(settings.warehouse_url))
    _remove_engine_work(attempt)
    for warning in record["warnings"]:
        log.warning("published despite: %s", warning["message"])
    page = write_quality_page(settings.layout, published=counts, run_id=run_id)
    log.info("quality page %s", page)
    return {
        "run_id": run_id,
        "warehouse": redact_url(settings.warehouse_url),
        "quality_page": str(page),
        "row_counts": {name: int(rows) for name, rows in counts.items()},
        "warnings": record["warnings"],
    }


# --- after publish: the education bureau's report (the warehouse DAG's last task) -------------


def write_report(attempt: Attempt) -> dict:
    """The report from what was just published, under ``layout.reports_dir``."""
    from pipelines.report import write_run_report

    return write_run_report(attempt.settings)


# --- the steps, declared once --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a run, bound to the one function that does it.

    ``name`` is the warehouse DAG's task id (``<name>_<source>`` for a step done per source; a
    step done per bucket is one task mapped over the buckets ``bucket_inputs`` planned) and the
    key of its result; ``takes`` names the earlier step whose result the function also takes.
    """

    name: str
    do: Callable[..., dict]
    progress: str
    per_source: bool = False
    per_bucket: bool = False
    takes: str | None = None

    def task_ids(self, sources: list[str]) -> list[str]:
        return [f"{self.name}_{source}" for source in sources] if self.per_source else [self.name]


BUCKET_PLAN = "bucket_inputs"  # the step whose result lists the buckets the per-bucket steps run over

STEPS: tuple[Step, ...] = (
    Step("stage", stage, "stage {source}", per_source=True),
    Step("validate", validate, "validate {source}", per_source=True),
    Step("resolve_addresses", resolve_addresses, "resolve addresses"),
    Step(BUCKET_PLAN, bucket_inputs, "split the staged rows into the engine's buckets"),
    Step("join_bucket", join_bucket, "join residents, {bucket}", per_bucket=True),
    Step("route_edges", route_edges, "route child-guardian edges to their buckets"),
    Step("link_bucket", link_bucket, "link guardians' facts, {bucket}", per_bucket=True),
    Step("decide_bucket", decide_bucket, "decide eligibility, {bucket}", per_bucket=True),
    Step("prefill_bucket", prefill_bucket, "prefill guardians, {bucket}", per_bucket=True),
    Step("gather_buckets", gather_buckets, "gather the engine's tables"),
    Step("publish", publish, "publish", takes="gather_buckets"),
)
# The engine's steps: from the staged rows to one Parquet per published table ("join +
# eligibility" in ``zerocert bench``).
ENGINE_STEPS = (
    BUCKET_PLAN,
    "join_bucket",
    "route_edges",
    "link_bucket",
    "decide_bucket",
    "prefill_bucket",
    "gather_buckets",
)
# The warehouse DAG writes the report after it publishes; ``zerocert run`` leaves that to
# ``zerocert report``, and the bench does not time it.
REPORT = Step("report", write_report, "write the report")
WAREHOUSE_DAG_STEPS: tuple[Step, ...] = (*STEPS, REPORT)


def do_step(
    step: Step,
    attempt: Attempt,
    done: Mapping[str, dict],
    progress: Callable[[str], None] = lambda message: None,
    workers: int = 1,
) -> dict:
    """Do one declared step: for every source in order when it is per source ({source: result}),
    for every planned bucket in order when it is per bucket ({bucket: result}).

    With ``workers`` > 1 the sources or buckets of a step run in that many processes at once,
    as the warehouse DAG's tasks do on an executor; they share nothing but the attempt's files.
    """
    from pipelines.engine.buckets import bucket_label

    if step.per_source:
        items = {source: step.progress.format(source=source) for source in source_keys()}
        return _each(step, attempt, items, progress, workers)
    if step.per_bucket:
        items = {
            each["bucket"]: step.progress.format(bucket=bucket_label(each["bucket"], each["bucket_count"]))
            for each in done[BUCKET_PLAN]["buckets"]
        }
        return _each(step, attempt, items, progress, workers)
    arguments = (attempt, *([done[step.takes]] if step.takes else []))
    if workers > 1:  # in a process of its own, as the DAG's task: what it held goes back when it ends
        return in_fresh_processes(step.do, {step.progress: arguments}, workers, progress)[step.progress]
    progress(step.progress)
    return step.do(*arguments)


def _each(
    step: Step, attempt: Attempt, items: Mapping[object, str], progress: Callable[[str], None], workers: int
) -> dict:
    """``step.do(attempt, item)`` for every item, results in the items' order."""
    if workers > 1:
        calls = {label: (attempt, item) for item, label in items.items()}
        results = in_fresh_processes(step.do, calls, workers, progress)
        return {item: results[label] for item, label in items.items()}
    results = {}
    for item, label in items.items():
        progress(label)
        results[item] = step.do(attempt, item)
    return results


def in_fresh_processes(
    do: Callable[..., dict], calls: Mapping[str, tuple], workers: int, progress: Callable[[str], None]
) -> dict[str, dict]:
    """``do(*arguments)`` for every call (by its label), at most ``workers`` at once, each in a
    new process; ``progress`` is told each label as its result is awaited, in order.

    Each process is forked from a server that has only imported the pipeline (forkserver: not a
    fork of one holding Arrow's threads) and does one call, so the memory a call took goes back
    to the machine when it ends instead of staying in a reused worker beside the next call.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pipelines.masking import configure_logging

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipelines.run", "pipelines.engine.buckets", "pipelines.staging", "pipelines.gx"])
    with ProcessPoolExecutor(
        min(workers, len(calls)), mp_context=context, initializer=configure_logging, max_tasks_per_child=1
    ) as pool:
        futures = {label: pool.submit(do, *arguments) for label, arguments in calls.items()}
        results = {}
        for label, future in futures.items():
            progress(label)
            results[label] = future.result()
        return results


def published_row_counts(settings: Settings) -> dict[str, int]:
    """Rows per table of the run the warehouse now holds (from run_audit)."""
    from pipelines.warehouse import read_current_run

    current = read_current_run(settings.warehouse_url) or {}
    counts = current.get("row_counts") or {}
    if isinstance(counts, str):
        counts = json.loads(counts)
    return {name: int(n) for name, n in counts.items()}


def record_failure(settings: Settings, started_at: dt.datetime, reason: str) -> None:
    """Note a failed run in run_audit; the published tables stay as they were."""
    from pipelines.warehouse import ensure_warehouse, record_failed_run

    run_id = f"{settings.as_of:%Y%m%d}-failed-{started_at:%H%M%S}"
    try:
        ensure_warehouse(settings.warehouse_url)
        record_failed_run(settings.warehouse_url, run_record(settings, run_id, started_at), reason)
    except Exception as exc:  # the original failure matters more than its bookkeeping
        log.warning("could not record the failed run in run_audit: %s", exc)


def redact_url(url: str) -> str:
    """Hide a password in a SQLAlchemy URL before it is printed."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


# --- the whole run ------------------------------------------------------------------------------

CLI_ATTEMPT = "cli-"


@contextlib.contextmanager
def work_folder_lock(settings: Settings, started_at: dt.datetime) -> Iterator[dict | None]:
    """One ``zerocert run`` at a time per work folder.

    Yields what a previous holder left in the lock file when it was killed before it finished
    (its as-of date and start), or None. A second run meanwhile exits 2 naming the holder.
    """
    path = settings.layout.lock_file
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(handle)
            raise UsageError(
                f"another zerocert run is using the work folder {settings.work_dir} "
                f"(pid {holder.get('pid', '?')}, as-of {holder.get('as_of', '?')}, started "
                f"{holder.get('started_at', '?')}); wait for it to finish or give another "
                "--work-dir"
            ) from None
        unfinished = _lock_holder(handle) or None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "as_of": settings.as_of.isoformat(),
                    "started_at": started_at.isoformat(),
                    "attempt": settings.attempt,
                }
            )
        )
        handle.flush()
        yield unfinished
        handle.seek(0)
        handle.truncate()
    finally:
        handle.close()  # closing releases the lock


def _lock_holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


def mark_abandoned(settings: Settings, unfinished: dict) -> None:
    """A killed attempt's ``started`` run_audit row becomes ``abandoned`` (never left started)."""
    from pipelines.warehouse import mark_run_abandoned

    started = dt.datetime.fromisoformat(unfinished["started_at"])
    if mark_run_abandoned(settings.warehouse_url, started):
        log.warning(
            "the run started %s (as-of %s) ended before it finished; marked abandoned",
            unfinished["started_at"],
            unfinished.get("as_of"),
        )


def run_pipeline(
    settings: Settings,
    *,
    now: Callable[[], dt.datetime] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    workers: int = 1,
) -> dict:
    """Stage, validate, resolve, join, decide and publish; on failure the old run stays.

    The run holds the work folder's lock and works in its own attempt folder; ``workers``
    processes do a step's sources or buckets at once (``do_step``).
    """
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    started_at = clock()
    if not settings.attempt:
        settings = settings.with_attempt(f"{CLI_ATTEMPT}{started_at:%Y%m%dT%H%M%S%f}-{os.getpid()}")
    check_configuration(settings)
    with work_folder_lock(settings, started_at) as unfinished:
        if unfinished:
            mark_abandoned(settings, unfinished)
        settings.layout.prune_attempts(CLI_ATTEMPT)
        return _run_steps(Attempt(settings, started_at), progress, workers)


def _run_steps(attempt: Attempt, progress: Callable[[str], None], workers: int = 1) -> dict:
    done: dict[str, dict] = {}
    try:
        for step in STEPS:
            done[step.name] = do_step(step, attempt, done, progress, workers)
    except ZerocertError as exc:
        record_failure(attempt.settings, attempt.started_at, str(exc))
        raise
    return done["publish"]
