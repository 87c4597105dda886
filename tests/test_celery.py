"""The warehouse DAG on Airflow's Celery executor, two workers, against a single-process run.

One small synthetic city is published twice: by ``zerocert run`` (one process) into one
PostgreSQL warehouse, and by the warehouse DAG on Celery (Redis broker, PostgreSQL metadata
database and result backend, two ``airflow celery worker`` processes on one queue) into
another. Every published table must be equal, row for row; then again after a worker is killed
(SIGKILL, its whole process tree) while it runs the engine task, which Airflow retries on the
other worker. Each run has PostgreSQL databases, a Redis database and a queue of its own,
dropped or emptied after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from warehouse_reader import read

from pipelines.demo import demo_hmac_key_file
from pipelines.demo_celery import WAREHOUSE_DAG, CeleryCluster, cluster_processes, ensure_redis, running
from pipelines.warehouse_schema import PUBLISHED_TABLES

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PEOPLE = 3000
SEED = 5
# Seconds, short for the test: a killed worker's task is noticed once its heartbeat (every 2 s
# here, 5 s by default) is this old (Airflow's default is 300 s), and retried after this delay
# (default_task_retry_delay, 300 s by default).
HEARTBEAT_TIMEOUT = 12
RETRY_DELAY = 2
RUN_TIMEOUT = 240


ENGINE_TASK = "decide_bucket"  # the warehouse DAG's engine task the fault test kills, mapped over the buckets


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> tuple[Path, str]:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("celery_city")
    summary = synthesize(out, PEOPLE, seed=SEED)
    return out, str(summary.get("as_of", "2027-08-15"))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The Celery Airflow's folder (its HMAC key also pseudonymizes the single-process run)."""
    return tmp_path_factory.mktemp("celery_home")


