"""Resolve department address texts to standard address codes, precision before recall.

Order: the exact standard_text; then the parsed components joined on the registry's component
key (``normalized``); then, for the small remainder, a fuzzy comparison of one name (compound
or road) among registry rows that agree on every number (``fuzzy``). The registry decides:
a text whose components fit one registry address resolves to it, whatever districts its road
runs through; one that fits several is ``ambiguous`` and lists them all; one that fits none is
``unmatched``. A district written in the text must agree. A text with two readings (a space
between digits, a compound name ending in digits) fits what either reading fits. A wrong code
is worse than none: numbers are never fuzzy, and fuzzy needs one clear winner.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.addresses.normalize import (
    arabic_house_numbers,
    halfwidth_readings,
    mark_numbered_compounds,
    split_components,
    split_head,
    strip_prefix,
)
from pipelines.addresses.registry import AddressRegistry, component_key
from pipelines.engine.frames import member
from pipelines.registry import address_columns

MATCH_COLUMNS = ["address", "address_code", "status", "candidates", "score"]
REVIEW_STATUSES = ("ambiguous", "unmatched")
# A fuzzy name must be this similar (difflib ratio) and beat the runner-up by the margin.
FUZZY_MIN_SCORE = 0.75
FUZZY_MIN_MARGIN = 0.15
NUMBERS = ["door_no", "building", "unit", "room"]


def _candidates_json(codes: list[str]) -> str:
    return json.dumps(sorted(codes), ensure_ascii=False)


class _Outcome:
    """The result columns of ``resolve_texts``, filled step by step, one slot per text."""

    def __init__(self, n: int) -> None:
        self.code = np.full(n, None, dtype=object)
        self.status = np.full(n, "unmatched", dtype=object)
        self.candidates = np.full(n, "[]", dtype=object)
        self.score = np.zeros(n, dtype=float)

    def resolve(self, positions: np.ndarray, codes: pd.Series, status: str, score) -> None:
        self.code[positions] = codes.to_numpy()
        self.status[positions] = status
        self.score[positions] = score
        self.candidates[positions] = _single_candidates(codes)

    def several(self, codes_per_position: pd.Series, score) -> None:
        """``codes_per_position``: position → list of two or more codes."""
        positions = codes_per_position.index.to_numpy()
        self.status[positions] = "ambiguous"
        self.score[positions] = score
        self.candidates[positions] = [_candidates_json(c) for c in codes_per_position]

    def unmatched(self, positions: np.ndarray) -> np.ndarray:
        return positions[self.status[positions] == "unmatched"]


TEXTS_PER_PASS = 1 << 20
"""Distinct texts resolved at once. Each text's outcome depends on the registry alone, so the
texts are taken a pass at a time and what parsing and matching hold (readings, candidate pairs)
is a pass's, however many texts a city has. Each pass probes the whole registry again, so a
pass is large: the 3 M city's 2.7 M texts in three passes took 14.6 s instead of 12.8 s, at a
step peak of 3.5 GB instead of 3.7 GB."""


def resolve_texts(texts: pd.Series, registry: AddressRegistry, *, per_pass: int = TEXTS_PER_PASS) -> pd.DataFrame:
    """One row per distinct non-missing text, in order of first appearance: address,
    address_code, status, candidates, score.

    ``candidates`` is a JSON list of the codes that fit (the one code when resolved, every code
    that fits, at least two, when ambiguous, ``[]`` when unmatched); ``score`` is 1.0 for exact
    and normalized matches (and for texts whose components fit several codes), the name
    similarity for fuzzy ones (also when several names are equally close), 0.0 when unmatched.
    The texts are resolved ``per_pass`` at a time; the outcome does not depend on it.
    """
    distinct = pd.Series(pd.unique(texts.dropna().astype("str")), dtype="str")
    passes = [
        _resolve_distinct(distinct.iloc[start : start + per_pass].reset_index(drop=True), registry)
        for start in range(0, max(len(distinct), 1), per_pass)
    ]
    return passes[0] if len(passes) == 1 else pd.concat(passes, ignore_index=True)


def _resolve_distinct(distinct: pd.Series, registry: AddressRegistry) -> pd.DataFrame:
    """``resolve_texts`` of texts already distinct, indexed from 0."""
    out = _Outcome(len(distinct))

    exact, several = registry.find_standard_texts(distinct)
    out.resolve(exact.index.to_numpy(), exact, "exact", 1.0)
    out.several(several, 1.0)
    hit = np.zeros(len(distinct), dtype=bool)
    hit[exact.index.to_numpy()] = hit[several.index.to_numpy()] = True

    todo = np.flatnonzero(~hit)
    if len(todo):
        readings = _parse(distinct.iloc[todo].reset_index(drop=True), registry)
        readings["pos"] = todo[readings["pos"].to_numpy()]
        _match_components(readings, registry, out)
        left = readings.loc[readings["pos"].isin(out.unmatched(todo))]
        _match_fuzzy(left, registry, out)

    return pd.DataFrame(
        {
            "address": pd.Series(distinct.to_numpy(dtype=object), dtype=object),
            "address_code": pd.Series(out.code, dtype=object),
            "status": pd.Series(out.status, dtype=object),
            "candidates": pd.Series(out.candidates, dtype=object),
            "score": out.score,
        }
    )


def _parse(texts: pd.Series, registry: AddressRegistry) -> pd.DataFrame:
    """Every reading of each text: its components plus the district (if written) and road.

    ``pos`` is the text's position in ``texts``. Each text has its plain reading (unparsed
    texts too, with NaN components); a text with a space between digits, or one naming a
    registry compound that ends in a number right before its building number, adds the
    readings that parse.
    """
    texts = texts.reset_index(drop=True)
    joined, separated = halfwidth_readings(texts)
    plain = split_components(arabic_house_numbers(joined))
    numbered = registry.numbered_compounds
    runs_on = (
        plain.loc[plain["compound"].isin(numbered["base"]), ["compound"]]
        .rename_axis("pos")
        .reset_index()
        .merge(numbered, left_on="compound", right_on="base")
    )
    marked = mark_numbered_compounds(joined.loc[runs_on["pos"]], runs_on["name"])
    more = [split_components(arabic_house_numbers(extra)) for extra in (separated, marked)]
    readings = pd.concat([plain, *(parts.loc[parts["room"].notna()] for parts in more)])
    readings = readings.rename_axis("pos").reset_index()
    head_codes, heads = pd.factorize(readings["head"])
    split = [split_head(head, registry.roads, registry.district_names) for head in heads]
    districts = np.array([d for d, _ in split] + [None], dtype=object)
    roads = np.array([r for _, r in split] + [None], dtype=object)
    readings["district_code"] = districts[head_codes]  # code -1 (no head) takes the trailing None
    readings["road"] = roads[head_codes]
    return readings


def _single_candidates(codes: pd.Series) -> list[str]:
    """``["<code>"]`` per code; built as strings unless a code would need JSON escaping."""
    codes = codes.astype("str")
    if codes.str.contains(r'["\\\x00-\x1f\x7f-\x9f]', regex=True).any():
        return [_candidates_json([c]) for c in codes]
    return ('["' + codes + '"]').tolist()


def _distinct_pairs(pairs: pd.DataFrame, readings: pd.DataFrame) -> pd.DataFrame:
    """One (pos, address_code) row per registry address a text fits, whichever reading fits it.

    Only texts with several readings can repeat a pair, so only they are deduplicated.
    """
    several = readings["pos"].to_numpy()[readings["pos"].duplicated().to_numpy()]
    repeated = pairs["pos"].isin(several).to_numpy()
    if not repeated.any():
        return pairs
    return pd.concat([pairs.loc[~repeated], pairs.loc[repeated].drop_duplicates(["pos", "address_code"])])


def _same_district(pairs: pd.DataFrame) -> pd.Series:
    """Pairs whose text names no district, or the registry address's own district."""
    return pairs["district_code_text"].isna() | (pairs["district_code_text"] == pairs["district_code"])


