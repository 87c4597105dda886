"""The engine's driver: staged Parquet to one Parquet per warehouse table, bucket by bucket.

Rows are split by a hash bucket of the person they are about (``person_bucket``; hukou also by
``household_bucket`` for the household rule), so memory stays bounded as the city grows and
the result is the same for any number of buckets: the same rows in the same order, with the
same types (a large table's Parquet pages may be cut at other rows, so its bytes may differ).
The steps are ``citizens`` and ``decide``.

The work is done in named stages that talk to each other only through files in a work folder
of the run attempt (``WorkFolder``: a local folder, or a ``file://`` or other pyarrow
filesystem URL), so each stage, and each bucket of a per-bucket stage, can run in its own
process or on its own machine (the warehouse DAG maps them over the buckets):

=================  =========  ==============================================================
stage              per        reads → writes (under the work folder)
=================  =========  ==============================================================
bucket_inputs      run        staged ``accepted.parquet``, address matches →
                              ``staged/<b>/<role>.parquet``, ``household/<b>/hukou.parquet``,
                              ``addresses/<b>/address_match.parquet`` (the matches of the
                              texts bucket b's rows hold), ``plan.json`` (bucket count, run id)
join_bucket        bucket     ``staged/<b>``, ``addresses/<b>``, catchments →
                              ``person/<b>/<table>.parquet``
                              (person tables, facts, guardian_eligibility, children),
                              ``household/<b>/guardianship.parquet``
route_edges        run        every ``person/<b>/children``, ``household/<b>/guardianship`` →
                              ``children.parquet``, ``guardianship.parquet``,
                              ``holders/<b>/edges.parquet``, ``guardians/<b>/guardianship.parquet``
link_bucket        bucket     ``holders/<b>``, ``person/<b>`` facts →
                              ``edges/from<b>/<child bucket>/<edge table>.parquet``
decide_bucket      bucket     ``person/<b>/children``, ``edges/from*/<b>``, catchments →
                              ``decided/<b>/{eligibility,ineligibility}.parquet``
prefill_bucket     bucket     ``guardians/<b>``, ``person/<b>``, ``children``, every
                              ``decided/*`` → ``prefill/<b>/prefill.parquet``
gather_buckets     run        every part → one Parquet per published table, sorted by key
=================  =========  ==============================================================

Every output is written under a temporary name and renamed, so a stage killed half way leaves
no half file, and a stage run again rewrites the same bytes. ``run_engine`` runs them all in
one process, one bucket after the other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import registry
from pipelines.engine.citizens import PLACING_COLUMNS, build_guardianship, build_person_tables, role_frame_name
from pipelines.engine.decide import (
    build_prefill,
    decide,
    edge_facts,
    guardian_eligibility,
    holder_edges,
    person_facts,
    school_age_children,
)
from pipelines.engine.frames import sort_rows
from pipelines.engine.records import evidence_source
from pipelines.policy import Policy

log = logging.getLogger(__name__)


def _bucket_of_digits(values: pd.Series, buckets: int) -> np.ndarray:
    """Bucket from four digits of the value; deterministic across processes and machines."""
    if buckets <= 1:
        return np.zeros(len(values), dtype=np.int64)
    digits = pd.to_numeric(values.astype("str").str[-5:-1], errors="coerce")
    return (digits.fillna(0).astype(np.int64) % buckets).to_numpy()


def _bucket_of_column(column, buckets: int) -> np.ndarray:
    """``_bucket_of_digits`` of an Arrow column, by Arrow compute: a value whose four digits
    before the last character are ASCII digits (every well-formed ID and household number) is
    bucketed without a Python object; any other value (missing, short, non-ASCII) by the pandas
    spelling, so the bucket is the same either way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if buckets <= 1:
        return np.zeros(len(column), dtype=np.int64)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return _bucket_of_digits(column.to_pandas(), buckets)
    digits = pc.utf8_slice_codeunits(column, -5, -1)
    plain = pc.and_(pc.string_is_ascii(column), pc.match_substring_regex(digits, "^[0-9]{4}$"))
    plain = plain.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)
    bucket = np.zeros(len(column), dtype=np.int64)
    if plain.any():
        mask = pa.array(plain)
        bucket[plain] = pc.cast(digits.filter(mask), pa.int64()).to_numpy(zero_copy_only=False) % buckets
    if not plain.all():
        bucket[~plain] = _bucket_of_digits(column.filter(pa.array(~plain)).to_pandas(), buckets)
    return bucket


