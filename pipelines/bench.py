"""``zerocert bench``: wall time, rows/s and peak memory of every phase at city scale.

Targets (issues 2–6) are checked against these figures by a person, not by the tests: tests
assert behaviour, the bench prints numbers. Phases run in one process, as ``zerocert run`` does;
peak memory is the highest resident set size sampled during the phase.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil


class PeakMemory:
    """Samples this process's RSS in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


class PhaseTimer:
    def __init__(self) -> None:
        self.phases: list[dict] = []

    @contextmanager
    def phase(self, name: str, rows: int | None = None) -> Iterator[dict]:
        record: dict = {"phase": name}
        start = time.perf_counter()
        with PeakMemory() as memory:
            yield record
        seconds = time.perf_counter() - start
        rows = record.pop("rows", rows)
        record.update(seconds=round(seconds, 2), peak_rss_mb=round(memory.peak / 2**20))
        if rows:
            record.update(rows=int(rows), rows_per_s=int(rows / seconds) if seconds else None)
        self.phases.append(record)
        print(f"bench {name:<22} {seconds:8.1f} s  peak {record['peak_rss_mb']:>6} MB"
              + (f"  {rows:>11,} rows  {record['rows_per_s']:>10,} rows/s" if rows else ""), flush=True)


def run_bench(*, people: int, seed: int = 1, workdir: str | None = None, warehouse_url: str | None = None) -> dict:
    from pipelines.config import Settings
    from pipelines.policy import load_policy
    from pipelines.synth import synthesize
    from pipelines import run as steps

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="zerocert-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    with timer.phase("synth", rows=people) as record:
        summary = synthesize(root / "city", people, seed)
    as_of = dt.date.fromisoformat(str(summary.get("as_of", "2027-08-15")))
    settings = Settings(
        landing=root / "city" / "landing", exchange_url=None, reference=root / "city" / "reference",
        warehouse_url=warehouse_url or f"sqlite:///{root / 'warehouse.sqlite'}",
        policy_path=root / "city" / "reference" / "policy.yaml", as_of=as_of, work_dir=root / "work",
    )
    load_policy(settings.policy_path)
    started = dt.datetime.now(dt.timezone.utc)
    sources = steps.source_keys()
    with timer.phase("staging") as record:
        snapshots = [steps.stage(source, settings) for source in sources]
        record["rows"] = sum(s["rows_in"] for s in snapshots)
    with timer.phase("validation") as record:
        for source in sources:
            steps.validate(source, settings)
        record["rows"] = sum(s["rows_accepted"] for s in snapshots)
    with timer.phase("addresses") as record:
        record["rows"] = steps.resolve_addresses(settings)["texts"]
    with timer.phase("join+eligibility"):
        decided = steps.join_and_decide(settings)
    with timer.phase("publish"):
        steps.publish(settings, decided, started)
    total = sum(p["seconds"] for p in timer.phases if p["phase"] != "synth")
    result = {"people": people, "workdir": str(root), "phases": timer.phases,
              "run_seconds": round(total, 1),
              "run_peak_rss_mb": max(p["peak_rss_mb"] for p in timer.phases if p["phase"] != "synth")}
    print(f"bench whole run (without synth): {total:.1f} s, peak {result['run_peak_rss_mb']} MB", flush=True)
    return result
