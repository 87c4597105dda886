"""The synthetic city: byte-identical per seed and profile, sources.md to the letter, truth
consistent with what was delivered, on both delivery days. One small city per profile (about
2.5 k people); the profile files are read as data, the rules typed out again on purpose (in
``synth_reading``)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import shapely
import yaml
from synth_reading import (
    AS_OF,
    EVENTS,
    KEYS,
    PROFILES,
    SPEC,
    Opaque,
    decoded,
    maybe_date,
    newest_complete,
    norm_date,
    norm_id,
    parse_lines,
    profile_doc,
    records,
    truth_dir,
)

from pipelines.errors import UsageError
from pipelines.resident_id import check_character, mask_id
from pipelines.synth import DirtRates, add_synth_arguments, synth_from_args, synthesize

NEXT_DAY = AS_OF + dt.timedelta(days=1)
CUTOFF = dt.date(2027, 7, 31)
PEOPLE = 2500


@pytest.fixture(scope="module", params=PROFILES)
def city(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"synth_{request.param}")
    summary = synthesize(root / "a", PEOPLE, 1, profile=request.param)
    return Opaque((root, summary, request.param, profile_doc(request.param)))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- determinism and layout
def test_one_seed_gives_byte_identical_output_and_another_seed_differs(city, tmp_path):
    root, _, profile, _ = city
    synthesize(tmp_path / "again", PEOPLE, 1, profile=profile)
    assert tree_hashes(root / "a") == tree_hashes(tmp_path / "again")
    synthesize(tmp_path / "other", PEOPLE, 2, profile=profile)
    other = tree_hashes(tmp_path / "other")
    same = tree_hashes(root / "a")
    assert other.keys() == same.keys()
    assert all(other[k] != same[k] for k in same if k.startswith("landing") and not k.endswith("_SUCCESS"))


def test_every_delivery_has_the_declared_encoding_and_the_sources_md_header(city):
    root, *_ = city
    for as_of in (AS_OF, NEXT_DAY):
        for source, (_name, sep, encoding, header) in SPEC.items():
            data = newest_complete(root / "a", source, as_of).read_bytes()
            if encoding == "gb18030":
                with pytest.raises(UnicodeDecodeError):
                    data.decode("utf-8")
                text = data.decode("gb18030")
                assert any(ord(ch) > 127 for ch in text)
            else:
                assert data.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig"), source
                text = data.decode(encoding)
            first = text.split("\n", 1)[0]
            if sep is None:
                assert ",".join(json.loads(first).keys()) == header
            else:
                assert first == header
            assert "\r" not in text


def test_csv_rows_have_the_header_field_count_unless_truth_says_malformed(city):
    root, *_ = city
    for as_of in (AS_OF, NEXT_DAY):
        q = pd.read_csv(truth_dir(root / "a", as_of) / "quarantine.csv", dtype=str)
        malformed = set(q.loc[q["reason_code"] == "MALFORMED_RECORD", "record_ref"])
        assert malformed
        for source, (name, sep, _, header) in SPEC.items():
            lines = decoded(root / "a", source, as_of).split("\n")[:-1]
            for n, line in enumerate(lines, start=1):
                ref = f"{name}:{n}"
                if sep is None:
                    try:
                        json.loads(line)
                        ok = True
                    except json.JSONDecodeError:
                        ok = False
                else:
                    ok = len(line.split(sep)) == len(header.split(sep))
                assert ok == (ref not in malformed), (as_of, ref)


def test_deliveries_today_and_the_next_day_an_older_snapshot_and_a_folder_still_being_written(city):
    root, summary, _, doc = city
    folders = sorted((root / "a" / "landing").glob("*/*"))
    assert {f.parent.name for f in folders} == set(SPEC)
    lag = doc["deliveries"]["days_before_as_of"]
    for source in SPEC:
        days = sorted(
            dt.date.fromisoformat(f.name) for f in folders if f.parent.name == source and (f / "_SUCCESS").exists()
        )
        today = AS_OF - dt.timedelta(days=lag[source])
        assert days[-2:] == [today, NEXT_DAY], source  # today's delivery, then the next day's
        assert (
            newest_complete(root / "a", source) == root / "a" / "landing" / source / today.isoformat() / SPEC[source][0]
        )
    incomplete = [f for f in folders if not (f / "_SUCCESS").exists()]
    assert [(f.parent.name, f.name) for f in incomplete] == [("rental", AS_OF.isoformat())]
    hukou_days = sorted(f.name for f in folders if f.parent.name == "hukou")
    assert len(hukou_days) == 3  # an older, smaller snapshot as well
    assert summary["next_day"]["as_of"] == NEXT_DAY.isoformat() and summary["as_of"] == AS_OF.isoformat()


def test_resident_ids_are_valid_gb11643_with_hukou_region_and_birth_date(city):
    root, _, _, doc = city
    codes = {d["code"] for d in doc["city"]["districts"]}
    rows = records(root / "a", "hukou")
    assert len(rows) > PEOPLE * 0.9
    for r in rows:
        cid = norm_id(r["citizen_id"])
        assert re.fullmatch(r"\d{17}[\dX]", cid), r["_line"]
        assert check_character(cid[:17]) == cid[17]
        assert cid[:6] == r["region"] and r["region"] in codes
        assert dt.date(int(cid[6:10]), int(cid[10:12]), int(cid[12:14])) == norm_date(r["birth_date"])
        assert (int(cid[16]) % 2 == 1) == (r["sex"] in ("男", "1"))


# ---------------------------------------------------------------- reference data
def test_registry_schools_and_catchments_follow_sources_md_and_the_profile(city):
    root, _, _, doc = city
    ref = root / "a" / "reference"
    reg = pd.read_csv(ref / "addresses.csv", dtype=str)
    assert list(reg.columns) == [
        "address_code",
        "district_code",
        "street",
        "community",
        "road",
        "door_no",
        "compound",
        "building",
        "unit",
        "room",
        "standard_text",
        "lon",
        "lat",
    ]
    assert reg["address_code"].is_unique
    assert 0.3 * PEOPLE <= len(reg) <= 0.6 * PEOPLE  # small cities: every district at least 4 x 4 blocks
    names = {d["code"]: d["name"] for d in doc["city"]["districts"]}
    assert set(reg["district_code"]) == set(names)
    composed = (
        reg["district_code"].map(names)
        + reg["road"]
        + reg["door_no"]
        + "号"
        + reg["compound"]
        + reg["building"]
        + "号楼"
        + reg["unit"]
        + "单元"
        + reg["room"]
        + "室"
    )
    assert (composed == reg["standard_text"]).all()
    assert reg["compound"].str.endswith("小区").any() and (~reg["compound"].str.contains("小区")).any()
    assert reg["compound"].str.contains("小区.*[期区]$").any()  # 小区 and a phase together
    lon, lat = reg["lon"].astype(float), reg["lat"].astype(float)
    inside = pd.Series(False, index=reg.index)
    for d in doc["city"]["districts"]:
        x0, y0, x1, y1 = d["box"]
        inside |= (reg["district_code"] == d["code"]) & lon.between(x0, x1) & lat.between(y0, y1)
    assert inside.all()
    # the same road name runs through several districts; a room's parts without the district name
    # one room, but for the compounds repeated on that road in another district
    assert (reg.drop_duplicates(["district_code", "road"])["road"].value_counts() >= 2).any()
    parts = ["road", "door_no", "compound", "building", "unit", "room"]
    twins = reg[reg.duplicated(parts, keep=False)]
    assert not twins.duplicated(parts + ["district_code"]).any()
    assert twins.groupby(parts)["district_code"].nunique().ge(2).all()

    schools = pd.read_csv(ref / "schools.csv", dtype=str)
    assert list(schools.columns) == [
        "school_code",
        "school_name",
        "level",
        "district_code",
        "address",
        "capacity",
        "lon",
        "lat",
    ]
    assert set(schools["level"]) == {"primary", "junior"}
    assert schools["school_name"].str.startswith(doc["city"]["name"]).all()
    features = json.loads((ref / "catchments.geojson").read_text(encoding="utf-8"))["features"]
    assert "Polygon" in {f["geometry"]["type"] for f in features} <= {"Polygon", "MultiPolygon"}
    assert {f["properties"]["enrollment_year"] for f in features} == {2027}
    assert {f["properties"]["school_code"] for f in features} <= set(schools["school_code"])
    overlaps = []
    for level in ("primary", "junior"):
        covered = sum(
            shapely.contains_xy(shapely.from_geojson(json.dumps(f["geometry"])), lon, lat).astype(int)
            for f in features
            if f["properties"]["level"] == level
        )
        assert (covered == 0).any(), level  # gaps
        overlaps.append((covered >= 2).any())
    assert any(overlaps)  # in a small city of many districts a junior catchment may cover its whole district
    policy = yaml.safe_load((ref / "policy.yaml").read_text(encoding="utf-8"))
    assert str(policy["cutoff_date"]) == "2027-07-31"
    assert policy["urban_region_codes"] == doc["city"]["urban_region_codes"]


# ---------------------------------------------------------------- truth consistency
def _evidence_checker(a: Path, as_of: dt.date):
    reg = pd.read_csv(a / "reference" / "addresses.csv", dtype=str)
    truth_addr = pd.read_csv(truth_dir(a, as_of) / "addresses.csv", dtype=str, keep_default_na=False)
    code_of = {(s, t): c for s, t, c in truth_addr[["source", "address", "address_code"]].itertuples(index=False)}
    point = {c: (float(x), float(y)) for c, x, y in reg[["address_code", "lon", "lat"]].itertuples(index=False)}
    features = json.loads((a / "reference" / "catchments.geojson").read_text(encoding="utf-8"))["features"]
    shapes = {
        (f["properties"]["school_code"], f["properties"]["level"]): shapely.from_geojson(json.dumps(f["geometry"]))
        for f in features
    }

    def in_catchment(source, text, school, level):
        code = code_of.get((source, text.strip()), "")
        return bool(code) and shapely.contains_xy(shapes[(school, level)], *point[code])

    return in_catchment


@pytest.mark.parametrize("as_of", [AS_OF, NEXT_DAY], ids=["today", "next_day"])
def test_each_truth_eligibility_row_has_its_evidence_and_priority_date_in_the_deliveries(city, as_of):
    root, _, _, doc = city
    a = root / "a"
    in_catchment = _evidence_checker(a, as_of)
    recs = {s: records(a, s, as_of) for s in SPEC}
    urban_codes = set(doc["city"]["urban_region_codes"])
    elig = pd.read_csv(truth_dir(a, as_of) / "eligibility.csv", dtype=str)
    assert list(elig.columns) == ["child_id", "level", "school_code", "category", "priority_date"]
    hukou = {norm_id(r["citizen_id"]): r for r in recs["hukou"]}
    heads = {}
    for r in recs["hukou"]:
        if r["relation"] in ("户主", "配偶") and r["status"] == "正常":
            heads.setdefault(r["household_no"], set()).add(norm_id(r["citizen_id"]))
    props = {}
    for r in recs["property_title"]:
        if r["use"] == "住宅" and r["title_status"] == "现势" and norm_date(r["registered_date"]) <= CUTOFF:
            props.setdefault(norm_id(r["owner_id"]), []).append(
                ("property_title", r["address"], norm_date(r["registered_date"]))
            )
    for r in recs["housing_contract"]:
        if r["use"] == "住宅" and r["status"] == "已备案" and norm_date(r["signed_date"]) <= CUTOFF:
            for b in r["buyers"]:
                props.setdefault(norm_id(b["id"]), []).append(
                    ("housing_contract", r["address"], norm_date(r["signed_date"]))
                )
    rentals = {}
    for r in recs["rental"]:
        if (
            r["status"] == "有效"
            and norm_date(r["registered_date"]) <= CUTOFF
            and norm_date(r["start_date"]) <= CUTOFF <= norm_date(r["end_date"])
        ):
            rentals.setdefault(norm_id(r["tenant_id"]), []).append(
                ("rental", r["address"], norm_date(r["registered_date"]))
            )
    assert len(elig) > 20 and set(elig["category"]) >= {"A1", "A2", "C"}
    for child, level, school, category, priority in elig.itertuples(index=False):
        row = hukou[child]
        named = {norm_id(row[g]) for g in ("guardian1_id", "guardian2_id") if row[g].strip()}
        guardians = named or (heads.get(row["household_no"], set()) if row["relation"] in ("子", "女") else set())
        urban = row["status"] == "正常" and row["region"] in urban_codes and norm_date(row["settled_date"]) <= CUTOFF
        if category in ("A1", "A2"):
            assert (category == "A1") == urban, mask_id(child)
            dates = [
                d for p in {child} | guardians for s, t, d in props.get(p, []) if in_catchment(s, t, school, level)
            ]
        elif category == "B":
            dates = [d for g in guardians for s, t, d in rentals.get(g, []) if in_catchment(s, t, school, level)]
        else:
            assert urban and in_catchment("hukou", row["hukou_address"], school, level), mask_id(child)
            dates = [norm_date(row["settled_date"])]
        assert dates and dt.date.fromisoformat(priority) == min(dates), mask_id(child)


@pytest.mark.parametrize("as_of", [AS_OF, NEXT_DAY], ids=["today", "next_day"])
def test_truth_quarantine_refs_point_at_damaged_lines(city, as_of):
    root, *_ = city
    a = root / "a"
    q = pd.read_csv(truth_dir(a, as_of) / "quarantine.csv", dtype=str)
    assert set(q["reason_code"]) == {
        "INVALID_ID_CHECKSUM",
        "INVALID_ID_FORMAT",
        "INVALID_DATE",
        "MISSING_REQUIRED",
        "INVALID_CODE",
        "MALFORMED_RECORD",
    }
    assert q["record_ref"].is_unique
    by_file = {spec[0]: s for s, spec in SPEC.items()}
    parsed = {s: parse_lines(a, s, as_of) for s in SPEC}
    future = 0
    for ref, reason in zip(q["record_ref"], q["reason_code"]):
        name, line = ref.rsplit(":", 1)
        source = by_file[name]
        folder_day = dt.date.fromisoformat(newest_complete(a, source, as_of).parent.name)
        text = decoded(a, source, as_of).split("\n")[int(line) - 1]
        fields = re.split(r"[,|\"\[\]{}: ]+", text)
        if reason == "INVALID_ID_CHECKSUM":
            assert any(re.fullmatch(r"\d{17}[\dX]", f) and check_character(f[:17]) != f[17] for f in fields), ref
        elif reason == "INVALID_ID_FORMAT":
            assert re.search(r"\d\.\d+E\+17|\d{4}A\d|\d{10}13\d{5}[\dX]", text), ref
        elif reason == "INVALID_CODE":
            assert any(code in fields for code in ("待定", "冻结", "草签", "待审核", "未知", "歇业", "停业")), ref
        elif reason == "INVALID_DATE":
            record = parsed[source][int(line) - 1]
            values = [record[k] for k in EVENTS[source] if record[k].strip()] + [
                record[k] for k in ("start_date", "end_date") if k in record
            ]
            dates = [maybe_date(v) for v in values]
            late = [d for d in dates if d is not None and d > folder_day]
            assert None in dates or late, ref
            future += bool(late)
    assert future > 0  # events dated after the delivery's extract date are among them


def test_clean_rows_date_no_event_after_their_delivery_s_extract_date(city):
    """Staging quarantines any event after the folder date, so only deliberately damaged rows may have one."""
    root, *_ = city
    a = root / "a"
    for as_of in (AS_OF, NEXT_DAY):
        for source in SPEC:
            folder_day = dt.date.fromisoformat(newest_complete(a, source, as_of).parent.name)
            for r in records(a, source, as_of):
                for key in EVENTS[source]:
                    if r[key].strip():
                        assert norm_date(r[key]) <= folder_day, (source, as_of, r["_line"], key)
    damaged = set(
        decoded(a, "hukou").split("\n")[i - 1]
        for i in pd.read_csv(a / "truth" / "quarantine.csv", dtype=str)
        .query("source == 'hukou'")["record_ref"]
        .str.split(":")
        .str[1]
        .astype(int)
    )
    older = sorted(f for f in (a / "landing" / "hukou").iterdir())[0]
    older_day = dt.date.fromisoformat(older.name)
    lines = (older / "hukou.csv").read_bytes().decode("gb18030").split("\n")[1:-1]
    assert lines and len(lines) < len(records(a, "hukou"))
    for line in lines:
        if line not in damaged:
            fields = dict(zip(KEYS["hukou"].split(), line.split(",")))
            assert norm_date(fields["birth_date"]) <= older_day and norm_date(fields["settled_date"]) <= older_day


def test_next_day_delivery_differs_by_a_few_added_and_removed_rows(city):
    root, summary, _, doc = city
    a = root / "a"
    rates = doc["deliveries"]["next_day"]
    for source in SPEC:
        today = Counter(decoded(a, source, AS_OF).split("\n"))
        tomorrow = Counter(decoded(a, source, NEXT_DAY).split("\n"))
        added, removed = tomorrow - today, today - tomorrow
        rows = sum(today.values())
        assert 0 < sum(added.values()) <= max(3, 3 * rates["added"] * rows), source
        assert 0 < sum(removed.values()) <= max(3, 3 * rates["removed"] * rows), source
        assert summary["next_day"]["added"][source] > 0 and summary["next_day"]["removed"][source] > 0
    # the next day's truth counts what the next day's files hold
    q = pd.read_csv(a / "truth" / "next_day" / "quarantine.csv", dtype=str)
    assert len(q) == summary["next_day"]["truth"]["quarantine"]
    assert summary["next_day"]["truth"]["eligibility"] == len(pd.read_csv(a / "truth" / "next_day" / "eligibility.csv"))


def test_truth_addresses_occur_in_their_source_and_name_their_variant_kinds(city):
    root, _, _, doc = city
    a = root / "a"
    truth = pd.read_csv(a / "truth" / "addresses.csv", dtype=str, keep_default_na=False)
    assert list(truth.columns) == ["source", "address", "address_code", "variant"]
    assert set(truth["source"]) == set(SPEC) - {"social_insurance"}
    assert not truth.duplicated(["source", "address"]).any()
    reg = pd.read_csv(a / "reference" / "addresses.csv", dtype=str).set_index("address_code")
    standard = set(reg["standard_text"])
    for source, group in truth.groupby("source"):
        text = decoded(a, source)
        assert all(t in text for t in group["address"]), source
    blank = truth[truth["address_code"] == ""]
    assert len(blank) > 0 and not blank["address"].isin(standard).any()
    assert blank["variant"].str.contains("no_such_room|no_such_building|unit_missing|no_district_shared_road").all()
    # a text without its district fits one room (its truth code), unless its compound recurs in another district
    parts = ["road", "door_no", "compound", "building", "unit", "room"]
    fits = reg.groupby(parts).size()
    no_district = truth[(truth["address_code"] != "") & truth["variant"].str.contains("no_district")]
    assert (
        len(no_district)
        and (fits.loc[pd.MultiIndex.from_frame(reg.loc[no_district["address_code"], parts])] == 1).all()
    )
    coded = truth[truth["address_code"] != ""]
    assert (coded["address"] != coded["address"].str.strip()).sum() == 0
    plain = coded["variant"] == ""
    assert (coded.loc[plain, "address"] == reg.loc[coded.loc[plain, "address_code"], "standard_text"].to_numpy()).all()
    assert (
        coded.loc[~plain, "address"] != reg.loc[coded.loc[~plain, "address_code"], "standard_text"].to_numpy()
    ).all()
    kinds = Counter(k for v in coded["variant"] for k in v.split(";") if k)
    assert set(kinds) == {
        "prefix",
        "no_district",
        "no_district_shared_road",
        "fullwidth",
        "numerals",
        "door_numerals",
        "number_spaces",
        "format",
        "room_suffix",
        "xiaoqu",
        "phase_form",
        "spaces",
    }
    text = coded["address"].str.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    districts = "|".join(d["name"] for d in doc["city"]["districts"])
    has = lambda kind: coded["variant"].str.contains(rf"(?:^|;){kind}(?:;|$)")  # noqa: E731
    assert text[has("no_district_shared_road")].str.contains(districts).sum() == 0
    assert text[has("prefix")].str.contains(doc["city"]["name"]).all()
    assert (
        text[has("fullwidth")].str.contains("[０-９]").sum() == 0
        and coded.loc[has("fullwidth"), "address"].str.contains("[０-９]").all()
    )
    assert text[has("door_numerals")].str.contains("[一二三四五六七八九十百]+号").all()
    assert text[has("number_spaces")].str.contains(r"\d \d").all()
    assert text[has("phase_form")].str.contains(r"\d[期区]").all()


# ---------------------------------------------------------------- coverage at the profile's rates
def test_every_kind_of_dirt_appears_at_the_profile_s_rates(city):
    root, summary, _, doc = city
    a = root / "a"
    assert all(
        summary["dirt"].get(f, 0) > 0
        for f in (
            "id_spaces",
            "id_fullwidth",
            "id_lowercase_x",
            "id_legacy15",
            "id_trailing_dot0",
            "id_quote_prefix",
            "sex_numeric",
            "name_conflict",
            "duplicate",
            "damage_future_date",
        )
    )
    province_city = doc["city"]["province"] + doc["city"]["name"]
    text = "\n".join(decoded(a, s) for s in SPEC)
    patterns = {
        "full-width digits": "[０-９]",
        "lowercase x": r"\d{17}x",
        "15-digit ID": r"[\",|]\d{15}[\",|]",
        "trailing .0": r"\d{18}\.0",
        "quote prefix": r"'\d{17}",
        "padded ID": r" \d{17}[\dX]|\d{17}[\dX] ",
        "slash date": r"\d{4}/\d{1,2}/\d{1,2}",
        "compact date": r"[,|\"](19|20)\d{6}[,|\"]",
        "chinese date": r"\d{4}年\d{1,2}月\d{1,2}日",
        "timestamp date": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
        "serial date": r"[,|\"][34]\d{4}[,|\"]",
        "province and city": province_city,
        "city prefix": '[,"]' + doc["city"]["name"],
        "3#2-501": r"\d#\d-\d{3}",
        "3-2-501": r"号[^,\"]*\D\d{1,2}-\d-\d{3}",
        "栋": r"栋\d单元",
        "幢": "幢",
        "chinese numerals": "[一二三四五六七八九十]号楼",
        "号楼 without 室": r"单元\d{3,4}[,\"|]",
        "door in chinese numerals": "路[一二三四五六七八九十百]+号|街[一二三四五六七八九十百]+号",
        "space inside a number": r"\d \d",
        "phase in digits": r"\d期",
    }
    for what, pattern in patterns.items():
        assert re.search(pattern, text), what
    all_lines = [ln for s in SPEC for ln in decoded(a, s).split("\n")[1:-1]]
    assert len(set(all_lines)) < len(all_lines)  # exact duplicates exist


def test_cli_arguments_cover_every_dirt_rate_and_the_profile_and_reach_synthesize(tmp_path):
    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path / "c"), "--people", "300", "--dirt-duplicate", "0", "--profile", "weifang"]
    )
    assert args.seed == 1 and args.dirt_duplicate == 0.0
    assert args.dirt_address_variant is None  # not given: the profile's rate
    summary = synth_from_args(args)
    assert summary["profile"] == "weifang" and summary["dirt"].get("duplicate", 0) == 0
    assert summary["dirt"]["addr_prefix"] > 0
    assert "370705" in (tmp_path / "c" / "reference" / "policy.yaml").read_text(encoding="utf-8")
    with pytest.raises(UsageError):
        synthesize(tmp_path / "d", 10, 1)
    with pytest.raises(UsageError):
        synthesize(tmp_path / "e", 300, 1, DirtRates(duplicate=2.0))
    assert not (tmp_path / "e").exists()


def test_records_cover_every_code_value_and_form_the_issue_names(city):
    root, _, _, doc = city
    recs = {s: records(root / "a", s) for s in SPEC}
    titles = pd.DataFrame(recs["property_title"])
    assert set(titles["share"]) >= {"", "50%", "1/2", "0.5"}
    assert set(titles["co_ownership"]) == {"单独所有", "共同共有", "按份共有"}
    assert set(titles["title_status"]) == {"现势", "历史", "注销"}
    assert set(titles["use"]) - {"住宅"} and "住宅" in set(titles["use"])
    assert any(norm_date(d) > CUTOFF for d in titles["registered_date"])
    assert (
        titles["certificate_no"].str.contains(doc["city"]["province_short"] + r"\(\d{4}\)" + doc["city"]["name"]).all()
    )
    credit = titles.loc[titles["owner_id"].str.fullmatch(r"91\d{6}[0-9A-Z]{10}"), "owner_id"]
    assert len(credit) > 0 and credit.str.len().eq(18).all()
    contracts = pd.DataFrame(recs["housing_contract"])
    assert set(contracts["status"]) == {"已备案", "已撤销", "已注销"}
    assert set(contracts["buyers"].map(len)) == {1, 2, 3}
    assert all(len({norm_id(b["id"]) for b in buyers}) == len(buyers) for buyers in contracts["buyers"])
    assert set(pd.DataFrame(recs["rental"])["status"]) == {"有效", "已注销"}
    insurance = pd.DataFrame(recs["social_insurance"])
    assert set(insurance["insurance_status"]) == {"参保缴费", "暂停缴费", "终止参保"}
    assert len(set(insurance["scheme"])) == 6
    months = insurance["local_months"].astype(int)
    assert (months < 12).any() and (months >= 12).any()
    assert insurance.groupby(insurance["citizen_id"].map(norm_id)).size().max() >= 2
    assert set(pd.DataFrame(recs["individual_business"])["reg_status"]) == {"存续", "注销", "吊销"}
    assert set(pd.DataFrame(recs["enterprise"])["reg_status"]) == {"存续", "在业", "注销", "吊销", "迁出"}
    hukou = pd.DataFrame(recs["hukou"])
    assert set(hukou["status"]) == {"正常", "迁出", "死亡", "注销"}
    assert {"孙子", "孙女", "户主", "配偶", "子", "女", "其他"} <= set(hukou["relation"])
    assert set(hukou["region"]) == {d["code"] for d in doc["city"]["districts"]}
    minors = hukou[hukou["birth_date"].map(norm_date) > dt.date(2010, 1, 1)]
    blank = minors["guardian1_id"].str.strip() == ""
    assert 0 < blank.sum() < len(minors) / 2
