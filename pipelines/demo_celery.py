"""``make demo-celery``: the DAGs on Airflow's Celery executor, two workers on this machine.

Redis (127.0.0.1:6379) is the broker; PostgreSQL (127.0.0.1:5432) holds Airflow's metadata
database and the Celery result backend, a database of the demo's own (created when absent). A
scheduler, a DAG processor, an API server and two ``airflow celery worker`` processes (each its
own hostname and process group, the same queue) run the seven source DAGs and then the warehouse
DAG, which the source DAGs' assets schedule; the demo waits for them, prints what ``make demo``
prints and stops every process it started, on success, failure or Ctrl-C alike.

``ZEROCERT_LANDING``, ``ZEROCERT_REFERENCE``, ``ZEROCERT_WAREHOUSE_URL`` and ``ZEROCERT_AS_OF``
are honoured when set (a city is synthesized only when the landing or the reference is not
given). ``CeleryCluster`` is what tests/test_celery.py starts too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipelines.celery_host import WORKER_NAME
from pipelines.demo import (
    airflow_settings,
    demo_environment,
    password_file,
    print_summary,
    run_airflow,
    write_airflow_config,
)
from pipelines.demo_ui import MARKER, PIDS_FILE, demo_processes
from pipelines.errors import ZerocertError

PG_SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    str(REDIS_PORT),
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
DEMO_DATABASE = "zerocert_airflow_demo"
DEMO_REDIS_DB = 1
DEMO_PORT = 8090  # beside make demo-ui's 8080
WORKERS = ("worker-a", "worker-b")
TERMINAL = {"success", "failed"}
WAREHOUSE_DAG = "zerocert_warehouse"


def source_dag_ids() -> list[str]:
    from pipelines.run import source_keys

    return [f"zerocert_source_{source}" for source in source_keys()]


# --- the services: Redis and PostgreSQL ---------------------------------------------------------


def redis_answers() -> bool:
    """Redis answers PING on 127.0.0.1:6379."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis(timeout: float = 15) -> None:
    """Start Redis as the machine's docs say when it does not answer (it keeps nothing on disk)."""
    if redis_answers():
        return
    for folder in ("/var/lib/redis", "/var/log/redis"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(REDIS_START, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ZerocertError(f"Redis is down on {REDIS_HOST}:{REDIS_PORT} and could not be started: {exc}") from None
    deadline = time.monotonic() + timeout
    while not redis_answers():
        if time.monotonic() > deadline:
            raise ZerocertError(f"Redis started but does not answer on {REDIS_HOST}:{REDIS_PORT}")
        time.sleep(0.5)


def _pg_admin():
    import psycopg

    try:
        return psycopg.connect(**PG_SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ZerocertError(
            f"PostgreSQL is not reachable at {PG_SERVER['host']}:{PG_SERVER['port']} as {PG_SERVER['user']}: {reason}"
        ) from None


def ensure_database(name: str) -> None:
    """Create the PostgreSQL database ``name`` (UTF-8) unless it exists."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ZerocertError(f"not a plain database name: {name!r}")
    with _pg_admin() as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")


def pg_url(database: str, driver: str = "postgresql+psycopg") -> str:
    return f"{driver}://{PG_SERVER['user']}@{PG_SERVER['host']}:{PG_SERVER['port']}/{database}"


# --- the cluster --------------------------------------------------------------------------------


@dataclass
class CeleryCluster:
    """Airflow on the Celery executor in ``out``: its configuration, processes and REST API.

    ``database``: the PostgreSQL database for Airflow's metadata and Celery's results;
    ``redis_db`` and ``queue``: where the tasks wait (the workers all listen on ``queue``);
    ``overrides``: more Airflow settings, ``(section, key) -> value`` (the fault test's short
    heartbeat timeout and retry delay).
    """

    out: Path
    as_of: str
    database: str = DEMO_DATABASE
    redis_db: int = DEMO_REDIS_DB
    queue: str = "default"
    port: int = DEMO_PORT
    workers: tuple[str, ...] = WORKERS
    concurrency: int = 1
    overrides: Mapping[tuple[str, str], str] = field(default_factory=dict)
    city: Mapping[str, str] = field(default_factory=dict)  # ZEROCERT_* over the demo folder's defaults
    _token: str | None = field(default=None, repr=False)

    def settings(self) -> dict[tuple[str, str], str]:
        """``make demo``'s small Airflow, on Celery: PostgreSQL metadata, Redis broker, two workers."""
        slots = str(len(self.workers) * self.concurrency)
        return {
            **airflow_settings(self.out, self.port),
            ("core", "executor"): "CeleryExecutor",
            ("core", "parallelism"): slots,
            ("core", "max_active_tasks_per_dag"): slots,
            ("core", "hostname_callable"): "pipelines.celery_host.worker_hostname",
            ("database", "sql_alchemy_conn"): pg_url(self.database),
            ("database", "sql_alchemy_conn_async"): pg_url(self.database, "postgresql+psycopg_async"),
            ("celery", "broker_url"): f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
            ("celery", "result_backend"): pg_url(self.database, "db+postgresql+psycopg"),
            ("celery", "worker_concurrency"): str(self.concurrency),
            ("operators", "default_queue"): self.queue,
            **self.overrides,
        }

    def variables(self) -> dict[str, str]:
        """The ``AIRFLOW__*`` and ``ZEROCERT_*`` variables every process of the cluster gets."""
        return {**demo_environment(self.out, self.as_of, self.port, self.settings()), **self.city}

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.variables(), MARKER: str(self.out)}

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def components(self) -> dict[str, list[str]]:
        """Each process's ``airflow`` arguments. Workers serve no logs (they would share one
        port here): the API server reads the task logs from the folder they all write."""
        workers = {
            name: [
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(self.concurrency),
                "--queues",
                self.queue,
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            ]
            for name in self.workers
        }
        return {
            "api-server": ["api-server"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            **workers,
        }

    # -- start and stop --

    def start(self, *, progress: Callable[[str], None], timeout: float = 300) -> None:
        """Create the metadata database, migrate it, start every process (each in a process
        group of its own) and return once the API answers, the scheduler and DAG processor are
        healthy, every worker is ready and the DAGs are parsed. Stops what it started on failure."""
        self.out.mkdir(parents=True, exist_ok=True)
        if cluster_processes(self.out):
            stop_cluster(self.out, progress=progress)
        ensure_redis()
        ensure_database(self.database)
        write_airflow_config(self.out, self.port, self.settings())
        env = self.environment()
        progress(f"preparing the Airflow metadata database (PostgreSQL {self.database})")
        run_airflow(["db", "migrate"], env, self.logs / "airflow-db-migrate.log")
        if not _port_free(self.port):
            raise ZerocertError(f"port {self.port} is in use; give another with --port")
        airflow = str(Path(sys.executable).with_name("airflow"))
        record: dict = {"process_group": None, "process_groups": {}, "pids": {}, "port": self.port}
        record["started"] = time.time()
        try:
            for name, args in self.components().items():
                progress(f"starting airflow {' '.join(args[:2]) if name in self.workers else name} ({name})")
                worker_env = {**env, WORKER_NAME: name} if name in self.workers else env
                with (self.logs / f"airflow-{name}.log").open("a", encoding="utf-8") as log:
                    process = subprocess.Popen(
                        [airflow, *args],
                        env=worker_env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.out,
                        process_group=0,  # a group of its own: one worker can be killed alone
                    )
                record["pids"][name] = process.pid
                record["process_groups"][name] = process.pid
                record["process_group"] = record["process_group"] or process.pid
                (self.out / PIDS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
            self._wait_ready(record["pids"], timeout)
        except BaseException:
            stop_cluster(self.out, progress=lambda message: None)
            raise

    def _wait_ready(self, pids: Mapping[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = "the API server"
        while True:
            gone = [name for name, pid in pids.items() if _exited(pid)]
            if gone:
                raise ZerocertError(f"airflow {gone[0]} exited; its log: {self.logs / f'airflow-{gone[0]}.log'}")
            if time.monotonic() > deadline:
                raise ZerocertError(
                    f"Airflow on Celery not ready within {timeout:.0f} s ({waiting}); logs: {self.logs}"
                )
            time.sleep(1)
            health = _get_json(f"{self.base_url}/api/v2/monitor/health")
            if not health or not password_file(self.out).exists():
                continue
            parts = ("metadatabase", "scheduler", "dag_processor")
            sick = [part for part in parts if health.get(part, {}).get("status") != "healthy"]
            if sick:
                waiting = f"{sick[0]} not healthy"
                continue
            unready = [name for name in self.workers if not _worker_ready(self.logs / f"airflow-{name}.log")]
            if unready:
                waiting = f"celery {unready[0]} not ready"
                continue
            parsed = self.api("GET", "/api/v2/dags?dag_id_pattern=zerocert_&limit=100")["dags"]
            missing = set(source_dag_ids()) | {WAREHOUSE_DAG}
            missing -= {dag["dag_id"] for dag in parsed}
            if missing:
                waiting = f"DAG {sorted(missing)[0]} not parsed"
                continue
            return

    # -- the REST API --

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: Mapping | None = None, *, missing_ok: bool = False) -> dict:
        """One call of Airflow's REST API as the demo's admin (simple auth manager); with
        ``missing_ok`` a 404 answers ``{}``."""
        if self._token is None:
            password = json.loads(password_file(self.out).read_text(encoding="utf-8"))["admin"]
            answer = _request("POST", f"{self.base_url}/auth/token", {"username": "admin", "password": password})
            self._token = answer["access_token"]
        return _request(method, f"{self.base_url}{path}", body, token=self._token, missing_ok=missing_ok)

    def end_leftovers(self, dag_ids: list[str]) -> int:
        """Mark failed the runs an earlier, interrupted demo left queued or running (they would
        hold up this one's: one active run per DAG), and drop the asset events queued for the
        warehouse DAG, so that only this demo's seven source runs trigger it. Returns the runs."""
        ended = 0
        for dag_id in dag_ids:
            path = f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running&limit=100"
            for run in self.api("GET", path)["dag_runs"]:
                self.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run['dag_run_id'])}", {"state": "failed"})
                ended += 1
        self.api("DELETE", f"/api/v2/dags/{WAREHOUSE_DAG}/assets/queuedEvents", missing_ok=True)
        return ended

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, *, conf: Mapping | None = None, logical_date: str | None = None) -> str:
        answer = self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": dict(conf or {})}
        )
        return answer["dag_run_id"]

    def trigger_like_its_schedule(self, dag_id: str, conf: Mapping | None = None) -> str:
        """Trigger ``dag_id`` and unpause it without a second run: the run takes the logical date
        of the scheduled run that unpausing would create (the scheduler then skips that one)."""
        details = self.api("GET", f"/api/v2/dags/{dag_id}")
        logical, run_after = details.get("next_dagrun_logical_date"), details.get("next_dagrun_run_after")
        due = logical and run_after and dt.datetime.fromisoformat(run_after) <= dt.datetime.now(dt.UTC)
        if due:  # a run of that date already there (an earlier demo's): the scheduler skips it too
            stamp = urllib.parse.quote(logical, safe="")
            query = f"logical_date_gte={stamp}&logical_date_lte={stamp}&limit=1"
            due = not self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        run_id = self.trigger(dag_id, conf=conf, logical_date=logical if due else None)
        self.unpause(dag_id)
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances?limit=1000"
        return self.api("GET", path)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        """Every try of one task instance, the running one included (hostname, state, try number)."""
        mapped = f"/{map_index}" if map_index >= 0 else ""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}{mapped}/tries"
        return self.api("GET", path)["task_instances"]

    def wait(self, dag_id: str, run_id: str, *, deadline: float, poll: float = 2) -> dict:
        """The DAG run once it has succeeded; a failed run or the deadline is a ZerocertError
        naming the failed tasks."""
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] == "success":
                return run
            if run["state"] == "failed":
                failed = sorted(ti["task_id"] for ti in self.task_instances(dag_id, run_id) if ti["state"] == "failed")
                raise ZerocertError(
                    f"{dag_id} run {run_id} failed (tasks {', '.join(failed) or 'none'}); "
                    f"task logs: {self.out / 'airflow' / 'logs' / f'dag_id={dag_id}'}"
                )
            if time.monotonic() > deadline:
                raise ZerocertError(f"{dag_id} run {run_id} still {run['state']} at the timeout; logs: {self.logs}")
            time.sleep(poll)

    # -- faults --

    def worker_processes(self, name: str) -> list[psutil.Process]:
        """The worker ``name``'s main process and every process under it (pool, supervisors,
        task runners)."""
        try:
            main = psutil.Process(_recorded(self.out)["pids"][name])
            return [main, *main.children(recursive=True)]
        except (psutil.NoSuchProcess, KeyError):
            return []

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker as if its machine died: its process group and the groups of every
        process under it (each task runner leads a group of its own). Returns the pids killed."""
        tree = self.worker_processes(name)
        groups = {_pgid(process.pid) for process in tree} - {None, os.getpgid(0)}
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(not _exited(process.pid) for process in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        return sorted(process.pid for process in tree)


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _request(
    method: str, url: str, body: Mapping | None = None, token: str | None = None, missing_ok: bool = False
) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return {}
        detail = exc.read().decode("utf-8", errors="replace")[:300]
        raise ZerocertError(f"Airflow's REST API answered {exc.code} to {method} {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ZerocertError(f"Airflow's REST API did not answer {method} {url}: {exc}") from None


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _worker_ready(log: Path) -> bool:
    try:
        return bool(re.search(r"@\S+ ready\.", log.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _recorded(out: Path) -> dict:
    try:
        return json.loads((out / PIDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def cluster_processes(out: Path) -> list[psutil.Process]:
    """This user's processes that the cluster of ``out`` started: those of its recorded process
    groups (younger than the cluster), those carrying its marker (``demo_processes``), and all
    their descendants (task runners lead groups of their own)."""
    recorded = _recorded(out)
    groups, since = set(recorded.get("process_groups", {}).values()), recorded.get("started", 0.0) - 1
    found = {process.pid: process for process in demo_processes(out)}
    for process in psutil.process_iter(["uids", "create_time"]):
        try:
            ours = process.info["uids"] and process.info["uids"].real == os.getuid()
            if ours and os.getpgid(process.pid) in groups and process.info["create_time"] >= since:
                found[process.pid] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    for process in list(found.values()):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.update({child.pid: child for child in process.children(recursive=True)})
    return [process for process in found.values() if process.pid != os.getpid() and not _exited(process.pid)]


def _signal(processes: list[psutil.Process], sig: signal.Signals) -> None:
    groups = {_pgid(process.pid) for process in processes} - {None, os.getpgid(0)}
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.send_signal(sig)


def stop_cluster(out: Path, *, progress: Callable[[str], None], grace: float = 30) -> int:
    """End every process the cluster of ``out`` started (SIGTERM, SIGKILL after ``grace`` s) and
    check that none is left; returns how many there were."""
    processes = cluster_processes(out)
    if processes:
        progress(f"stopping {len(processes)} process(es) of Airflow on Celery")
        _signal(processes, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while cluster_processes(out) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left := cluster_processes(out):
            _signal(left, signal.SIGKILL)
            time.sleep(1)
    if left := cluster_processes(out):
        raise ZerocertError(f"{len(left)} process(es) of Airflow on Celery are left: {sorted(p.pid for p in left)}")
    (out / PIDS_FILE).unlink(missing_ok=True)
    return len(processes)


@contextlib.contextmanager
def running(cluster: CeleryCluster, *, progress: Callable[[str], None]) -> Iterator[CeleryCluster]:
    """The cluster started, and stopped (none left) however the block ends: SIGTERM too."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        cluster.start(progress=progress)
        yield cluster
    finally:
        try:
            stopped = stop_cluster(cluster.out, progress=progress)
            progress(f"stopped the {stopped} process(es) it started; none is left")
        finally:
            signal.signal(signal.SIGTERM, previous)


