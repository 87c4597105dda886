"""Addresses: resolve department texts to the standard registry and place them in catchments.

See docs/contracts.md "Addresses" for the seam with the engine and the orchestrator.
"""

from pipelines.addresses.catchments import load_catchments, place_in_catchments
from pipelines.addresses.check import bench_addresses, check_address
from pipelines.addresses.match import (
    ADDRESS_COLUMNS,
    HINTS,
    build_address_match,
    explain,
    resolve_texts,
    write_review_list,
)
from pipelines.addresses.normalize import normalize_texts
from pipelines.addresses.registry import AddressRegistry

__all__ = [
    "ADDRESS_COLUMNS",
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
