"""Resident IDs (GB 11643-1999): check character and masking.

The check character is ISO 7064 MOD 11-2 over the first 17 digits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"


def check_character(first17: str) -> str:
    """The check character for 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, WEIGHTS))
    return CHECK_CHARS[total % 11]


def check_characters(first17: pd.Series) -> pd.Series:
    """Vectorized ``check_character`` over a Series of 17-digit strings (all digits)."""
    digits = np.frombuffer("".join(first17.tolist()).encode("ascii"), dtype=np.uint8)
    digits = (digits.reshape(-1, 17) - ord("0")).astype(np.int64)
    remainders = (digits @ np.array(WEIGHTS, dtype=np.int64)) % 11
    table = np.array(list(CHECK_CHARS))
    return pd.Series(table[remainders], index=first17.index, dtype=object)


def mask_id(value: object) -> str:
    """``371102********1234``: the region and the last four, nothing that identifies a person."""
    text = "" if value is None else str(value)
    if len(text) <= 8:
        return "*" * len(text)
    return text[:6] + "*" * (len(text) - 10) + text[-4:]


def mask_name(value: object) -> str:
    """Keep the family name's first character only: 张** ."""
    text = "" if value is None else str(value)
    return text[:1] + "*" * (len(text) - 1) if text else ""
