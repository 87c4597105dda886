"""Resolve department address texts to standard address codes, precision before recall.

Order: the exact standard_text; then the parsed components joined on the registry's component
key (``normalized``); then, for the small remainder, a fuzzy comparison of one name (compound
or road) among registry rows that agree on every number (``fuzzy``). A text that fits several
codes is ``ambiguous`` with its candidates; one that fits none is ``unmatched``. A wrong code is
worse than none: numbers are never fuzzy, and a road that runs through several districts is
never placed without its district.
"""

from __future__ import annotations

import json
import re
from difflib import SequenceMatcher
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from pipelines.addresses.normalize import normalize_texts, split_components, split_head, strip_prefix
from pipelines.addresses.registry import AddressRegistry, component_key

MATCH_COLUMNS = ["address", "address_code", "status", "candidates", "score"]
REVIEW_STATUSES = ("ambiguous", "unmatched")
# A fuzzy name must be this similar (difflib ratio) and beat the runner-up by the margin.
FUZZY_MIN_SCORE = 0.75
FUZZY_MIN_MARGIN = 0.15

# Staged frame → its address column (docs/contracts.md).
ADDRESS_COLUMNS = {
    "hukou": "hukou_address",
    "property_title": "address",
    "housing_contract": "address",
    "rental": "address",
    "individual_business": "address",
    "enterprise": "address",
}


def _candidates_json(codes: list[str]) -> str:
    return json.dumps(sorted(codes), ensure_ascii=False)


def resolve_texts(texts: pd.Series, registry: AddressRegistry) -> pd.DataFrame:
    """One row per distinct non-missing text: address, address_code, status, candidates, score.

    ``candidates`` is a JSON list of the codes that fit (the one code when resolved, several
    when ambiguous, ``[]`` when unmatched); ``score`` is 1.0 for exact and normalized matches
    (and for texts whose components fit several codes), the name similarity for fuzzy ones,
    0.0 when unmatched.
    """
    distinct = pd.Series(pd.unique(texts.dropna().astype("str")), dtype="str")
    n = len(distinct)
    code = np.full(n, None, dtype=object)
    status = np.full(n, "unmatched", dtype=object)
    candidates = np.full(n, "[]", dtype=object)
    score = np.zeros(n, dtype=float)

    exact = registry.exact.reindex(distinct.to_numpy())
    hit = exact.notna().to_numpy().copy()
    code[hit] = exact.to_numpy()[hit]
    status[hit] = "exact"
    score[hit] = 1.0
    candidates[hit] = _single_candidates(pd.Series(code[hit], dtype=object))
    if len(registry.duplicate_texts):
        dup = registry.duplicate_texts.reindex(distinct.to_numpy())
        several = dup.notna().to_numpy()
        status[several] = "ambiguous"
        score[several] = 1.0
        candidates[several] = [_candidates_json(c) for c in dup.to_numpy()[several]]
        hit |= several

    todo = np.flatnonzero(~hit)
    if len(todo):
        parsed = _parse(distinct.iloc[todo].reset_index(drop=True), registry)
        parsed["pos"] = todo
        _match_components(parsed, registry, code, status, candidates, score)
        left = parsed.loc[pd.Series(status[parsed["pos"]] == "unmatched").to_numpy()]
        _match_fuzzy(left, registry, code, status, candidates, score)

    return pd.DataFrame({"address": pd.Series(distinct.to_numpy(dtype=object), dtype=object),
                         "address_code": pd.Series(code, dtype=object),
                         "status": pd.Series(status, dtype=object),
                         "candidates": pd.Series(candidates, dtype=object), "score": score})


def _parse(texts: pd.Series, registry: AddressRegistry) -> pd.DataFrame:
    """Components of each text plus the district (if written) and road its head names."""
    parts = split_components(normalize_texts(texts))
    head_codes, heads = pd.factorize(parts["head"])
    split = [split_head(head, registry.roads, registry.district_names) for head in heads]
    districts = np.array([d for d, _ in split] + [None], dtype=object)
    roads = np.array([r for _, r in split] + [None], dtype=object)
    parts["district_code"] = districts[head_codes]  # code -1 (no head) takes the trailing None
    parts["road"] = roads[head_codes]
    return parts


def _multi_district(roads: pd.Series, registry: AddressRegistry) -> pd.Series:
    """Roads that run through several districts: never placed without their district."""
    several = [road for road, districts in registry.roads.items() if len(districts) > 1]
    return roads.isin(several)


def _single_candidates(codes: pd.Series) -> list[str]:
    """``["<code>"]`` per code; built as strings unless a code would need JSON escaping."""
    codes = codes.astype("str")
    if codes.str.contains(r'["\\\x00-\x1f\x7f-\x9f]', regex=True).any():
        return [_candidates_json([c]) for c in codes]
    return ('["' + codes + '"]').tolist()


