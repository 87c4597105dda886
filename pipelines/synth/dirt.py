"""Dirt: how departments really write IDs, dates and addresses, and the damage nobody can repair.

Repairable dirt keeps the record's meaning (the truth keeps it); damage makes one field of a
record unusable so the record must be quarantined (the truth drops its facts and lists it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.synth.names import GIVEN_CHARS, VARIANT_CHARS
from pipelines.synth.profile import City

FULLWIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
DIGITS = "零一二三四五六七八九"
EXCEL_EPOCH = np.datetime64("1899-12-30")


def chinese_numeral(n: int) -> str:
    """1..999 the way people write them: 三, 十二, 二十一, 一百零八."""
    if n < 10:
        return DIGITS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return ("" if tens == 1 else DIGITS[tens]) + "十" + (DIGITS[ones] if ones else "")
    hundreds, rest = divmod(n, 100)
    if rest == 0:
        return DIGITS[hundreds] + "百"
    if rest < 10:
        return DIGITS[hundreds] + "百零" + DIGITS[rest]
    tens, ones = divmod(rest, 10)
    return DIGITS[hundreds] + "百" + DIGITS[tens] + "十" + (DIGITS[ones] if ones else "")


NUMERALS = np.array([""] + [chinese_numeral(i) for i in range(1, 1000)], dtype=object)


def fullwidth(values: pd.Series) -> pd.Series:
    return values.str.translate(FULLWIDTH)


def pick(rng: np.random.Generator, n: int, rate: float, eligible: np.ndarray | None = None) -> np.ndarray:
    mask = rng.random(n) < rate
    return mask if eligible is None else mask & eligible


# ------------------------------------------------------------------ dates
DATE_FORMS = ("iso", "slash", "compact", "chinese", "timestamp", "serial")


def format_dates(values: np.ndarray, forms: np.ndarray) -> np.ndarray:
    """Dates as text in the form index given per value (see ``DATE_FORMS``); NaT becomes ''.

    Only the rows in a non-ISO form get the other renderings (memory stays flat at city scale).
    """
    days = np.asarray(values).astype("datetime64[D]")
    missing = np.isnat(days)
    out = np.datetime_as_string(np.where(missing, np.datetime64("2000-01-01"), days), unit="D").astype(object)
    out[missing] = ""
    other = np.flatnonzero((forms != 0) & ~missing)
    if len(other):
        sub = days[other]
        idx = pd.DatetimeIndex(sub)
        y = pd.Series(idx.year.astype(str), dtype=object)
        m = pd.Series(idx.month.astype(str), dtype=object)
        d = pd.Series(idx.day.astype(str), dtype=object)
        m2, d2 = m.str.zfill(2), d.str.zfill(2)
        iso = y + "-" + m2 + "-" + d2
        serial = pd.Series(((sub - EXCEL_EPOCH) / np.timedelta64(1, "D")).astype(int).astype(str), dtype=object)
        clock = pd.Series(
            np.array(["08:15:00", "09:30:12", "14:02:45", "16:40:00"], dtype=object)[np.arange(len(sub)) % 4]
        )
        options = [iso, y + "/" + m + "/" + d, y + m2 + d2, y + "年" + m + "月" + d + "日", iso + " " + clock, serial]
        f = forms[other]
        out[other] = np.select([f == k for k in range(len(options))], [o.to_numpy(dtype=object) for o in options], "")
    return out


def dirty_date_forms(rng, n: int, rate: float) -> np.ndarray:
    forms = np.zeros(n, dtype=int)
    mask = rng.random(n) < rate
    forms[mask] = rng.integers(1, len(DATE_FORMS), mask.sum())
    return forms


# ------------------------------------------------------------------ IDs
ID_DIRT = ("id_spaces", "id_fullwidth", "id_lowercase_x", "id_legacy15", "id_trailing_dot0", "id_quote_prefix")


def dirty_ids(ids: np.ndarray, rng, rates: dict[str, float], counts: dict[str, int]) -> np.ndarray:
    """Each clean 18-character ID, maybe written the way a spreadsheet or an old system writes it."""
    s = pd.Series(ids, dtype=object)
    n = len(s)
    present = s.str.len().to_numpy() == 18
    out = s.copy()
    taken = ~present
    born_19 = present & (s.str.slice(6, 8) == "19").to_numpy()
    ends_x = present & (s.str.slice(17) == "X").to_numpy()
    all_digits = present & ~ends_x
    eligible = {
        "id_spaces": present,
        "id_fullwidth": present,
        "id_lowercase_x": ends_x,
        "id_legacy15": born_19,
        "id_trailing_dot0": all_digits,
        "id_quote_prefix": present,
    }
    for kind in ID_DIRT:
        boost = 8.0 if kind == "id_lowercase_x" else 1.0  # only 1 in 11 IDs ends in X
        mask = (rng.random(n) < rates[kind] * boost) & eligible[kind] & ~taken
        if not mask.any():
            continue
        v = s[mask]
        if kind == "id_spaces":
            v = np.where(rng.random(mask.sum()) < 0.5, " " + v, v + "  ")
        elif kind == "id_fullwidth":
            v = fullwidth(v)
        elif kind == "id_lowercase_x":
            v = v.str.slice(0, 17) + "x"
        elif kind == "id_legacy15":
            v = v.str.slice(0, 6) + v.str.slice(8, 17)
        elif kind == "id_trailing_dot0":
            v = v + ".0"
        else:
            v = "'" + v
        out[mask] = v
        taken |= mask
        counts[kind] = counts.get(kind, 0) + int(mask.sum())
    return out.to_numpy(dtype=object)


# ------------------------------------------------------------------ names
def conflicting_names(names: np.ndarray, rng, rate: float, counts: dict[str, int]) -> np.ndarray:
    """A person's name as another department spelled it: one character swapped."""
    s = pd.Series(names, dtype=object)
    mask = (rng.random(len(s)) < rate) & (s.str.len() >= 2).to_numpy()
    if mask.any():
        last = s[mask].str.slice(-1)
        alt = last.map(VARIANT_CHARS)
        fallback = pd.Series(
            np.array(GIVEN_CHARS, dtype=object)[rng.integers(0, len(GIVEN_CHARS), mask.sum())], index=last.index
        )
        fallback = fallback.where(fallback != last, "彬")
        s[mask] = s[mask].str.slice(0, -1) + alt.fillna(fallback)
        counts["name_conflict"] = counts.get("name_conflict", 0) + int(mask.sum())
    return s.to_numpy(dtype=object)


