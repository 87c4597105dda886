"""One text for the ``zerocert check-address`` command, and the resolve + placement bench."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from pipelines.addresses.catchments import load_catchments, place_in_catchments, points_in_catchments
from pipelines.addresses.match import resolve_texts
from pipelines.addresses.normalize import compound_key, normalize_name, normalize_texts, split_components
from pipelines.addresses.registry import AddressRegistry, district_names
from pipelines.errors import UsageError


def _enrollment_year(reference_dir: Path, catchments: pd.DataFrame) -> int | None:
    """The policy's year when REFERENCE/policy.yaml exists, else the newest year in the file."""
    policy_path = reference_dir / "policy.yaml"
    if policy_path.is_file():
        from pipelines.policy import load_policy

        return int(load_policy(policy_path).enrollment_year)
    years = catchments["enrollment_year"]
    return int(years.max()) if len(years) else None


def _registry_near(text: str, reference_dir: Path) -> AddressRegistry:
    """The registry rows whose road or compound the text mentions.

    Keying 1.2 M rows takes seconds; one text can only match rows that share its road (or, for
    a misspelt road, its compound, however its phase and 小区 are written). District names
    come from the whole registry, so a district written in the text is always recognised.
    """
    path = reference_dir / "addresses.csv"
    if not path.is_file():
        raise UsageError(f"address registry not found: {path}")
    frame = pd.read_csv(path, dtype="str", keep_default_na=False, encoding="utf-8-sig")
    if not {"road", "compound"} <= set(frame.columns):
        return AddressRegistry.from_frame(frame, origin=str(path))
    normalized = normalize_texts(pd.Series([text])).iloc[0]
    written = split_components(pd.Series([normalized]))["compound"].dropna().tolist()
    roads = [road for road in frame["road"].unique() if road and road in normalized]
    names = pd.Series(frame["compound"].unique(), dtype="str")
    keys = compound_key(normalize_name(names))
    mentioned = [key and (key in normalized or key in written or key.rstrip("0123456789") in written) for key in keys]
    near = frame["road"].isin(roads) | frame["compound"].isin(names[mentioned])
    registry = AddressRegistry.from_frame(frame.loc[near], origin=str(path))
    return replace(registry, district_names=district_names(frame))


def check_address(text: str, reference_dir: Path, enrollment_year: int | None = None) -> dict:
    """What ``text`` resolves to, how, and which schools' catchments contain it.

    Keys: text, status, address_code, standard_text, district_code, lon, lat, score,
    candidates (list of {address_code, standard_text}), enrollment_year, schools (list of
    {school_code, school_name, level}).
    """
    reference_dir = Path(reference_dir)
    if not str(text).strip():
        raise UsageError("check-address needs a non-empty address text")
    if enrollment_year is None and (reference_dir / "policy.yaml").is_file():
        from pipelines.policy import load_policy

        enrollment_year = int(load_policy(reference_dir / "policy.yaml").enrollment_year)
    registry = _registry_near(str(text), reference_dir)
    row = resolve_texts(pd.Series([str(text)]), registry).iloc[0]
    codes = json.loads(row["candidates"])
    result = {
        "text": str(text),
        "status": row["status"],
        "address_code": row["address_code"],
        "standard_text": None,
        "district_code": None,
        "lon": None,
        "lat": None,
        "score": float(row["score"]),
        "candidates": [{"address_code": c, "standard_text": s} for c, s in zip(codes, registry.standard_text(codes))],
        "enrollment_year": enrollment_year,
        "schools": [],
    }
    if row["address_code"] is None:
        return result
    address = registry.frame.loc[registry.frame["address_code"] == row["address_code"]].iloc[0]
    result.update(
        standard_text=address["standard_text"],
        district_code=address["district_code"],
        lon=None if pd.isna(address["lon"]) else float(address["lon"]),
        lat=None if pd.isna(address["lat"]) else float(address["lat"]),
    )
    catchments = load_catchments(reference_dir / "catchments.geojson")
    if enrollment_year is None:
        enrollment_year = _enrollment_year(reference_dir, catchments)
    result["enrollment_year"] = enrollment_year
    if result["lon"] is None or result["lat"] is None:
        return result
    catchments = catchments.loc[catchments["enrollment_year"] == enrollment_year].reset_index(drop=True)
    hits = points_in_catchments([result["lon"]], [result["lat"]], catchments)
    schools = catchments.iloc[hits["catchment"].to_numpy()][["school_code", "level"]].drop_duplicates()
    names = _school_names(reference_dir)
    result["schools"] = [
        {"school_code": s.school_code, "school_name": names.get(s.school_code), "level": s.level}
        for s in schools.sort_values(["level", "school_code"]).itertuples()
    ]
    return result


def _school_names(reference_dir: Path) -> dict[str, str]:
    path = reference_dir / "schools.csv"
    if not path.is_file():
        return {}
    schools = pd.read_csv(path, dtype="str", keep_default_na=False, encoding="utf-8-sig")
    return dict(zip(schools["school_code"], schools["school_name"]))


def bench_addresses(reference_dir: Path, texts: pd.Series, enrollment_year: int | None = None) -> dict:
    """Seconds and counts for loading the registry, resolving ``texts`` and placing every code."""
    reference_dir = Path(reference_dir)
    started = time.perf_counter()
    registry = AddressRegistry.load(reference_dir / "addresses.csv")
    loaded = time.perf_counter()
    resolved = resolve_texts(texts, registry)
    matched = time.perf_counter()
    if enrollment_year is None:
        enrollment_year = _enrollment_year(reference_dir, load_catchments(reference_dir / "catchments.geojson"))
    placed = place_in_catchments(registry, reference_dir / "catchments.geojson", enrollment_year)
    finished = time.perf_counter()
    return {
        "texts": int(texts.notna().sum()),
        "distinct_texts": len(resolved),
        "registry_addresses": len(registry.frame),
        "status_counts": {k: int(v) for k, v in resolved["status"].value_counts().sort_index().items()},
        "placements": len(placed),
        "addresses_placed": int(placed["address_code"].nunique()),
        "seconds_load_registry": round(loaded - started, 3),
        "seconds_resolve": round(matched - loaded, 3),
        "seconds_place": round(finished - matched, 3),
        "seconds_total": round(finished - started, 3),
    }
