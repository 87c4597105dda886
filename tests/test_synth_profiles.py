"""Profiles: a 20 k city of each shipped profile has the shape its profile says (measured from the
delivered files, not read back from the generator) and shows every category and reason of the
truth; the shipped profiles differ in every knob; a bad profile is one clear line."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import shapely
import yaml
from synth_reading import (
    AS_OF,
    EVENTS,
    PROFILES,
    SPEC,
    Opaque,
    maybe_date,
    newest_complete,
    norm_id,
    parse_lines,
    profile_doc,
    records,
)

from pipelines.cli import main
from pipelines.synth import synthesize

PEOPLE = 20000
REASONS = {
    "NO_GUARDIAN_LINK",
    "NO_QUALIFYING_PROPERTY",
    "PROPERTY_AFTER_CUTOFF",
    "PROPERTY_NOT_RESIDENTIAL",
    "PROPERTY_OUTSIDE_ALL_CATCHMENTS",
    "NO_QUALIFYING_RENTAL",
    "RENTAL_NOT_COVERING_CUTOFF",
    "NO_STABLE_EMPLOYMENT",
    "INSUFFICIENT_INSURANCE_MONTHS",
    "HUKOU_NOT_URBAN",
    "HUKOU_ADDRESS_OUTSIDE_ALL_CATCHMENTS",
    "ADDRESS_UNMATCHED",
    "CHILD_DECEASED",
}  # policy.md


@pytest.fixture(scope="module", params=PROFILES)
def big(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"big_{request.param}") / "city"
    summary = synthesize(root, PEOPLE, 1, profile=request.param)
    return Opaque((root, summary, profile_doc(request.param)))


def test_every_category_and_reason_appears_in_a_20k_city(big):
    root, summary, _ = big
    elig = pd.read_csv(root / "truth" / "eligibility.csv", dtype=str)
    assert set(elig["category"]) == {"A1", "A2", "B", "C"}
    reasons = summary["truth"]["reasons"]
    assert set(reasons) >= REASONS
    assert all(reasons[r] > 0 for r in REASONS), {r: reasons[r] for r in REASONS}
    q = pd.read_csv(root / "truth" / "quarantine.csv", dtype=str)
    assert set(q["reason_code"]) == {
        "INVALID_ID_CHECKSUM",
        "INVALID_ID_FORMAT",
        "INVALID_DATE",
        "MISSING_REQUIRED",
        "INVALID_CODE",
        "MALFORMED_RECORD",
    }
    features = json.loads((root / "reference" / "catchments.geojson").read_text(encoding="utf-8"))["features"]
    assert {f["geometry"]["type"] for f in features} == {"Polygon", "MultiPolygon"}
    reg = pd.read_csv(root / "reference" / "addresses.csv", dtype=str)
    lon, lat = reg["lon"].astype(float), reg["lat"].astype(float)
    for level in ("primary", "junior"):
        covered = sum(
            shapely.contains_xy(shapely.from_geojson(json.dumps(f["geometry"])), lon, lat).astype(int)
            for f in features
            if f["properties"]["level"] == level
        )
        assert (covered == 0).any() and (covered >= 2).any(), level


def _direction_siblings(names: set[str]) -> set[str]:
    """Names with another name that differs only by a direction before the final 路 (海曲中路 / 海曲东路 / 海曲路)."""
    stems = defaultdict(set)
    for n in names:
        if n.endswith("路"):
            stems[n[:-1]].add(n)
            if n[-2] in "东西南北中":
                stems[n[:-2]].add(n)
    return {n for group in stems.values() if len(group) > 1 for n in group}


def test_the_city_s_measured_shape_is_the_profile_s(big):
    root, summary, doc = big
    reg = pd.read_csv(root / "reference" / "addresses.csv", dtype=str)
    districts_per_road = reg.drop_duplicates(["district_code", "road"]).groupby("road")["district_code"].nunique()
    assert abs((districts_per_road >= 2).mean() - doc["roads"]["shared_across_districts"]) < 0.1
    siblings = _direction_siblings(set(districts_per_road.index))
    assert abs(len(siblings) / len(districts_per_road) - doc["roads"]["direction_siblings"]) < 0.12
    compounds = reg.drop_duplicates(["district_code", "compound"])["compound"]
    phased = compounds.str.contains(r"(?:[一二三四五六七八九十]+期|[一二三四五六七八九十]+区|[东西南北]区)$")
    assert abs(phased.mean() - doc["compounds"]["phased"]) < 0.05
    assert abs(compounds.str.contains("小区").mean() - doc["compounds"]["xiaoqu"]) < 0.06
    places = reg.drop_duplicates(["district_code", "road", "door_no", "compound"])
    repeated = places.duplicated(["road", "door_no", "compound"], keep=False)
    assert abs(repeated.mean() - doc["compounds"]["repeated_across_districts"]) < 0.02
    # so some texts without their district fit two rooms: the truth leaves them without a code
    truth = pd.read_csv(root / "truth" / "addresses.csv", dtype=str, keep_default_na=False)
    ambiguous = truth[(truth["address_code"] == "") & ~truth["variant"].str.contains("no_such|unit_missing")]
    assert len(ambiguous) and ambiguous["variant"].str.contains("no_district_shared_road").all()

    buyers = pd.Series([len(r["buyers"]) for r in records(root, "housing_contract")])
    weights = doc["contracts"]["buyers"]
    mean = sum(k * w for k, w in weights.items()) / sum(weights.values())
    assert set(buyers) == {1, 2, 3} and abs(buyers.mean() - mean) < 0.08

    # residents born in each enrollment birth year, read from the resident IDs of hukou
    ids = {norm_id(r["citizen_id"]) for r in records(root, "hukou")}
    births = pd.Series(sorted(i[6:14] for i in ids))
    policy = yaml.safe_load((root / "reference" / "policy.yaml").read_text(encoding="utf-8"))
    for level, window in policy["levels"].items():
        born = births.between(str(window["birth_from"]).replace("-", ""), str(window["birth_to"]).replace("-", ""))
        assert abs(born.sum() / len(ids) / doc["cohort_share"] - 1) < 0.15, level
    assert policy["urban_region_codes"] == doc["city"]["urban_region_codes"]

    # events after the delivery's extract date, in the damaged share the profile says
    late = total = 0
    for source in SPEC:
        folder_day = dt.date.fromisoformat(newest_complete(root, source).parent.name)
        assert folder_day == AS_OF - dt.timedelta(days=doc["deliveries"]["days_before_as_of"][source])
        for r in parse_lines(root, source):
            if r is None:
                continue
            total += 1
            dates = [maybe_date(r[k]) for k in EVENTS[source]]
            late += any(d is not None and d > folder_day for d in dates)
    assert 0.6 < late / total / doc["dirt"]["damage_future_date"] < 1.4


def test_shipped_profiles_differ_in_every_knob():
    def leaves(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], node

    a, b = (dict(leaves(profile_doc(name))) for name in PROFILES)
    assert a.keys() == b.keys()
    same = {k for k in a if a[k] == b[k]}
    assert same == {"city.province", "city.province_short"}  # 潍坊 is in 山东 too


BAD = {
    "unknown name": (None, "no profile named"),
    "not YAML": ("name: [unclosed\n", "not valid YAML"),
    "missing key": (lambda d: d.pop("cohort_share"), "'cohort_share' is missing"),
    "unknown key": (lambda d: d["roads"].update(colour="blue"), "unknown key 'colour'"),
    "share out of range": (lambda d: d["roads"].update(shared_across_districts=1.5), "roads.shared_across_districts"),
    "district shares": (lambda d: d["city"]["districts"][0].update(share=0.9), "shares must sum to 1"),
    "urban code": (lambda d: d["city"].update(urban_region_codes=["999999"]), "city.urban_region_codes"),
    "dirt rate": (lambda d: d["dirt"].update(duplicate=0.9), "dirt.duplicate"),
    "buyer weights": (lambda d: d["contracts"].update(buyers={1: 0, 2: 0, 3: 0}), "contracts.buyers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_profile_is_one_clear_line_and_writes_nothing(case, tmp_path, capsys):
    change, expected = BAD[case]
    if change is None:
        profile = "no-such-profile"
    else:
        path = tmp_path / "bad.yaml"
        if isinstance(change, str):
            path.write_text(change, encoding="utf-8")
        else:
            doc = profile_doc("weifang")
            change(doc)
            path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        profile = str(path)
    out = tmp_path / "city"
    assert main(["synth", "--out", str(out), "--people", "300", "--profile", profile]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerocert: ") and "\n" not in err and "Traceback" not in err
    assert expected in err, err
    assert not out.exists()


def test_a_profile_file_of_one_s_own_shapes_the_city(tmp_path):
    doc = profile_doc("weifang")
    doc["name"] = "mine"
    doc["city"]["name"] = "样例市"
    doc["roads"]["shared_across_districts"] = 0.0
    doc["contracts"]["buyers"] = {1: 1.0}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    summary = synthesize(tmp_path / "city", 2000, 3, profile=path)
    assert summary["profile"] == "mine"
    reg = pd.read_csv(tmp_path / "city" / "reference" / "addresses.csv", dtype=str)
    assert reg.drop_duplicates(["district_code", "road"])["road"].is_unique
    schools = pd.read_csv(tmp_path / "city" / "reference" / "schools.csv", dtype=str)
    assert schools["school_name"].str.startswith("样例市").all()
    assert {len(r["buyers"]) for r in records(tmp_path / "city", "housing_contract")} == {1}
    texts = Path(tmp_path / "city" / "truth" / "addresses.csv").read_text(encoding="utf-8")
    assert re.search("山东省样例市", texts)