# ------------------------------------------------------------------ addresses
# Variant kinds of sources.md, each a DirtRates rate over the texts written in a variant form.
# Every kind applied changes the text, and truth/addresses.csv names the kinds of each text.
ADDRESS_DIRT = (
    "addr_prefix",
    "addr_no_district",
    "addr_fullwidth",
    "addr_numerals",
    "addr_door_numerals",
    "addr_number_spaces",
    "addr_format",
    "addr_room_suffix",
    "addr_xiaoqu",
    "addr_phase_form",
    "addr_spaces",
)
UNRESOLVABLE = ("addr_no_such_room", "addr_no_such_building", "addr_unit_missing")
PHASE_DIGITS = {"一": "1", "二": "2", "三": "3", "四": "4"}


@dataclass
class RenderedAddresses:
    text: np.ndarray  # as delivered
    truth_code: np.ndarray  # the room's code, or '' where deliberately unresolvable
    variant: np.ndarray  # the variant kinds applied, joined by ';' ('' for the standard text)


def _space_inside(values: np.ndarray, rng) -> np.ndarray:
    """``103`` → ``10 3``: a space at a random place inside each number (numbers of two digits or more)."""
    at = rng.integers(1, 1 << 30, len(values))
    return np.array(
        [v[: 1 + k % (len(v) - 1)] + " " + v[1 + k % (len(v) - 1) :] for v, k in zip(values, at)], dtype=object
    )