# --- the demo -----------------------------------------------------------------------------------

CITY_KEYS = ("ZEROCERT_LANDING", "ZEROCERT_REFERENCE", "ZEROCERT_WAREHOUSE_URL", "ZEROCERT_AS_OF")


def demo_city(out: Path, *, people: int, seed: int, progress: Callable[[str], None]) -> tuple[dict[str, str], str]:
    """The ``ZEROCERT_*`` of the four ``CITY_KEYS`` that are set, over a city synthesized in
    ``out/city`` when the landing or the reference is not given; and the as-of date (the
    given one, else the synthetic city's, else today in the DAGs' timezone)."""
    given = {key: os.environ[key] for key in CITY_KEYS if os.environ.get(key)}
    as_of = given.get("ZEROCERT_AS_OF")
    if "ZEROCERT_LANDING" not in given or "ZEROCERT_REFERENCE" not in given:
        from pipelines.synth import synthesize

        progress(f"synthesizing a city of {people} people in {out / 'city'}")
        summary = synthesize(out / "city", people, seed)
        as_of = as_of or str(summary.get("as_of", "2027-08-15"))
    if as_of is None:
        import zoneinfo

        from pipelines.demo import DAGS_TIMEZONE

        as_of = dt.datetime.now(zoneinfo.ZoneInfo(DAGS_TIMEZONE)).date().isoformat()
    (out / "as_of").write_text(as_of, encoding="ascii")
    return {**given, "ZEROCERT_AS_OF": as_of}, as_of