def person_bucket(citizen_ids: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a resident ID: its sequence digits (positions 14–17) modulo ``buckets``.

    The sequence digits are close to uniform across a city, unlike region or birth digits.
    """
    return _bucket_of_digits(citizen_ids, buckets)


def household_bucket(household_nos: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a household number, so a household's rows always meet in one bucket."""
    return _bucket_of_digits(household_nos, buckets)


def person_bucket_of_column(citizen_ids, buckets: int) -> np.ndarray:
    """``person_bucket`` of an Arrow column of resident IDs."""
    return _bucket_of_column(citizen_ids, buckets)


def household_bucket_of_column(household_nos, buckets: int) -> np.ndarray:
    """``household_bucket`` of an Arrow column of household numbers."""
    return _bucket_of_column(household_nos, buckets)


PERSON_TABLES = ("citizen", "property_holding", "rental_holding", "employment")
FACT_TABLES = ("placed_property", "placed_rental", "stable_jobs", "person_flags", "person_reasons")
EDGE_TABLES = ("edge_guardians", "edge_property", "edge_rental", "edge_jobs", "edge_flags", "edge_reasons")
DECIDED_TABLES = ("eligibility", "ineligibility")
PLAN_FILE = "plan.json"
PARQUET = ".parquet"
TEMP_SUFFIX = ".tmp"


def shown_location(location: str, *, strip_query: bool = True) -> str:
    """A work location (or a text naming one) as logs and errors show it: without credentials,
    and without the URL's query unless ``strip_query`` is False (a text going on after the URL)."""
    text = location.split("?", 1)[0] if strip_query else location
    return re.sub(r"://[^/@\s]*@", "://***@", text)


class WorkFolder:
    """The engine's work files of one run attempt: a local folder, or a URL pyarrow opens
    (``file:///…``, ``s3://bucket/prefix``), so the stages of a run can run on other machines.

    Paths inside it are given as parts (``"person", 3, "citizen.parquet"``). Every write goes
    to a temporary name beside its target, then is renamed over it.
    """

    def __init__(self, location: str | os.PathLike) -> None:
        import pyarrow.fs as pafs

        text = os.fspath(location)
        if "://" in text:
            self.fs, root = pafs.FileSystem.from_uri(text)
        else:
            self.fs, root = pafs.LocalFileSystem(), str(Path(text).resolve())
        self.location = text
        self.root = root.rstrip("/") or "/"

    @property
    def shown(self) -> str:
        return shown_location(self.location)

    def __repr__(self) -> str:
        return f"WorkFolder({self.shown!r})"

    def path(self, *parts: object) -> str:
        return "/".join([self.root, *(str(part) for part in parts)])

    def exists(self, *parts: object) -> bool:
        return self._exists(self.path(*parts))

    def _exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def files(self, *parts: object, suffix: str = PARQUET) -> list[str]:
        """Names of the files ending ``suffix`` in one folder, by name (temporary files left out)."""
        import pyarrow.fs as pafs

        found = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(
            info.base_name
            for info in found
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and not info.base_name.startswith(".")
        )

    def _replace(self, write: Callable[[str], None], parts: Sequence[object]) -> None:
        target = self.path(*parts)
        folder, name = target.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        temp = f"{folder}/.{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            write(temp)
            self.fs.move(temp, target)
        except BaseException:
            if self._exists(temp):
                self.fs.delete_file(temp)
            raise

    def write_frame(self, frame: pd.DataFrame, *parts: object) -> None:
        self._replace(lambda temp: frame.to_parquet(temp, index=False, filesystem=self.fs), parts)

    def write_table(self, table, *parts: object) -> None:
        import pyarrow.parquet as pq

        self._replace(lambda temp: pq.write_table(table, temp, filesystem=self.fs), parts)

    def read_frame(self, *parts: object) -> pd.DataFrame:
        return pd.read_parquet(self.path(*parts), filesystem=self.fs)

    def read_table(self, *parts: object):
        import pyarrow.parquet as pq

        return pq.read_table(self.path(*parts), filesystem=self.fs)

    def write_json(self, doc: dict, *parts: object) -> None:
        data = json.dumps(doc, sort_keys=True, indent=2).encode("utf-8")

        def write(temp: str) -> None:
            with self.fs.open_output_stream(temp) as out:
                out.write(data)

        self._replace(write, parts)

    def read_json(self, *parts: object) -> dict:
        with self.fs.open_input_stream(self.path(*parts)) as handle:
            return json.loads(handle.read().decode("utf-8"))

    def sweep(self) -> None:
        """Remove temporary files a killed stage left behind."""
        import pyarrow.fs as pafs

        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File and info.base_name.endswith(TEMP_SUFFIX):
                self.fs.delete_file(info.path)

    def clear(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.root)


def read_plan(work: WorkFolder) -> dict:
    """What ``bucket_inputs`` decided: the bucket count and the run id every stage writes."""
    if not work.exists(PLAN_FILE):
        raise FileNotFoundError(f"no {PLAN_FILE} in the engine's work folder {work.shown}: run bucket_inputs first")
    return work.read_json(PLAN_FILE)


def read_bucket_plan(work: WorkFolder, bucket: int) -> dict:
    """The plan, for a per-bucket stage given one of its buckets (any other is an error)."""
    plan = read_plan(work)
    if not 0 <= int(bucket) < plan["buckets"]:
        raise ValueError(f"bucket {bucket} is not one of the plan's buckets 0…{plan['buckets'] - 1}")
    return plan


def bucket_label(bucket: int, buckets: int) -> str:
    """How a bucket is named to people: ``bucket 3 of 12`` (bucket numbers start at 0 inside)."""
    return f"bucket {int(bucket) + 1} of {int(buckets)}"


def _read_tables(work: WorkFolder, parts: Sequence[Sequence[object]], *, optional: bool = False):
    """The parts written for one table, as one Arrow table (None when ``optional`` and there are
    none).

    A part missing means the stage writing it has not run for its bucket: an error, never a
    table with that bucket left out.
    """
    import pyarrow as pa

    missing = [p for p in parts if not work.exists(*p)]
    if missing and not (optional and len(missing) == len(parts)):
        where = "/".join(str(part) for part in missing[0])
        raise FileNotFoundError(
            f"{where} is missing from the engine's work folder {work.shown} ({len(missing)} of {len(parts)} "
            "parts): the stage that writes it has not run for every bucket"
        )
    tables = [work.read_table(*p) for p in parts if p not in missing]
    if not tables:
        return None
    filled = [t for t in tables if t.num_rows] or tables[:1]  # empty parts may carry guessed types
    return pa.concat_tables(filled, promote_options="permissive")


def _read_parts(work: WorkFolder, parts: Sequence[Sequence[object]], *, optional: bool = False) -> pd.DataFrame | None:
    """``_read_tables`` as one frame."""
    table = _read_tables(work, parts, optional=optional)
    return None if table is None else table.to_pandas()


def _split(
    frame: pd.DataFrame, bucket_of: np.ndarray, buckets: int, work: WorkFolder, folder: Sequence[object], name: str
) -> None:
    """Write one Parquet per bucket: ``<folder>/<bucket>/<name>.parquet``."""
    for bucket in range(buckets):
        work.write_frame(frame[bucket_of == bucket], *folder, bucket, f"{name}{PARQUET}")


WRITER_THREADS = min(2, os.cpu_count() or 1)
"""Buckets of a split taken and written at once, each on a thread: Arrow's take and Parquet
writer run without the GIL, so the one ``bucket_inputs`` step uses both cores. (Gathering two
tables at once paid 3–7 s at 3 M but held both: 2.8 → 4.3 GB, 7.7 GB at 6 M; it gathers one.)"""


def _split_table(table, bucket_of: np.ndarray, buckets: int, work: WorkFolder, folder: str, name: str) -> None:
    """Split an Arrow table by bucket; every part keeps the whole table's types and its rows'
    order. The row positions are ordered by bucket once (stable), then each bucket's rows are
    taken by their slice of positions: one pass over the rows, ``WRITER_THREADS`` buckets' copies
    at a time."""
    import pyarrow as pa

    if buckets <= 1:
        work.write_table(table, folder, 0, f"{name}{PARQUET}")
        return
    bucket_of = np.asarray(bucket_of, dtype=np.int64)
    order = np.argsort(bucket_of, kind="stable")
    ends = np.cumsum(np.bincount(bucket_of, minlength=buckets))

    def write(bucket: int) -> None:
        start = int(ends[bucket - 1]) if bucket else 0
        work.write_table(table.take(pa.array(order[start : ends[bucket]])), folder, bucket, f"{name}{PARQUET}")

    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        list(pool.map(write, range(buckets)))  # list(): a failed write raises here


def _per_level(rows: pd.DataFrame | None) -> dict[str, int]:
    """Distinct children per school level (counts only, for the log)."""
    if rows is None or rows.empty:
        return {}
    return {str(level): int(n) for level, n in rows.groupby("level")["child_id"].nunique().sort_index().items()}


_ADDRESS_FILES = ("address_match.parquet", "address_catchment.parquet")
ADDRESS_MATCH_FOLDER = "addresses"  # the work folder of each bucket's address matches
_catchments_read: dict[str, tuple] = {}  # the last catchments read in this process: key → frame


def _catchments(address_dir: Path) -> pd.DataFrame:
    """The catchments of the city's standard addresses (small beside the matches: one row per
    address and catchment), which a bucket's facts and decisions look up by address code.
    Read once per process for a run's buckets: kept while the file (path, size, modification
    time) is the same."""
    path = Path(address_dir).resolve() / _ADDRESS_FILES[1]
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    kept = _catchments_read.get("last")
    if kept is None or kept[0] != key:
        kept = _catchments_read["last"] = (key, pd.read_parquet(path))
    return kept[1].copy(deep=False)  # shallow: with copy-on-write a caller's change never reaches the kept one


def _split_address_match(path: Path, texts: Mapping[str, tuple], buckets: int, work: WorkFolder) -> None:
    """Each bucket's address matches: the rows (placing's columns) of the texts its rows hold.

    ``texts``: per source, its address texts (a dictionary) and which of them each bucket's
    rows hold (a buckets × texts mask), so each match is looked up once, not once per bucket.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    matches = pq.read_table(path, columns=PLACING_COLUMNS)
    looked_up = []
    for source, (dictionary, held) in texts.items():
        rows = matches.filter(pc.equal(matches.column("source"), source).fill_null(False))
        at = pc.index_in(rows.column("address").cast(pa.large_string()), value_set=dictionary)
        found = at.is_valid().to_numpy(zero_copy_only=False)
        looked_up.append((rows, at.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64), found, held))
    for bucket in range(buckets):
        parts = [matches.slice(0, 0)]
        for rows, at, found, held in looked_up:
            parts.append(rows.filter(pa.array(found & held[bucket][at])))
        work.write_table(pa.concat_tables(parts), ADDRESS_MATCH_FOLDER, bucket, _ADDRESS_FILES[0])


def _forget_catchments() -> None:
    """Drop the kept catchments: no stage after ``decide_bucket`` reads them (a process running
    the stages one after the other holds them only from the first join to the last decide)."""
    _catchments_read.clear()


# --- stage 1: split the staged rows by bucket -----------------------------------------------------


def bucket_inputs(staged_dir: Path, work: WorkFolder, buckets: int, run_id: str, *, address_dir: Path) -> dict:
    """Split each staged source by the bucket of the person each role names (hukou also by
    household), and the address matches by the buckets whose rows hold their texts; write the
    plan: bucket count, run id and the inputs split.

    A bucket's join reads only the matches of its own rows' address texts, so what it holds
    stays a bucket's as the city grows. A work folder holding another plan (another bucket
    count, run or set of inputs) is cleared first; one with the same plan is overwritten with
    the same bytes.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    staged_dir, buckets = Path(staged_dir), max(1, int(buckets))
    hukou = evidence_source("hukou")
    splits = []  # (staged file, [(column, bucket function, folder, name)])
    for source, persons in registry.person_columns().items():
        path = staged_dir / source / "accepted.parquet"
        if path.exists():
            ways = [
                (p.id, person_bucket_of_column, "staged", role_frame_name(source, role))
                for role, p in enumerate(persons)
            ]
            if source == hukou:
                ways.append(("household_no", household_bucket_of_column, "household", "hukou"))
            splits.append((path, ways))
    plan = {
        "buckets": buckets,
        "run_id": run_id,
        "inputs": [f"{folder}/{name}" for _, ways in splits for *_, folder, name in ways]
        + [f"{ADDRESS_MATCH_FOLDER}/{_ADDRESS_FILES[0]}"],
    }
    if not (work.exists(PLAN_FILE) and read_plan(work) == plan):
        work.clear()
    rows = 0
    address_columns = registry.address_columns()
    texts: dict[str, tuple] = {}  # source → its address texts and which each bucket's rows hold
    for path, ways in splits:
        table = pq.read_table(path)
        rows += table.num_rows
        source = path.parent.name
        if source in address_columns:
            address = table.column(address_columns[source]).cast(pa.large_string())  # null-typed when all blank
            encoded = pc.dictionary_encode(address).combine_chunks()
            text_of_row = encoded.indices.to_numpy(zero_copy_only=False)
            has_text = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
            held = np.zeros((buckets, max(len(encoded.dictionary), 1)), dtype=bool)  # a lookup never found reads 0
            texts[source] = (encoded.dictionary, held)
        for column, bucket_of, folder, name in ways:
            of_row = bucket_of(table.column(column), buckets)
            _split_table(table, of_row, buckets, work, folder, name)
            if source in address_columns and folder == "staged":  # the rows a join places
                held[of_row[has_text], text_of_row[has_text].astype(np.int64)] = True
        del table
    _split_address_match(Path(address_dir) / _ADDRESS_FILES[0], texts, buckets, work)
    work.write_json(plan, PLAN_FILE)
    log.info("engine inputs: %d staged rows of %d source(s) split into %d bucket(s)", rows, len(splits), buckets)
    return plan


