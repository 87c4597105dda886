"""``zerocert bench``: wall time, rows/s and peak memory of every phase at city scale.

Targets (issues 2–6) are checked against these figures by a person, not by the tests: tests
assert behaviour, the bench prints numbers. Phases run in one process, as ``zerocert run`` does;
peak memory is the highest resident set size sampled during the phase.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psutil


class PeakMemory:
    """Samples, in a background thread, the memory of this process and every process under it
    (the workers of a step run in parallel), summed: what the machine must hold at once.

    Each process counts its proportional set size (PSS: its own pages, and pages it shares with
    others divided among them), so the pipeline the workers' forkserver imported once is counted
    once, not once per worker as summed RSS would; for a single process PSS is its RSS.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._process = psutil.Process()

    @staticmethod
    def _held(process: psutil.Process) -> int:
        try:
            return process.memory_full_info().pss
        except (psutil.AccessDenied, AttributeError):  # no PSS on this platform
            return process.memory_info().rss

    def _in_use(self) -> int:
        total = self._held(self._process)
        for child in self._process.children(recursive=True):
            try:
                total += self._held(child)
            except psutil.Error:  # ended between listing and reading
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._in_use())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self._in_use()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._in_use())


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
        record.update(seconds=round(seconds, 2), peak_memory_mb=round(memory.peak / 2**20))
        if rows:
            record.update(rows=int(rows), rows_per_s=int(rows / seconds) if seconds else None)
        self.phases.append(record)
        self._print(record)

    def total(self, name: str, phases: list[str]) -> dict:
        """One line for several phases: their summed time and highest peak (not a phase itself)."""
        parts = [p for p in self.phases if p["phase"] in phases]
        record = {
            "phase": name,
            "seconds": round(sum(p["seconds"] for p in parts), 2),
            "peak_memory_mb": max((p["peak_memory_mb"] for p in parts), default=0),
            "of": [p["phase"] for p in parts],
        }
        self._print(record)
        return record

    @staticmethod
    def _print(record: dict) -> None:
        rows = record.get("rows")
        print(
            f"bench {record['phase']:<22} {record['seconds']:8.1f} s  peak {record['peak_memory_mb']:>6} MB"
            + (f"  {rows:>11,} rows  {record['rows_per_s']:>10,} rows/s" if rows else ""),
            flush=True,
        )


# A declared step's figure: its phase name and the rows it counts from the results so far.
PHASES: dict[str, tuple[str, Callable[[Mapping[str, dict]], int] | None]] = {
    "stage": ("staging", lambda done: sum(s["rows_in"] for s in done["stage"].values())),
    "validate": ("validation", lambda done: sum(s["rows_accepted"] for s in done["stage"].values())),
    "resolve_addresses": ("addresses", lambda done: done["resolve_addresses"]["texts"]),
    # the engine's steps (join and eligibility), one line each, then their sum (ENGINE_TOTAL)
    "bucket_inputs": ("engine: bucket inputs", None),
    "join_bucket": ("engine: join", lambda done: sum(b["rows_in"] for b in done["join_bucket"].values())),
    "route_edges": ("engine: route edges", lambda done: done["route_edges"]["edges"]),
    "link_bucket": ("engine: link", lambda done: sum(b["edges"] for b in done["link_bucket"].values())),
    "decide_bucket": ("engine: decide", lambda done: sum(b["children"] for b in done["decide_bucket"].values())),
    "prefill_bucket": ("engine: prefill", lambda done: sum(b["guardians"] for b in done["prefill_bucket"].values())),
    "gather_buckets": ("engine: gather", None),
    "publish": ("publish", None),
}
ENGINE_TOTAL = "join+eligibility"


