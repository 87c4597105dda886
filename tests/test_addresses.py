"""Address resolution and catchment placement on a five-room registry and three catchments."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.addresses import (
    AddressRegistry,
    bench_addresses,
    build_address_match,
    check_address,
    normalize_texts,
    place_in_catchments,
    resolve_texts,
    write_review_list,
)
from pipelines.addresses.match import HINTS, explain
from pipelines.errors import UsageError
from pipelines.policy import DEMO_POLICY_YAML


def _row(code, district, road, door, compound, building, unit, room, lon, lat):
    name = {"371102": "东港区", "371103": "岚山区"}[district]
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
        standard_text=f"{name}{road}{door}号{compound}{building}号楼{unit}单元{room}室",
        lon=lon,
        lat=lat,
    )


REGISTRY = pd.DataFrame(
    [
        _row("R501", "371102", "海滨二路", "15", "阳光小区", "3", "2", "501", 0.5, 0.5),
        _row("R502", "371102", "海滨二路", "15", "阳光小区", "3", "2", "502", 1.5, 0.5),
        _row("G101", "371103", "泰安路", "21", "金色家园", "12", "1", "101", 5.0, 5.0),
        _row("Y102", "371102", "烟台路", "8", "翠园", "1", "1", "101", 1.0, 1.5),
        _row("Y103", "371103", "烟台路", "8", "翠园", "1", "1", "101", 9.0, 9.0),
    ]
)


@pytest.fixture(scope="module")
def registry() -> AddressRegistry:
    return AddressRegistry.from_frame(REGISTRY)


def resolve_one(text: str, registry: AddressRegistry) -> dict:
    return resolve_texts(pd.Series([text]), registry).iloc[0].to_dict()


def test_normalize_keeps_road_numerals_and_converts_house_numbers():
    out = normalize_texts(pd.Series(["海滨二路 二十一号 阳光 三号楼十二单元", "１５号 ３＃２－５０１"]))
    assert out.tolist() == ["海滨二路21号阳光3号楼12单元", "15号3#2-501"]


def test_standard_text_is_exact(registry):
    row = resolve_one("东港区海滨二路15号阳光小区3号楼2单元501室", registry)
    assert (row["status"], row["address_code"], row["score"]) == ("exact", "R501", 1.0)
    assert json.loads(row["candidates"]) == ["R501"]


@pytest.mark.parametrize(
    "text",
    [
        "山东省日照市东港区海滨二路15号阳光小区3号楼2单元501室",  # full prefix
        "日照市东港区海滨二路15号阳光小区3号楼2单元501室",  # city and district
        "日照市海滨二路15号阳光小区3号楼2单元501室",  # city only
        "海滨二路15号阳光小区3号楼2单元501室",  # no prefix
        "东港区海滨二路１５号阳光小区３号楼２单元５０１室",  # full-width digits
        "东港区海滨二路十五号阳光小区三号楼二单元五零一室",  # Chinese numerals
        "东港区海滨二路15号阳光小区3#2-501",
        "东港区海滨二路15号阳光小区3-2-501",
        "东港区海滨二路15号阳光小区3栋2单元501",
        "东港区海滨二路15号阳光小区3幢2单元501号",
        "东港区海滨二路15号阳光小区3号楼2单元501",  # no 室
        "东港区海滨二路15号阳光3号楼2单元501室",  # 小区 dropped
        " 东港区 海滨二路 15号\u3000阳光小区 3 号楼 2 单元 501 室 ",  # spaces anywhere
    ],
)
def test_each_variant_normalizes_to_its_room(text, registry):
    row = resolve_one(text, registry)
    assert (row["status"], row["address_code"]) == ("normalized", "R501")


def test_chinese_numerals_above_ten_and_small_district_added(registry):
    # Registry compound 金色家园 has no 小区; the text adds one and writes 二十一号 and 十二栋.
    row = resolve_one("岚山区泰安路二十一号金色家园小区十二栋1单元101室", registry)
    assert (row["status"], row["address_code"]) == ("normalized", "G101")


def test_missing_district_on_a_road_of_one_district_is_fine(registry):
    assert resolve_one("泰安路21号金色家园12-1-101", registry)["address_code"] == "G101"


def test_road_in_two_districts_without_district_is_ambiguous(registry):
    row = resolve_one("烟台路8号翠园1-1-101", registry)
    assert row["status"] == "ambiguous" and row["address_code"] is None
    assert json.loads(row["candidates"]) == ["Y102", "Y103"]


def test_road_in_two_districts_with_district_resolves(registry):
    assert resolve_one("岚山区烟台路8号翠园1-1-101", registry)["address_code"] == "Y103"


def test_same_key_twice_in_the_registry_is_ambiguous():
    twin = REGISTRY.iloc[[0]].assign(address_code="TWIN", compound="阳光")
    row = resolve_one("海滨二路15号阳光3-2-501", AddressRegistry.from_frame(pd.concat([REGISTRY, twin])))
    assert row["status"] == "ambiguous"
    assert json.loads(row["candidates"]) == ["R501", "TWIN"]


@pytest.mark.parametrize(
    "text",
    [
        "东港区海滨二路15号阳光小区3号楼2单元509室",  # no such room
        "岚山区海滨二路15号阳光小区3号楼2单元501室",  # road not in that district
        "东港区海滨三路15号阳光小区3号楼2单元501室",  # no such road
        "东港区海滨二路15号阳光小区",  # no room at all
        "不知道",
        "",
    ],
)
def test_what_does_not_fit_is_unmatched(text, registry):
    row = resolve_one(text, registry)
    assert (row["status"], row["address_code"], row["candidates"]) == ("unmatched", None, "[]")


def test_unit_left_out_is_unmatched_when_the_building_has_units(registry):
    row = resolve_one("东港区海滨二路15号阳光小区3号楼501室", registry)
    assert (row["status"], row["address_code"]) == ("unmatched", None)


def test_building_without_units_and_leading_zeros():
    no_unit = REGISTRY.iloc[[2]].assign(
        address_code="NOUNIT", unit="", room="201", standard_text="岚山区泰安路21号金色家园12号楼201室"
    )
    reg = AddressRegistry.from_frame(pd.concat([REGISTRY, no_unit]))
    assert resolve_one("泰安路21号金色家园12号楼201室", reg)["address_code"] == "NOUNIT"
    assert resolve_one("泰安路021号金色家园012—01—0101", reg)["address_code"] == "G101"


def test_compound_typo_is_fuzzy_with_its_score(registry):
    row = resolve_one("泰安路21号金色佳园12-1-101", registry)
    assert (row["status"], row["address_code"]) == ("fuzzy", "G101")
    assert 0.7 < row["score"] < 1.0


def test_fuzzy_never_changes_a_number(registry):
    assert resolve_one("泰安路21号金色佳园12-1-102", registry)["status"] == "unmatched"


def test_fuzzy_needs_one_clear_winner():
    # 金色佳园 is as close to 金色家园 as to 金色佳苑: no code, both listed for review.
    rival = REGISTRY.iloc[[2]].assign(address_code="G2", compound="金色佳苑")
    reg = AddressRegistry.from_frame(pd.concat([REGISTRY, rival]))
    row = resolve_one("泰安路21号金色佳园12-1-101", reg)
    assert (row["status"], row["address_code"]) == ("ambiguous", None)
    assert json.loads(row["candidates"]) == ["G101", "G2"]


def test_one_row_per_distinct_text_and_input_untouched(registry):
    texts = pd.Series(["海滨二路15号阳光3-2-502", None, "海滨二路15号阳光3-2-502", "不知道"])
    before = texts.copy()
    out = resolve_texts(texts, registry)
    assert list(out.columns) == ["address", "address_code", "status", "candidates", "score"]
    assert out["address"].tolist() == ["海滨二路15号阳光3-2-502", "不知道"]
    assert out["address_code"].tolist() == ["R502", None]
    pd.testing.assert_series_equal(texts, before)


def test_registry_file_missing_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        AddressRegistry.load(tmp_path / "addresses.csv")


def _square(x0, y0, x1, y1):
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def _feature(school, level, year, geometry):
    return {
        "type": "Feature",
        "properties": {"school_code": school, "level": level, "enrollment_year": year},
        "geometry": geometry,
    }


@pytest.fixture()
def reference(tmp_path):
    """R501 (0.5,0.5) in P1 only; R502 (1.5,0.5) in P1 and P2 (overlap); Y102 (1,1.5) in a gap;
    G101 (5,5) in J1's second polygon; P9 is another year's catchment covering everything."""
    features = [
        _feature("P1", "primary", 2027, {"type": "Polygon", "coordinates": _square(0, 0, 2, 1)}),
        _feature("P2", "primary", 2027, {"type": "Polygon", "coordinates": _square(1, 0, 3, 1)}),
        _feature(
            "J1", "junior", 2027, {"type": "MultiPolygon", "coordinates": [_square(0, 0, 2, 1), _square(4, 4, 6, 6)]}
        ),
        _feature("P9", "primary", 2026, {"type": "Polygon", "coordinates": _square(-10, -10, 10, 10)}),
    ]
    (tmp_path / "catchments.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
    )
    REGISTRY.to_csv(tmp_path / "addresses.csv", index=False)
    pd.DataFrame(
        {
            "school_code": ["P1", "P2", "J1"],
            "school_name": ["第一小学", "第二小学", "第一中学"],
            "level": ["primary", "primary", "junior"],
        }
    ).to_csv(tmp_path / "schools.csv", index=False)
    return tmp_path


def test_placement_overlaps_gaps_multipolygons_and_year(reference, registry):
    placed = place_in_catchments(registry, reference / "catchments.geojson", 2027)
    got = set(placed.itertuples(index=False, name=None))
    assert got == {
        ("R501", "primary", "P1"),
        ("R501", "junior", "J1"),
        ("R502", "primary", "P1"),
        ("R502", "primary", "P2"),
        ("R502", "junior", "J1"),
        ("G101", "junior", "J1"),
    }


def test_a_point_is_in_a_catchment_only_inside_it_never_on_its_edge():
    import shapely

    from pipelines.addresses.catchments import points_in_catchments

    square = lambda x0, y0, x1, y1: shapely.box(x0, y0, x1, y1)  # noqa: E731
    catchments = pd.DataFrame(
        {
            "geometry": [
                square(0, 0, 2, 2),
                square(2, 0, 4, 2),  # shares the edge x = 2 with the first
                square(1, 1, 3, 3),  # overlaps both
                shapely.MultiPolygon([square(10, 10, 11, 11), square(12, 10, 13, 11)]),
            ]
        }
    )
    lon = [0.5, 2.0, 1.5, 2.5, 10.5, 11.5, 12.5, 50.0]
    lat = [0.5, 0.5, 1.5, 1.5, 10.5, 10.5, 10.5, 50.0]
    hits = points_in_catchments(lon, lat, catchments)
    assert sorted(zip(hits["point"], hits["catchment"])) == [(0, 0), (2, 0), (2, 2), (3, 1), (3, 2), (4, 3), (6, 3)]


def test_placement_of_another_year(reference, registry):
    placed = place_in_catchments(registry, reference / "catchments.geojson", 2026)
    assert set(placed["school_code"]) == {"P9"} and len(placed) == len(REGISTRY)


def test_broken_catchments_file_is_a_usage_error(tmp_path, registry):
    (tmp_path / "catchments.geojson").write_text('{"type": "FeatureCollection"}', encoding="utf-8")
    with pytest.raises(UsageError, match="FeatureCollection"):
        place_in_catchments(registry, tmp_path / "catchments.geojson", 2027)


def test_check_address_names_the_schools(reference):
    result = check_address("日照市海滨二路15号阳光 3#2-502", reference, enrollment_year=2027)
    assert (result["status"], result["address_code"]) == ("normalized", "R502")
    assert result["standard_text"] == "东港区海滨二路15号阳光小区3号楼2单元502室"
    assert result["schools"] == [
        {"school_code": "J1", "school_name": "第一中学", "level": "junior"},
        {"school_code": "P1", "school_name": "第一小学", "level": "primary"},
        {"school_code": "P2", "school_name": "第二小学", "level": "primary"},
    ]


def test_check_address_year_from_policy_or_newest_catchments(reference):
    assert check_address("泰安路21号金色家园12-1-101", reference)["enrollment_year"] == 2027
    (reference / "policy.yaml").write_text(
        DEMO_POLICY_YAML.replace("enrollment_year: 2027", "enrollment_year: 2026"), encoding="utf-8"
    )
    result = check_address("泰安路21号金色家园12-1-101", reference)
    assert result["enrollment_year"] == 2026
    assert result["schools"] == [{"school_code": "P9", "school_name": None, "level": "primary"}]


def test_check_address_ambiguous_lists_candidates_and_no_schools(reference):
    result = check_address("烟台路8号翠园1-1-101", reference, enrollment_year=2027)
    assert result["status"] == "ambiguous" and result["schools"] == []
    assert [c["standard_text"] for c in result["candidates"]] == [
        "东港区烟台路8号翠园1号楼1单元101室",
        "岚山区烟台路8号翠园1号楼1单元101室",
    ]


def test_address_match_and_review_lists(tmp_path, registry):
    staged = {
        "hukou": pd.DataFrame(
            {"hukou_address": ["海滨二路15号阳光3-2-501", "海滨二路15号阳光3-2-501", "烟台路8号翠园1-1-101"]}
        ),
        "rental": pd.DataFrame({"address": ["海滨二路15号阳光3-2-501", "不知道", None]}),
        "enterprise": pd.DataFrame({"address": ["泰安路21号金色家园12-1-101"]}),
    }
    match = build_address_match(staged, registry)
    assert len(match) == 2 + 2 + 1  # distinct texts per source
    assert set(match.loc[match["source"] == "rental", "status"]) == {"normalized", "unmatched"}
    paths = write_review_list(match, tmp_path / "review")
    assert sorted(p.name for p in paths) == [
        "address_review_enterprise.csv",
        "address_review_hukou.csv",
        "address_review_rental.csv",
    ]
    hukou = pd.read_csv(tmp_path / "review" / "address_review_hukou.csv", encoding="utf-8-sig")
    assert hukou["address"].tolist() == ["烟台路8号翠园1-1-101"]
    assert hukou["status"].tolist() == ["ambiguous"]
    assert pd.read_csv(tmp_path / "review" / "address_review_enterprise.csv").empty


def test_bench_reports_counts(reference):
    report = bench_addresses(reference, pd.Series(["海滨二路15号阳光3-2-501", "不知道", "不知道"]), 2027)
    assert report["texts"] == 3 and report["distinct_texts"] == 2
    assert report["status_counts"] == {"normalized": 1, "unmatched": 1}
    assert report["placements"] == 6 and report["seconds_total"] >= 0


@pytest.mark.parametrize(
    "text, hint",
    [
        ("东港区海滨二路15号阳光小区", "unparsed"),
        ("东港区海滨三路15号阳光3-2-501", "unknown_road"),
        ("岚山区海滨二路15号阳光3-2-501", "district_mismatch"),
        ("海滨二路17号阳光3-2-501", "no_such_door"),
        ("海滨二路15号阴天3-2-501", "no_such_compound"),
        ("海滨二路15号阳光4-2-501", "no_such_building"),
        ("海滨二路15号阳光3号楼501室", "no_such_unit"),
        ("海滨二路15号阳光3-2-509", "no_such_room"),
        ("烟台路8号翠园1-1-101", "district_missing"),
    ],
)
def test_review_hint_names_what_to_fix(text, hint, registry):
    assert explain(pd.Series([text]), registry).tolist() == [hint]


def test_review_list_with_hints(tmp_path, registry):
    match = build_address_match(
        {
            "rental": pd.DataFrame(
                {"address": ["海滨二路15号阳光3-2-509", "烟台路8号翠园1-1-101", "海滨二路15号阳光3-2-501"]}
            )
        },
        registry,
    )
    [path] = write_review_list(match, tmp_path, registry)
    review = pd.read_csv(path, encoding="utf-8-sig")
    assert dict(zip(review["address"], review["hint"])) == {
        "海滨二路15号阳光3-2-509": HINTS["no_such_room"],
        "烟台路8号翠园1-1-101": HINTS["district_missing"],
    }


def test_evaluation_against_truth_counts_right_wrong_and_blank(tmp_path):
    from pipelines.addresses.evaluate import evaluate_against_truth

    (tmp_path / "reference").mkdir()
    (tmp_path / "truth").mkdir()
    REGISTRY.to_csv(tmp_path / "reference" / "addresses.csv", index=False)
    pd.DataFrame(
        {
            "source": "hukou",
            "address": [
                "东港区海滨二路15号阳光小区3号楼2单元501室",
                "日照市海滨二路15号阳光3#2-502",
                "海滨二路15号阳光3-2-509",
                "岚山区泰安路21号金色家园12-1-101",
            ],
            # the last truth is deliberately wrong: the report must count it
            "address_code": ["R501", "R502", "", "R501"],
        }
    ).to_csv(tmp_path / "truth" / "addresses.csv", index=False)
    report = evaluate_against_truth(tmp_path)
    assert (report["texts_with_truth"], report["blank_truth_unresolved"]) == (3, True)
    assert report["by_kind"]["all"] == {
        "texts": 3,
        "right": 2,
        "wrong": 1,
        "recall": round(2 / 3, 6),
        "wrong_share": 0.25,
    }
    assert report["by_kind"]["format_hash"] == {"texts": 1, "right": 1, "wrong": 0, "recall": 1.0, "wrong_share": 0.0}
    assert report["by_kind"]["prefix_city"]["texts"] == 1
    # 烟台路 runs through both districts; no text here is on it.
    assert report["by_kind"]["shared_road"]["texts"] == 0
    assert report["ambiguous_with_fewer_than_two"] == 0


def test_evaluation_uses_the_truths_variant_column(tmp_path):
    from pipelines.addresses.evaluate import evaluate_against_truth

    (tmp_path / "reference").mkdir()
    (tmp_path / "truth").mkdir()
    REGISTRY.to_csv(tmp_path / "reference" / "addresses.csv", index=False)
    pd.DataFrame(
        {
            "source": "rental",
            "address": [
                "岚山区烟台路8号翠园1-1-101",
                "烟台路8号翠园1-1-101",
                "海滨二路15号阳光3-2-5 01",
                "海滨二路十五号阳光3-2-501",
            ],
            "address_code": ["Y103", "", "R501", "R501"],
            "variant": ["format_dashes", "district_dropped;format_dashes", "space_in_number", ""],
        }
    ).to_csv(tmp_path / "truth" / "addresses.csv", index=False)
    report = evaluate_against_truth(tmp_path)
    kinds = report["by_kind"]
    assert set(kinds) == {
        "format_dashes",
        "district_dropped",
        "space_in_number",
        "shared_road",
        "shared_road_no_district",
        "phase_compound",
        "phase_written_differently",
        "numbered_compound",
        "all",
    }
    assert kinds["format_dashes"] == {"texts": 1, "right": 1, "wrong": 0, "recall": 1.0, "wrong_share": 0.0}
    assert kinds["space_in_number"] == {"texts": 1, "right": 1, "wrong": 0, "recall": 1.0, "wrong_share": 0.0}
    # The blank-truth text on the shared road has no truth code, so it counts in no kind's texts.
    assert (kinds["shared_road"]["texts"], kinds["shared_road_no_district"]["texts"]) == (1, 0)
    assert report["blank_truth_unresolved"] and report["status_counts"]["ambiguous"] == 1


def test_evaluation_kinds_read_from_the_registry(tmp_path):
    from pipelines.addresses.evaluate import evaluate_against_truth

    (tmp_path / "reference").mkdir()
    (tmp_path / "truth").mkdir()
    phased = pd.DataFrame(
        [
            _row("P3", "371102", "海滨二路", "20", "明珠花园三期", "5", "1", "501", 1.0, 1.0),
            _row("N5", "371103", "海滨二路", "30", "阳光100", "5", "1", "501", 1.0, 1.0),
        ]
    )
    phased.to_csv(tmp_path / "reference" / "addresses.csv", index=False)
    pd.DataFrame(
        {
            "source": "hukou",
            "address": [
                "海滨二路20号明珠花园小区3期5-1-501",
                "东港区海滨二路20号明珠花园三期5-1-501",
                "海滨二路30号阳光1005-1-501",
            ],
            "address_code": ["P3", "P3", "N5"],
        }
    ).to_csv(tmp_path / "truth" / "addresses.csv", index=False)
    kinds = evaluate_against_truth(tmp_path)["by_kind"]
    assert kinds["shared_road"]["texts"] == 3 and kinds["shared_road_no_district"]["texts"] == 2
    assert (kinds["phase_compound"]["texts"], kinds["phase_written_differently"]["texts"]) == (2, 1)
    assert kinds["numbered_compound"] == {"texts": 1, "right": 1, "wrong": 0, "recall": 1.0, "wrong_share": 0.0}
    assert kinds["all"]["right"] == 3