# --- stage 2: per person bucket, the person tables and facts ---------------------------------------


def join_bucket(work: WorkFolder, address_dir: Path, policy: Policy, bucket: int) -> dict:
    """One person bucket's citizen, holdings and employment tables, their facts, the adults'
    guardian eligibility and the school-age children; the household bucket's guardianship."""
    plan = read_bucket_plan(work, bucket)
    buckets, run_id = plan["buckets"], plan["run_id"]
    address_catchment = _catchments(address_dir)
    address_match = work.read_frame(ADDRESS_MATCH_FOLDER, bucket, _ADDRESS_FILES[0])
    frames = {name[: -len(PARQUET)]: work.read_frame("staged", bucket, name) for name in work.files("staged", bucket)}
    rows_in = sum(len(frame) for frame in frames.values())
    tables = build_person_tables(frames, address_match, policy)
    del frames
    facts = person_facts(tables, address_catchment, policy)
    for name, table in {**tables, **facts}.items():
        work.write_frame(table, "person", bucket, f"{name}{PARQUET}")
    work.write_frame(
        guardian_eligibility(facts, tables["citizen"], policy, run_id), "person", bucket, "guardian_eligibility.parquet"
    )
    children = school_age_children(tables["citizen"], policy)
    work.write_frame(children, "person", bucket, "children.parquet")
    if work.exists("household", bucket, "hukou.parquet"):
        guardianship = build_guardianship(work.read_frame("household", bucket, "hukou.parquet"), policy)
        work.write_frame(guardianship, "household", bucket, "guardianship.parquet")
    log.info(
        "%s joined: %d staged rows in, %d residents, %d school-age children",
        bucket_label(bucket, buckets),
        rows_in,
        len(tables["citizen"]),
        len(children),
    )
    return {
        "bucket": int(bucket),
        "rows_in": int(rows_in),
        "residents": len(tables["citizen"]),
        "children": len(children),
    }


