"""The engine's driver: staged Parquet to one Parquet per warehouse table, bucket by bucket.

Rows are split by a hash bucket of the person they are about (``person_bucket``; hukou also by
``household_bucket`` for the household rule), so memory stays bounded as the city grows and
the result is the same for any number of buckets. The steps are ``citizens`` and ``decide``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import registry
from pipelines.engine.citizens import build_guardianship, build_person_tables, role_frame_name
from pipelines.engine.decide import (
    build_prefill,
    catchments_for,
    decide,
    edge_facts,
    guardian_eligibility,
    holder_edges,
    person_facts,
    school_age_children,
)
from pipelines.engine.records import evidence_source
from pipelines.policy import Policy

log = logging.getLogger(__name__)


def _bucket_of_digits(values: pd.Series, buckets: int) -> np.ndarray:
    """Bucket from four digits of the value; deterministic across processes and machines."""
    if buckets <= 1:
        return np.zeros(len(values), dtype=np.int64)
    digits = pd.to_numeric(values.astype("str").str[-5:-1], errors="coerce")
    return (digits.fillna(0).astype(np.int64) % buckets).to_numpy()


def person_bucket(citizen_ids: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a resident ID: its sequence digits (positions 14–17) modulo ``buckets``.

    The sequence digits are close to uniform across a city, unlike region or birth digits.
    """
    return _bucket_of_digits(citizen_ids, buckets)


def household_bucket(household_nos: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a household number, so a household's rows always meet in one bucket."""
    return _bucket_of_digits(household_nos, buckets)


PERSON_TABLES = ("citizen", "property_holding", "rental_holding", "employment")
FACT_TABLES = ("placed_property", "placed_rental", "stable_jobs", "person_flags", "person_reasons")
EDGE_TABLES = ("edge_guardians", "edge_property", "edge_rental", "edge_jobs", "edge_flags", "edge_reasons")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _read_parts(paths: list[Path]) -> pd.DataFrame | None:
    """The parts written for one bucket, as one frame (None when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths if p.exists()]
    if not tables:
        return None
    filled = [t for t in tables if t.num_rows] or tables[:1]  # empty parts may carry guessed types
    return pa.concat_tables(filled, promote_options="permissive").to_pandas()


def _split(frame: pd.DataFrame, bucket_of: np.ndarray, buckets: int, directory: Path, name: str) -> None:
    """Write one Parquet per bucket: ``directory/<bucket>/<name>.parquet``."""
    for bucket in range(buckets):
        _write(frame[bucket_of == bucket], directory / str(bucket) / f"{name}.parquet")


def _split_file(path: Path, column: str, bucket_fn, buckets: int, directory: Path, name: str) -> None:
    """Split a staged Parquet by bucket in Arrow form (compact strings; one column to pandas)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    bucket_of = bucket_fn(table.column(column).to_pandas(), buckets)
    for bucket in range(buckets):
        target = directory / str(bucket) / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(bucket_of == bucket)), target)


def _publish(parts: list[Path], path: Path, keys: list[str]) -> Path:
    """Concatenate a table's bucket parts into one Parquet, rows sorted by key."""
    frame = _read_parts(parts)
    if len(parts) > 1:  # one part is already in key order
        frame = frame.sort_values(keys, kind="stable", ignore_index=True)
    _write(frame, path)
    return path


def _per_level(rows: pd.DataFrame | None) -> dict[str, int]:
    """Distinct children per school level (counts only, for the log)."""
    if rows is None or rows.empty:
        return {}
    return {str(level): int(n) for level, n in rows.groupby("level")["child_id"].nunique().sort_index().items()}


