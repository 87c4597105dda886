"""``zerocert bench-lookups``: latency of the two lookups a parent's phone makes, under load.

Prefill by guardian ID and eligibility by child ID, from ``clients`` concurrent processes (each
its own connection, closed loop, as an enrollment system's worker pool would be), first as a
district login through the audited functions (``zerocert.prefill_of`` / ``eligibility_of``: the
login's district, a ``district_scope`` probe, the document, an HMAC and an ``lookup_audit`` row
committed per call), then as the owner reading the tables directly for comparison. Then
``school_applicants`` from one client. Prints p50/p99 and calls per second; the target
(warehouse.md) is p99 under 10 ms at city scale.

``bench_tables`` writes a city-sized warehouse run (the published tables at realistic row counts,
valid resident IDs) without the staging and engine phases, so the lookups can be measured at
3 M residents in minutes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.access import build_access_frames, district_login, district_passwords_from_config
from pipelines.resident_id import check_characters

log = logging.getLogger(__name__)

FUNCTIONS = {  # what a district login runs
    "prefill_by_guardian": "SELECT zerocert.prefill_of(%s)::text",
    "eligibility_by_child": "SELECT zerocert.eligibility_of(%s)::text",
}
TABLE_QUERIES = {  # the owner, for comparison: the bare index probes
    "prefill_by_guardian": "SELECT document::text FROM zerocert.prefill WHERE guardian_id = %s",
    "eligibility_by_child": (
        "SELECT level, school_code, category, priority_date, basis_guardian_id,"
        " evidence::text, policy_id FROM zerocert.eligibility WHERE child_id = %s"
    ),
}
ROLES = ("district_login", "owner")
DISTRICTS = ("371102", "371103", "371121", "371122", "371171", "371172")


# --- a city-sized run without the pipeline ---------------------------------------------------


def _resident_ids(regions: np.ndarray, births: pd.DatetimeIndex, serial: np.ndarray) -> pd.Series:
    first17 = pd.Series(regions).str.cat([pd.Series(births.strftime("%Y%m%d")), pd.Series(serial).map("{:03d}".format)])
    return first17 + check_characters(first17)


def bench_frames(residents: int, seed: int = 1) -> dict[str, pd.DataFrame]:
    """The published tables the lookups read, at the proportions of a synthetic city.

    10 % children (born 2020-2021), each with two guardians among the adults; 80 % of the
    children eligible at one or two schools of their district, the rest ineligible; one prefill
    document (~0.6 kB JSON) per guardian.
    """
    rng = np.random.default_rng(seed)
    n_children = residents // 10
    n_adults = residents - n_children
    region = rng.integers(0, len(DISTRICTS), residents)
    slot = np.arange(residents)
    adult_birth = pd.Timestamp("1960-01-01") + pd.to_timedelta(slot[:n_adults] // 1000 % 12000, unit="D")
    child_birth = pd.Timestamp("2019-09-01") + pd.to_timedelta(slot[n_adults:] // 1000 % 700, unit="D")
    births = adult_birth.append(child_birth)
    ids = _resident_ids(np.asarray(DISTRICTS)[region], births, slot % 1000)
    if ids.duplicated().any():
        raise AssertionError("bench IDs collide")
    adults, children = ids.iloc[:n_adults].to_numpy(), ids.iloc[n_adults:].to_numpy()
    child_region = region[n_adults:]

    citizen = pd.DataFrame(
        {
            "citizen_id": ids,
            "name": "张某",
            "sex": np.where(slot % 2 == 0, "男", "女"),
            "birth_date": births,
            "household_no": pd.Series(slot // 3).map("{:09d}".format),
            "hukou_status": "正常",
            "hukou_region_code": np.asarray(DISTRICTS)[region],
            "urban_hukou": True,
            "name_conflict": False,
        }
    )
    guardian = rng.choice(n_adults, size=(n_children, 2), replace=True)
    guardianship = pd.DataFrame(
        {
            "child_id": np.repeat(children, 2),
            "guardian_id": adults[guardian.ravel()],
            "relation": np.tile(["父亲", "母亲"], n_children),
            "basis": "guardian_field",
        }
    )
    guardianship = guardianship.drop_duplicates(["child_id", "guardian_id"])

    schools_per_district = 6
    schools = pd.DataFrame(
        {
            "school_code": [f"P{d}{k:03d}" for d in DISTRICTS for k in range(schools_per_district)],
            "school_name": [f"第{k}小学" for _ in DISTRICTS for k in range(schools_per_district)],
            "level": "primary",
            "district_code": np.repeat(DISTRICTS, schools_per_district),
            "address": "",
            "capacity": "3000",
            "lon": "0",
            "lat": "0",
        }
    )
    eligible = rng.random(n_children) < 0.8
    two = eligible & (rng.random(n_children) < 0.25)
    first = child_region * schools_per_district + rng.integers(0, schools_per_district, n_children)
    second = child_region * schools_per_district + (first % schools_per_district + 1) % schools_per_district
    rows = np.concatenate([np.flatnonzero(eligible), np.flatnonzero(two)])
    school_of = np.concatenate([first[eligible], second[two]])
    eligibility = pd.DataFrame(
        {
            "child_id": children[rows],
            "level": "primary",
            "school_code": schools["school_code"].to_numpy()[school_of],
            "category": rng.choice(["A1", "A2", "B", "C"], len(rows)),
            "priority_date": pd.Timestamp("2018-01-01") + pd.to_timedelta(rng.integers(0, 2000, len(rows)), unit="D"),
            "basis_guardian_id": adults[guardian[rows, 0]],
            "evidence": '[{"date": "2018-05-01", "record_key": "鲁(2018)日照市不动产权第0001号", '
            '"source": "property_title"}]',
            "policy_id": "bench",
        }
    )
    ineligibility = pd.DataFrame(
        {
            "child_id": children[~eligible],
            "level": "primary",
            "reasons": '["NO_QUALIFYING_PROPERTY"]',
            "policy_id": "bench",
        }
    )
    by_guardian = guardianship.groupby("guardian_id", sort=False)["child_id"].agg(list)
    document = (
        '{"children": ' + by_guardian.map(json.dumps) + ', "hukou": {"region": "371102", '
        '"address": "日照市东港区海滨二路66号阳光海岸小区3号楼2单元301室"}, "properties": '
        '[{"certificate": "鲁(2018)日照市不动产权第0001号", "address": "东港区海滨二路66号", '
        '"date": "2018-05-01"}], "rentals": [], "employment": [{"kind": "social_insurance", '
        '"months": 36}], "schools": [{"school": "P371102001", "category": "A1"}]}'
    )
    prefill = pd.DataFrame(
        {"guardian_id": by_guardian.index.astype(str), "document": document.to_numpy(), "policy_id": "bench"}
    )
    frames = {
        "citizen": citizen,
        "guardianship": guardianship,
        "eligibility": eligibility,
        "ineligibility": ineligibility,
        "prefill": prefill,
    }
    frames.update(build_access_frames(frames, schools, None))
    return frames


def bench_tables(out_dir: Path, residents: int, seed: int = 1) -> dict[str, Path]:
    """``bench_frames`` as Parquet, plus empty files for every other published table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.warehouse_schema import OPTIONAL_TABLES, PUBLISHED_TABLES, TABLES, arrow_schema

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = bench_frames(residents, seed)
    paths = {}
    for name in PUBLISHED_TABLES:
        paths[name] = out_dir / f"{name}.parquet"
        if name in frames:
            frame, schema = frames[name], arrow_schema(TABLES[name])
            schema = schema.remove(schema.get_field_index("run_id"))
            columns = {
                c: frame[c] if c in frame else pd.Series([None] * len(frame), dtype=object) for c in schema.names
            }
            pq.write_table(
                pa.Table.from_pandas(pd.DataFrame(columns), schema=schema, preserve_index=False), paths[name]
            )
        elif name not in OPTIONAL_TABLES:
            schema = arrow_schema(TABLES[name])
            pq.write_table(pa.Table.from_batches([], schema=schema), paths[name])
        else:
            del paths[name]
    return paths


