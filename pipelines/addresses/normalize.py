"""Normalize department address texts and split them into registry components.

Departments write the same room in many ways (sources.md "Addresses"). Everything here is
vectorized over a Series of distinct texts; the only Python callbacks run per distinct Chinese
numeral or per distinct road-and-prefix head, both small sets at city scale.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd

# Full-width ASCII (U+FF01..U+FF5E) to half-width, the ideographic space to a space, and the
# dashes people type between building, unit and room to "-".
_HALF_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_HALF_WIDTH.update({0x3000: " ", 0x2014: "-", 0x2013: "-", 0x2212: "-", 0x2500: "-", 0xFE63: "-"})
HALF_WIDTH_TABLE = str.maketrans(_HALF_WIDTH)

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
# Only numerals standing right before a house-number marker are numbers; "海滨二路" keeps its 二.
CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千]+(?=号|栋|幢|单元|室|#|-)")

SPACES = re.compile(r"\s+")
SMALL_DISTRICT = re.compile(r"小区$")
LEADING_ZEROS = re.compile(r"^0+(?=\d)")

# <head = prefix + road><door>号<compound><building><sep><unit><sep><room>[室|号]
COMPONENTS = re.compile(
    r"^(?P<head>.*?)(?P<door_no>\d+)号(?P<compound>.*?)"
    r"(?P<building>\d+)(?:号楼|栋|幢|#|号|-)"
    r"(?P<unit>\d+)(?:单元|-)"
    r"(?P<room>\d+)(?:室|号)?$"
)
# Province and city in front of the district: 山东省日照市, 日照市, 山东省, or nothing.
PROVINCE_CITY = re.compile(r"^(?:[\u4e00-\u9fff]{2,3}省)?(?:[\u4e00-\u9fff]{2,4}市)?$")


@lru_cache(maxsize=4096)
def chinese_number(token: str) -> str:
    """``二十一`` → ``21``, ``十二`` → ``12``, ``一零一`` → ``101`` (digit by digit)."""
    if not any(ch in _CN_UNITS for ch in token):
        return "".join(str(_CN_DIGITS[ch]) for ch in token)
    total = current = 0
    for ch in token:
        if ch in _CN_UNITS:
            total += (current or 1) * _CN_UNITS[ch]
            current = 0
        else:
            current = _CN_DIGITS[ch]
    return str(total + current)


def normalize_texts(texts: pd.Series) -> pd.Series:
    """Half-width, no spaces, Arabic house numbers: the form both sides are compared in."""
    out = texts.astype("str").str.translate(HALF_WIDTH_TABLE).str.replace(SPACES, "", regex=True)
    has_numeral = out.str.contains(CN_NUMBER, regex=True)
    if has_numeral.any():
        out = out.mask(has_numeral,
                       out[has_numeral].str.replace(CN_NUMBER, lambda m: chinese_number(m.group(0)),
                                                    regex=True))
    return out


def normalize_name(names: pd.Series) -> pd.Series:
    """A road or compound name as it reads after ``normalize_texts``."""
    return normalize_texts(names.fillna(""))


def compound_key(compounds: pd.Series) -> pd.Series:
    """A compound name without a trailing 小区, which departments add or drop at will."""
    return compounds.fillna("").str.replace(SMALL_DISTRICT, "", regex=True)


def number_key(numbers: pd.Series) -> pd.Series:
    """``03`` and ``3`` are the same building."""
    return numbers.fillna("").astype("str").str.replace(LEADING_ZEROS, "", regex=True)


def split_components(normalized: pd.Series) -> pd.DataFrame:
    """One regex over normalized texts: head, door_no, compound, building, unit, room.

    Rows that do not fit the pattern have NaN everywhere; ``compound`` is keyed (no 小区) and
    the numbers lose leading zeros.
    """
    parts = normalized.str.extract(COMPONENTS)
    for column in ("door_no", "building", "unit", "room"):
        parts[column] = number_key(parts[column]).where(parts[column].notna())
    parts["compound"] = compound_key(parts["compound"]).where(parts["compound"].notna())
    return parts


def split_head(head: str, roads: dict[str, frozenset[str]],
               district_names: dict[str, str]) -> tuple[str | None, str | None]:
    """``山东省日照市东港区海滨二路`` → (district_code, road); (None, road) without a district.

    The head must end in a registry road and whatever stands before it must be a province,
    city and/or district prefix; otherwise (None, None). The longest road that fits wins.
    ``district_names`` maps name → code, longest names first.
    """
    for start in range(len(head)):
        road = head[start:]
        if road not in roads:
            continue
        prefix = head[:start]
        district = None
        for name, code in district_names.items():
            if prefix.endswith(name):
                district, prefix = code, prefix[: -len(name)]
                break
        if PROVINCE_CITY.match(prefix):
            return district, road
    return None, None


def strip_prefix(head: str, district_names: dict[str, str]) -> tuple[str | None, str]:
    """For heads whose road is unknown: (district_code or None, the rest after the prefix)."""
    for name, code in district_names.items():
        position = head.find(name)
        if position >= 0 and PROVINCE_CITY.match(head[:position]):
            return code, head[position + len(name):]
    match = re.match(r"^(?:[\u4e00-\u9fff]{2,3}省)?(?:[\u4e00-\u9fff]{2,4}市)?", head)
    return None, head[match.end():] if match else head