# --- stage 3: every child and guardian, edges routed to the holder's bucket -----------------------


def route_edges(work: WorkFolder, policy: Policy) -> dict:
    """The school-age children and guardianship of every bucket (one file each), and each
    child's edges (to itself and each guardian) routed to the bucket of the holder whose facts
    they pick up; the guardianship also by guardian, for the prefill."""
    import pyarrow as pa

    buckets = read_plan(work)["buckets"]
    children = _read_parts(work, [("person", b, "children.parquet") for b in range(buckets)])
    children = children.sort_values("child_id", ignore_index=True)
    guardianship = _read_parts(
        work, [("household", b, "guardianship.parquet") for b in range(buckets)], optional=True
    )  # none without a hukou source
    if guardianship is None:
        guardianship = build_guardianship(pd.DataFrame(), policy)
    guardianship = guardianship.sort_values(["child_id", "guardian_id"], ignore_index=True)
    work.write_frame(children, "children.parquet")
    work.write_frame(guardianship, "guardianship.parquet")
    edges = holder_edges(children, guardianship)
    _split_table(
        pa.Table.from_pandas(edges, preserve_index=False),
        person_bucket(edges["holder_id"], buckets),
        buckets,
        work,
        "holders",
        "edges",
    )
    _split_table(
        pa.Table.from_pandas(guardianship, preserve_index=False),
        person_bucket(guardianship["guardian_id"], buckets),
        buckets,
        work,
        "guardians",
        "guardianship",
    )
    log.info(
        "edges routed: %d school-age children, %d guardianship rows, %d child-holder edges in %d bucket(s)",
        len(children),
        len(guardianship),
        len(edges),
        buckets,
    )
    return {"children": len(children), "guardianship": len(guardianship), "edges": len(edges)}