def _match_components(readings: pd.DataFrame, registry: AddressRegistry, out: _Outcome) -> None:
    """Join readings on the component key; the registry addresses that fit decide the status."""
    usable = readings.loc[readings["road"].notna() & readings["room"].notna()]
    if usable.empty:
        return
    key = component_key(
        usable["road"], usable["door_no"], usable["compound"], usable["building"], usable["unit"], usable["room"]
    )
    pairs = (
        usable[["pos", "district_code"]]
        .assign(key=key)
        .merge(registry.keys[["key", "district_code", "address_code"]], on="key", how="inner", suffixes=("_text", ""))
    )
    pairs = _distinct_pairs(pairs.loc[_same_district(pairs)], usable)
    if pairs.empty:
        return
    fits = pairs.groupby("pos")["address_code"].agg(["size", "first"])
    single = fits.loc[fits["size"] == 1]
    out.resolve(single.index.to_numpy(), single["first"], "normalized", 1.0)
    several = fits.index[fits["size"] > 1]
    if len(several):
        out.several(pairs.loc[pairs["pos"].isin(several)].groupby("pos")["address_code"].agg(list), 1.0)


# What a fuzzy comparison keeps apart: digits, numerals, ordinals, directions and positions,
# letters, phase and zone (海滨二路 ≠ 海滨三路, 海曲中路 ≠ 海曲东路, 三期 ≠ 二期, A区 ≠ B区).
NUMERALS = re.compile(r"[^0-9A-Za-z零〇一二两三四五六七八九十百千甲乙丙丁东南西北中内外前后上下期区]")


