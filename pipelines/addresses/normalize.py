"""Normalize department address texts and split them into registry components.

Departments write the same room in many ways (sources.md "Addresses"). Everything here is
vectorized over a Series of distinct texts; the only Python callbacks run per distinct Chinese
numeral or per distinct road-and-prefix head, both small sets at city scale.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# NFKC turns full-width digits, letters, #, - and the ideographic space into ASCII; these
# dashes people type between building, unit and room it leaves alone.
DASHES = r"[\x{2010}-\x{2015}\x{2212}\x{2500}\x{FE58}\x{FE63}]"
SPACES = r"\s+"

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
# Only numerals standing right before a house-number marker are numbers; "海滨二路" keeps its 二.
_CN_MARKERS = "(?:号|栋|幢|单元|室|#|-)"
CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千]+(?=" + _CN_MARKERS + ")")
CN_NUMBER_RE2 = r"[零〇一二两三四五六七八九十百千]+" + _CN_MARKERS

XIAOQU_SUFFIX = r"小区$"
LEADING_ZEROS = r"^0+([0-9])"

# <head = prefix + road><door>号<compound><building><sep>[<unit><sep>]<room>[室|号]; RE2 syntax
# (pyarrow), leading zeros outside the groups. A text without a unit only fits registry rows
# without one.
COMPONENTS = (
    r"^(?P<head>.*?)0*(?P<door_no>\d+)号(?P<compound>.*?)"
    r"0*(?P<building>\d+)(?:号楼|栋|幢|#|号|-)"
    r"(?:0*(?P<unit>\d+)(?:单元|-))?"
    r"0*(?P<room>\d+)(?:室|号)?$"
)
COMPONENT_FIELDS = ("head", "door_no", "compound", "building", "unit", "room")
# Province and city in front of the district: 山东省日照市, 日照市, 山东省, or nothing.
PROVINCE_CITY = re.compile(r"^(?:[\u4e00-\u9fff]{2,3}省)?(?:[\u4e00-\u9fff]{2,4}市)?$")


def _arrow(values: pd.Series) -> pa.Array:
    """The Arrow strings behind a Series (zero-copy for pandas' Arrow-backed ``str``)."""
    return pa.array(values.astype("str").array)


def _series(values: pa.ChunkedArray | pa.Array, index: pd.Index) -> pd.Series:
    """Back to a pandas ``str`` Series (missing stays missing)."""
    return pd.Series(pd.array(values, dtype="str"), index=index)


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
    """Half-width, no spaces, Arabic house numbers: the form both sides are compared in.

    pyarrow compute (RE2) does the bulk; Python only rewrites the texts that carry a Chinese
    house number, each distinct numeral converted once.
    """
    values = _arrow(texts.astype("str"))
    values = pc.utf8_normalize(values, "NFKC")
    values = pc.replace_substring_regex(values, DASHES, "-")
    values = pc.replace_substring_regex(values, SPACES, "")
    out = _series(values, texts.index)
    has_numeral = pd.Series(pc.fill_null(pc.match_substring_regex(values, CN_NUMBER_RE2), False)
                            .to_numpy(zero_copy_only=False), index=texts.index)
    if has_numeral.any():
        converted = out[has_numeral].str.replace(CN_NUMBER, lambda m: chinese_number(m.group(0)),
                                                 regex=True)
        out = out.mask(has_numeral, converted)
    return out


def normalize_name(names: pd.Series) -> pd.Series:
    """A road or compound name as it reads after ``normalize_texts``."""
    return normalize_texts(names.fillna(""))


def compound_key(compounds: pd.Series) -> pd.Series:
    """A compound name without a trailing 小区, which departments add or drop at will."""
    values = pc.replace_substring_regex(_arrow(compounds.fillna("")), XIAOQU_SUFFIX, "")
    return _series(values, compounds.index)


def number_key(numbers: pd.Series) -> pd.Series:
    """``03`` and ``3`` are the same building."""
    values = pc.replace_substring_regex(_arrow(numbers.fillna("")), LEADING_ZEROS, r"\1")
    return _series(values, numbers.index)


def split_components(normalized: pd.Series) -> pd.DataFrame:
    """One regex over normalized texts: head, door_no, compound, building, unit, room.

    Rows that do not fit the pattern have NaN everywhere; ``compound`` is keyed (no 小区) and
    the numbers lose leading zeros.
    """
    extracted = pc.extract_regex(_arrow(normalized), COMPONENTS)
    fits = pc.is_valid(extracted)
    parts = pd.DataFrame({
        name: _series(pc.if_else(fits, pc.struct_field(extracted, name), None), normalized.index)
        for name in COMPONENT_FIELDS})
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
