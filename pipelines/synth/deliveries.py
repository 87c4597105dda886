"""Render clean facts into the seven departmental deliveries, dirt included, and record what
the truth needs: which records were damaged (and their line), which texts each source carries.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import registry
from pipelines.synth import dirt as D


@dataclass(frozen=True)
class DeliveryFormat:
    """How a department writes its file: as its schema declares (pipelines/registry.py)."""

    file: str
    separator: str | None  # None: JSON lines
    encoding: str
    headers: tuple[str, ...]


def delivery_format(source: str) -> DeliveryFormat:
    schema = registry.source(source).schema
    return DeliveryFormat(
        file=schema.file,
        separator=schema.separator if schema.format == "csv" else None,
        encoding=schema.encoding,
        headers=tuple(c.header for c in schema.columns),
    )


BAD_CODE = {
    "hukou": "待定",
    "property_title": "冻结",
    "housing_contract": "草签",
    "rental": "待审核",
    "social_insurance": "未知",
    "individual_business": "歇业",
    "enterprise": "停业",
}


@dataclass
class SourceText:
    """One source as delivered text, one row per record, plus what damage may touch."""

    source: str
    fields: pd.DataFrame  # str columns in delivery order (JSON: keys; buyers as list column)
    id_col: str  # the ID that damage to IDs hits
    date_col: str
    code_col: str
    required_col: str
    damageable: np.ndarray  # bool per row
    clean_ids: np.ndarray = field(default=None)  # the clean 18-character ID behind ``id_col``
    facts: pd.DataFrame = field(default=None)  # the clean facts, row-aligned (for the truth)
    addresses: pd.DataFrame | None = None  # per row: text (as delivered), code (truth; '' if unresolvable), variant
    event_cols: tuple[str, ...] = ()  # dates of events, which cannot lie after the extract date
    future_from: np.datetime64 = None  # first day after every delivery's extract date (future-date damage)
    day: np.ndarray = field(default=None)  # per row: 0 both days, 1 next day only, -1 today only
    damage: np.ndarray = field(default=None)  # per row DAMAGE index or -1 (filled by apply_damage)
    line: np.ndarray = field(default=None)  # per row: physical line of its first copy in all lines
    source_row: np.ndarray = field(default=None)  # per line of all lines: the row it holds


def apply_damage(st: SourceText, rng, rates: dict[str, float], counts: dict[str, int]) -> None:
    n = len(st.fields)
    kind = D.choose_damage(rng, n, rates, st.damageable)
    f = st.fields
    for k, name in enumerate(D.DAMAGE):
        m = kind == k
        if not m.any():
            continue
        counts[name] = counts.get(name, 0) + int(m.sum())
        if name == "damage_checksum":
            f.loc[m, st.id_col] = D.wrong_checksum(st.clean_ids[m])
        elif name == "damage_id_format":
            f.loc[m, st.id_col] = D.bad_format_ids(st.clean_ids[m], rng)
        elif name == "damage_date":
            f.loc[m, st.date_col] = D.bad_dates(int(m.sum()), rng)
        elif name == "damage_missing":
            f.loc[m, st.required_col] = ""
        elif name == "damage_code":
            f.loc[m, st.code_col] = BAD_CODE[st.source]
        elif name == "damage_future_date":
            rows = np.flatnonzero(m)
            col = np.array(st.event_cols, dtype=object)[rng.integers(0, len(st.event_cols), len(rows))]
            when = st.future_from + rng.integers(0, 400, len(rows)) * np.timedelta64(1, "D")
            text = D.format_dates(when, D.dirty_date_forms(rng, len(rows), rates["date_forms"]))
            for c in st.event_cols:
                at = rows[col == c]
                blank = f[c].to_numpy()[at] == ""  # an optional date left blank: damage the first event instead
                f.loc[at[~blank], c] = text[col == c][~blank]
                f.loc[at[blank], st.event_cols[0]] = text[col == c][blank]
    st.damage = kind


def _arrow(col: pd.Series) -> pa.Array:
    arr = pa.array(col.astype("str") if col.dtype != "str" else col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _assemble(f: pd.DataFrame, sep: str | None) -> pa.Array:
    """One text line per record, joined in Arrow (JSON by concatenation: values never hold quotes,
    backslashes or control characters, which ``render_lines`` checks)."""
    if sep is not None:
        return pc.binary_join_element_wise(*[_arrow(f[c]) for c in f.columns], _lit(sep))
    pieces = []
    for col in f.columns:
        if col == "buyers":
            pieces.append(pc.binary_join_element_wise(_lit('"buyers": '), _arrow(f[col]), _lit("")))
        else:
            pieces.append(pc.binary_join_element_wise(_lit(f'"{col}": "'), _arrow(f[col]), _lit('"'), _lit("")))
    body = pc.binary_join_element_wise(*pieces, _lit(", "))
    return pc.binary_join_element_wise(_lit("{"), body, _lit("}"), _lit(""))


@dataclass
class Lines:
    header: str | None
    body: pa.Array  # large_string, one record per element, in file order

    def __len__(self) -> int:
        return len(self.body)


def render_lines(st: SourceText, rng, duplicate_rate: float, counts: dict[str, int]) -> tuple[Lines, str]:
    """The file's lines in delivery order, with exact duplicates; sets ``st.line``."""
    fmt = delivery_format(st.source)
    sep = fmt.separator
    f = st.fields
    forbidden = r'["\\\n\r]' + ("" if sep is None else "|" + re.escape(sep))
    for col in f.columns:
        if col != "buyers" and f[col].astype("str").str.contains(forbidden, regex=True).any():
            raise ValueError(f"synth: {st.source}.{col} holds a character that would need quoting")
    lines = _assemble(f, sep)
    st.fields = f = None  # the text now lives in ``lines``
    malformed = np.flatnonzero(st.damage == D.DAMAGE.index("damage_malformed"))
    if len(malformed):
        mal = pd.Series(lines.take(pa.array(malformed)).to_pylist(), dtype=object)
        if sep is None:
            mal = mal.str.slice(0, -2)  # a cut-off JSON object
        else:
            extra = rng.random(len(mal)) < 0.5
            mal = pd.Series(np.where(extra, mal + sep + "备注", mal.str.rsplit(sep, n=1).str[0]), dtype=object)
        mask = np.zeros(len(lines), bool)
        mask[malformed] = True
        lines = pc.replace_with_mask(lines, pa.array(mask), pa.array(mal.to_numpy(dtype=object), pa.large_string()))
    n = len(lines)
    dup = (rng.random(n) < duplicate_rate) & (st.damage < 0)
    counts["duplicate"] = counts.get("duplicate", 0) + int(dup.sum())
    src = np.flatnonzero(dup)
    keys = np.concatenate([np.arange(n, dtype=float), src + 0.5 + rng.random(len(src)) * (n - src - 0.5)])
    order = np.argsort(keys, kind="stable")
    source_row = np.concatenate([np.arange(n), src])[order]
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))
    st.line = position[:n] + (2 if sep is not None else 1)
    st.source_row = source_row
    header = sep.join(fmt.headers) if sep is not None else None
    return Lines(header, lines.take(pa.array(source_row))), fmt.file


