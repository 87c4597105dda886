"""Normalize department address texts and split them into registry components.

Departments write the same room in many ways (sources.md "Addresses"). Everything here is
vectorized over a Series of distinct texts; the only Python callbacks run per distinct Chinese
numeral or per distinct road-and-prefix head, both small sets at city scale.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# NFKC turns full-width digits, letters, #, - and the ideographic space into ASCII; these
# dashes people type between building, unit and room it leaves alone.
DASHES = r"[\x{2010}-\x{2015}\x{2212}\x{2500}\x{FE58}\x{FE63}]"
SPACES = r"\s+"
# A space between two digits is either a slip inside one number (`10 3号`, `3 02`) or stands
# for a separator (`1 501` = unit 1, room 501); both readings are tried, the registry decides.
DIGIT_GAP = r"([0-9])\s+([0-9])"

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
# Only numerals standing right before a house-number marker, or ending the text after a unit
# or building (a room without 室: 一单元二零二), are numbers; "海滨二路" keeps its 二.
_CN_MARKERS = "(?:号|栋|幢|单元|室|#|-)"
CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千]+(?=" + _CN_MARKERS + ")")
CN_NUMBER_RE2 = r"[零〇一二两三四五六七八九十百千]+" + _CN_MARKERS
CN_ROOM = re.compile(r"(?<=[元楼栋幢#-])[零〇一二两三四五六七八九十百千]+$")
CN_ROOM_RE2 = r"[元楼栋幢#-][零〇一二两三四五六七八九十百千]+$"

XIAOQU_SUFFIX = r"小区$"
# A compound's phase or zone (三期, 3期, 第二期, 二区, 东区, A区) is part of its name; 小区 may stand
# before or after it (明珠花园小区三期, 明珠花园三期小区), and its numeral may be Chinese or Arabic.
_CN_CHARS = "零〇一二两三四五六七八九十百千"
NUMBER_CHARS = frozenset("0123456789" + _CN_CHARS)
PHASE = r"第?(?:[0-9]+|[" + _CN_CHARS + r"]+|[东南西北中]|[A-Za-z])(?:期|区)"
XIAOQU_BEFORE_PHASES = r"小区((?:" + PHASE + r")+)$"
# Compound keys needing a Python rewrite: a Chinese numeral in a phase or ending the name, or 第.
CN_IN_COMPOUND_RE2 = r"[" + _CN_CHARS + r"](?:期|区|$)|第[0-9" + _CN_CHARS + r"]"
CN_IN_COMPOUND = re.compile(r"第?([" + _CN_CHARS + r"]+)(?=期|区)|第([0-9]+)(?=期|区)|([" + _CN_CHARS + r"]+)$")
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
    array = pa.array(values.astype("str").array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


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
    return arabic_house_numbers(halfwidth_readings(texts)[0])


def halfwidth_readings(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Half-width texts without spaces (numerals untouched), in one or two readings.

    The first reading of every text joins digits a space stands between (``10 3号`` → ``103号``);
    the second, indexed like its texts and holding only those with such a space, reads it as
    a separator (``1 501`` → ``1-501``).
    """
    values = _arrow(texts.astype("str"))
    values = pc.utf8_normalize(values, "NFKC")
    values = pc.replace_substring_regex(values, DASHES, "-")
    spaced = pc.fill_null(pc.match_substring_regex(values, SPACES), False)
    with_spaces = values.filter(spaced)
    gap = pc.fill_null(pc.match_substring_regex(with_spaces, DIGIT_GAP), False)
    separated = with_spaces.filter(gap)
    for _ in range(2):  # "1 2 3": the second pass takes the gaps the first one's matches used
        separated = pc.replace_substring_regex(separated, DIGIT_GAP, r"\1-\2")
    joined = pc.replace_with_mask(values, spaced, pc.replace_substring_regex(with_spaces, SPACES, ""))
    positions = np.flatnonzero(spaced.to_numpy(zero_copy_only=False))[gap.to_numpy(zero_copy_only=False)]
    return (
        _series(joined, texts.index),
        _series(pc.replace_substring_regex(separated, SPACES, ""), texts.index[positions]),
    )