def render_addresses(
    codes: np.ndarray, registry: pd.DataFrame, rng, rates: dict[str, float], counts: dict[str, int], city: City
) -> RenderedAddresses:
    """Write each room's address as a department would: standard text, a variant, or unresolvable."""
    reg = registry.set_index("address_code")
    codes = np.asarray(codes, dtype=object)
    total = len(codes)
    variant_all = rng.random(total) < rates["address_variant"]
    bad_all = rng.random(total) < rates["address_unresolvable"]
    touched = np.flatnonzero(variant_all | bad_all)
    text_all = reg["standard_text"].reindex(codes).to_numpy(dtype=object)
    variant_of_all = np.full(total, "", dtype=object)
    r = reg.loc[codes[touched]]
    n = len(r)
    district = r["district_code"].map(city.district_names).to_numpy(dtype=object)
    road = r["road"].to_numpy(dtype=object)
    door = r["door_no"].astype(int).to_numpy()
    building = r["building"].astype(int).to_numpy()
    unit = r["unit"].astype(int).to_numpy()
    room = r["room"].astype(int).to_numpy()
    base = r["compound_base"].to_numpy(dtype=object)
    xiaoqu = r["compound_xiaoqu"].to_numpy(dtype=bool)
    label = r["compound_label"].to_numpy(dtype=object)

    variant = variant_all[touched]
    parts = {k: variant & (rng.random(n) < rates[k]) for k in ADDRESS_DIRT}
    both = parts["addr_prefix"] & parts["addr_no_district"]
    drop = rng.random(n) < 0.5
    parts["addr_prefix"] &= ~(both & drop)
    parts["addr_no_district"] &= ~(both & ~drop)
    parts["addr_door_numerals"] &= door <= 999
    first = pd.Series(label, dtype=object).str.slice(0, 1)
    parts["addr_phase_form"] &= first.isin(list(PHASE_DIGITS)).to_numpy()
    none = variant & ~np.logical_or.reduce(list(parts.values()))
    parts["addr_prefix"] |= none

    # deliberately unresolvable
    bad = bad_all[touched]
    kind = rng.integers(0, 3, n)
    multi_unit = r["n_units"].to_numpy() > 1
    kind = np.where((kind == 2) & ~multi_unit, 0, kind)
    no_room = bad & (kind == 0)
    no_building = bad & (kind == 1)
    no_unit = bad & (kind == 2)
    # an unresolvable text keeps its district: without it, a missing building, room or unit of
    # this compound may exist at a same-named compound elsewhere, and the text would fit that one
    parts["addr_no_district"] &= ~bad
    room = np.where(no_room, (r["max_floor"].to_numpy() + rng.integers(2, 6, n)) * 100 + 1, room)
    building = np.where(no_building, r["n_buildings"].to_numpy() + rng.integers(3, 10, n), building)
    parts["addr_format"] &= ~no_unit
    parts["addr_room_suffix"] &= ~no_unit

    province_city = city.province + city.name
    prefix_choice = rng.integers(0, 10, n)
    prefix = np.where(
        parts["addr_prefix"], np.where(prefix_choice < 5, province_city + district, city.name + district), district
    )
    prefix = np.where(
        parts["addr_no_district"],
        np.select([prefix_choice < 7, prefix_choice < 9], ["", city.name], province_city),
        prefix,
    )

    numerals = parts["addr_numerals"]
    door_s = np.where(parts["addr_door_numerals"], NUMERALS[np.clip(door, 0, 999)], door.astype(str).astype(object))
    rd = room.astype(str).astype(object)
    spaced = parts["addr_number_spaces"]
    in_door = spaced & ~parts["addr_door_numerals"] & (door >= 10) & (rng.random(n) < 0.5)
    in_room = spaced & ~in_door
    if in_door.any():
        door_s[in_door] = _space_inside(door_s[in_door], rng)
    if in_room.any():
        rd[in_room] = _space_inside(rd[in_room], rng)

    phase_s = np.where(
        parts["addr_phase_form"],
        first.map(PHASE_DIGITS).fillna("").to_numpy(dtype=object)
        + pd.Series(label, dtype=object).str.slice(1).to_numpy(dtype=object),
        label,
    )
    with_xiaoqu = xiaoqu ^ parts["addr_xiaoqu"]
    compound_s = base + np.where(with_xiaoqu, "小区", "") + phase_s

    b_s = np.where(numerals, NUMERALS[np.minimum(building, 999)], building.astype(str).astype(object))
    u_s = np.where(numerals & (rng.random(n) < 0.7), NUMERALS[np.minimum(unit, 999)], unit.astype(str).astype(object))
    bd, ud = building.astype(str).astype(object), unit.astype(str).astype(object)
    fmt = np.where(parts["addr_format"], rng.integers(1, 5, n), 0)
    fmt = np.where(numerals & np.isin(fmt, [1, 2]), 3, fmt)  # numerals only in worded forms
    tails = [
        b_s + "号楼" + u_s + "单元" + rd + "室",
        bd + "#" + ud + "-" + rd,
        bd + "-" + ud + "-" + rd,
        b_s + "栋" + u_s + "单元" + rd,
        b_s + "幢" + u_s + "单元" + rd + "号",
    ]
    tail = np.select([fmt == k for k in range(5)], tails, "")
    bare = np.select(
        [fmt == k for k in range(5)],
        [
            b_s + "号楼" + u_s + "单元" + rd,
            tails[1],
            tails[2],
            b_s + "栋" + u_s + "单元" + rd,
            b_s + "幢" + u_s + "单元" + rd,
        ],
        "",
    )
    # a room suffix other than the one the form already writes
    options = np.array([["", "号"], ["室", "号"], ["室", "号"], ["室", "号"], ["", "室"]], dtype=object)
    other = options[fmt, rng.integers(0, 2, n)]
    tail = np.where(parts["addr_room_suffix"], bare + other, tail)
    tail = np.where(no_unit, b_s + "号楼" + rd + "室", tail)

    spaces = parts["addr_spaces"]
    sp = [np.where(spaces & (rng.random(n) < 0.4), " ", "") for _ in range(5)]
    inner = ((sp[1] == " ") & (prefix != "")) | (sp[2] == " ") | (sp[3] == " ")
    sp[3] = np.where(spaces & ~inner, " ", sp[3])  # at least one space inside the text
    text = sp[0] + prefix + sp[1] + road + door_s + "号" + sp[2] + compound_s + sp[3] + tail + sp[4]
    text = pd.Series(text, dtype=object)
    fw = parts["addr_fullwidth"]
    if fw.any():
        text[fw] = fullwidth(text[fw])

    shared_road = r["road_shared"].to_numpy(dtype=bool)
    named = dict(parts)
    named["addr_no_district_shared_road"] = parts["addr_no_district"] & shared_road
    named["addr_no_district"] = parts["addr_no_district"] & ~shared_road
    named.update(zip(UNRESOLVABLE, (no_room, no_building, no_unit)))
    order = ("addr_prefix", "addr_no_district", "addr_no_district_shared_road") + ADDRESS_DIRT[2:] + UNRESOLVABLE
    kinds = np.full(n, "", dtype=object)
    for k in order:
        kinds = np.where(named[k], kinds + ";" + k[len("addr_") :], kinds)
    for k in ADDRESS_DIRT + UNRESOLVABLE:
        counts[k] = counts.get(k, 0) + int((parts.get(k) if k in parts else named[k]).sum())
    text_all[touched] = text.to_numpy(dtype=object)
    variant_of_all[touched] = pd.Series(kinds, dtype=object).str.slice(1).to_numpy(dtype=object)
    truth = codes.copy()
    truth[touched[bad]] = ""
    # without its district a text at a repeated compound fits a room of each district: ambiguous
    truth[touched[parts["addr_no_district"] & r["twin_room"].to_numpy(dtype=bool)]] = ""
    return RenderedAddresses(text_all, truth, variant_of_all)


