"""A whole ``zerocert run`` over a dirty synthetic city leaves no full resident ID or name in its
logs: stderr (logging and progress), stdout and any log file under the work folder."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from pipelines.resident_id import check_character
from pipelines.synth import synthesize

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DIGIT_RUN = re.compile(r"[0-9]{15,}[0-9Xx]?|[0-9]{14}[0-9][0-9]{2}[Xx]")
ID_FORM = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9X]|[0-9]{15})(?![0-9])")


def decoded(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return unicodedata.normalize("NFKC", data.decode(encoding)).upper()
        except UnicodeDecodeError:
            continue
    return unicodedata.normalize("NFKC", data.decode("latin-1")).upper()


def as18(legacy15: str) -> str:
    first17 = legacy15[:6] + "19" + legacy15[6:]
    return first17 + check_character(first17)


def delivered_ids(landing: Path) -> set[str]:
    """Every ID-shaped value in the landing files, in its 18- and (legacy) 15-character forms."""
    found: set[str] = set()
    for path in landing.rglob("*"):
        if path.is_file() and path.name != "_SUCCESS":
            found.update(ID_FORM.findall(decoded(path)))
    return found | {as18(i) for i in found if len(i) == 15}


def windows(text: str) -> set[str]:
    """Every 15- and 18-character window of every digit run in the text (IDs glued to digits too)."""
    out: set[str] = set()
    for run in re.findall(r"[0-9X]{15,}", text.upper()):
        for width in (15, 18):
            out.update(run[i:i + width] for i in range(len(run) - width + 1))
    return out


def test_a_dirty_run_logs_no_full_id_or_name(pg_url, tmp_path):
    city = tmp_path / "city"
    synthesize(city, people=400, seed=11)
    work = tmp_path / "work"
    log_file, out_file = tmp_path / "run.log", tmp_path / "run.out"
    with log_file.open("wb") as stderr, out_file.open("wb") as stdout:
        status = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "-v", "run", "--landing", str(city / "landing"),
             "--reference", str(city / "reference"), "--warehouse", pg_url, "--as-of", "2027-08-15",
             "--work-dir", str(work)], stdout=stdout, stderr=stderr, timeout=240).returncode
    logs = [log_file, out_file, *work.rglob("*.log")]
    text = "\n".join(decoded(p) for p in logs)
    assert status == 0, text[-2000:]
    assert "quarantine" in text.lower() or "INVALID" in text  # the dirt was seen and logged about

    ids = delivered_ids(city / "landing")
    citizens = pd.read_parquet(next(work.rglob("citizen.parquet")), columns=["citizen_id", "name"])
    ids |= set(citizens["citizen_id"])
    assert len(ids) > 400
    hukou = next((city / "landing" / "hukou").rglob("hukou.csv"))
    assert len(ids & windows(decoded(hukou))) > 300  # the search does find IDs where they are
    leaked = ids & windows(text)
    assert not leaked, f"{len(leaked)} full IDs in the run's logs"

    names = {n for n in citizens["name"].dropna() if len(n) >= 2}
    named = [n for n in names if n in text]
    assert not named, f"{len(named)} full names in the run's logs"
