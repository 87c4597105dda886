"""The lookup benchmark on a small bench city: the reader finds every sampled ID of its district."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from access_world import KEY

from pipelines.access import create_roles
from pipelines.lookup_bench import DISTRICTS, bench_frames, bench_tables, run_lookup_bench
from pipelines.resident_id import normalize_resident_ids
from pipelines.warehouse import publish_run

pytestmark = pytest.mark.postgres


def test_bench_city_has_valid_unique_ids_and_proportions():
    frames = bench_frames(2000, seed=3)
    ids = frames["citizen"]["citizen_id"]
    normalized, reasons = normalize_resident_ids(ids.astype(object))
    assert reasons.isna().all() and (normalized == ids).all() and ids.is_unique
    assert len(ids) == 2000
    children = set(frames["guardianship"]["child_id"])
    assert len(children) == 200
    assert set(frames["eligibility"]["child_id"]) <= children
    assert set(frames["prefill"]["guardian_id"]) == set(frames["guardianship"]["guardian_id"])


def test_bench_measures_the_audited_functions_as_a_district_login_and_the_owner(pg_url, tmp_path, capsys):
    paths = bench_tables(tmp_path, 3000, seed=2)
    publish_run(
        pg_url,
        {
            "run_id": "bench",
            "as_of": dt.date(2027, 8, 15),
            "policy_id": "bench",
            "started_at": dt.datetime.now(dt.UTC),
            "code_version": "t",
        },
        paths,
    )
    password = secrets.token_urlsafe(12)
    create_roles(pg_url, hmac_key=KEY, district_passwords={d: password for d in DISTRICTS})
    result = run_lookup_bench(pg_url, clients=2, seconds=0.5, sample_ids=40, school_calls=3, password=password)
    for role in ("district_login", "owner"):
        for kind in ("prefill_by_guardian", "eligibility_by_child"):
            figures = result[role][kind]
            assert figures["queries"] > 0 and figures["found"] == figures["queries"], (role, kind)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    calls = sum(result["district_login"][kind]["queries"] for kind in result["district_login"])
    assert result["audit_rows_written"] >= calls  # warm-up calls are audited too
    assert result["school_applicants"]["rows_per_call"] > 0
    assert result["residents"] == 3000
    assert "p99 ms" in capsys.readouterr().out