# --- stage 4: per holder bucket, the holders' facts on each edge, routed to the child's bucket ----


def link_bucket(work: WorkFolder, bucket: int) -> dict:
    """The facts of one bucket's holders on the edges that reach them, split by child bucket."""
    buckets = read_bucket_plan(work, bucket)["buckets"]
    edges = work.read_frame("holders", bucket, "edges.parquet").astype("object")  # as holder_edges gives them
    facts = {name: work.read_frame("person", bucket, f"{name}{PARQUET}") for name in FACT_TABLES}
    linked = edge_facts(edges, facts)
    for name, table in linked.items():
        _split(table, person_bucket(table["child_id"], buckets), buckets, work, ("edges", f"from{bucket}"), name)
    log.info(
        "%s linked: %d edges, %d property facts",
        bucket_label(bucket, buckets),
        len(edges),
        len(linked["edge_property"]),
    )
    return {"bucket": int(bucket), "edges": len(edges)}


# --- stage 5: per child bucket, decide -------------------------------------------------------------


def decide_bucket(work: WorkFolder, address_dir: Path, policy: Policy, bucket: int) -> dict:
    """Eligibility and ineligibility of one bucket's school-age children."""
    plan = read_bucket_plan(work, bucket)
    buckets, run_id = plan["buckets"], plan["run_id"]
    address_catchment = _catchments(address_dir)
    children = work.read_frame("person", bucket, "children.parquet")
    linked = {
        name: _read_parts(work, [("edges", f"from{h}", bucket, f"{name}{PARQUET}") for h in range(buckets)])
        for name in EDGE_TABLES
    }
    decided = decide(children, linked, address_catchment, policy, run_id)
    for name, table in decided.items():
        work.write_frame(table, "decided", bucket, f"{name}{PARQUET}")
    log.info(
        "%s decided: %d children, %d eligibility rows, %d ineligibility rows",
        bucket_label(bucket, buckets),
        len(children),
        len(decided["eligibility"]),
        len(decided["ineligibility"]),
    )
    return {
        "bucket": int(bucket),
        "children": len(children),
        "eligibility": len(decided["eligibility"]),
        "ineligibility": len(decided["ineligibility"]),
    }


