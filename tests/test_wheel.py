"""A wheel built from the repository is the whole product: sources, suites, migrations, DAGs.

The wheel is installed into a folder of its own and run from a directory with no checkout in
sight, so nothing can be found through the repository's layout; a DAG bundle holding only the
``dags/`` folder parses against it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from warehouse_reader import read

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
LEFT_OUT = shutil.ignore_patterns(
    ".venv", ".git", ".demo", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build", "dist"
)


def _python(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=LEFT_OUT)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((root / "dist").glob("zerocert-*.whl"))
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "ZEROCERT_HOME": str(root / "home"),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("ZEROCERT_HMAC_KEY", None)
    return {"root": root, "site": target, "cwd": elsewhere, "env": env}


def test_the_wheel_carries_its_declarations_as_files(installed):
    data = installed["site"] / "pipelines" / "data"
    for folder in ("schemas", "expectations", "dags"):
        assert not (data / folder).is_symlink()
        assert sorted(p.name for p in (data / folder).iterdir() if p.suffix in (".yaml", ".py")) == sorted(
            p.name for p in (REPO / folder).iterdir() if p.suffix in (".yaml", ".py")
        )
    assert sorted(p.name for p in (data / "migrations" / "sqlite").glob("*.sql")) == sorted(
        p.name for p in (REPO / "warehouse" / "migrations" / "sqlite").glob("*.sql")
    )
    assert (data / "policy.yaml").read_text(encoding="utf-8").startswith("#")


def test_the_installed_wheel_runs_the_demo_city_end_to_end(installed):
    env, cwd = installed["env"], installed["cwd"]
    where = _python(["-c", "import pipelines; print(pipelines.__file__)"], cwd, env)
    assert where.stdout.strip().startswith(str(installed["site"]))
    city = Path(env["ZEROCERT_HOME"]) / "city"
    synth = _python(["-m", "pipelines.cli", "synth", "--out", str(city), "--people", "2000", "--seed", "3"], cwd, env)
    assert synth.returncode == 0, synth.stderr[-2000:]
    run = _python(["-m", "pipelines.cli", "run", "--as-of", "2027-08-15"], cwd, env)  # every default embedded
    assert run.returncode == 0, run.stderr[-2000:]
    warehouse = f"sqlite:///{Path(env['ZEROCERT_HOME']) / 'warehouse.sqlite'}"
    snapshots = read(warehouse, "SELECT source, rows_accepted FROM source_snapshot")
    assert sorted(snapshots["source"]) == sorted(p.stem for p in (REPO / "schemas").glob("*.yaml"))
    assert (snapshots["rows_accepted"] > 0).all()
    assert read(warehouse, "SELECT COUNT(*) AS n FROM eligibility")["n"].item() > 0


def test_a_dag_bundle_of_only_the_dags_folder_parses_against_the_wheel(installed):
    bundle = installed["root"] / "bundle"
    shutil.copytree(REPO / "dags", bundle, ignore=LEFT_OUT)
    probe = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(bundle)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "sources = [d for d in bag.dag_ids if d.startswith('zerocert_source_')]\n"
        "print(len(sources), 'zerocert_warehouse' in bag.dag_ids)\n"
    )
    done = _python(["-c", probe], installed["cwd"], installed["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"{len(list((REPO / 'schemas').glob('*.yaml')))} True"
