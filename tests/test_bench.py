"""``zerocert bench``: every phase of the run is timed, the baseline is measured in the same
process into the same warehouse, and the figures add up. (Figures, never time limits: the
machine's speed varies.)"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from pipelines.warehouse_schema import PUBLISHED_TABLES

RUN_PHASES = [
    "staging",
    "validation",
    "addresses",
    "engine: bucket inputs",
    "engine: join",
    "engine: route edges",
    "engine: link",
    "engine: decide",
    "engine: prefill",
    "engine: gather",
    "publish",
]


def _bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "bench", "--people", "1500", "--workers", "1", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("\n{") :]) | {"_stdout": done.stdout}


def _published_rows(url: str) -> int:
    engine = sa.create_engine(url)
    schema = "zerocert." if engine.dialect.name == "postgresql" else ""
    with engine.connect() as db:
        rows = sum(db.exec_driver_sql(f"SELECT count(*) FROM {schema}{name}").scalar() for name in PUBLISHED_TABLES)
    engine.dispose()
    return rows


def _check_figures(result: dict, url: str) -> None:
    phases = [p["phase"] for p in result["phases"]]
    assert [p for p in phases if p in RUN_PHASES] == RUN_PHASES
    assert phases[-1] == "baseline (read+write)"
    run = [p for p in result["phases"] if p["phase"] in RUN_PHASES]
    assert all(p["seconds"] > 0 and p["peak_memory_mb"] > 0 for p in run)
    assert result["run_seconds"] == pytest.approx(sum(p["seconds"] for p in run), abs=0.1)
    assert result["ratio_to_baseline"] == pytest.approx(result["run_seconds"] / result["baseline_seconds"], rel=0.05)
    assert result["engine"]["seconds"] == pytest.approx(
        sum(p["seconds"] for p in run if p["phase"].startswith("engine: ")), abs=0.1
    )
    assert result["published_rows"] == _published_rows(url) > 0
    staged = next(p for p in result["phases"] if p["phase"] == "staging")
    assert staged["rows"] > 1500 and staged["rows_per_s"] > 0


def test_bench_into_sqlite_times_every_phase_and_leaves_no_baseline_behind(tmp_path):
    result = _bench("--workdir", str(tmp_path / "bench"))
    url = f"sqlite:///{tmp_path / 'bench' / 'warehouse.sqlite'}"
    _check_figures(result, url)
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["city", "warehouse.sqlite", "work"]
    with sqlite3.connect(tmp_path / "bench" / "warehouse.sqlite") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any("baseline" in name for name in tables)


def test_bench_reuses_a_city_and_publishes_into_postgresql(tmp_path, pg_database):
    url = pg_database()
    first = _bench("--workdir", str(tmp_path / "first"), "--warehouse", url)
    assert "synth" in [p["phase"] for p in first["phases"]]
    again = _bench(
        "--skip-synth", str(tmp_path / "first" / "city"), "--workdir", str(tmp_path / "again"), "--warehouse", url
    )
    assert "reusing the city" in again["_stdout"]
    assert "synth" not in [p["phase"] for p in again["phases"]]
    _check_figures(again, url)
    assert again["published_rows"] == first["published_rows"]
    engine = sa.create_engine(url)
    with engine.connect() as db:
        left = db.execute(sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%baseline%'")).scalar()
    engine.dispose()
    assert left == 0
