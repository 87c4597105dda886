"""``zerocert demo``: a small synthetic city through the real Airflow DAGs, then what to look at.

Everything lives in one folder (default ``.demo``): the city, the Airflow home with its SQLite
metadata database, the work files and the SQLite warehouse.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipelines.data import data_path
from pipelines.errors import ZerocertError
from pipelines.layout import RunLayout
from pipelines.masking import mask_ids_in
from pipelines.report import report_path
from pipelines.run import source_keys

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


def demo_environment(out: Path, as_of: str) -> dict[str, str]:
    """The variables that point Airflow and zerocert at the demo folder."""
    return {
        "ZEROCERT_HMAC_KEY_FILE": str(demo_hmac_key_file(out)),
        "ZEROCERT_HOME": str(out),
        "ZEROCERT_LANDING": str(out / "city" / "landing"),
        "ZEROCERT_REFERENCE": str(out / "city" / "reference"),
        "ZEROCERT_WAREHOUSE_URL": f"sqlite:///{out / 'warehouse.sqlite'}",
        "ZEROCERT_WORK_DIR": str(out / "work"),
        "ZEROCERT_AS_OF": as_of,
        "AIRFLOW_HOME": str(out / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{out / 'airflow' / 'airflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
    }


def _airflow(args: list[str], env: dict[str, str], log_path: Path) -> None:
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
    env = demo_environment(out, as_of)
    url = env["ZEROCERT_WAREHOUSE_URL"]
    if warehouse_as_connection:
        env["ZEROCERT_WAREHOUSE_URL"] = ""
        env["AIRFLOW_CONN_ZEROCERT_WAREHOUSE"] = url
    progress("preparing the Airflow metadata database (SQLite)")
    _airflow(["db", "migrate"], env, out / "logs" / "airflow-db-migrate.log")
    for source in source_keys() if source_dags is None else source_dags:
        progress(f"airflow dags test zerocert_source_{source}")
        _airflow(["dags", "test", f"zerocert_source_{source}"], env, out / "logs" / f"zerocert_source_{source}.log")
    progress("airflow dags test zerocert_warehouse")
    _airflow(["dags", "test", "zerocert_warehouse"], env, out / "logs" / "zerocert_warehouse.log")

    facts = warehouse_summary(url)
    both, extra, missing = truth_agreement(url, out / "city" / "truth")
    exports = [
        f"export {k}={v}" for k, v in env.items() if k.startswith(("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS", "ZEROCERT_"))
    ]
    print()
    print("zerocert demo: the DAGs ran and published a warehouse")
    print(f"  run: {json.dumps(facts['run'], default=str, ensure_ascii=False)}")
    print("\nWhere every delivered row went (source_snapshot):")
    print(facts["snapshots"].to_string(index=False))
    print("\nEligibility by level and category:")
    print(facts["categories"].to_string(index=False))
    print(f"\nChildren with no school at their level (ineligibility): {facts['ineligible']}")
    print("\nAddress texts by match status (address_match):")
    print(facts["addresses"].to_string(index=False))
    print(
        f"\nAgainst the synthetic city's ground truth: {both} eligibility rows agree, {extra} extra, {missing} missing"
    )
    print("\nThe README's commands (zerocert lookup, check-address, run, report) find this city after one line:")
    print(f"    . .venv/bin/activate && export ZEROCERT_HOME={shlex.quote(str(out))}")
    print("\nLook at:")
    print(f"  warehouse (SQLite):   sqlite3 {out / 'warehouse.sqlite'} '.tables'")
    if facts["sample_guardian"]:
        print(
            f"  a parent's screen:    zerocert lookup "
            f"$(sqlite3 {out / 'warehouse.sqlite'} 'SELECT guardian_id FROM prefill LIMIT 1')"
        )
    layout = RunLayout(Path(env["ZEROCERT_WORK_DIR"]), dt.date.fromisoformat(as_of))
    print(f"  validation Data Docs: {layout.data_docs}")
    reviews = [
        review
        for attempt in layout.attempt_dirs()
        if (review := RunLayout(layout.work_dir, layout.as_of, attempt.name).review_dir).is_dir()
    ]
    print(f"  address review lists: {reviews[-1] if reviews else layout.attempts_dir}")
    print(f"  the bureau's report:  {report_path(layout.work_dir, layout.as_of)}")
    print(f"  DAG logs:             {out / 'logs'}")
    print("  Airflow UI (the DAGs, their runs and logs), then open http://localhost:8080:")
    for line in exports:
        print(f"    {line}")
    print("    . .venv/bin/activate && airflow standalone    # prints the admin password")
    return 0
