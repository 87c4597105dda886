"""Measure address resolution against a synthetic city's ``truth/addresses.csv``.

The truth gives the right code per delivered text (blank where the text was made unresolvable
on purpose), and may name the variant kinds each text was written with (a ``variant`` column,
kinds joined by ``;``). The report says, per variant kind, how many texts with a code got it
(recall) and how many texts got a wrong code (wrong share), and whether every blank-truth
text stayed unresolved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from pipelines.addresses.match import resolve_texts
from pipelines.addresses.normalize import PHASE
from pipelines.addresses.registry import AddressRegistry

# Variant kinds recognised in a delivered text when the truth does not name them; a text can
# show several.
VARIANT_PATTERNS = {
    "prefix_province_city": r"^\s*山东省",
    "prefix_city": r"^\s*日照市",
    "fullwidth_digits": r"[０-９]",
    "chinese_numerals": r"[零〇一二两三四五六七八九十百](?:号|栋|幢|单元)",
    "chinese_numeral_door": r"^[^号]*?[零〇一二两三四五六七八九十百千]\s*号",
    "format_hash": r"#|＃",
    "format_dashes": r"[0-9０-９]\s*[-－]\s*[0-9０-９]+\s*[-－]",
    "format_dong": r"栋",
    "format_zhuang": r"幢",
    "room_without_suffix": r"[0-9０-９]\s*$",
    "room_with_hao": r"单元\s*[0-9０-９]+\s*号\s*$",
    "spaces": r"\S\s+\S",
    "spaces_in_numbers": r"[0-9０-９][\s\u3000]+[0-9０-９]",
}
# A registry compound with a phase or zone (明珠花园三期, 明珠花园小区东区).
PHASED_COMPOUND = r"(?:" + PHASE + r")+(?:小区)?$"


def evaluate_against_truth(city_dir: Path) -> dict:
    """Resolve every text of ``truth/addresses.csv`` with ``reference/addresses.csv`` and score it.

    Returns seconds, counts by status, and ``by_kind``: {kind: {texts, right, wrong, recall,
    wrong_share}}: ``texts`` and ``right`` over texts whose truth code is set, ``wrong`` and
    ``wrong_share`` over all texts of that kind. Kinds come from the truth's ``variant``
    column when it has one, else from ``VARIANT_PATTERNS``; kinds read from the registry are
    always added: ``shared_road`` (the truth address's road runs through several districts),
    ``shared_road_no_district`` (and the text names no district), ``phase_compound``,
    ``phase_written_differently`` (the compound not as the registry writes it) and
    ``numbered_compound`` (its name ends in a number).
    """
    city_dir = Path(city_dir)
    truth = pd.read_csv(city_dir / "truth" / "addresses.csv", dtype="str", keep_default_na=False)
    started = time.perf_counter()
    registry = AddressRegistry.load(city_dir / "reference" / "addresses.csv")
    loaded = time.perf_counter()
    resolved = resolve_texts(truth["address"], registry)
    finished = time.perf_counter()

    m = truth.merge(resolved, on="address", how="left", suffixes=("_truth", ""))
    known = m["address_code_truth"] != ""
    right = (m["address_code"] == m["address_code_truth"]) & known
    wrong = m["address_code"].notna() & (m["address_code"] != m["address_code_truth"])
    text = m["address"].astype("str")
    kinds = _named_kinds(m["variant"]) if "variant" in m.columns else _detected_kinds(text, m, registry)
    for kind, selected in _registry_kinds(text, m["address_code_truth"], registry).items():
        kinds.setdefault(kind, selected)
    kinds["all"] = pd.Series(True, index=m.index)
    by_kind = {kind: _score(sel, known, right, wrong) for kind, sel in kinds.items()}
    ambiguous = m.loc[m["status"] == "ambiguous", "candidates"].drop_duplicates()
    return {
        "texts": len(m),
        "distinct_texts": len(resolved),
        "registry_addresses": len(registry.frame),
        "texts_with_truth": int(known.sum()),
        "right_share": float(right.sum() / known.sum()) if known.any() else 1.0,
        "wrong_share": float(wrong.mean()) if len(m) else 0.0,
        "blank_truth_unresolved": bool(m.loc[~known, "status"].isin(["ambiguous", "unmatched"]).all()),
        "ambiguous_with_fewer_than_two": int(ambiguous.map(lambda c: len(json.loads(c)) < 2).sum()),
        "status_counts": {k: int(v) for k, v in m["status"].value_counts().sort_index().items()},
        "by_kind": by_kind,
        "seconds_load_registry": round(loaded - started, 3),
        "seconds_resolve": round(finished - loaded, 3),
    }


def _score(selected: pd.Series, known: pd.Series, right: pd.Series, wrong: pd.Series) -> dict:
    texts, hits, misses, total = (
        int((selected & known).sum()),
        int((selected & right).sum()),
        int((selected & wrong).sum()),
        int(selected.sum()),
    )
    return {
        "texts": texts,
        "right": hits,
        "wrong": misses,
        "recall": round(hits / texts, 6) if texts else None,
        "wrong_share": round(misses / total, 6) if total else None,
    }


def _named_kinds(variant: pd.Series) -> dict[str, pd.Series]:
    """One mask per kind named in the truth's ``variant`` column (``kind;kind``)."""
    listed = variant.fillna("").str.split(";")
    names = sorted({k.strip() for ks in listed for k in ks if k.strip()})
    exploded = listed.explode().str.strip()
    return {name: (exploded == name).groupby(level=0).any().reindex(variant.index, fill_value=False) for name in names}


def _detected_kinds(text: pd.Series, m: pd.DataFrame, registry: AddressRegistry) -> dict[str, pd.Series]:
    """Kinds recognised in the delivered text (``VARIANT_PATTERNS`` and a few with the registry)."""
    kinds = {kind: text.str.contains(pattern, regex=True) for kind, pattern in VARIANT_PATTERNS.items()}
    district = _names_district(text, registry)
    kinds["prefix_district_only"] = district & ~kinds["prefix_province_city"] & ~kinds["prefix_city"]
    kinds["no_prefix"] = ~district & ~kinds["prefix_province_city"] & ~kinds["prefix_city"]
    known = m["address_code_truth"] != ""
    registry_compound = m["address_code_truth"].map(
        pd.Series(registry.frame["compound"].to_numpy(), index=registry.frame["address_code"])
    )
    squeezed = text.str.replace(r"\s+", "", regex=True)
    kinds["xiaoqu_changed"] = known & pd.Series(
        [c not in t for c, t in zip(registry_compound.fillna(""), squeezed)], index=m.index
    )
    kinds["standard_text"] = m["status"] == "exact"
    return kinds


def _names_district(text: pd.Series, registry: AddressRegistry) -> pd.Series:
    if not registry.district_names:
        return pd.Series(False, index=text.index)
    return text.str.replace(r"\s+", "", regex=True).str.contains("|".join(registry.district_names), regex=True)


def _registry_kinds(text: pd.Series, truth_code: pd.Series, registry: AddressRegistry) -> dict[str, pd.Series]:
    """Kinds that follow from the registry address a text was written from."""
    frame = registry.frame.set_index("address_code")
    road = truth_code.map(frame["road"])
    shared = road.map(registry.frame.groupby("road")["district_code"].nunique()).fillna(0) > 1
    compound = truth_code.map(frame["compound"]).fillna("")
    squeezed = text.str.replace(r"\s+", "", regex=True)
    phased = compound.str.contains(PHASED_COMPOUND, regex=True)
    return {
        "shared_road": shared,
        "shared_road_no_district": shared & ~_names_district(text, registry),
        "phase_compound": phased,
        "phase_written_differently": phased
        & pd.Series([c not in t for c, t in zip(compound, squeezed)], index=text.index),
        "numbered_compound": compound.str.replace(r"小区$", "", regex=True).str.contains(
            r"[0-9零〇一二两三四五六七八九十百千]$", regex=True
        ),
    }