def _match_components(parsed: pd.DataFrame, registry: AddressRegistry, code: np.ndarray,
                      status: np.ndarray, candidates: np.ndarray, score: np.ndarray) -> None:
    """Join parsed texts on the component key; district must agree when the text names one."""
    usable = parsed.loc[parsed["road"].notna() & parsed["room"].notna()].copy()
    if usable.empty:
        return
    usable["key"] = component_key(usable["road"], usable["door_no"], usable["compound"],
                                  usable["building"], usable["unit"], usable["room"])
    pairs = usable[["pos", "key", "district_code", "road"]].merge(
        registry.keys[["key", "district_code", "address_code"]], on="key", how="inner",
        suffixes=("_text", ""))
    same_district = pairs["district_code_text"].isna() | (
        pairs["district_code_text"] == pairs["district_code"])
    pairs = pairs.loc[same_district]
    if pairs.empty:
        return
    found = pairs.groupby("pos").agg(n=("address_code", "size"), first=("address_code", "first"),
                                     road=("road", "first"),
                                     district_given=("district_code_text", "first"))
    unsure = found["district_given"].isna() & _multi_district(found["road"], registry)
    single = found.loc[(found["n"] == 1) & ~unsure]
    positions = single.index.to_numpy()
    code[positions] = single["first"].to_numpy()
    status[positions] = "normalized"
    score[positions] = 1.0
    candidates[positions] = _single_candidates(single["first"])

    several = found.index[(found["n"] > 1) | unsure].to_numpy()
    if len(several):
        lists = pairs.loc[pairs["pos"].isin(several)].groupby("pos")["address_code"].agg(list)
        status[lists.index.to_numpy()] = "ambiguous"
        score[lists.index.to_numpy()] = 1.0
        candidates[lists.index.to_numpy()] = [_candidates_json(c) for c in lists]


NUMERALS = re.compile(r"[^0-9零〇一二两三四五六七八九十百千甲乙丙丁东南西北中]")