def run_celery_demo(
    out: Path, *, people: int, seed: int, port: int, timeout: float, progress: Callable[[str], None]
) -> int:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    city, as_of = demo_city(out, people=people, seed=seed, progress=progress)
    cluster = CeleryCluster(out, as_of, port=port, city=city)
    env = cluster.variables()
    url = env["ZEROCERT_WAREHOUSE_URL"]
    deadline = time.monotonic() + timeout
    with running(cluster, progress=progress):
        if ended := cluster.end_leftovers([*source_dag_ids(), WAREHOUSE_DAG]):
            progress(f"marked failed {ended} run(s) an interrupted demo left unfinished")
        started = dt.datetime.now(dt.UTC)
        cluster.unpause(WAREHOUSE_DAG)  # asset-scheduled: it runs once every source DAG has published
        runs = {}
        for dag_id in source_dag_ids():
            runs[dag_id] = cluster.trigger_like_its_schedule(dag_id, {"as_of": as_of})
            progress(f"triggered {dag_id} ({runs[dag_id]})")
        for dag_id, run_id in runs.items():
            cluster.wait(dag_id, run_id, deadline=deadline)
            progress(f"{dag_id}: success")
        warehouse_run = _asset_triggered_run(cluster, since=started, deadline=deadline)
        progress(f"{WAREHOUSE_DAG} runs on the staged assets ({warehouse_run})")
        cluster.wait(WAREHOUSE_DAG, warehouse_run, deadline=deadline)
        progress(f"{WAREHOUSE_DAG}: success")
        placement = _placement(cluster, {**runs, WAREHOUSE_DAG: warehouse_run})
    print_summary(
        env,
        url,
        title="zerocert demo-celery: the DAGs ran on the Celery executor (two workers) and published a warehouse",
        truth_dir=out / "city" / "truth" if "ZEROCERT_LANDING" not in city else None,
        look_at=[
            ("tasks per worker", placement),
            ("task logs", f"{out / 'airflow' / 'logs'} (Airflow stopped with the demo)"),
            ("process logs", f"{out / 'logs'}/airflow-*.log"),
            ("metadata database", f"psql -h 127.0.0.1 -U postgres {cluster.database}"),
        ],
    )
    return 0