def _ratio(a: str, b: str) -> float:
    """Name similarity; 0 when the names differ in anything ``NUMERALS`` keeps apart."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < FUZZY_MIN_SCORE or matcher.quick_ratio() < FUZZY_MIN_SCORE:
        return 0.0
    if NUMERALS.sub("", a) != NUMERALS.sub("", b):
        return 0.0
    return matcher.ratio()


def _match_fuzzy(left: pd.DataFrame, registry: AddressRegistry, out: _Outcome) -> None:
    """Texts that agree with registry rows on every number but one name (compound or road).

    Compound: same road (district too, when written), door, building, unit and room.
    Road: same compound, door, building, unit and room, road unknown to the registry.
    One registry address must beat every other by ``FUZZY_MIN_MARGIN``; when two or more are
    that close and similar enough, the text is ``ambiguous`` between them.
    """
    left = left.loc[left["room"].notna()]
    if left.empty:
        return
    reg = registry.keys

    known_road = left.loc[left["road"].notna()].rename(columns={"compound": "name_text"})
    by_compound = known_road[["pos", "road", "district_code", "name_text", *NUMBERS]].merge(
        reg[["road", *NUMBERS, "district_code", "compound", "address_code"]].rename(columns={"compound": "name"}),
        on=["road", *NUMBERS],
        how="inner",
        suffixes=("_text", ""),
    )

    unknown_road = left.loc[left["road"].isna()].copy()
    heads = unknown_road["head"].map(
        {h: strip_prefix(h, registry.district_names) for h in unknown_road["head"].unique()}
    )
    unknown_road["district_code"] = heads.map(lambda v: v[0]).astype(object)
    unknown_road["name_text"] = heads.map(lambda v: v[1]).astype(object)
    by_road = unknown_road[["pos", "district_code", "name_text", "compound", *NUMBERS]].merge(
        reg[["compound", *NUMBERS, "district_code", "road", "address_code"]].rename(columns={"road": "name"}),
        on=["compound", *NUMBERS],
        how="inner",
        suffixes=("_text", ""),
    )

    columns = ["pos", "name_text", "name", "address_code"]
    pairs = pd.concat(
        [by_compound.loc[_same_district(by_compound), columns], by_road.loc[_same_district(by_road), columns]],
        ignore_index=True,
    )
    if pairs.empty:
        return
    pairs["score"] = [_ratio(a, b) for a, b in zip(pairs["name_text"], pairs["name"])]
    pairs = pairs.sort_values(["pos", "score"], ascending=[True, False], kind="stable")
    pairs = pairs.drop_duplicates(["pos", "address_code"])  # a text's best reading per address
    rank = pairs.groupby("pos").cumcount().to_numpy()
    best = pairs.loc[rank == 0].set_index("pos")
    runner_up = pairs.loc[rank == 1].set_index("pos")["score"].reindex(best.index).fillna(0.0)
    clear = (best["score"] >= FUZZY_MIN_SCORE) & (best["score"] - runner_up >= FUZZY_MIN_MARGIN)
    chosen = best.loc[clear]
    out.resolve(chosen.index.to_numpy(), chosen["address_code"], "fuzzy", chosen["score"].round(4).to_numpy())

    top = pairs["pos"].map(best["score"])
    close = pairs.loc[
        ~clear.reindex(pairs["pos"]).to_numpy()
        & (pairs["score"] >= FUZZY_MIN_SCORE)
        & (top - pairs["score"] < FUZZY_MIN_MARGIN)
    ]
    lists = close.groupby("pos")["address_code"].agg(list)
    lists = lists.loc[lists.map(len) >= 2]
    if len(lists):
        out.several(lists, best.loc[lists.index, "score"].round(4).to_numpy())


def build_address_match(
    staged: Mapping[str, pd.DataFrame], registry: AddressRegistry, columns: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The ``address_match`` rows: one per (source, distinct address text) of the staged frames,
    ordered by source and text (code point order).

    ``columns`` maps a source to its address column (default: the sources' declared
    ``roles: address``). Each text is resolved once however many sources deliver it.
    """
    columns = address_columns() if columns is None else columns
    per_source = {
        source: staged[source][column].dropna().astype("str").drop_duplicates().sort_values(ignore_index=True)
        for source, column in sorted(columns.items())
        if source in staged and column in staged[source].columns
    }
    if not per_source:
        return pd.DataFrame(columns=["source", *MATCH_COLUMNS])
    texts = pd.concat(list(per_source.values()), ignore_index=True)
    resolved = resolve_texts(texts, registry)
    rows = [pd.DataFrame({"source": source, "address": values}) for source, values in per_source.items()]
    # resolve_texts has one row per distinct text in order of first appearance, as factorize
    # numbers them: each row's match is found by position, not by a join on the text.
    position, _ = pd.factorize(texts)
    matched = resolved.drop(columns="address").iloc[position].reset_index(drop=True)
    return pd.concat([pd.concat(rows, ignore_index=True), matched], axis=1)


