"""Valid resident IDs for test data, one builder for every test module."""

from __future__ import annotations

from pipelines.resident_id import check_character


def resident_id(first17: str) -> str:
    """The 18-character resident ID whose first 17 characters are ``first17`` (check character added)."""
    return first17 + check_character(first17)