class SingleProcessRun:
    """``zerocert run`` of the city in a process of its own, started beside the cluster's start."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, url: str):
        self.url, self.log = url, log
        with log.open("w", encoding="utf-8") as out:
            zerocert = str(Path(sys.executable).with_name("zerocert"))
            self.process = subprocess.Popen([zerocert, *args], env=env, stdout=out, stderr=subprocess.STDOUT)

    def published(self) -> str:
        """The warehouse it published (waits for it)."""
        assert self.process.wait(timeout=RUN_TIMEOUT) == 0, self.log.read_text(encoding="utf-8")[-2000:]
        return self.url


@pytest.fixture(scope="module")
def single_process(city, home, tmp_path_factory, pg_database) -> SingleProcessRun:
    """The warehouse ``zerocert run`` publishes, in one process."""
    landing, as_of = city
    url = pg_database()
    work = tmp_path_factory.mktemp("single_work")
    args = ["run", "--landing", str(landing / "landing"), "--reference", str(landing / "reference")]
    args += ["--warehouse", url, "--as-of", as_of, "--work-dir", str(work)]
    env = {**os.environ, "ZEROCERT_HMAC_KEY_FILE": str(demo_hmac_key_file(home))}
    run = SingleProcessRun(args, env, work / "zerocert-run.log", url)
    yield run
    run.process.wait(timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def redis_db() -> int:
    """An empty Redis database of this run's own (2 to 15), emptied again after it."""
    import redis

    ensure_redis()
    for db in range(2, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0:
            break
    else:
        pytest.fail("no empty Redis database among 2..15")
    yield db
    client.flushdb()


@pytest.fixture(scope="module")
def cluster(city, home, single_process, redis_db, pg_database):
    """Airflow on Celery with two workers, its own metadata database, queue and warehouse."""
    landing, as_of = city
    metadata, warehouse = pg_database(), pg_database()
    celery = CeleryCluster(
        home,
        as_of,
        database=metadata.rsplit("/", 1)[1],
        redis_db=redis_db,
        queue=f"zerocert_test_{secrets.token_hex(4)}",
        port=free_port(),
        concurrency=1,
        overrides={
            ("core", "default_task_retry_delay"): str(RETRY_DELAY),
            ("scheduler", "task_instance_heartbeat_timeout"): str(HEARTBEAT_TIMEOUT),
            ("scheduler", "task_instance_heartbeat_timeout_detection_interval"): "2",
            ("workers", "min_heartbeat_interval"): "2",
        },
        city={
            "ZEROCERT_LANDING": str(landing / "landing"),
            "ZEROCERT_REFERENCE": str(landing / "reference"),
            "ZEROCERT_WAREHOUSE_URL": warehouse,
            "ZEROCERT_AS_OF": as_of,
        },
    )
    started = time.monotonic()
    with running(celery, progress=lambda message: print(f"[{time.monotonic() - started:6.1f}s] {message}")):
        celery.unpause(WAREHOUSE_DAG)  # asset-scheduled: no run until one is triggered
        yield celery
    assert cluster_processes(home) == [], "a process of the cluster is left"


def published(url: str) -> dict[str, tuple[list[str], Counter]]:
    """Each published table's columns and its rows as a multiset (values by repr)."""
    tables = {}
    for table in PUBLISHED_TABLES:
        frame = read(url, f"SELECT * FROM {table}")
        tables[table] = (list(frame.columns), Counter(tuple(map(repr, row)) for row in frame.itertuples(index=False)))
    return tables


def assert_same_tables(got_url: str, want_url: str) -> None:
    """Row for row; differences as counts per table, never as rows (they hold resident IDs)."""
    got, want = published(got_url), published(want_url)
    assert len(want["eligibility"][1]) > 20
    differences = {
        table: (
            got[table][0] == want[table][0],
            sum((got[table][1] - want[table][1]).values()),
            sum((want[table][1] - got[table][1]).values()),
        )
        for table in PUBLISHED_TABLES
    }
    assert {t: d for t, d in differences.items() if d != (True, 0, 0)} == {}, "(same columns, extra, missing)"


def trigger_warehouse(cluster: CeleryCluster) -> str:
    return cluster.trigger(WAREHOUSE_DAG, conf={"as_of": cluster.as_of})


def freeze_engine_try(cluster: CeleryCluster, run_id: str, task_id: str, deadline: float) -> tuple[str, dict]:
    """Catch a try of ``task_id`` in the middle of its work and stop it there (SIGSTOP).

    Its process is the one Airflow titles ``airflow worker -- <task instance id>``. Once a file
    appears under the work folder after it started (the engine's intermediate or output Parquet:
    only engine tasks run by then), it is frozen: at this small city the engine takes about a
    second, and a frozen try cannot finish before its worker is killed. Returns the worker and
    the task instance."""
    work = Path(cluster.variables()["ZEROCERT_WORK_DIR"])
    wanted: dict[str, dict] = {}
    asked = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - asked > 0.25:
            asked = time.monotonic()
            tis = [ti for ti in cluster.task_instances(WAREHOUSE_DAG, run_id) if ti["task_id"] == task_id]
            assert not any(ti["state"] == "success" for ti in tis), f"{task_id} finished before it was caught"
            wanted = {ti["id"]: ti for ti in tis}
        for worker in cluster.workers:
            for process in cluster.worker_processes(worker):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    title = " ".join(process.cmdline())
                    if title.startswith("airflow worker -- ") and title.split()[-1] in wanted:
                        since = time.time_ns()
                        while process.is_running() and (written := _written_since(work, since)) is None:
                            time.sleep(0.002)
                        assert process.is_running(), f"the try of {task_id} ended before it wrote a file"
                        os.killpg(os.getpgid(process.pid), signal.SIGSTOP)  # its own group: the try alone
                        print(f"{task_id} frozen on {worker} after writing {written.relative_to(work)}")
                        return worker, wanted[title.split()[-1]]
        time.sleep(0.02)
    raise AssertionError(f"no try of {task_id} started")


def _written_since(root: Path, since_ns: int) -> Path | None:
    """A file under ``root`` written since ``since_ns``, if any (folders do not count: making
    one is not yet the work)."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime_ns >= since_ns:
                    return path
    return None


def test_on_two_celery_workers_a_worker_killed_mid_bucket_changes_nothing_published(cluster, single_process):
    """The warehouse DAG on two Celery workers, one of them killed in the middle of a
    ``decide_bucket`` task: the task is retried on the other, the run succeeds, and the published
    tables equal a single-process ``zerocert run``'s, row for row (one DAG run shows both)."""
    task_ids = [task["task_id"] for task in cluster.api("GET", f"/api/v2/dags/{WAREHOUSE_DAG}/tasks")["tasks"]]
    assert ENGINE_TASK in task_ids, task_ids
    target = ENGINE_TASK
    run_id = trigger_warehouse(cluster)
    deadline = time.monotonic() + RUN_TIMEOUT
    victim, caught = freeze_engine_try(cluster, run_id, target, deadline)
    while (ti := _ti(cluster, run_id, caught["id"]))["state"] != "running":
        assert time.monotonic() < deadline and ti["state"] in {"queued", "running"}, ti["state"]
        time.sleep(0.2)
    assert ti["hostname"] == victim and ti["try_number"] == 1
    killed = cluster.kill_worker(victim)
    assert killed and all(_gone(pid) for pid in killed)

    cluster.wait(WAREHOUSE_DAG, run_id, deadline=deadline)
    tries = cluster.tries(WAREHOUSE_DAG, run_id, target, ti["map_index"])
    survivor = next(worker for worker in cluster.workers if worker != victim)
    print(f"{target}: tries {[(t['try_number'], t['hostname'], t['state']) for t in tries]}, killed {victim}")
    assert [(t["try_number"], t["hostname"], t["state"]) for t in tries] == [
        (1, victim, "failed"),
        (2, survivor, "success"),
    ]
    tis = cluster.task_instances(WAREHOUSE_DAG, run_id)
    assert {ti["state"] for ti in tis} == {"success"}
    assert_same_tables(cluster.city["ZEROCERT_WAREHOUSE_URL"], single_process.published())


def _ti(cluster: CeleryCluster, run_id: str, ti_id: str) -> dict:
    """The task instance as it is now, found by its id: a try caught just as the mapped task was
    expanded was listed with map index -1, which expansion turns into 0 under the same id."""
    return next(ti for ti in cluster.task_instances(WAREHOUSE_DAG, run_id) if ti["id"] == ti_id)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
