"""``zerocert demo``: a small synthetic city through the real Airflow DAGs, then what to look at.

Everything lives in one folder (default ``.demo``): the city, the Airflow home with its SQLite
metadata database, the work files and the SQLite warehouse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipelines.data import data_path
from pipelines.errors import ZerocertError
from pipelines.layout import RunLayout
from pipelines.masking import mask_ids_in
from pipelines.report import report_path
from pipelines.run import redact_url, source_keys

DAGS_DIR = data_path("dags")  # package data: the demo runs from a wheel as from a checkout


def demo_hmac_key_file(out: Path) -> Path:
    """The demo's own random pseudonymization key (configuration, made once, never in code)."""
    import secrets

    path = out / "hmac.key"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32), encoding="ascii")
        path.chmod(0o600)
    return path


DEMO_PORT = 8080
AIRFLOW_EXPORTS = ("AIRFLOW_HOME", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__DAGS_FOLDER")
DAGS_TIMEZONE = "Asia/Shanghai"  # the DAGs' start dates and schedules are Shanghai time


def airflow_settings(out: Path, port: int = DEMO_PORT) -> dict[tuple[str, str], str]:
    """The demo's Airflow: ours alone (no example DAGs) and small enough for a 2-core laptop.

    One of each process, two task slots and one API worker keep it well under 3 GB; task logs go
    to the folder the API server reads, so the UI opens them.
    """
    home = out / "airflow"
    return {
        ("core", "dags_folder"): str(DAGS_DIR),
        ("core", "load_examples"): "False",
        ("core", "executor"): "LocalExecutor",
        ("core", "parallelism"): "2",
        ("core", "max_active_tasks_per_dag"): "2",
        ("core", "default_timezone"): DAGS_TIMEZONE,
        ("core", "execution_api_server_url"): f"http://127.0.0.1:{port}/execution/",
        ("core", "simple_auth_manager_users"): "admin:admin",
        ("database", "sql_alchemy_conn"): f"sqlite:///{home / 'airflow.db'}",
        ("logging", "base_log_folder"): str(home / "logs"),
        ("api", "host"): "127.0.0.1",
        ("api", "port"): str(port),
        ("api", "workers"): "1",
        ("dag_processor", "parsing_processes"): "1",
        ("scheduler", "enable_health_check"): "False",
    }


def password_file(out: Path) -> Path:
    """Where the simple auth manager writes the generated password of the user ``admin``."""
    return out / "airflow" / "simple_auth_manager_passwords.json.generated"


def write_airflow_config(
    out: Path, port: int = DEMO_PORT, settings: Mapping[tuple[str, str], str] | None = None
) -> Path:
    """``airflow.cfg`` in the demo's Airflow home, so that any ``airflow`` command run there
    (even ``airflow standalone`` with only ``AIRFLOW_HOME`` set) is the demo's small Airflow.

    ``settings``: another Airflow than ``airflow_settings`` (the Celery demo's)."""
    import secrets

    home = out / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    secret = home / "jwt.secret"
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(32), encoding="ascii")
        secret.chmod(0o600)
    sections: dict[str, list[str]] = {}
    for (section, key), value in (airflow_settings(out, port) if settings is None else settings).items():
        sections.setdefault(section, []).append(f"{key} = {value}")
    sections.setdefault("api_auth", []).append(f"jwt_secret = {secret.read_text(encoding='ascii').strip()}")
    text = "".join(f"[{name}]\n" + "\n".join(lines) + "\n\n" for name, lines in sections.items())
    path = home / "airflow.cfg"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def airflow_environment(settings: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """Airflow settings as the ``AIRFLOW__SECTION__KEY`` variables that override ``airflow.cfg``."""
    return {f"AIRFLOW__{section.upper()}__{key.upper()}": value for (section, key), value in settings.items()}


def demo_environment(
    out: Path, as_of: str, port: int = DEMO_PORT, settings: Mapping[tuple[str, str], str] | None = None
) -> dict[str, str]:
    """The variables that point Airflow and zerocert at the demo folder (``settings`` as in
    ``write_airflow_config``)."""
    airflow = airflow_environment(airflow_settings(out, port) if settings is None else settings)
    return {
        "ZEROCERT_HMAC_KEY_FILE": str(demo_hmac_key_file(out)),
        "ZEROCERT_HOME": str(out),
        "ZEROCERT_LANDING": str(out / "city" / "landing"),
        "ZEROCERT_REFERENCE": str(out / "city" / "reference"),
        "ZEROCERT_WAREHOUSE_URL": f"sqlite:///{out / 'warehouse.sqlite'}",
        "ZEROCERT_WORK_DIR": str(out / "work"),
        "ZEROCERT_AS_OF": as_of,
        "AIRFLOW_HOME": str(out / "airflow"),
        **airflow,
        "GX_ANALYTICS_ENABLED": "false",
    }


def demo_as_of(out: Path) -> str:
    """The synthetic city's as-of date (kept by ``run_demo``), for serving the UI on a finished demo."""
    path = out / "as_of"
    return path.read_text(encoding="ascii").strip() if path.exists() else "2027-08-15"


def run_airflow(args: list[str], env: dict[str, str], log_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log_file:
        done = subprocess.run(
            [str(airflow), *args], env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, check=False
        )
    text = log_path.read_text(encoding="utf-8", errors="replace")
    failed = done.returncode != 0 or "state=failed" in text or "DagRunState.FAILED" in text
    if failed:
        tail = "\n".join(mask_ids_in(line) for line in text.splitlines()[-25:])
        raise ZerocertError(f"`airflow {' '.join(args)}` failed; log: {log_path}\n{tail}")


TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


def task_log_sections(text: str) -> dict[tuple[str, int], list[str]]:
    """Each task's own lines in an ``airflow dags test`` log, keyed by (task id, map index).

    ``dags test`` runs the tasks one after the other in one process and writes no task log files;
    its markers around each task are what tells their lines apart.
    """
    sections: dict[tuple[str, int], list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if started := TASK_START.search(line):
            current = sections.setdefault((started.group(1), int(started.group(2))), [])
        if current is not None:
            current.append(line)
        if TASK_END.search(line):
            current = None
    return sections


CONSOLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+Z) \[(\w+)\s*\] (.*)$")


def as_log_record(line: str) -> dict[str, str]:
    """A console log line of ``dags test`` as the JSON record Airflow's task logs hold (time, level, event)."""
    parsed = CONSOLE_LINE.match(line)
    if parsed is None:
        return {"event": line}
    timestamp, level, event = parsed.groups()
    return {"timestamp": timestamp, "level": level, "event": event.rstrip()}


def write_task_logs(dag_id: str, dags_test_log: Path, out: Path) -> int:
    """File each task's lines of a ``dags test`` run where the Airflow UI reads task logs.

    The path follows Airflow's default ``log_filename_template``; returns the number of files written.
    """
    import sqlite3

    text = dags_test_log.read_text(encoding="utf-8", errors="replace")
    finished = re.search(rf"DagRun Finished: dag_id={re.escape(dag_id)}, .*?run_id=([^,\s]+),", text)
    if finished is None:
        return 0
    run_id = finished.group(1)
    with contextlib.closing(sqlite3.connect(out / "airflow" / "airflow.db")) as db:
        tries = db.execute(
            "SELECT task_id, map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    sections = task_log_sections(text)
    folder = out / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    written = 0
    for task_id, map_index, try_number in tries:
        lines = sections.get((task_id, map_index))
        if not lines:
            continue
        mapped = f"map_index={map_index}/" if map_index >= 0 else ""
        path = folder / f"task_id={task_id}" / f"{mapped}attempt={max(try_number, 1)}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(as_log_record(line), ensure_ascii=False) + "\n" for line in lines), "utf-8")
        written += 1
    return written


def _dags_test(dag_id: str, env: dict[str, str], out: Path) -> None:
    log = out / "logs" / f"{dag_id}.log"
    try:
        run_airflow(["dags", "test", dag_id], env, log)
    finally:
        write_task_logs(dag_id, log, out)


def warehouse_summary(url: str) -> dict:
    """What a newcomer checks first, read back from the warehouse."""
    engine = sa.create_engine(url)
    with engine.connect() as db:
        run = (
            db.execute(
                sa.text(
                    "SELECT run_id, as_of, policy_id, status FROM run_audit "
                    "WHERE status = 'published' ORDER BY finished_at DESC LIMIT 1"
                )
            )
            .mappings()
            .first()
        )
        snapshots = pd.read_sql(
            "SELECT source, delivery, rows_in, rows_accepted, rows_quarantined, "
            "rows_duplicate FROM source_snapshot ORDER BY source",
            db,
        )
        categories = pd.read_sql(
            "SELECT level, category, COUNT(*) AS rows, COUNT(DISTINCT child_id) AS children "
            "FROM eligibility GROUP BY level, category ORDER BY level, category",
            db,
        )
        ineligible = db.execute(sa.text("SELECT COUNT(*) FROM ineligibility")).scalar_one()
        guardian = db.execute(sa.text("SELECT guardian_id FROM prefill ORDER BY guardian_id LIMIT 1")).scalar()
        addresses = pd.read_sql(
            "SELECT status, COUNT(*) AS texts FROM address_match GROUP BY status ORDER BY status", db
        )
    engine.dispose()
    return {
        "run": dict(run) if run else None,
        "snapshots": snapshots,
        "categories": categories,
        "ineligible": int(ineligible),
        "sample_guardian": guardian,
        "addresses": addresses,
    }


def truth_agreement(url: str, truth_dir: Path) -> tuple[int, int, int]:
    """(rows in both, rows only in the warehouse, rows only in the truth) of eligibility."""
    engine = sa.create_engine(url)
    with engine.connect() as db:
        got = pd.read_sql("SELECT child_id, level, school_code, category FROM eligibility", db)
    engine.dispose()
    truth = pd.read_csv(truth_dir / "eligibility.csv", dtype=str)
    keys = ["child_id", "level", "school_code", "category"]
    merged = got[keys].astype(str).merge(truth[keys], how="outer", indicator=True)
    counts = merged["_merge"].value_counts()
    return int(counts.get("both", 0)), int(counts.get("left_only", 0)), int(counts.get("right_only", 0))


def run_demo(
    out: Path,
    *,
    people: int,
    seed: int,
    progress: Callable[[str], None],
    source_dags: list[str] | None = None,
    warehouse_as_connection: bool = False,
) -> int:
    """Synthesize, run the staging DAGs (all, or those of ``source_dags``) and the warehouse DAG.

    ``warehouse_as_connection`` hands the warehouse to Airflow as the connection
    ``zerocert_warehouse`` instead of ``ZEROCERT_WAREHOUSE_URL``, as a deployment would.
    """
    from pipelines.synth import synthesize

    out = out.resolve()
    progress(f"synthesizing a city of {people} people in {out / 'city'}")
    summary = synthesize(out / "city", people, seed)
    as_of = str(summary.get("as_of", "2027-08-15"))
    (out / "as_of").write_text(as_of, encoding="ascii")
    env = demo_environment(out, as_of)
    url = env["ZEROCERT_WAREHOUSE_URL"]
    if warehouse_as_connection:
        env["ZEROCERT_WAREHOUSE_URL"] = ""
        env["AIRFLOW_CONN_ZEROCERT_WAREHOUSE"] = url
    write_airflow_config(out)
    progress("preparing the Airflow metadata database (SQLite)")
    run_airflow(["db", "migrate"], env, out / "logs" / "airflow-db-migrate.log")
    for source in source_keys() if source_dags is None else source_dags:
        progress(f"airflow dags test zerocert_source_{source}")
        _dags_test(f"zerocert_source_{source}", env, out)
    progress("airflow dags test zerocert_warehouse")
    _dags_test("zerocert_warehouse", env, out)

    print_summary(
        env,
        url,
        title="zerocert demo: the DAGs ran and published a warehouse",
        truth_dir=out / "city" / "truth",
        look_at=[
            ("DAG logs", f"{out / 'logs'} (each task's log also opens in the Airflow UI)"),
            ("Airflow UI", f"make demo-ui, or .venv/bin/zerocert demo --serve --out {out}"),
            ("stop all it started", f"make demo-stop, or .venv/bin/zerocert demo --stop --out {out}"),
        ],
    )
    return 0


def print_summary(
    env: Mapping[str, str], url: str, *, title: str, truth_dir: Path | None, look_at: list[tuple[str, str]]
) -> None:
    """What a demo prints once its DAGs have published: the warehouse's facts, the agreement with
    the synthetic city's truth (when ``truth_dir`` holds one), where to look (the demo's own
    ``look_at`` lines last) and the exports that point the airflow CLI at the demo."""
    facts = warehouse_summary(url)
    exports = [f"export {k}={v}" for k, v in env.items() if k in AIRFLOW_EXPORTS or k.startswith("ZEROCERT_")]
    print()
    print(title)
    print(f"  run: {json.dumps(facts['run'], default=str, ensure_ascii=False)}")
    print("\nWhere every delivered row went (source_snapshot):")
    print(facts["snapshots"].to_string(index=False))
    print("\nEligibility by level and category:")
    print(facts["categories"].to_string(index=False))
    print(f"\nChildren with no school at their level (ineligibility): {facts['ineligible']}")
    print("\nAddress texts by match status (address_match):")
    print(facts["addresses"].to_string(index=False))
    if truth_dir is not None and (truth_dir / "eligibility.csv").exists():
        both, extra, missing = truth_agreement(url, truth_dir)
        print(
            f"\nAgainst the synthetic city's ground truth: {both} eligibility rows agree, "
            f"{extra} extra, {missing} missing"
        )
    home = Path(env["ZEROCERT_HOME"])
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file == str(home / "warehouse.sqlite"):
        print("\nThe README's commands (zerocert lookup, check-address, run, report) find this city after one line:")
        print(f"    . .venv/bin/activate && export ZEROCERT_HOME={shlex.quote(str(home))}")
    print("\nLook at:")
    if sqlite_file:
        print(f"  warehouse (SQLite):   sqlite3 {sqlite_file} '.tables'")
        if facts["sample_guardian"]:
            print(
                f"  a parent's screen:    zerocert lookup "
                f"$(sqlite3 {sqlite_file} 'SELECT guardian_id FROM prefill LIMIT 1')"
            )
    else:
        print(f"  warehouse:            {redact_url(url)}")
    layout = RunLayout(Path(env["ZEROCERT_WORK_DIR"]), dt.date.fromisoformat(env["ZEROCERT_AS_OF"]))
    print(f"  validation Data Docs: {layout.data_docs}")
    reviews = [
        review
        for attempt in layout.attempt_dirs()
        if (review := RunLayout(layout.work_dir, layout.as_of, attempt.name).review_dir).is_dir()
    ]
    print(f"  address review lists: {reviews[-1] if reviews else layout.attempts_dir}")
    print(f"  the bureau's report:  {report_path(layout.work_dir, layout.as_of)}")
    for label, where in look_at:
        print(f"  {label + ':':<21} {where}")
    print("  the airflow CLI on the demo (its airflow.cfg holds the rest):")
    for line in exports:
        print(f"    {line}")
