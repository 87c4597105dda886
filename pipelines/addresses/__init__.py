"""Addresses: resolve department texts to the standard registry and place them in catchments.

See docs/contracts.md "Addresses" for the seam with the engine and the orchestrator.

- ``AddressRegistry.load(path)`` / ``.from_frame(df)``: the standard registry, keyed once.
- ``resolve_texts(texts, registry)``: one row per distinct text (address, address_code, status,
  candidates, score); ``build_address_match(staged, registry)`` adds the source.
- ``place_in_catchments(registry, catchments_path, year)``: address_code, level, school_code.
- ``write_review_list(address_match, out_dir, registry=None)``: ambiguous/unmatched per source,
  with a hint of what to fix when the registry is given (``explain``).
- ``check_address(text, reference_dir)``, ``bench_addresses(reference_dir, texts)``, and
  ``evaluate.evaluate_against_truth(city_dir)`` for a synthetic city.
"""

from pipelines.addresses.catchments import load_catchments, place_in_catchments
from pipelines.addresses.check import bench_addresses, check_address
from pipelines.addresses.match import (
    HINTS,
    build_address_match,
    explain,
    resolve_texts,
    write_review_list,
)
from pipelines.addresses.normalize import normalize_texts
from pipelines.addresses.registry import AddressRegistry

__all__ = [
    "AddressRegistry",
    "HINTS",
    "bench_addresses",
    "build_address_match",
    "check_address",
    "explain",
    "load_catchments",
    "normalize_texts",
    "place_in_catchments",
    "resolve_texts",
    "write_review_list",
]