# ------------------------------------------------------------------ damage beyond repair
DAMAGE = (
    "damage_checksum",
    "damage_id_format",
    "damage_date",
    "damage_missing",
    "damage_code",
    "damage_malformed",
    "damage_future_date",
)
REASON = {
    "damage_checksum": "INVALID_ID_CHECKSUM",
    "damage_id_format": "INVALID_ID_FORMAT",
    "damage_date": "INVALID_DATE",
    "damage_missing": "MISSING_REQUIRED",
    "damage_code": "INVALID_CODE",
    "damage_malformed": "MALFORMED_RECORD",
    "damage_future_date": "INVALID_DATE",
}


def choose_damage(rng, n: int, rates: dict[str, float], eligible: np.ndarray) -> np.ndarray:
    """Per row: index into ``DAMAGE`` or -1; one damage per damaged row."""
    u = rng.random(n)
    edges = np.cumsum([rates[k] for k in DAMAGE])
    kind = np.searchsorted(edges, u, side="right")
    return np.where((kind < len(DAMAGE)) & eligible, kind, -1)


def wrong_checksum(ids: np.ndarray) -> np.ndarray:
    s = pd.Series(ids, dtype=object)
    last = s.str.slice(17)
    swap = last.map(lambda c: "X" if c == "0" else ("0" if c == "X" else str((int(c) + 3) % 10 if c != "X" else 0)))
    # (int(c) + 3) % 10 is a different character for every digit; X<->0 keep it a valid-looking ID
    return (s.str.slice(0, 17) + swap).to_numpy(dtype=object)


def bad_format_ids(ids: np.ndarray, rng) -> np.ndarray:
    """IDs no repair can trust: month 13 inside, a letter inside, or scientific notation."""
    from pipelines.resident_id import check_characters

    s = pd.Series(ids, dtype=object)
    kind = rng.integers(0, 3, len(s))
    first17 = s.str.slice(0, 10) + "13" + s.str.slice(12, 17)
    month13 = first17 + check_characters(first17).to_numpy()
    letter = s.str.slice(0, 4) + "A" + s.str.slice(5)
    sci = s.str.slice(0, 1) + "." + s.str.slice(1, 6) + "E+17"
    return np.select(
        [kind == 0, kind == 1],
        [month13.to_numpy(dtype=object), letter.to_numpy(dtype=object)],
        sci.to_numpy(dtype=object),
    ).astype(object)


def bad_dates(n: int, rng) -> np.ndarray:
    options = np.array(["2019-02-30", "2021-13-05", "2018年2月30日", "20191345", "不详", "2020/02/31"], dtype=object)
    return options[rng.integers(0, len(options), n)]