def lines_of(lines: Lines, st: SourceText, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of all lines make one delivery of the rows ``present`` (indexes, in file order), and
    each row's physical line in that file (-1 where absent)."""
    keep = present[st.source_row]
    new_position = np.cumsum(keep) - 1
    offset = 2 if lines.header is not None else 1
    line = np.where(present, new_position[st.line - offset] + offset, -1)
    return np.flatnonzero(keep), line


def write_file(
    folder: Path, name: str, lines: Lines, encoding: str, rows: np.ndarray | None = None, chunk: int = 50_000
) -> int:
    """Write header and lines (those at ``rows`` only, when given), encoding a chunk of lines at a
    time (bounded memory at city scale: a delivery is never copied whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    codec = "gb18030" if encoding == "gb18030" else "utf-8"
    written = 0
    with open(folder / name, "wb") as out:
        if encoding == "utf-8-sig":
            written += out.write(b"\xef\xbb\xbf")
        if lines.header is not None:
            written += out.write((lines.header + "\n").encode(codec))
        for start in range(0, len(lines.body) if rows is None else len(rows), chunk):
            part = (
                lines.body.slice(start, chunk)
                if rows is None
                else lines.body.take(pa.array(rows[start : start + chunk]))
            )
            offsets = pa.array([0, len(part)], pa.int64())
            joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, part), _lit("\n"))[0]
            data = joined.as_buffer().to_pybytes() + b"\n"
            if codec == "gb18030":
                data = data.decode("utf-8").encode("gb18030")
            written += out.write(data)
    return written


def deliver(
    root: Path, source: str, day: dt.date, lines: Lines, rows: np.ndarray | None = None, complete: bool = True
) -> Path:
    fmt = delivery_format(source)
    name, encoding = fmt.file, fmt.encoding
    folder = root / "landing" / source / day.isoformat()
    write_file(folder, name, lines, encoding, rows)
    if complete:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder / name