def _asset_triggered_run(cluster: CeleryCluster, *, since: dt.datetime, deadline: float) -> str:
    """The warehouse DAG's run that the source DAGs' asset events created after ``since``."""
    while time.monotonic() < deadline:
        for run in cluster.dag_runs(WAREHOUSE_DAG):
            if run["run_type"] == "asset_triggered" and dt.datetime.fromisoformat(run["run_after"]) >= since:
                return run["dag_run_id"]
        time.sleep(2)
    raise ZerocertError(f"{WAREHOUSE_DAG} did not start after the source DAGs published their assets")


def _placement(cluster: CeleryCluster, runs: Mapping[str, str]) -> str:
    """How many task instances each worker ran, e.g. ``worker-a 12, worker-b 14``."""
    counts: dict[str, int] = {}
    for dag_id, run_id in runs.items():
        for ti in cluster.task_instances(dag_id, run_id):
            counts[ti.get("hostname") or "?"] = counts.get(ti.get("hostname") or "?", 0) + 1
    return ", ".join(f"{host} {n}" for host, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo_celery", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".demo/celery", help="demo folder (default .demo/celery)")
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=DEMO_PORT, help=f"the API server's port (default {DEMO_PORT})")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run (default 1800)")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"[demo-celery] {message}", file=sys.stderr, flush=True)

    try:
        return run_celery_demo(
            Path(args.out), people=args.people, seed=args.seed, port=args.port, timeout=args.timeout, progress=progress
        )
    except ZerocertError as exc:
        print(f"zerocert demo-celery: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zerocert demo-celery: interrupted; every process it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