# Why a text found no single code, checked from the road down to the room (first failing level).
HINTS = {
    "several_codes": "several standard addresses fit (行政区或地址重复)",
    "district_missing": "this address exists in several districts; add the district (缺少区县)",
    "unparsed": "door, building or room number not recognised (门牌/楼号/室号无法识别)",
    "unknown_road": "road not in the registry (道路不在标准地址库)",
    "district_mismatch": "address not in the district written (地址不在所写区县)",
    "no_such_door": "no such door number on this road (门牌号不存在)",
    "no_such_compound": "compound name differs from the registry (小区名称不符)",
    "no_such_building": "no such building (楼号不存在)",
    "no_such_unit": "no such unit, or unit missing (单元号不存在或缺失)",
    "no_such_room": "no such room (室号不存在)",
}
# The levels a text is checked at after its road, each with the components it must share.
HINT_LEVELS = [
    ("no_such_door", ["road", "door_no"]),
    ("no_such_compound", ["road", "door_no", "compound"]),
    ("no_such_building", ["road", "door_no", "compound", "building"]),
    ("no_such_unit", ["road", "door_no", "compound", "building", "unit"]),
    ("no_such_room", ["road", "door_no", "compound", "building", "unit", "room"]),
]


def explain(texts: pd.Series, registry: AddressRegistry) -> pd.Series:
    """A hint code (see ``HINTS``) per text, for texts that ended ambiguous or unmatched.

    The first component, from road to room, that the registry does not know (in the district
    written, when one is); a text whose components all fit is ``district_missing`` when they
    fit addresses in several districts and no district is written, ``district_mismatch`` when
    they fit only outside the district written, else ``several_codes``. Of a text's readings
    the one that gets furthest speaks. A review list is small, so this runs only on its texts.
    """
    texts = texts.astype("str").reset_index(drop=True)
    readings = _parse(texts, registry)
    hint, depth = _hint_per_reading(readings, registry)
    best = (
        pd.DataFrame({"pos": readings["pos"], "hint": hint, "depth": depth})
        .sort_values(["pos", "depth"], ascending=[True, False], kind="stable")
        .drop_duplicates("pos")
    )
    return pd.Series(best.set_index("pos")["hint"].reindex(texts.index).to_numpy(), index=texts.index)