def arabic_house_numbers(texts: pd.Series) -> pd.Series:
    """Chinese numerals of house numbers as Arabic digits (二十一号 → 21号, 一单元二零二 → 1单元202)."""
    values = _arrow(texts)
    for pattern, found in ((CN_NUMBER, CN_NUMBER_RE2), (CN_ROOM, CN_ROOM_RE2)):
        has_numeral = pc.fill_null(pc.match_substring_regex(values, found), False).to_numpy(zero_copy_only=False)
        if has_numeral.any():
            converted = texts[has_numeral].str.replace(pattern, lambda m: chinese_number(m.group(0)), regex=True)
            texts = texts.mask(pd.Series(has_numeral, index=texts.index), converted)
    return texts


def mark_numbered_compounds(texts: pd.Series, names: pd.Series) -> pd.Series:
    """Readings that end a compound name written right before a number with 小区.

    A compound named 阳光100 or 花园城一 runs into its building number (阳光1005号楼,
    花园城一十一号楼), and the shortest-compound parse would read 阳光, building 1005. Pairs of
    ``texts`` (half-width, numerals untouched) and registry ``names`` ending in a digit or
    numeral; the result, indexed like ``texts``, holds ``阳光100小区5号楼`` for each pair whose
    name stands right before a digit or numeral, and nothing for the others.
    """
    index, readings = [], []
    for position, text, name in zip(texts.index, texts, names):
        start = text.find(name)
        while start >= 0:
            end = start + len(name)
            if end < len(text) and text[end] in NUMBER_CHARS:
                index.append(position)
                readings.append(text[:end] + "小区" + text[end:])
                break
            start = text.find(name, start + 1)
    return pd.Series(readings, index=pd.Index(index, dtype=texts.index.dtype), dtype="str")


def normalize_name(names: pd.Series) -> pd.Series:
    """A road or compound name as it reads after ``normalize_texts``."""
    return normalize_texts(names.fillna(""))


def compound_key(compounds: pd.Series) -> pd.Series:
    """A compound name as both sides key it: no 小区, phases and zones in Arabic numerals.

    明珠花园三期, 明珠花园3期, 明珠花园小区三期 and 明珠花园三期小区 share the key 明珠花园3期;
    明珠花园二期 does not. A trailing Chinese numeral becomes digits too (花园城一 → 花园城1), so
    a compound ending in a number is split from the building number the same way either side
    writes it. Python runs once per distinct name that needs it.
    """
    values = _arrow(compounds.fillna(""))
    values = pc.replace_substring_regex(values, XIAOQU_SUFFIX, "")
    values = pc.replace_substring_regex(values, XIAOQU_BEFORE_PHASES, r"\1")
    out = _series(values, compounds.index)
    numeral = pc.fill_null(pc.match_substring_regex(values, CN_IN_COMPOUND_RE2), False).to_numpy(zero_copy_only=False)
    if numeral.any():
        codes, names = pd.factorize(out[numeral])
        keyed = np.array([CN_IN_COMPOUND.sub(_arabic_phase, name) for name in names], dtype=object)
        out = out.copy()
        out[numeral] = keyed[codes]
    return out


def _arabic_phase(match: re.Match) -> str:
    numeral = match.group(1) or match.group(3)
    return chinese_number(numeral) if numeral else match.group(2)


def number_key(numbers: pd.Series) -> pd.Series:
    """``03`` and ``3`` are the same building."""
    values = pc.replace_substring_regex(_arrow(numbers.fillna("")), LEADING_ZEROS, r"\1")
    return _series(values, numbers.index)


def split_components(normalized: pd.Series) -> pd.DataFrame:
    """One regex over normalized texts: head, door_no, compound, building, unit, room.

    Rows that do not fit the pattern have NaN everywhere; ``compound`` is keyed (see
    ``compound_key``) and the numbers lose leading zeros.
    """
    extracted = pc.extract_regex(_arrow(normalized), COMPONENTS)
    fits = pc.is_valid(extracted)
    parts = pd.DataFrame(
        {
            name: _series(pc.if_else(fits, pc.struct_field(extracted, name), None), normalized.index)
            for name in COMPONENT_FIELDS
        }
    )
    parts["compound"] = compound_key(parts["compound"]).where(parts["compound"].notna())
    return parts


def split_head(
    head: str, roads: dict[str, frozenset[str]], district_names: dict[str, str]
) -> tuple[str | None, str | None]:
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
            return code, head[position + len(name) :]
    match = re.match(r"^(?:[\u4e00-\u9fff]{2,3}省)?(?:[\u4e00-\u9fff]{2,4}市)?", head)
    return None, head[match.end() :] if match else head
