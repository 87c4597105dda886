"""The access world published into a real warehouse: its districts' passwords, its rows in every
published table, one publish per run, and the lookup audit read back. The PostgreSQL role tests
and the hostile-lookup tests publish and audit the same warehouse this way."""

from __future__ import annotations

import json
import secrets

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from access_world import C1, C4, CITIZEN, ELIGIBILITY, G1, G2, G5, GUARDIANSHIP, KEY, LABEL, SCHOOLS
from warehouse_reader import connect

from pipelines.access import build_access_tables
from pipelines.marts import write_mart_tables
from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
from pipelines.warehouse import publish_run
from pipelines.warehouse_schema import PUBLISHED_TABLES, TABLES, arrow_schema

DEMO_POLICY = policy_from_dict(yaml.safe_load(DEMO_POLICY_YAML))
A, B = "371102", "371103"
# one password per district login for the whole session: every module creating the roles agrees
PASSWORDS = {A: secrets.token_urlsafe(12), B: secrets.token_urlsafe(12)}


def run_rows(run_id: str) -> dict[str, list[dict]]:
    """Rows per published table; the rest are published empty."""
    day = pd.Timestamp("2027-07-01").date()
    return {
        "citizen": [
            {
                "citizen_id": c,
                "name": "张三",
                "sex": "男",
                "hukou_status": "正常",
                "hukou_region_code": r,
                "birth_date": b.date(),
                "urban_hukou": True,
            }
            for c, r, b in zip(CITIZEN["citizen_id"], CITIZEN["hukou_region_code"], CITIZEN["birth_date"])
        ],
        "guardianship": [
            {"child_id": c, "guardian_id": g, "relation": "父亲", "basis": "guardian_field"}
            for c, g in zip(GUARDIANSHIP["child_id"], GUARDIANSHIP["guardian_id"])
        ],
        "property_holding": [
            {"citizen_id": g, "kind": "title", "record_key": f"K{i}"} for i, g in enumerate([G1, G2, G5])
        ],
        "rental_holding": [{"citizen_id": G2, "record_no": "R1"}],
        "employment": [{"citizen_id": g, "kind": "social_insurance"} for g in (G1, G2)],
        "eligibility": [
            {
                "child_id": r.child_id,
                "level": r.level,
                "school_code": r.school_code,
                "category": r.category,
                "priority_date": day,
                "policy_id": "p",
                "basis_guardian_id": G5,
                "evidence": "[]",
            }
            for r in ELIGIBILITY.itertuples()
        ],
        "ineligibility": [
            {"child_id": C4, "level": "primary", "reasons": '["NO_QUALIFYING_PROPERTY"]', "policy_id": "p"}
        ],
        "guardian_eligibility": [
            {"guardian_id": G5, "level": "primary", "school_code": s, "basis": "property"} for s in ("PA", "PB")
        ]
        + [{"guardian_id": G1, "level": "primary", "school_code": "PB", "basis": "rental"}],
        "prefill": [{"guardian_id": g, "document": json.dumps({"guardian": LABEL[g]})} for g in (G1, G2, G5)],
        "source_snapshot": [
            {"source": "hukou", "rows_in": 7, "rows_accepted": 7, "rows_quarantined": 0, "rows_duplicate": 0}
        ],
        "quarantine": [
            {
                "source": "hukou",
                "record_ref": "hukou.csv:9",
                "reason_code": "INVALID_DATE",
                "raw": f"{C1},张三,2020-13-01",
            }
        ],
        "address_match": [{"source": "hukou", "address": "x", "status": "unmatched"}],
    }


def publish(url: str, tmp_path, run_id: str) -> None:
    folder = tmp_path / run_id
    folder.mkdir()
    paths = {}
    for name, rows in run_rows(run_id).items():
        schema = arrow_schema(TABLES[name]).remove(len(TABLES[name].columns) - 1)  # run_id filled in
        paths[name] = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths[name])
    SCHOOLS.to_csv(folder / "schools.csv", index=False)
    paths.update(build_access_tables(paths, folder / "schools.csv", KEY, folder / "access"))
    placed = pd.DataFrame({"address_code": ["A1"], "level": ["primary"], "school_code": ["PA"]})
    paths.update(
        write_mart_tables(
            paths,
            schools_csv=folder / "schools.csv",
            placed=placed,
            policy=DEMO_POLICY,
            run_id=run_id,
            as_of="2027-08-15",
            out_dir=folder / "marts",
        )
    )
    assert set(paths) == set(PUBLISHED_TABLES)
    publish_run(
        url,
        {
            "run_id": run_id,
            "as_of": "2027-08-15",
            "policy_id": "p",
            "started_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "code_version": "t",
        },
        paths,
    )


def audit_rows(url: str) -> list[tuple]:
    with connect(url, "postgres") as admin:
        return admin.execute(
            "SELECT call_no, login, district_code, function, person_hash, school_code, found "
            "FROM zerocert.lookup_audit ORDER BY call_no"
        ).fetchall()
