"""One rule per test: which code a text resolves to, or its status and full candidate list.

The registries here hold what real ones do: road names repeated across districts, phased
compounds, compound names ending in a number, roads differing only by a direction.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.addresses import AddressRegistry, resolve_texts
from pipelines.addresses.match import explain

DISTRICTS = {"371102": "东港区", "371103": "岚山区"}


def _row(code, district, road, door, compound, building, unit, room):
    tail = f"{building}号楼{unit}单元{room}室" if unit else f"{building}号楼{room}室"
    return dict(
        address_code=code,
        district_code=district,
        street="街道",
        community="社区",
        road=road,
        door_no=door,
        compound=compound,
        building=building,
        unit=unit,
        room=room,
        standard_text=f"{DISTRICTS[district]}{road}{door}号{compound}{tail}",
        lon=1.0,
        lat=1.0,
    )


def _registry(*rows) -> AddressRegistry:
    return AddressRegistry.from_frame(pd.DataFrame([_row(*r) for r in rows]))


def resolve(text: str, registry: AddressRegistry) -> tuple[str, str | None, list[str]]:
    row = resolve_texts(pd.Series([text]), registry).iloc[0]
    return row["status"], row["address_code"], json.loads(row["candidates"])


# 人民路 runs through both districts; 翠园 1-1-101 exists in both, 1-1-102 only in 东港区,
# 阳光花园 only in 岚山区.
SHARED = _registry(
    ("E101", "371102", "人民路", "8", "翠园", "1", "1", "101"),
    ("E102", "371102", "人民路", "8", "翠园", "1", "1", "102"),
    ("L101", "371103", "人民路", "8", "翠园", "1", "1", "101"),
    ("L501", "371103", "人民路", "26", "阳光花园", "3", "2", "501"),
    ("M501", "371102", "中山路", "5", "金色家园", "2", "1", "501"),
    ("N501", "371103", "中山路", "5", "金色佳苑", "2", "1", "501"),
)


@pytest.mark.parametrize(
    "text, code",
    [
        ("人民路8号翠园1-1-102", "E102"),  # only 东港区 has room 102
        ("人民路26号阳光花园3号楼2单元501室", "L501"),  # only 岚山区 has this compound
        ("日照市人民路26号阳光花园3-2-501", "L501"),  # city prefix without district
        ("东港区人民路8号翠园1-1-101", "E101"),
        ("岚山区人民路8号翠园1-1-101", "L101"),
    ],
)
def test_shared_road_resolves_when_one_address_fits(text, code):
    assert resolve(text, SHARED) == ("normalized", code, [code])


def test_shared_road_without_district_is_ambiguous_only_when_both_districts_fit():
    assert resolve("人民路8号翠园1-1-101", SHARED) == ("ambiguous", None, ["E101", "L101"])


def test_district_written_must_agree_even_on_a_shared_road():
    # 翠园 1-1-102 exists in 东港区 only; writing 岚山区 is not silently corrected.
    assert resolve("岚山区人民路8号翠园1-1-102", SHARED) == ("unmatched", None, [])


def test_fuzzy_on_a_shared_road_picks_the_one_clear_address():
    # 中山路5号 2-1-501 exists in both districts, as 金色家园 and as 金色佳苑; the typo 金色家圆
    # is clearly closest to 金色家园.
    assert resolve("中山路5号金色家圆2-1-501", SHARED) == ("fuzzy", "M501", ["M501"])


def test_fuzzy_tie_across_districts_is_ambiguous_with_both():
    tie = _registry(
        ("E1", "371102", "人民路", "8", "翠竹花园", "1", "1", "101"),
        ("L1", "371103", "人民路", "8", "翠竹花园", "1", "1", "101"),
    )
    status, code, candidates = resolve("人民路8号翠竹花圆1-1-101", tie)
    assert (status, code, candidates) == ("ambiguous", None, ["E1", "L1"])
    assert resolve("岚山区人民路8号翠竹花圆1-1-101", tie)[:2] == ("fuzzy", "L1")


@pytest.mark.parametrize(
    "text, hint",
    [
        ("人民路8号翠园1-1-101", "district_missing"),  # both districts have it
        ("岚山区人民路8号翠园1-1-102", "district_mismatch"),  # it exists, but in 东港区
        ("岚山区人民路8号翠园1-1-109", "no_such_room"),
        ("人民路26号阳光花园3-2-509", "no_such_room"),  # shared road: no district hint
    ],
)
def test_hints_follow_the_registry_rule(text, hint):
    assert explain(pd.Series([text]), SHARED).tolist() == [hint]


def test_same_address_twice_in_one_district_is_several_codes_not_district_missing():
    twin = _registry(
        ("A", "371102", "人民路", "8", "翠园", "1", "1", "101"),
        ("B", "371102", "人民路", "8", "翠园小区", "1", "1", "101"),
    )
    assert resolve("人民路8号翠园1-1-101", twin) == ("ambiguous", None, ["A", "B"])
    assert explain(pd.Series(["人民路8号翠园1-1-101"]), twin).tolist() == ["several_codes"]


# Two phases at the same door with the same numbers, a zone, and a name with 小区 before its phase.
PHASED = _registry(
    ("P3", "371102", "海滨路", "20", "明珠花园三期", "5", "1", "501"),
    ("P2", "371102", "海滨路", "20", "明珠花园二期", "5", "1", "501"),
    ("PE", "371102", "海滨路", "22", "明珠花园小区东区", "1", "1", "101"),
    ("PW", "371102", "海滨路", "22", "明珠花园小区西区", "1", "1", "101"),
    ("Z2", "371102", "海滨路", "24", "翠湖二区", "3", "1", "201"),
)


@pytest.mark.parametrize(
    "text",
    [
        "海滨路20号明珠花园三期5-1-501",
        "海滨路20号明珠花园3期5-1-501",
        "海滨路20号明珠花园小区三期5-1-501",
        "海滨路20号明珠花园三期小区5号楼1单元501室",
        "海滨路20号明珠花园小区3期5栋1单元501",
        "海滨路20号明珠花园第三期5-1-501",
        "海滨路二十号明珠花园三期五号楼一单元五零一室",
    ],
)
def test_phase_forms_are_the_same_compound(text):
    assert resolve(text, PHASED) == ("normalized", "P3", ["P3"])


@pytest.mark.parametrize(
    "text, code",
    [
        ("海滨路20号明珠花园二期5-1-501", "P2"),
        ("海滨路22号明珠花园东区1-1-101", "PE"),
        ("海滨路22号明珠花园小区东区1-1-101", "PE"),
        ("海滨路22号明珠花园西区小区1-1-101", "PW"),
        ("海滨路24号翠湖2区3-1-201", "Z2"),
        ("海滨路24号翠湖小区二区3-1-201", "Z2"),
    ],
)
def test_each_phase_or_zone_is_its_own_compound(text, code):
    assert resolve(text, PHASED)[:2] == ("normalized", code)


@pytest.mark.parametrize(
    "text",
    [
        "海滨路20号明珠花园四期5-1-501",  # no such phase: never fuzzed into 三期 or 二期
        "海滨路20号明珠花园5-1-501",  # phase left out: which one is unknown
        "海滨路22号明珠花园南区1-1-101",
        "海滨路24号翠湖三区3-1-201",
    ],
)
def test_a_phase_is_never_guessed(text):
    assert resolve(text, PHASED) == ("unmatched", None, [])


# Compound names ending in a number run into the building number in texts.
NUMBERED = _registry(
    ("N5", "371102", "海滨路", "30", "阳光100", "5", "1", "501"),
    ("N12", "371102", "海滨路", "30", "阳光100", "12", "1", "501"),
    ("H1", "371102", "海滨路", "32", "花园城一", "1", "1", "101"),
    ("H11", "371102", "海滨路", "32", "花园城一", "11", "1", "101"),
    ("S3", "371102", "海滨路", "34", "海韵3期", "2", "1", "301"),
)


@pytest.mark.parametrize(
    "text, code",
    [
        ("海滨路30号阳光1005号楼1单元501室", "N5"),
        ("海滨路30号阳光100 5号楼1单元501室", "N5"),
        ("海滨路30号阳光10012栋1单元501", "N12"),
        ("海滨路30号阳光1005-1-501", "N5"),
        ("海滨路30号阳光100小区12#1-501", "N12"),
        ("海滨路32号花园城一十一号楼1单元101室", "H11"),  # 花园城一 + 十一号楼
        ("海滨路32号花园城一一号楼1单元101室", "H1"),  # 花园城一 + 一号楼
        ("海滨路32号花园城一11号楼1单元101室", "H11"),
        ("海滨路三十二号花园城一 1号楼1单元101室", "H1"),  # door in numerals, compound numeral kept
        ("海滨路34号海韵三期2号楼1单元301室", "S3"),
        ("海滨路三十四号海韵3期二号楼1单元301室", "S3"),
    ],
)
def test_compound_ending_in_a_number_keeps_door_and_building_apart(text, code):
    assert resolve(text, NUMBERED) == ("normalized", code, [code])


def test_compound_ending_in_a_number_and_its_base_both_fitting_is_ambiguous():
    both = _registry(
        ("N5", "371102", "海滨路", "30", "阳光100", "5", "1", "501"),
        ("B1005", "371102", "海滨路", "30", "阳光", "1005", "1", "501"),
    )
    assert resolve("海滨路30号阳光1005号楼1单元501室", both) == ("ambiguous", None, ["B1005", "N5"])
    assert resolve("海滨路30号阳光小区1005号楼1单元501室", both)[:2] == ("normalized", "B1005")


# Spaces inside numbers: a slip inside one number, or a separator between two.
SPACED = _registry(
    ("D103", "371102", "泰安路", "103", "丽景湾", "1", "1", "302"),
    ("U3", "371102", "泰安路", "3", "丽景湾", "3", "2", "501"),
    ("U32", "371102", "泰安路", "5", "丽景湾", "32", "", "501"),
    ("V3", "371102", "泰安路", "5", "丽景湾", "3", "2", "501"),
    ("W1501", "371102", "泰安路", "7", "丽景湾", "5", "", "1501"),
    ("X501", "371102", "泰安路", "9", "丽景湾", "5", "1", "501"),
)


@pytest.mark.parametrize(
    "text, code",
    [
        ("泰安路10 3号丽景湾1-1-302", "D103"),
        ("泰安路103号丽景湾1号楼1单元3 02室", "D103"),
        ("泰安路1 0 3号丽景湾1-1-3 0 2", "D103"),
        ("泰安路１０ ３号丽景湾１－１－３\u300002", "D103"),  # full-width digits, ideographic space
        ("泰安路3号丽景湾3 2-501", "U3"),  # the space separates building and unit
        ("泰安路9号丽景湾5号楼1 501室", "X501"),  # ... or unit and room
        ("泰安路7号丽景湾5号楼15 01室", "W1501"),  # ... or is a slip inside the room
    ],
)
def test_spaces_inside_numbers(text, code):
    assert resolve(text, SPACED) == ("normalized", code, [code])


def test_a_space_never_merges_building_and_unit_into_a_wrong_code():
    # At 泰安路5号 both building 32 (no units) room 501 and building 3 unit 2 room 501 exist.
    assert resolve("泰安路5号丽景湾3 2-501", SPACED) == ("ambiguous", None, ["U32", "V3"])
    assert resolve("泰安路5号丽景湾32-501", SPACED)[:2] == ("normalized", "U32")
    assert resolve("泰安路5号丽景湾3-2-501", SPACED)[:2] == ("normalized", "V3")


@pytest.mark.parametrize(
    "text",
    [
        "泰安路10 3号丽景湾1-1-3 03",  # no room 303
        "泰安路1 03号丽景湾1-1-30 3",  # no room 303 either way of reading
    ],
)
def test_spaced_numbers_that_fit_nothing_are_unmatched(text):
    assert resolve(text, SPACED) == ("unmatched", None, [])


@pytest.mark.parametrize(
    "text, code",
    [
        ("人民路八号翠园1-1-102", "E102"),
        ("人民路二十六号阳光花园3-2-501", "L501"),
        ("人民路贰拾陆号阳光花园3-2-501", None),  # formal numerals are not read: no guess
    ],
)
def test_chinese_numeral_door_numbers(text, code):
    status, got, _ = resolve(text, SHARED)
    assert got == code and status == ("normalized" if code else "unmatched")


def test_thirteen_as_door_number():
    reg = _registry(
        ("T", "371102", "泰安路", "13", "丽景湾", "1", "1", "101"),
        ("T3", "371102", "泰安路", "3", "丽景湾", "1", "1", "101"),
        ("T10", "371102", "泰安路", "10", "丽景湾", "1", "1", "101"),
    )
    for text in ("泰安路十三号丽景湾1-1-101", "泰安路一十三号丽景湾1-1-101", "泰安路13号丽景湾1-1-101"):
        assert resolve(text, reg) == ("normalized", "T", ["T"])


# Roads differing only by a direction are different roads.
DIRECTIONS = _registry(
    ("MID", "371102", "海曲中路", "15", "金色家园", "1", "1", "101"),
    ("EAS", "371102", "海曲东路", "15", "金色家园", "1", "1", "102"),
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("海曲中路15号金色家园1-1-101", ("normalized", "MID", ["MID"])),
        ("海曲东路15号金色家园1-1-102", ("normalized", "EAS", ["EAS"])),
        ("海曲东路15号金色家园1-1-101", ("unmatched", None, [])),  # 1-1-101 is on 海曲中路 only
        ("海曲西路15号金色家园1-1-101", ("unmatched", None, [])),  # unknown road, never fuzzed
        ("海曲路15号金色家园1-1-101", ("unmatched", None, [])),
        ("海曲中路15号金色佳园1-1-101", ("fuzzy", "MID", ["MID"])),  # a compound typo still is
    ],
)
def test_direction_roads_are_never_fuzzed_into_each_other(text, expected):
    assert resolve(text, DIRECTIONS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "人民路8号翠园一号楼一单元一零二",  # room in numerals without 室 ends the text
        "人民路8号翠园一号楼一单元一百零二室",
        "人民路8号翠园1-1-102",
    ],
)
def test_room_in_chinese_numerals(text):
    assert resolve(text, SHARED) == ("normalized", "E102", ["E102"])


def test_check_address_sees_shared_roads_phases_and_districts(tmp_path):
    from pipelines.addresses import check_address

    rows = [
        ("E101", "371102", "人民路", "8", "翠园", "1", "1", "101"),
        ("L101", "371103", "人民路", "8", "翠园", "1", "1", "101"),
        ("P3", "371102", "海滨公园路", "20", "明珠花园三期", "5", "1", "501"),
        ("Q1", "371103", "泰安路", "3", "丽景湾", "1", "1", "101"),
    ]
    pd.DataFrame([_row(*r) for r in rows]).to_csv(tmp_path / "addresses.csv", index=False)
    (tmp_path / "catchments.geojson").write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")

    def check(text):
        result = check_address(text, tmp_path, enrollment_year=2027)
        return result["status"], result["address_code"], [c["address_code"] for c in result["candidates"]]

    assert check("人民路8号翠园1-1-101") == ("ambiguous", None, ["E101", "L101"])
    assert check("岚山区人民路8号翠园1-1-101") == ("normalized", "L101", ["L101"])
    # a misspelt road is found through its compound, whichever way the phase is written
    assert check("海宾公园路20号明珠花园小区3期5-1-501") == ("fuzzy", "P3", ["P3"])
    # 东港区 is known although no row near the text lies in it: the district does not fit
    assert check("东港区泰安路3号丽景湾1-1-101") == ("unmatched", None, [])


def test_a_road_ending_in_a_numeral_keeps_it():
    reg = _registry(("W", "371102", "纬一", "15", "丽景湾", "1", "1", "101"))
    assert resolve("纬一15号丽景湾一号楼一单元一零一", reg) == ("normalized", "W", ["W"])