# --- the benchmark -----------------------------------------------------------------------------


def _client(
    conninfo: Mapping[str, object],
    queries: Mapping[str, str],
    work: list[tuple[str, str]],
    seconds: float,
    start_at: float,
) -> dict:
    """One closed-loop client: run its (query, id) list round and round until time is up."""
    import psycopg

    latencies: dict[str, list[int]] = {kind: [] for kind in queries}
    found = {kind: 0 for kind in queries}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        cur = conn.cursor()
        for kind, value in work[:10]:  # warm: connection, plan cache, prepared statements
            cur.execute(queries[kind], (value,), prepare=True)
            cur.fetchall()
        time.sleep(max(0.0, start_at - time.time()))
        stop, i = time.perf_counter() + seconds, 0
        while time.perf_counter() < stop:
            kind, value = work[i % len(work)]
            began = time.perf_counter_ns()
            cur.execute(queries[kind], (value,), prepare=True)
            rows = cur.fetchall()
            latencies[kind].append(time.perf_counter_ns() - began)
            found[kind] += any(row[0] is not None for row in rows)
            i += 1
    return {"latencies": latencies, "found": found}


def _summary(latencies: list[int], found: int, seconds: float) -> dict:
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    if not len(ms):
        return {"queries": 0, "found": 0}
    return {
        "queries": int(len(ms)),
        "found": int(found),
        "per_second": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def _sample(cur, district: str, n: int) -> list[tuple[str, str]]:
    cur.execute(
        """SELECT p.guardian_id FROM zerocert.prefill p JOIN zerocert.district_scope s
                   ON s.citizen_id = p.guardian_id AND s.district_code = %s
                   ORDER BY random() LIMIT %s""",
        (district, n // 2),
    )
    guardians = [r[0] for r in cur.fetchall()]
    cur.execute(
        """SELECT child_id FROM (SELECT DISTINCT e.child_id FROM zerocert.eligibility e
                   JOIN zerocert.school s ON s.school_code = e.school_code AND s.district_code = %s) c
                   ORDER BY random() LIMIT %s""",
        (district, n - len(guardians)),
    )
    children = [r[0] for r in cur.fetchall()]
    if not guardians or not children:
        raise ValueError(f"district {district} has no guardian or child to look up")
    work = [("prefill_by_guardian", g) for g in guardians] + [("eligibility_by_child", c) for c in children]
    np.random.default_rng(0).shuffle(work)
    return work


def _audit_rows(cur) -> int:
    cur.execute("SELECT count(*) FROM zerocert.lookup_audit")
    return cur.fetchone()[0]


def _school_applicants(conninfo: Mapping[str, object], schools: list[str], calls: int) -> dict:
    """``school_applicants`` from one client, round the district's schools."""
    import psycopg

    latencies, rows = [], 0
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        for i in range(calls + 1):
            began = time.perf_counter_ns()
            got = conn.execute(
                "SELECT count(*) FROM zerocert.school_applicants(%s)", (schools[i % len(schools)],), prepare=True
            ).fetchone()[0]
            if i:  # the first call plans and warms
                latencies.append(time.perf_counter_ns() - began)
                rows += got
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    return {
        "calls": calls,
        "rows_per_call": round(rows / max(calls, 1), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run_lookup_bench(
    url: str,
    clients: int = 8,
    seconds: float = 20.0,
    sample_ids: int = 10000,
    *,
    district: str | None = None,
    password: str | None = None,
    school_calls: int = 30,
    print_results: bool = True,
) -> dict:
    """Measure both lookups as a district login (through the functions) and as the owner.

    ``url`` is the owner's (ETL) URL; the district login connects to the same server and
    database as ``enrollment_<district>`` (password: argument, else the configured one).
    """
    from pipelines.errors import UsageError
    from pipelines.warehouse import postgresql_warehouse

    wh = postgresql_warehouse(url, "bench-lookups measures a PostgreSQL warehouse")
    if clients < 1 or seconds <= 0 or sample_ids < 2:
        raise UsageError("bench-lookups: --clients ≥ 1, --seconds > 0 and --sample-ids ≥ 2")
    with wh.connect() as conn, conn.cursor() as cur:
        if district is None:
            cur.execute("""SELECT district_code FROM zerocert.district_scope GROUP BY 1
                           ORDER BY count(*) DESC LIMIT 1""")
            row = cur.fetchone()
            if row is None:
                raise UsageError("the warehouse has no district_scope rows: publish a run with access tables")
            district = row[0]
        try:
            work = _sample(cur, district, sample_ids)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        cur.execute("SELECT count(*) FROM zerocert.citizen")
        residents = cur.fetchone()[0]
        cur.execute("SELECT school_code FROM zerocert.school WHERE district_code = %s ORDER BY 1", (district,))
        schools = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT to_regprocedure('zerocert.prefill_of(text)')")
        if cur.fetchone()[0] is None:
            raise UsageError("the warehouse has no lookup functions: run zerocert roles first")
        audited_before = _audit_rows(cur)
    owner = dict(wh.conninfo)
    login = {**owner, "user": district_login(district)}
    login.pop("password", None)
    password = password or district_passwords_from_config().get(district)
    if password:
        login["password"] = password
    results: dict = {
        "residents": residents,
        "district": district,
        "clients": clients,
        "seconds": seconds,
        "sample_ids": len(work),
    }
    context = multiprocessing.get_context("spawn")
    for label, conninfo, queries in (("district_login", login, FUNCTIONS), ("owner", owner, TABLE_QUERIES)):
        shares = [work[i::clients] for i in range(clients)]
        start_at = time.time() + 3.0  # every client connected and warm before the clock starts
        with context.Pool(clients) as pool:
            parts = pool.starmap(_client, [(conninfo, queries, share, seconds, start_at) for share in shares])
        results[label] = {
            kind: _summary(
                [v for part in parts for v in part["latencies"][kind]],
                sum(part["found"][kind] for part in parts),
                seconds,
            )
            for kind in queries
        }
    with wh.connect() as conn, conn.cursor() as cur:
        results["audit_rows_written"] = _audit_rows(cur) - audited_before
    if schools and school_calls:
        results["school_applicants"] = _school_applicants(login, schools, school_calls)
    if print_results:
        print(format_results(results))
    return results


def format_results(results: dict) -> str:
    lines = [
        f"lookups at {results['residents']:,} residents, district {results['district']}, "
        f"{results['clients']} clients x {results['seconds']:g} s, {results['sample_ids']} IDs",
        f"{'role':<15} {'lookup':<22} {'calls':>9} {'found':>9} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for role in ROLES:
        for kind, s in results[role].items():
            lines.append(
                f"{role:<15} {kind:<22} {s['queries']:>9} {s['found']:>9} {s.get('per_second', 0):>9} "
                f"{s.get('p50_ms', 0):>8} {s.get('p99_ms', 0):>8} {s.get('max_ms', 0):>8}"
            )
    lines.append(f"lookup_audit rows written by the district login's calls: {results['audit_rows_written']:,}")
    if "school_applicants" in results:
        s = results["school_applicants"]
        lines.append(
            f"school_applicants, 1 client, {s['calls']} calls, {s['rows_per_call']} rows each: "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.lookup_bench --warehouse URL [--build N]``: optionally publish a
    bench city of N residents first, then measure."""
    import argparse
    import datetime as dt

    from pipelines.masking import configure_logging

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m pipelines.lookup_bench", description=main.__doc__)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sample-ids", type=int, default=10000)
    parser.add_argument("--district")
    parser.add_argument("--build", type=int, metavar="RESIDENTS", help="publish a bench city first")
    parser.add_argument("--workdir", default="/tmp/zerocert_lookup_bench")
    args = parser.parse_args(argv)
    if args.build:
        from pipelines.access import create_roles, hmac_key_from_config
        from pipelines.warehouse import publish_run

        began = time.monotonic()
        paths = bench_tables(Path(args.workdir), args.build)
        log.info("bench tables for %d residents written in %.1f s", args.build, time.monotonic() - began)
        began = time.monotonic()
        publish_run(
            args.warehouse,
            {
                "run_id": f"bench-{args.build}",
                "as_of": dt.date(2027, 8, 15),
                "policy_id": "bench",
                "started_at": dt.datetime.now(dt.UTC),
                "code_version": "bench",
            },
            paths,
        )
        log.info("published in %.1f s", time.monotonic() - began)
        create_roles(
            args.warehouse, hmac_key=hmac_key_from_config(), district_passwords=district_passwords_from_config()
        )
    run_lookup_bench(args.warehouse, args.clients, args.seconds, args.sample_ids, district=args.district)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
