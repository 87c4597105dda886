"""``zerocert demo --serve`` and ``--stop``: the demo's own Airflow UI, started and stopped as one.

``--serve`` starts the API server (UI), the scheduler and the DAG processor of the demo folder's
Airflow (no triggerer: no task defers) in one new process group, each with the marker
``ZEROCERT_DEMO_UI=<demo folder>`` in its environment, plus a sampler that keeps the peak of
their summed memory. ``<demo>/airflow.pids`` records them; ``--stop`` ends the group and every
process with the marker, then checks that none is left.

Imports only the standard library and psutil at the top: the sampler stays small.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from pipelines.errors import ZerocertError

MARKER = "ZEROCERT_DEMO_UI"
PIDS_FILE = "airflow.pids"
MEMORY_FILE = "airflow-memory.json"
MEMORY_BUDGET = 3_000_000_000  # 3 GB
SAMPLE_SECONDS = 1.0
COMPONENTS = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],  # the API server reads the task logs from disk
    "dag-processor": ["dag-processor"],
}


def demo_processes(out: Path) -> list[psutil.Process]:
    """This user's processes that the demo folder's ``--serve`` started.

    Those still in the recorded process group (and younger than it), their descendants, and any
    other carrying the marker: Airflow renames its processes (setproctitle), which can hide the
    environment of some, so the marker alone would miss them.
    """
    recorded = _recorded(out)
    group, since = recorded.get("process_group"), recorded.get("started", 0.0) - 1
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["uids", "create_time"]):
        try:
            if not process.info["uids"] or process.info["uids"].real != os.getuid():
                continue
            in_group = bool(group) and os.getpgid(process.pid) == group and process.info["create_time"] >= since
            if in_group or process.environ().get(MARKER) == str(out):
                found[process.pid] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
            continue
    for process in list(found.values()):
        try:
            found.update({child.pid: child for child in process.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [process for process in found.values() if _running(process)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _recorded(out: Path) -> dict:
    path = out / PIDS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def memory_in_use(processes: list[psutil.Process]) -> int:
    """Summed resident memory (RSS) of the processes: shared pages count once per process, an upper bound."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def sample_memory(out: Path) -> None:
    """Sample the demo's processes until none but this one is left; keep the peak in ``airflow-memory.json``."""
    path = out / MEMORY_FILE
    peak = {"peak_rss_bytes": 0, "processes_at_peak": 0, "peak_at": None, "samples": 0}
    me = os.getpid()
    while True:
        processes = [p for p in demo_processes(out) if p.pid != me]
        if not processes:
            return
        peak["samples"] += 1
        in_use = memory_in_use([*processes, psutil.Process(me)])
        if in_use > peak["peak_rss_bytes"]:
            peak.update(peak_rss_bytes=in_use, processes_at_peak=len(processes) + 1, peak_at=_now())
        path.write_text(json.dumps(peak), encoding="utf-8")
        time.sleep(SAMPLE_SECONDS)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _ready(health: dict | None) -> bool:
    if not health:
        return False
    return all(
        health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")
    )


def serve(out: Path, *, port: int = 8080, progress: Callable[[str], None], timeout: float = 240) -> int:
    """Start the demo's Airflow UI in the background and return once it answers; print how to use and stop it."""
    from pipelines.demo import demo_as_of, demo_environment, password_file, write_airflow_config

    out = out.resolve()
    if not (out / "airflow" / "airflow.db").exists():
        raise ZerocertError(f"no demo in {out}: run `zerocert demo --out {out}` first")
    if demo_processes(out):
        raise ZerocertError(
            f"the demo's Airflow already runs for {out}; stop it with `zerocert demo --stop --out {out}`"
        )
    if not _port_free(port):
        raise ZerocertError(f"port {port} is in use; give another with --port")
    write_airflow_config(out, port)
    env = {**os.environ, **demo_environment(out, demo_as_of(out), port), MARKER: str(out)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: dict[str, int] = {}
    group, started_at = 0, time.time()
    for name, args in COMPONENTS.items():
        progress(f"starting airflow {name}")
        with (logs / f"airflow-{name}.log").open("a", encoding="utf-8") as log:
            process = subprocess.Popen(
                [airflow, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=out,
                process_group=group,  # 0 for the first: it leads a new group; the others join it
            )
        group = group or process.pid
        started[name] = process.pid
    record = {"process_group": group, "pids": started, "port": port, "started_at": _now(), "started": started_at}
    (out / PIDS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    sampler = subprocess.Popen(
        [sys.executable, "-m", "pipelines.demo_ui", "sample", str(out)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=group,
    )
    started["memory-sampler"] = sampler.pid
    (out / PIDS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while not _ready(_health(port)):
        gone = [name for name, pid in started.items() if not psutil.pid_exists(pid) or _exited(pid)]
        if gone or time.monotonic() > deadline:
            stop(out, progress=lambda message: None)
            why = f"airflow {gone[0]} exited" if gone else f"not ready within {timeout:.0f} s"
            raise ZerocertError(f"the demo's Airflow did not start ({why}); logs: {logs}/airflow-*.log")
        time.sleep(1)
    in_use = memory_in_use(demo_processes(out))
    print()
    print(f"zerocert demo: Airflow UI at http://127.0.0.1:{port}/ (the demo's DAGs only)")
    print(f"  log in as admin, password in {password_file(out)}")
    print("  times show in your browser's timezone; the DAGs run on Asia/Shanghai (pick it under User > Timezone)")
    print(
        f"  processes: {', '.join(f'{name} {pid}' for name, pid in started.items())} (group {group}, {out / PIDS_FILE})"
    )
    print(f"  memory now: {gb(in_use)} (budget {gb(MEMORY_BUDGET)}); the peak is printed on stop")
    print(f"  stop everything it started: make demo-stop, or .venv/bin/zerocert demo --stop --out {out}")
    return 0


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _signal_all(out: Path, group: int | None, sig: signal.Signals) -> None:
    marked = demo_processes(out)
    if group and any(p.pid == group for p in marked):  # the group's leader is still ours: end the group
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass
    for process in marked:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def stop(out: Path, *, progress: Callable[[str], None], grace: float = 30) -> int:
    """End every process the demo's ``--serve`` started (SIGTERM, then SIGKILL after ``grace`` s); none may be left."""
    out = out.resolve()
    pids_file = out / PIDS_FILE
    recorded = json.loads(pids_file.read_text(encoding="utf-8")) if pids_file.exists() else {}
    group = recorded.get("process_group")
    if not demo_processes(out):
        progress(f"no process of the demo's Airflow runs for {out}")
    else:
        progress(f"stopping the demo's Airflow (process group {group})")
        _signal_all(out, group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while demo_processes(out) and time.monotonic() < deadline:
            time.sleep(0.5)
        if demo_processes(out):
            _signal_all(out, group, signal.SIGKILL)
            time.sleep(1)
    left = demo_processes(out)
    if left:
        raise ZerocertError(f"{len(left)} process(es) of the demo's Airflow are left: {sorted(p.pid for p in left)}")
    pids_file.unlink(missing_ok=True)
    memory = out / MEMORY_FILE
    if memory.exists():
        peak = json.loads(memory.read_text(encoding="utf-8"))
        print(
            f"zerocert demo: stopped, no process left; peak memory {gb(peak['peak_rss_bytes'])} "
            f"(summed RSS of {peak['processes_at_peak']} processes, {peak['samples']} samples; "
            f"budget {gb(MEMORY_BUDGET)})"
        )
    else:
        print("zerocert demo: stopped, no process left")
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["sample"]:
    sample_memory(Path(sys.argv[2]))
