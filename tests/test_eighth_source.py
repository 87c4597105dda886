"""An eighth source is two files and a delivery: no code, no list to extend.

In a copy of the repository, a marriage registry (which names two persons per record) is added
as ``schemas/marriage.yaml`` and ``expectations/marriage.yaml`` only; a delivery lands beside
the seven synthesized ones. The unchanged code must stage, validate, count and publish it, list
it in ``citizen.sources`` for both spouses, and give it its own DAG.
"""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from warehouse_reader import read

from pipelines.synth import AS_OF, synthesize

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
LEFT_OUT = shutil.ignore_patterns(".venv", ".git", ".demo", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")

MARRIAGE_SCHEMA = """\
# Civil Affairs Bureau: marriage registrations (婚姻登记信息). Added by files alone.
source: marriage
schedule: "0 3 * * *"
file: marriage.csv
format: csv
separator: ","
encoding: utf-8
natural_key: [certificate_no]
roles:
  persons: [{id: husband_id, name: husband_name}, {id: wife_id, name: wife_name}]
  name_rank: 8
columns:
  - {header: 结婚证字号, key: certificate_no, type: string, required: true}
  - {header: 男方公民身份号码, key: husband_id, type: id, required: true}
  - {header: 男方姓名, key: husband_name, type: string}
  - {header: 女方公民身份号码, key: wife_id, type: id, required: true}
  - {header: 女方姓名, key: wife_name, type: string}
  - {header: 登记日期, key: registered_date, type: date, required: true, not_after_extract: true}
  - {header: 登记状态, key: status, type: code, required: true, codes: [有效, 已离婚]}
"""

MARRIAGE_EXPECTATIONS = """\
source: marriage
personal_columns: [husband_id, wife_id]
row_checks:
  - {check: not_null, columns: [certificate_no, husband_id, wife_id, registered_date, status]}
  - {check: resident_id, column: husband_id}
  - {check: resident_id, column: wife_id}
  - {check: unique, column: certificate_no, mostly: 0.999}
  - {check: in_set, column: status, values: [有效, 已离婚]}
  - {check: date_range, column: registered_date, min: 1950-01-01, max: as_of}
table_checks:
  min_rows: 1
  max_change_fraction: 0.1
"""


def _adults(landing: Path) -> list[str]:
    """Resident IDs of adults from the synthesized hukou delivery (clean ones only)."""
    folder = sorted(p for p in (landing / "hukou").iterdir() if (p / "_SUCCESS").exists())[-1]
    hukou = pd.read_csv(folder / "hukou.csv", encoding="gb18030", dtype=str, on_bad_lines="skip")
    ids = hukou["公民身份号码"].dropna()
    ids = ids[ids.str.fullmatch(r"\d{17}[\dX]") & (ids.str[6:10].astype(int) < 1995)]
    return sorted(set(ids))[:40]


def _deliver_marriages(landing: Path, adults: list[str]) -> tuple[Path, list[str]]:
    couples = list(zip(adults[0::2], adults[1::2]))
    lines = ["结婚证字号,男方公民身份号码,男方姓名,女方公民身份号码,女方姓名,登记日期,登记状态"]
    lines += [f"J{i:05d},{a},甲{i},{b},乙{i},2015-05-{1 + i % 28:02d},有效" for i, (a, b) in enumerate(couples)]
    lines.append("J99999,12345,丙,123456,丁,2015-05-01,有效")  # neither ID can be repaired
    folder = landing / "marriage" / (AS_OF - dt.timedelta(days=1)).isoformat()
    folder.mkdir(parents=True)
    (folder / "marriage.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder, [person for couple in couples for person in couple]


def _in_copy(copy: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "ZEROCERT_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("ZEROCERT_HMAC_KEY", None)
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def eighth(tmp_path_factory):
    root = tmp_path_factory.mktemp("eighth")
    copy = root / "repo"
    shutil.copytree(REPO, copy, symlinks=True, ignore=LEFT_OUT)
    (copy / "schemas" / "marriage.yaml").write_text(MARRIAGE_SCHEMA, encoding="utf-8")
    (copy / "expectations" / "marriage.yaml").write_text(MARRIAGE_EXPECTATIONS, encoding="utf-8")
    city = root / "city"
    synthesize(city, 3000, seed=5)
    folder, spouses = _deliver_marriages(city / "landing", _adults(city / "landing"))
    warehouse = f"sqlite:///{root / 'warehouse.sqlite'}"
    run = _in_copy(
        copy,
        root / "home",
        "-m",
        "pipelines.cli",
        "run",
        "--landing",
        str(city / "landing"),
        "--reference",
        str(city / "reference"),
        "--warehouse",
        warehouse,
        "--as-of",
        AS_OF.isoformat(),
        "--work-dir",
        str(root / "work"),
    )
    return {"copy": copy, "root": root, "run": run, "warehouse": warehouse, "spouses": spouses, "folder": folder}


def test_the_code_in_the_copy_is_unchanged_and_the_run_succeeds(eighth):
    changed = [
        p
        for p in (eighth["copy"] / "pipelines").rglob("*.py")
        if p.read_bytes() != (REPO / p.relative_to(eighth["copy"])).read_bytes()
    ]
    assert changed == []
    assert eighth["run"].returncode == 0, eighth["run"].stderr[-2000:]


def test_its_snapshot_is_published_and_reconciles(eighth):
    snapshot = read(eighth["warehouse"], "SELECT * FROM source_snapshot WHERE source = 'marriage'")
    assert len(snapshot) == 1
    row = snapshot.iloc[0]
    assert row["delivery"] == eighth["folder"].name
    assert (row["rows_in"], row["rows_accepted"], row["rows_quarantined"]) == (
        len(eighth["spouses"]) // 2 + 1,
        len(eighth["spouses"]) // 2,
        1,
    )
    assert row["rows_in"] == row["rows_accepted"] + row["rows_quarantined"] + row["rows_duplicate"]
    quarantined = read(eighth["warehouse"], "SELECT reason_code FROM quarantine WHERE source = 'marriage'")
    assert quarantined["reason_code"].tolist() == ["INVALID_ID_FORMAT"]


def test_both_spouses_list_the_marriage_registry_among_their_sources(eighth):
    citizens = read(eighth["warehouse"], "SELECT citizen_id, sources FROM citizen")
    sources = dict(zip(citizens["citizen_id"], citizens["sources"].map(json.loads)))
    spouses = set(eighth["spouses"])
    without = [person for person in spouses if "marriage" not in sources.get(person, [])]
    others = [person for person, s in sources.items() if "marriage" in s and person not in spouses]
    assert (len(spouses), len(without), len(others)) == (40, 0, 0)


def test_it_was_validated_by_its_own_suite(eighth):
    result = json.loads((eighth["root"] / "work" / "validation" / "marriage" / "validation.json").read_text("utf-8"))
    checks = [r["expectation_config"]["meta"]["check"] for r in result["results"]]
    assert result["success"] is True
    assert {"row_count", "columns_present"} <= set(checks)
    assert any("husband_id" in c for c in checks) and any("wife_id" in c for c in checks)
    assert not re.search(r"\d{17}[\dX]", eighth["run"].stdout + eighth["run"].stderr)


def test_it_has_its_own_dag_on_its_own_schedule(eighth):
    probe = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder='dags')\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(bag.dags['zerocert_source_marriage'].timetable.expression)\n"
        "print('zerocert://staged/marriage' in str(bag.dags['zerocert_warehouse'].timetable.asset_condition))\n"
    )
    done = _in_copy(eighth["copy"], eighth["root"] / "home", "-c", probe)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["0 3 * * *", "True"]