def run_bench(
    *,
    people: int,
    seed: int = 1,
    workdir: str | None = None,
    warehouse_url: str | None = None,
    city: str | None = None,
    buckets: int | None = None,
    workers: int = 1,
) -> dict:
    from pipelines import run as steps
    from pipelines.config import Settings, parse_engine_buckets
    from pipelines.policy import load_policy
    from pipelines.synth import synthesize

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="zerocert-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    city_dir = Path(city) if city else root / "city"
    if city and (city_dir / "landing").is_dir():
        summary = {"as_of": "2027-08-15"}
        print(f"bench reusing the city in {city_dir}", flush=True)
    else:
        with timer.phase("synth", rows=people):  # in a process of its own: what it held is not the run's
            summary = steps.in_fresh_processes(synthesize, {"synth": (city_dir, people, seed)}, 1, lambda _: None)[
                "synth"
            ]
    as_of = dt.date.fromisoformat(str(summary.get("as_of", "2027-08-15")))
    settings = Settings(
        landing=city_dir / "landing",
        exchange_url=None,
        reference=city_dir / "reference",
        warehouse_url=warehouse_url or f"sqlite:///{root / 'warehouse.sqlite'}",
        policy_path=city_dir / "reference" / "policy.yaml",
        as_of=as_of,
        work_dir=root / "work",
        attempt="bench",
        engine_buckets=parse_engine_buckets(str(os.environ.get("ZEROCERT_ENGINE_BUCKETS") or 0))
        if buckets is None
        else parse_engine_buckets(str(buckets)),
    )
    load_policy(settings.policy_path)
    attempt = steps.Attempt(settings, dt.datetime.now(dt.UTC))
    done: dict[str, dict] = {}
    engine = None
    for step in steps.STEPS:  # the run's own steps, one phase each
        phase, rows = PHASES.get(step.name, (step.name, None))
        with timer.phase(phase) as record:
            done[step.name] = steps.do_step(step, attempt, done, workers=workers)
            if rows is not None:
                record["rows"] = rows(done)
        if step.name == steps.ENGINE_STEPS[-1]:
            engine = timer.total(ENGINE_TOTAL, [PHASES[name][0] for name in steps.ENGINE_STEPS])
    run_phases = [p for p in timer.phases if p["phase"] != "synth"]
    total = sum(p["seconds"] for p in run_phases)
    published_rows = sum(steps.published_row_counts(settings).values())
    with timer.phase("baseline (read+write)") as record:
        record["rows"] = measure_baseline(settings, published_rows)["rows_read"]
    baseline = timer.phases[-1]["seconds"]
    result = {
        "people": people,
        "workdir": str(root),
        "phases": timer.phases,
        "engine": engine,
        "engine_buckets": done[steps.BUCKET_PLAN]["bucket_count"],
        "run_seconds": round(total, 1),
        "baseline_seconds": baseline,
        "ratio_to_baseline": round(total / baseline, 1) if baseline else None,
        "published_rows": published_rows,
        "run_peak_memory_mb": max(p["peak_memory_mb"] for p in run_phases),
    }
    print(
        f"bench whole run (without synth): {total:.1f} s, peak {result['run_peak_memory_mb']} MB; "
        f"baseline {baseline:.1f} s; ratio {result['ratio_to_baseline']}",
        flush=True,
    )
    return result


# --- baseline: the least any pipeline must do ----------------------------------------------------


def _read_delivery_file(path: Path):
    """Read one delivered file with pyarrow alone (no repair): the I/O floor of staging."""
    import pyarrow.csv as pa_csv

    if path.suffix == ".jsonl":  # one string column per line: a broken line must not stop the floor measurement
        return pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=["line"]),
            parse_options=pa_csv.ParseOptions(delimiter="\x01", quote_char=False, invalid_row_handler=lambda r: "skip"),
            convert_options=pa_csv.ConvertOptions(check_utf8=False),
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    delimiter = "|" if text[: text.find("\n")].count("|") > 0 else ","
    import io

    return pa_csv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=lambda r: "skip"),
        convert_options=pa_csv.ConvertOptions(column_types={}, strings_can_be_null=False, check_utf8=False),
    )


def _write_rows(url: str, name: str, table, rows: int) -> None:
    """Write ``rows`` rows (cycling the table) to a scratch table by the fastest bulk path: PostgreSQL
    COPY, or ADBC into a SQLite file beside the warehouse (one durable transaction)."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from pipelines.warehouse import SQLiteWarehouse, warehouse_for

    table = table.select(table.column_names[:8])
    table = pa.table({f"c{i}": table.column(i).cast(pa.string()) for i in range(table.num_columns)})
    repeats = -(-rows // max(table.num_rows, 1))
    table = pa.concat_tables([table] * repeats).slice(0, rows) if repeats > 1 else table.slice(0, rows)
    columns = ", ".join(f"{c} text" for c in table.column_names)
    warehouse = warehouse_for(url)
    if isinstance(warehouse, SQLiteWarehouse):  # SQLite's bulk path, as the publish uses it: ADBC
        import adbc_driver_sqlite.dbapi

        path = warehouse.path.with_name(f"{name}.sqlite")
        path.unlink(missing_ok=True)
        try:
            with adbc_driver_sqlite.dbapi.connect(str(path)) as con, con.cursor() as cur:
                cur.execute(f"CREATE TABLE {name} ({columns})")
                for batch in table.to_batches(max_chunksize=100_000):
                    cur.adbc_ingest(name, batch, mode="append")
                con.commit()
        finally:
            path.unlink(missing_ok=True)
        return
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} ({columns})")
        with cur.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy:
            for batch in table.to_batches(max_chunksize=100_000):
                buffer = io.BytesIO()
                pa_csv.write_csv(batch, buffer, pa_csv.WriteOptions(include_header=False))
                copy.write(buffer.getbuffer())
        cur.execute(f"DROP TABLE {name}")


def measure_baseline(settings, published_rows: int) -> dict:
    """Read every chosen delivery once with pyarrow, write as many rows as the run published."""
    from pipelines import run as steps

    inputs = []
    for source in steps.source_keys():
        delivery = steps.staged_snapshot(source, settings)["delivery"]
        folder = settings.landing / source / delivery
        for path in sorted(folder.iterdir()):
            if path.suffix in (".csv", ".jsonl"):
                inputs.append(_read_delivery_file(path))
    rows_read = sum(t.num_rows for t in inputs)
    widest = max(inputs, key=lambda t: t.num_rows)
    _write_rows(settings.warehouse_url, "zerocert_bench_baseline", widest, published_rows)
    return {"rows_read": rows_read, "rows_written": published_rows}