class _ComponentCodes:
    """The registry's and the readings' components as integers, each column numbered once by the
    registry's values (a reading's value the registry lacks fits nothing): a review list is
    compared with a city's million addresses at every level of ``HINT_LEVELS``."""

    def __init__(self, keys: pd.DataFrame, readings: pd.DataFrame) -> None:
        self.registry_rows, self.reading_rows = len(keys), len(readings)
        self.codes: dict[str, tuple[np.ndarray, int]] = {}  # column -> (registry codes + reading codes, values)
        for column in {c for _, columns in HINT_LEVELS for c in columns} | {"district_code"}:
            registry_codes, values = pd.factorize(keys[column])
            registry_codes[registry_codes < 0] = len(values)  # a missing registry value fits no reading
            reading_codes = pd.Index(values).get_indexer(readings[column].fillna("").astype(values.dtype))
            self.codes[column] = (np.concatenate([registry_codes, reading_codes]).astype(np.int64), len(values))

    def known(self, columns: list[str]) -> np.ndarray:
        """Readings whose ``columns`` (a missing one read as blank) match some registry address's;
        the columns' numbers combined, renumbered after each so they stay small."""
        n = self.registry_rows
        combined = np.zeros(n + self.reading_rows, dtype=np.int64)
        absent = np.zeros(self.reading_rows, dtype=bool)
        for column in columns:
            codes, width = self.codes[column]
            absent |= codes[n:] < 0
            combined = pd.factorize(combined * (width + 2) + codes + 1)[0].astype(np.int64)
        return ~absent & pd.Series(combined[n:]).isin(pd.unique(combined[:n])).to_numpy()


def _hint_per_reading(readings: pd.DataFrame, registry: AddressRegistry) -> tuple[np.ndarray, np.ndarray]:
    """(hint code, how far the reading got: 0 unparsed … len(HINT_LEVELS) + 3 all fit)."""
    keys = registry.keys
    components = _ComponentCodes(keys, readings)
    n = len(readings)
    hint = np.full(n, "several_codes", dtype=object)
    depth = np.full(n, len(HINT_LEVELS) + 3)
    with_district = readings["district_code"].notna().to_numpy()
    decided = np.zeros(n, dtype=bool)
    for level, (code, columns) in enumerate(HINT_LEVELS):
        known = np.where(with_district, components.known(["district_code", *columns]), components.known(columns))
        fails = ~decided & ~known
        hint[fails], depth[fails] = code, level + 3
        decided |= fails
    whole = HINT_LEVELS[-1][1]
    exists_elsewhere = with_district & decided & components.known(whole)
    hint[exists_elsewhere], depth[exists_elsewhere] = "district_mismatch", len(HINT_LEVELS) + 3
    road_elsewhere = with_district & ~exists_elsewhere & ~components.known(["district_code", "road"])
    hint[road_elsewhere], depth[road_elsewhere] = "district_mismatch", 2
    key = component_key(*(readings[c].fillna("") for c in whole))
    fitting = keys.loc[member(keys["key"], key), ["key", "district_code"]]  # only the readings' keys
    districts = fitting.groupby("key")["district_code"].nunique()
    spread = key.map(districts).fillna(0).to_numpy() > 1
    missing = ~decided & ~with_district & spread
    hint[missing] = "district_missing"
    no_road = readings["road"].isna().to_numpy()
    hint[no_road], depth[no_road] = "unknown_road", 1
    unparsed = readings["room"].isna().to_numpy()
    hint[unparsed], depth[unparsed] = "unparsed", 0
    return hint, depth


def write_review_list(
    address_match: pd.DataFrame, out_dir: Path, registry: AddressRegistry | None = None
) -> list[Path]:
    """One CSV per source of its ambiguous and unmatched texts, for the department to correct.

    ``address_review_<source>.csv`` (UTF-8 with BOM, so spreadsheet tools open it): address,
    status, candidates, score and, when ``registry`` is given, ``hint`` (what to fix, see
    ``HINTS``); written for every source in ``address_match``, with only a header when nothing
    needs review.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    review = address_match.loc[address_match["status"].isin(REVIEW_STATUSES)]
    hints = None
    if registry is not None and len(review):
        distinct = review["address"].drop_duplicates()
        codes = explain(distinct, registry)
        hints = pd.Series(codes.map(HINTS).to_numpy(), index=distinct.to_numpy())
    paths = []
    for source, rows in address_match.groupby("source", sort=True):
        rows = rows.loc[rows["status"].isin(REVIEW_STATUSES), ["address", "status", "candidates", "score"]]
        if registry is not None:
            rows = rows.assign(hint=rows["address"].map(hints) if hints is not None else None)
        rows = rows.sort_values(["status", "address"], kind="stable")
        path = out_dir / f"address_review_{source}.csv"
        rows.to_csv(path, index=False, encoding="utf-8-sig")
        paths.append(path)
    return paths