def run_engine(
    staged_dir: Path, address_dir: Path, policy: Policy, run_id: str, out_dir: Path, buckets: int = 1
) -> dict[str, Path]:
    """Join and eligibility from staged Parquet to one Parquet per warehouse table.

    Each step holds one bucket at a time: staged rows are split by the bucket of the person
    they are about (hukou also by household for the household rule); facts are built per
    person bucket; child–guardian edges are re-bucketed by the holder's ID to pick up the
    holder's facts, then by child ID to decide. Intermediate Parquet lives under
    ``out_dir/_work`` and is removed at the end. Returns table name → path.
    """
    staged_dir, address_dir, out_dir = Path(staged_dir), Path(address_dir), Path(out_dir)
    buckets = max(1, int(buckets))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="_work", dir=out_dir))
    try:
        address_match = pd.read_parquet(address_dir / "address_match.parquet")
        address_catchment = catchments_for(pd.read_parquet(address_dir / "address_catchment.parquet"), policy)

        hukou = evidence_source("hukou")
        for source, persons in registry.person_columns().items():
            path = staged_dir / source / "accepted.parquet"
            if path.exists():
                for role, person in enumerate(persons):
                    _split_file(path, person.id, person_bucket, buckets, work / "staged", role_frame_name(source, role))
                if source == hukou:
                    _split_file(path, "household_no", household_bucket, buckets, work / "household", "hukou")

        children_parts, guardianship_parts = [], []
        for bucket in range(buckets):
            part_dir = work / "staged" / str(bucket)
            frames = {p.stem: pd.read_parquet(p) for p in sorted(part_dir.glob("*.parquet"))}
            rows_in = sum(len(frame) for frame in frames.values())
            tables = build_person_tables(frames, address_match, policy)
            facts = person_facts(tables, address_catchment, policy)
            for name, table in {**tables, **facts}.items():
                _write(table, work / "person" / str(bucket) / f"{name}.parquet")
            _write(
                guardian_eligibility(facts, tables["citizen"], policy, run_id),
                work / "person" / str(bucket) / "guardian_eligibility.parquet",
            )
            children_parts.append(school_age_children(tables["citizen"], policy))
            log.info(
                "bucket %d/%d joined: %d staged rows in, %d residents, %d school-age children",
                bucket + 1,
                buckets,
                rows_in,
                len(tables["citizen"]),
                len(children_parts[-1]),
            )
            hukou = work / "household" / str(bucket) / "hukou.parquet"
            if hukou.exists():
                guardianship_parts.append(build_guardianship(pd.read_parquet(hukou), policy))
            del frames, tables, facts
        children = pd.concat(children_parts, ignore_index=True).sort_values("child_id", ignore_index=True)
        guardianship = (
            pd.concat(guardianship_parts, ignore_index=True)
            if guardianship_parts
            else build_guardianship(pd.DataFrame(), policy)
        )
        guardianship = guardianship.sort_values(["child_id", "guardian_id"], ignore_index=True)
        _write(guardianship, work / "guardianship.parquet")

        edges = holder_edges(children, guardianship)
        holder_of = person_bucket(edges["holder_id"], buckets)
        for bucket in range(buckets):
            person_dir = work / "person" / str(bucket)
            facts = {name: pd.read_parquet(person_dir / f"{name}.parquet") for name in FACT_TABLES}
            for name, table in edge_facts(edges[holder_of == bucket], facts).items():
                _split(
                    table, person_bucket(table["child_id"], buckets), buckets, work / "edges" / f"from{bucket}", name
                )

        child_of = person_bucket(children["child_id"], buckets)
        for bucket in range(buckets):
            linked = {
                name: _read_parts(
                    [work / "edges" / f"from{h}" / str(bucket) / f"{name}.parquet" for h in range(buckets)]
                )
                for name in EDGE_TABLES
            }
            decided = decide(children[child_of == bucket], linked, address_catchment, policy, run_id)
            for name, table in decided.items():
                _write(table, work / "decided" / str(bucket) / f"{name}.parquet")
            log.info(
                "bucket %d/%d decided: %d children, %d eligibility rows, %d ineligibility rows",
                bucket + 1,
                buckets,
                int((child_of == bucket).sum()),
                len(decided["eligibility"]),
                len(decided["ineligibility"]),
            )

        decided_all = {
            name: _read_parts([work / "decided" / str(b) / f"{name}.parquet" for b in range(buckets)])
            for name in ("eligibility", "ineligibility")
        }
        log.info("children per level: %s", _per_level(children))
        log.info(
            "children with a school per level: %s; with none: %s",
            _per_level(decided_all["eligibility"]),
            _per_level(decided_all["ineligibility"]),
        )
        guardian_of = person_bucket(guardianship["guardian_id"], buckets)
        for bucket in range(buckets):
            person_dir = work / "person" / str(bucket)
            tables = {name: pd.read_parquet(person_dir / f"{name}.parquet") for name in PERSON_TABLES}
            _write(
                build_prefill(guardianship[guardian_of == bucket], tables, children, decided_all, policy, run_id),
                person_dir / "prefill.parquet",
            )

        def parts(name: str, where: str = "person") -> list[Path]:
            return [work / where / str(b) / f"{name}.parquet" for b in range(buckets)]

        published = {
            "citizen": _publish(parts("citizen"), out_dir / "citizen.parquet", ["citizen_id"]),
            "guardianship": _publish(
                [work / "guardianship.parquet"], out_dir / "guardianship.parquet", ["child_id", "guardian_id"]
            ),
            "property_holding": _publish(
                parts("property_holding"), out_dir / "property_holding.parquet", ["citizen_id", "kind", "record_key"]
            ),
            "rental_holding": _publish(
                parts("rental_holding"), out_dir / "rental_holding.parquet", ["citizen_id", "record_no"]
            ),
            "employment": _publish(
                parts("employment"), out_dir / "employment.parquet", ["citizen_id", "kind", "record_key"]
            ),
            "eligibility": _publish(
                parts("eligibility", "decided"), out_dir / "eligibility.parquet", ["child_id", "level", "school_code"]
            ),
            "ineligibility": _publish(
                parts("ineligibility", "decided"), out_dir / "ineligibility.parquet", ["child_id", "level"]
            ),
            "guardian_eligibility": _publish(
                parts("guardian_eligibility"),
                out_dir / "guardian_eligibility.parquet",
                ["guardian_id", "level", "school_code"],
            ),
            "prefill": _publish(parts("prefill"), out_dir / "prefill.parquet", ["guardian_id"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return published
