"""Measure address resolution against a synthetic city's ``truth/addresses.csv``.

The truth gives the right code per delivered text (blank where the text was made unresolvable
on purpose). The report says, per variant kind of sources.md, how many texts with a code got it,
how many texts got a wrong code, and whether every blank-truth text stayed unresolved.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipelines.addresses.match import resolve_texts
from pipelines.addresses.registry import AddressRegistry

# Variant kinds recognised in a delivered text; a text can show several.
VARIANT_PATTERNS = {
    "prefix_province_city": r"^\s*山东省",
    "prefix_city": r"^\s*日照市",
    "fullwidth_digits": r"[０-９]",
    "chinese_numerals": r"[零〇一二两三四五六七八九十百](?:号|栋|幢|单元)",
    "format_hash": r"#|＃",
    "format_dashes": r"[0-9０-９]\s*[-－]\s*[0-9０-９]+\s*[-－]",
    "format_dong": r"栋",
    "format_zhuang": r"幢",
    "room_without_suffix": r"[0-9０-９]\s*$",
    "room_with_hao": r"单元\s*[0-9０-９]+\s*号\s*$",
    "spaces": r"\S\s+\S",
}


def evaluate_against_truth(city_dir: Path) -> dict:
    """Resolve every text of ``truth/addresses.csv`` with ``reference/addresses.csv`` and score it.

    Returns seconds, counts by status, and ``by_kind``: {kind: {texts, right, wrong}} over texts
    whose truth code is set (``wrong`` over all texts of that kind).
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
    kinds = {kind: text.str.contains(pattern, regex=True) for kind, pattern in VARIANT_PATTERNS.items()}
    district = text.str.contains("|".join(registry.district_names), regex=True) \
        if registry.district_names else pd.Series(False, index=m.index)
    kinds["prefix_district_only"] = district & ~kinds["prefix_province_city"] & ~kinds["prefix_city"]
    kinds["no_prefix"] = ~district & ~kinds["prefix_province_city"] & ~kinds["prefix_city"]
    registry_compound = m["address_code_truth"].map(
        pd.Series(registry.frame["compound"].to_numpy(), index=registry.frame["address_code"]))
    squeezed = text.str.replace(r"\s+", "", regex=True)
    kinds["xiaoqu_changed"] = known & pd.Series(
        [c not in t for c, t in zip(registry_compound.fillna(""), squeezed)], index=m.index)
    kinds["standard_text"] = m["status"] == "exact"
    kinds["all"] = pd.Series(True, index=m.index)
    by_kind = {kind: {"texts": int((sel & known).sum()), "right": int((sel & right).sum()),
                      "wrong": int((sel & wrong).sum())} for kind, sel in kinds.items()}
    return {
        "texts": len(m), "distinct_texts": len(resolved), "registry_addresses": len(registry.frame),
        "texts_with_truth": int(known.sum()),
        "right_share": float(right.sum() / known.sum()) if known.any() else 1.0,
        "wrong_share": float(wrong.mean()) if len(m) else 0.0,
        "blank_truth_unresolved": bool(m.loc[~known, "status"].isin(["ambiguous", "unmatched"]).all()),
        "status_counts": {k: int(v) for k, v in m["status"].value_counts().sort_index().items()},
        "by_kind": by_kind,
        "seconds_load_registry": round(loaded - started, 3),
        "seconds_resolve": round(finished - loaded, 3),
    }
