"""Runs that cannot collide: one run per work folder, an attempt folder each, killed attempts
marked, run_id following every input, files readable by their owner only."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from warehouse_reader import read

from pipelines.cli import main
from pipelines.config import resolve_settings
from pipelines.layout import LOCK_NAME
from pipelines.run import work_folder_lock

AS_OF = "2027-08-15"


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("small_city")
    synthesize(out, 400, seed=5)
    return out


def args(city: Path, url: str, work: Path, reference: Path | None = None) -> list[str]:
    return [
        "run",
        "--landing",
        str(city / "landing"),
        "--reference",
        str(reference or city / "reference"),
        "--warehouse",
        url,
        "--as-of",
        AS_OF,
        "--work-dir",
        str(work),
    ]


def settings_for(city: Path, url: str, work: Path):
    return resolve_settings(
        {
            "landing": str(city / "landing"),
            "reference": str(city / "reference"),
            "warehouse_url": url,
            "as_of": AS_OF,
            "work_dir": str(work),
        }
    )


def test_a_second_run_on_a_busy_work_folder_exits_2_and_writes_nothing(city, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    work = tmp_path / "work"
    holder = settings_for(city, url, work).with_attempt("other")
    with work_folder_lock(holder, dt.datetime(2027, 8, 15, 1, 2, 3, tzinfo=dt.UTC)):
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args(city, url, work)], capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.strip().splitlines() == [
        f"zerocert: another zerocert run is using the work folder {work} (pid {os.getpid()}, as-of {AS_OF}, "
        "started 2027-08-15T01:02:03+00:00); wait for it to finish or give another --work-dir"
    ]
    assert not (work / "runs").exists() and not (tmp_path / "wh.sqlite").exists()
    assert main(args(city, url, work)) == 0  # the lock is free again


def test_each_attempt_has_its_own_folder_and_reports_its_own_run_id(city, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    work = tmp_path / "work"
    assert main(args(city, url, work)) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    reference = tmp_path / "reference"
    import shutil

    shutil.copytree(city / "reference", reference)
    schools = pd.read_csv(reference / "schools.csv", dtype=str)
    schools.loc[0, "capacity"] = str(int(schools.loc[0, "capacity"]) + 45)
    schools.to_csv(reference / "schools.csv", index=False)
    assert main(args(city, url, work, reference)) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    assert second != first, "a changed reference file is another run"
    published = read(url, "SELECT DISTINCT run_id FROM eligibility").run_id.tolist()
    assert published == [second]
    attempts = sorted(p.name for p in (work / "runs" / AS_OF).iterdir())
    assert len(attempts) == 2 and all(a.startswith("cli-") for a in attempts)
    assert main(args(city, url, work)) == 0
    assert len(list((work / "runs" / AS_OF).iterdir())) == 2, "older attempts are pruned"


def test_a_killed_attempt_is_marked_abandoned_by_the_next_run(city, tmp_path):
    from pipelines.warehouse import record_started_run

    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    work = tmp_path / "work"
    killed_at = dt.datetime(2027, 8, 15, 2, 0, tzinfo=dt.UTC)
    record_started_run(
        url,
        {"run_id": "20270815-killed", "as_of": AS_OF, "policy_id": "p", "started_at": killed_at, "code_version": "0"},
    )
    work.mkdir()
    (work / LOCK_NAME).write_text(json.dumps({"pid": 1, "as_of": AS_OF, "started_at": killed_at.isoformat()}))
    assert main(args(city, url, work)) == 0
    audit = read(url, "SELECT run_id, status, reason FROM run_audit ORDER BY started_at")
    killed = audit.loc[audit.run_id == "20270815-killed"].iloc[0]
    assert killed.status == "abandoned" and "killed" in killed.reason
    assert "started" not in set(audit.status)
    assert (work / LOCK_NAME).read_text() == "", "a finished run leaves no holder behind"


def test_what_a_run_writes_is_readable_by_its_owner_only(city, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    work = tmp_path / "work"
    previous = os.umask(0o022)
    try:
        assert main(args(city, url, work)) == 0
    finally:
        os.umask(previous)
    written = [tmp_path / "wh.sqlite", *work.rglob("*")]
    assert any(p.name == "quarantine.parquet" for p in written)
    loose = sorted(str(p.relative_to(tmp_path)) for p in written if stat.S_IMODE(p.stat().st_mode) & 0o077)
    assert loose == []