# --- stage 6: per guardian bucket, the prefill documents -----------------------------------------


def _decided_all(work: WorkFolder, buckets: int) -> dict[str, pd.DataFrame | None]:
    return {
        name: _read_parts(work, [("decided", b, f"{name}{PARQUET}") for b in range(buckets)]) for name in DECIDED_TABLES
    }


def prefill_bucket(work: WorkFolder, policy: Policy, bucket: int) -> dict:
    """One prefill document per guardian of the bucket: their own records, their children's outcome."""
    _forget_catchments()
    plan = read_bucket_plan(work, bucket)
    buckets, run_id = plan["buckets"], plan["run_id"]
    tables = {name: work.read_frame("person", bucket, f"{name}{PARQUET}") for name in PERSON_TABLES}
    guardianship = work.read_frame("guardians", bucket, "guardianship.parquet")
    children = work.read_frame("children.parquet")
    prefill = build_prefill(guardianship, tables, children, _decided_all(work, buckets), policy, run_id)
    work.write_frame(prefill, "prefill", bucket, "prefill.parquet")
    log.info("%s prefilled: %d guardians", bucket_label(bucket, buckets), len(prefill))
    return {"bucket": int(bucket), "guardians": len(prefill)}


# --- stage 7: one Parquet per published table -----------------------------------------------------