def _ratio(a: str, b: str) -> float:
    """Name similarity; 0 when the names differ in a numeral or a direction (海滨二路 ≠ 海滨三路)."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < FUZZY_MIN_SCORE or matcher.quick_ratio() < FUZZY_MIN_SCORE:
        return 0.0
    if NUMERALS.sub("", a) != NUMERALS.sub("", b):
        return 0.0
    return matcher.ratio()


def _match_fuzzy(left: pd.DataFrame, registry: AddressRegistry, code: np.ndarray,
                 status: np.ndarray, candidates: np.ndarray, score: np.ndarray) -> None:
    """Texts that agree with registry rows on every number but one name (compound or road).

    Compound: same road (district too, when written), door, building, unit and room.
    Road: same compound, door, building, unit and room, road unknown to the registry.
    A road in several districts without its district is never fuzzed.
    """
    left = left.loc[left["room"].notna()]
    if left.empty:
        return
    numbers = ["door_no", "building", "unit", "room"]
    reg = registry.keys

    known_road = left.loc[left["road"].notna()]
    known_road = known_road.loc[known_road["district_code"].notna()
                                | ~_multi_district(known_road["road"], registry)]
    by_compound = known_road[["pos", "road", "district_code", "compound", *numbers]].merge(
        reg[["road", *numbers, "district_code", "compound", "address_code"]],
        on=["road", *numbers], how="inner", suffixes=("_text", ""))
    by_compound = by_compound.loc[by_compound["district_code_text"].isna()
                                  | (by_compound["district_code_text"] == by_compound["district_code"])]
    by_compound = by_compound.assign(name_text=by_compound["compound_text"],
                                     name=by_compound["compound"])

    unknown_road = left.loc[left["road"].isna()].copy()
    if not unknown_road.empty:
        heads = unknown_road["head"].map(
            {h: strip_prefix(h, registry.district_names) for h in unknown_road["head"].unique()})
        unknown_road["district_code"] = heads.map(lambda v: v[0])
        unknown_road["name_text"] = heads.map(lambda v: v[1])
    else:
        unknown_road["district_code"] = unknown_road["name_text"] = pd.Series(dtype=object)
    by_road = unknown_road[["pos", "district_code", "name_text", "compound", *numbers]].merge(
        reg[["compound", *numbers, "district_code", "road", "address_code"]],
        on=["compound", *numbers], how="inner", suffixes=("_text", ""))
    by_road = by_road.loc[by_road["district_code_text"].isna()
                          | (by_road["district_code_text"] == by_road["district_code"])]
    by_road = by_road.assign(name=by_road["road"])

    pairs = pd.concat([by_compound[["pos", "name_text", "name", "address_code"]],
                       by_road[["pos", "name_text", "name", "address_code"]]], ignore_index=True)
    if pairs.empty:
        return
    pairs["score"] = [_ratio(a, b) for a, b in zip(pairs["name_text"], pairs["name"])]
    pairs = pairs.sort_values(["pos", "score"], ascending=[True, False])
    top = pairs.groupby("pos").nth(0).set_index("pos")
    runner_up = pairs.groupby("pos").nth(1).set_index("pos")["score"].reindex(top.index).fillna(0.0)
    clear = (top["score"] >= FUZZY_MIN_SCORE) & (top["score"] - runner_up >= FUZZY_MIN_MARGIN)
    chosen = top.loc[clear]
    positions = chosen.index.to_numpy()
    code[positions] = chosen["address_code"].to_numpy()
    status[positions] = "fuzzy"
    score[positions] = chosen["score"].round(4).to_numpy()
    candidates[positions] = _single_candidates(chosen["address_code"])


def build_address_match(staged: Mapping[str, pd.DataFrame], registry: AddressRegistry) -> pd.DataFrame:
    """The ``address_match`` rows: one per (source, distinct address text) of the staged frames.

    Each text is resolved once however many sources deliver it.
    """
    per_source = {source: staged[source][column].dropna().astype("str").drop_duplicates()
                  for source, column in ADDRESS_COLUMNS.items()
                  if source in staged and column in staged[source].columns}
    if not per_source:
        return pd.DataFrame(columns=["source", *MATCH_COLUMNS])
    resolved = resolve_texts(pd.concat(list(per_source.values()), ignore_index=True), registry)
    rows = [pd.DataFrame({"source": source, "address": texts.to_numpy(dtype=object)})
            for source, texts in per_source.items()]
    return pd.concat(rows, ignore_index=True).merge(resolved, on="address", how="left")


# Why a text found no single code, checked from the road down to the room (first failing level).
HINTS = {
    "several_codes": "several standard addresses fit (行政区或地址重复)",
    "district_missing": "road runs through several districts; add the district (缺少区县)",
    "unparsed": "door, building or room number not recognised (门牌/楼号/室号无法识别)",
    "unknown_road": "road not in the registry (道路不在标准地址库)",
    "district_mismatch": "road not in the district written (道路不在所写区县)",
    "no_such_door": "no such door number on this road (门牌号不存在)",
    "no_such_compound": "compound name differs from the registry (小区名称不符)",
    "no_such_building": "no such building (楼号不存在)",
    "no_such_unit": "no such unit, or unit missing (单元号不存在或缺失)",
    "no_such_room": "no such room (室号不存在)",
}


def explain(texts: pd.Series, registry: AddressRegistry) -> pd.Series:
    """A hint code (see ``HINTS``) per text, for texts that ended ambiguous or unmatched.

    The first component, from road to room, that the registry does not know; a review list is
    small, so this runs only on its texts.
    """
    texts = texts.astype("str").reset_index(drop=True)
    parsed = _parse(texts, registry)
    hint = pd.Series("several_codes", index=parsed.index, dtype=object)
    unparsed = parsed["room"].isna()
    no_road = ~unparsed & parsed["road"].isna()
    keys = registry.keys
    levels = [("no_such_door", ["road", "door_no"]),
              ("no_such_compound", ["road", "door_no", "compound"]),
              ("no_such_building", ["road", "door_no", "compound", "building"]),
              ("no_such_unit", ["road", "door_no", "compound", "building", "unit"]),
              ("no_such_room", ["road", "door_no", "compound", "building", "unit", "room"])]
    decided = unparsed | no_road
    with_district = parsed["district_code"].notna()
    multi = ~with_district & _multi_district(parsed["road"], registry)
    in_district = pd.MultiIndex.from_frame(parsed[["road", "district_code"]].fillna("")).isin(
        pd.MultiIndex.from_frame(keys[["road", "district_code"]].drop_duplicates()))
    mismatch = ~decided & with_district & ~in_district
    hint[mismatch] = "district_mismatch"
    decided |= mismatch
    for code, columns in levels:
        known = pd.MultiIndex.from_frame(parsed[columns].fillna("")).isin(
            pd.MultiIndex.from_frame(keys[columns].drop_duplicates()))
        fails = ~decided & ~known
        hint[fails] = code
        decided |= fails
    hint[~decided & multi] = "district_missing"
    hint[no_road] = "unknown_road"
    hint[unparsed] = "unparsed"
    return pd.Series(hint.to_numpy(), index=texts.index)


def write_review_list(address_match: pd.DataFrame, out_dir: Path,
                      registry: AddressRegistry | None = None) -> list[Path]:
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