PUBLISHED_PARTS: dict[str, tuple[str, list[str]]] = {  # table → (folder of its bucket parts, key)
    "citizen": ("person", ["citizen_id"]),
    "guardianship": ("", ["child_id", "guardian_id"]),
    "property_holding": ("person", ["citizen_id", "kind", "record_key"]),
    "rental_holding": ("person", ["citizen_id", "record_no"]),
    "employment": ("person", ["citizen_id", "kind", "record_key"]),
    "eligibility": ("decided", ["child_id", "level", "school_code"]),
    "ineligibility": ("decided", ["child_id", "level"]),
    "guardian_eligibility": ("person", ["guardian_id", "level", "school_code"]),
    "prefill": ("prefill", ["guardian_id"]),
}


GATHERED_ROWS = 1 << 20
"""Rows per row group of a gathered table, each taken from the parts in key order and written
before the next is taken: the sorted table is never held beside the gathered one (at 6 M
residents the employment table alone is 9.5 M rows)."""


def _write_local(table, path: Path, order=None) -> None:
    """An Arrow table to a Parquet file, rows in ``order`` (indices; default: as they are),
    ``GATHERED_ROWS`` per row group, replaced atomically."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with pq.ParquetWriter(temp, table.schema) as writer:
            for start in range(0, max(table.num_rows, 1), GATHERED_ROWS):
                rows = (
                    table.slice(start, GATHERED_ROWS)
                    if order is None
                    else table.take(order.slice(start, GATHERED_ROWS))
                )
                writer.write_table(rows, row_group_size=GATHERED_ROWS)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _text_keys(table, keys: list[str]) -> bool:
    import pyarrow as pa

    types = [table.schema.field(key).type for key in keys]
    return all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types)


def _publish(work: WorkFolder, parts: list[tuple], path: Path, keys: list[str]):
    """Concatenate a table's bucket parts into one Parquet, rows sorted by key (one part is
    already in key order); returns the rows as an Arrow table (not necessarily in that order).

    The order is ``sort_values(keys, kind="stable")``'s: text keys are sorted by Arrow's stable
    sort (UTF-8 bytes are code point order, missing last), any other key by ``sort_rows`` on a
    frame. The rows stay in Arrow from the parts to the file (the parts' schema, pandas types
    included, is the file's), so a city's 16 M rows are not made into a frame and back.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table, order = _read_tables(work, parts), None
    if len(parts) > 1 and _text_keys(table, keys):
        order = pc.sort_indices(table, sort_keys=[(key, "ascending", "at_end") for key in keys])
    elif len(parts) > 1:
        table = pa.Table.from_pandas(sort_rows(table.to_pandas(), keys), preserve_index=False)
    _write_local(table, path, order)
    return table


def gather_buckets(work: WorkFolder, out_dir: Path) -> dict[str, Path]:
    """One Parquet per published table in ``out_dir``, its bucket parts concatenated in key
    order. Returns table name → path."""
    _forget_catchments()
    out_dir = Path(out_dir)
    buckets = read_plan(work)["buckets"]
    log.info("children per level: %s", _per_level(work.read_frame("children.parquet")))
    published, per_level = {}, {}
    for table, (folder, keys) in PUBLISHED_PARTS.items():
        if folder:
            parts = [(folder, b, f"{table}{PARQUET}") for b in range(buckets)]
        else:
            parts = [(f"{table}{PARQUET}",)]
        path = out_dir / f"{table}{PARQUET}"
        rows = _publish(work, parts, path, keys)
        if table in DECIDED_TABLES:
            per_level[table] = _per_level(rows.select(["child_id", "level"]).to_pandas())
        del rows
        published[table] = path
    log.info(
        "children with a school per level: %s; with none: %s", per_level["eligibility"], per_level["ineligibility"]
    )
    work.sweep()
    return published


# --- every stage in one process ------------------------------------------------------------------


def run_engine(
    staged_dir: Path,
    address_dir: Path,
    policy: Policy,
    run_id: str,
    out_dir: Path,
    buckets: int = 1,
    work: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Join and eligibility from staged Parquet to one Parquet per warehouse table.

    Runs every stage, one bucket after the other, holding one bucket at a time: staged rows
    are split by the bucket of the person they are about (hukou also by household); facts are
    built per person bucket; child–guardian edges are re-bucketed by the holder's ID to pick up
    the holder's facts, then by child ID to decide. The work files go to ``work`` (kept), or
    to a folder under ``out_dir`` removed at the end. Returns table name → path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    location = work if work is not None else tempfile.mkdtemp(prefix="_work", dir=out_dir)
    folder = WorkFolder(location)
    try:
        count = bucket_inputs(staged_dir, folder, buckets, run_id, address_dir=address_dir)["buckets"]
        for bucket in range(count):
            join_bucket(folder, address_dir, policy, bucket)
        route_edges(folder, policy)
        for bucket in range(count):
            link_bucket(folder, bucket)
        for bucket in range(count):
            decide_bucket(folder, address_dir, policy, bucket)
        for bucket in range(count):
            prefill_bucket(folder, policy, bucket)
        return gather_buckets(folder, out_dir)
    finally:
        _forget_catchments()  # also when a stage failed
        if work is None:
            shutil.rmtree(location, ignore_errors=True)
