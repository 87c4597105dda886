"""The synthetic city: byte-identical per seed, sources.md to the letter, truth consistent with
what was delivered. One small city per module (about 2.5 k people)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import shapely

from pipelines.errors import UsageError
from pipelines.resident_id import check_character, mask_id
from pipelines.synth import DirtRates, add_synth_arguments, synth_from_args, synthesize

AS_OF = dt.date(2027, 8, 15)
CUTOFF = dt.date(2027, 7, 31)
PEOPLE = 2500

# sources.md, typed out again here on purpose (not imported from the implementation)
SPEC = {
    "hukou": ("hukou.csv", ",", "gb18030", "公民身份号码,姓名,性别,出生日期,民族,户号,与户主关系,户籍地址,户籍地行政区划代码,"
              "迁入本址日期,监护人一公民身份号码,监护人一关系,监护人二公民身份号码,监护人二关系,人员状态,更新时间"),
    "property_title": ("property_title.csv", ",", "utf-8-sig", "不动产权证号,不动产单元号,权利人,权利人证件号码,共有方式,权利份额,"
                       "坐落,规划用途,建筑面积,登记日期,权属状态"),
    "housing_contract": ("housing_contract.jsonl", None, "utf-8",
                         "contract_no,buyers,seller,project_name,address,use,signed_date,status"),
    "rental": ("rental.jsonl", None, "utf-8",
               "record_no,tenant_name,tenant_id,landlord_id,address,start_date,end_date,registered_date,status"),
    "social_insurance": ("social_insurance.csv", "|", "gb18030", "证件号码|姓名|险种类型|参保状态|单位名称|统一社会信用代码|"
                         "首次参保日期|本地累计缴费月数|最近缴费年月"),
    "individual_business": ("individual_business.csv", ",", "utf-8", "统一社会信用代码,字号名称,经营者姓名,经营者身份证号码,"
                            "经营场所,组成形式,成立日期,登记状态,注销日期"),
    "enterprise": ("enterprise.csv", ",", "utf-8", "统一社会信用代码,企业名称,企业类型,法定代表人,法定代表人证件号码,住所,"
                   "成立日期,登记状态,核准日期"),
}
FULLWIDTH = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789Xx")


class Opaque(tuple):
    """Fixture values whose repr never shows the residents' IDs or names in a failure report."""

    def __repr__(self) -> str:
        return f"<{len(self)} synth objects>"


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = synthesize(root / "a", PEOPLE, 1)
    return Opaque((root, summary))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def newest_complete(root: Path, source: str) -> Path:
    days = sorted(d for d in (root / "landing" / source).iterdir() if (d / "_SUCCESS").exists())
    return days[-1] / SPEC[source][0]


def decoded(root: Path, source: str) -> str:
    return newest_complete(root, source).read_bytes().decode(SPEC[source][2])


def norm_id(value: str) -> str:
    v = value.strip().translate(FULLWIDTH).upper()
    v = v[1:] if v.startswith("'") else v
    v = v[:-2] if v.endswith(".0") else v
    if len(v) == 15:
        v = v[:6] + "19" + v[6:]
        v += check_character(v)
    return v


def norm_date(value: str) -> dt.date | None:
    v = value.strip()
    if not v:
        return None
    if re.fullmatch(r"\d{5}", v):
        return dt.date(1899, 12, 30) + dt.timedelta(days=int(v))
    if re.fullmatch(r"\d{8}", v):
        return dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
    m = re.fullmatch(r"(\d{4})[-/年](\d{1,2})[-/月](\d{1,2})日?(?: \d\d:\d\d:\d\d)?", v)
    return dt.date(*map(int, m.groups()))


def records(root: Path, source: str) -> list[dict]:
    """The delivered records that the truth does not quarantine, with their line, keyed by the spec's English keys."""
    name, sep, _, header = SPEC[source]
    quarantined = set(pd.read_csv(root / "truth" / "quarantine.csv", dtype=str)["record_ref"])
    lines = decoded(root, source).split("\n")[:-1]
    out = []
    if sep is None:
        for n, line in enumerate(lines, start=1):
            if f"{name}:{n}" not in quarantined:
                out.append(json.loads(line) | {"_line": n})
        return out
    keys = {"hukou": "citizen_id name sex birth_date ethnicity household_no relation hukou_address region settled_date "
                     "guardian1_id guardian1_relation guardian2_id guardian2_relation status updated_at",
            "property_title": "certificate_no unit_no owner_name owner_id co_ownership share address use floor_area "
                              "registered_date title_status",
            "social_insurance": "citizen_id name scheme insurance_status employer_name employer_code first_insured_date "
                                "local_months last_paid_month",
            "individual_business": "credit_code trade_name operator_name operator_id address form established_date "
                                   "reg_status closed_date",
            "enterprise": "credit_code name company_type legal_rep_name legal_rep_id address established_date reg_status "
                          "approved_date"}[source].split()
    for n, line in enumerate(lines[1:], start=2):
        if f"{name}:{n}" not in quarantined:
            out.append(dict(zip(keys, line.split(sep))) | {"_line": n})
    return out


# ---------------------------------------------------------------- determinism and layout
def test_one_seed_gives_byte_identical_output_and_another_seed_differs(city, tmp_path):
    root, _ = city
    synthesize(tmp_path / "again", PEOPLE, 1)
    assert tree_hashes(root / "a") == tree_hashes(tmp_path / "again")
    synthesize(tmp_path / "other", PEOPLE, 2)
    other = tree_hashes(tmp_path / "other")
    same = tree_hashes(root / "a")
    assert other.keys() == same.keys()
    assert all(other[k] != same[k] for k in same if k.startswith("landing") and not k.endswith("_SUCCESS"))


def test_every_delivery_has_the_declared_encoding_and_the_sources_md_header(city):
    root, _ = city
    for source, (name, sep, encoding, header) in SPEC.items():
        data = newest_complete(root / "a", source).read_bytes()
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
    root, _ = city
    q = pd.read_csv(root / "a" / "truth" / "quarantine.csv", dtype=str)
    malformed = set(q.loc[q["reason_code"] == "MALFORMED_RECORD", "record_ref"])
    for source, (name, sep, _, header) in SPEC.items():
        lines = decoded(root / "a", source).split("\n")[:-1]
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
            assert ok == (ref not in malformed), ref


def test_deliveries_are_dated_by_as_of_with_an_older_snapshot_and_a_folder_still_being_written(city):
    root, _ = city
    folders = sorted((root / "a" / "landing").glob("*/*"))
    assert {f.parent.name for f in folders} == set(SPEC)
    assert all(dt.date.fromisoformat(f.name) <= AS_OF for f in folders)
    incomplete = [f for f in folders if not (f / "_SUCCESS").exists()]
    assert len(incomplete) == 1
    siblings = sorted((incomplete[0].parent).iterdir())
    assert siblings[-1] == incomplete[0] and len(siblings) >= 2
    complete_counts = pd.Series([f.parent.name for f in folders if (f / "_SUCCESS").exists()]).value_counts()
    assert complete_counts.max() >= 2


def test_resident_ids_are_valid_gb11643_with_hukou_region_and_birth_date(city):
    root, _ = city
    rows = records(root / "a", "hukou")
    assert len(rows) > PEOPLE * 0.9
    for r in rows:
        cid = norm_id(r["citizen_id"])
        assert re.fullmatch(r"\d{17}[\dX]", cid), r["_line"]
        assert check_character(cid[:17]) == cid[17]
        assert cid[:6] == r["region"]
        assert dt.date(int(cid[6:10]), int(cid[10:12]), int(cid[12:14])) == norm_date(r["birth_date"])
        assert (int(cid[16]) % 2 == 1) == (r["sex"] in ("男", "1"))


# ---------------------------------------------------------------- reference data
def test_registry_schools_and_catchments_follow_sources_md(city):
    root, _ = city
    ref = root / "a" / "reference"
    reg = pd.read_csv(ref / "addresses.csv", dtype=str)
    assert list(reg.columns) == ["address_code", "district_code", "street", "community", "road", "door_no", "compound",
                                 "building", "unit", "room", "standard_text", "lon", "lat"]
    assert reg["address_code"].is_unique
    assert 0.3 * PEOPLE <= len(reg) <= 0.5 * PEOPLE
    names = {"371102": "东港区", "371171": "日照经济技术开发区", "371103": "岚山区", "371121": "五莲县", "371122": "莒县"}
    assert set(reg["district_code"]) == set(names)
    composed = (reg["district_code"].map(names) + reg["road"] + reg["door_no"] + "号" + reg["compound"] + reg["building"]
                + "号楼" + reg["unit"] + "单元" + reg["room"] + "室")
    assert (composed == reg["standard_text"]).all()
    assert reg["compound"].str.endswith("小区").any() and (~reg["compound"].str.endswith("小区")).any()
    lon, lat = reg["lon"].astype(float), reg["lat"].astype(float)
    assert lon.between(119.3, 119.6).all() and lat.between(35.3, 35.5).all()
    roads = reg.drop_duplicates(["district_code", "road"])
    assert roads["road"].is_unique  # a text without its district still names one road

    schools = pd.read_csv(ref / "schools.csv", dtype=str)
    assert list(schools.columns) == ["school_code", "school_name", "level", "district_code", "address", "capacity",
                                     "lon", "lat"]
    assert set(schools["level"]) == {"primary", "junior"}
    features = json.loads((ref / "catchments.geojson").read_text(encoding="utf-8"))["features"]
    assert {f["geometry"]["type"] for f in features} == {"Polygon", "MultiPolygon"}
    assert {f["properties"]["enrollment_year"] for f in features} == {2027}
    assert {f["properties"]["school_code"] for f in features} <= set(schools["school_code"])
    points = shapely.points(lon.to_numpy(), lat.to_numpy())
    for level in ("primary", "junior"):
        inside = sum(shapely.contains_xy(shapely.from_geojson(json.dumps(f["geometry"])), lon, lat).astype(int)
                     for f in features if f["properties"]["level"] == level)
        assert (inside == 0).any() and (inside >= 2).any(), level
    assert len(points) == len(reg)
    policy = (ref / "policy.yaml").read_text(encoding="utf-8")
    assert "cutoff_date: 2027-07-31" in policy


# ---------------------------------------------------------------- truth consistency
@pytest.fixture(scope="module")
def delivered(city):
    root, _ = city
    a = root / "a"
    reg = pd.read_csv(a / "reference" / "addresses.csv", dtype=str)
    truth_addr = pd.read_csv(a / "truth" / "addresses.csv", dtype=str, keep_default_na=False)
    code_of = {(s, t): c for s, t, c in truth_addr.itertuples(index=False)}
    point = {c: (float(x), float(y)) for c, x, y in reg[["address_code", "lon", "lat"]].itertuples(index=False)}
    features = json.loads((a / "reference" / "catchments.geojson").read_text(encoding="utf-8"))["features"]
    shapes = {(f["properties"]["school_code"], f["properties"]["level"]): shapely.from_geojson(json.dumps(f["geometry"]))
              for f in features}

    def in_catchment(source, text, school, level):
        code = code_of.get((source, text.strip()), "")
        return bool(code) and shapely.contains_xy(shapes[(school, level)], *point[code])

    recs = {s: records(a, s) for s in SPEC}
    return Opaque((recs, in_catchment, code_of))


def test_each_truth_eligibility_row_has_its_evidence_in_the_deliveries(city, delivered):
    root, _ = city
    recs, in_catchment, code_of = delivered
    elig = pd.read_csv(root / "a" / "truth" / "eligibility.csv", dtype=str)
    hukou = {norm_id(r["citizen_id"]): r for r in recs["hukou"]}
    heads = {}
    for r in recs["hukou"]:
        if r["relation"] in ("户主", "配偶") and r["status"] == "正常":
            heads.setdefault(r["household_no"], set()).add(norm_id(r["citizen_id"]))
    props = {}
    for r in recs["property_title"]:
        if r["use"] == "住宅" and r["title_status"] == "现势" and norm_date(r["registered_date"]) <= CUTOFF:
            props.setdefault(norm_id(r["owner_id"]), []).append(("property_title", r["address"]))
    for r in recs["housing_contract"]:
        if r["use"] == "住宅" and r["status"] == "已备案" and norm_date(r["signed_date"]) <= CUTOFF:
            for b in r["buyers"]:
                props.setdefault(norm_id(b["id"]), []).append(("housing_contract", r["address"]))
    rentals = {}
    for r in recs["rental"]:
        if (r["status"] == "有效" and norm_date(r["registered_date"]) <= CUTOFF
                and norm_date(r["start_date"]) <= CUTOFF <= norm_date(r["end_date"])):
            rentals.setdefault(norm_id(r["tenant_id"]), []).append(("rental", r["address"]))
    assert set(elig["category"]) == {"A1", "A2", "B", "C"}
    for child, level, school, category in elig.itertuples(index=False):
        row = hukou[child]
        named = {norm_id(row[g]) for g in ("guardian1_id", "guardian2_id") if row[g].strip()}
        guardians = named or (heads.get(row["household_no"], set()) if row["relation"] in ("子", "女") else set())
        urban = (row["status"] == "正常" and row["region"] in ("371102", "371171")
                 and norm_date(row["settled_date"]) <= CUTOFF)
        if category in ("A1", "A2"):
            assert (category == "A1") == urban, mask_id(child)
            assert any(in_catchment(s, t, school, level) for p in {child} | guardians for s, t in props.get(p, [])), mask_id(child)
        elif category == "B":
            assert any(in_catchment(s, t, school, level) for g in guardians for s, t in rentals.get(g, [])), mask_id(child)
        else:
            assert urban and in_catchment("hukou", row["hukou_address"], school, level), mask_id(child)


def test_truth_quarantine_refs_point_at_damaged_lines(city):
    root, _ = city
    q = pd.read_csv(root / "a" / "truth" / "quarantine.csv", dtype=str)
    assert set(q["reason_code"]) == {"INVALID_ID_CHECKSUM", "INVALID_ID_FORMAT", "INVALID_DATE", "MISSING_REQUIRED",
                                     "INVALID_CODE", "MALFORMED_RECORD"}
    by_file = {spec[0]: (s, spec) for s, spec in SPEC.items()}
    for ref, reason in zip(q["record_ref"], q["reason_code"]):
        name, line = ref.rsplit(":", 1)
        source, (_, sep, _, _) = by_file[name]
        text = decoded(root / "a", source).split("\n")[int(line) - 1]
        fields = re.split(r"[,|\"\[\]{}: ]+", text)
        if reason == "INVALID_ID_CHECKSUM":
            assert any(re.fullmatch(r"\d{17}[\dX]", f) and check_character(f[:17]) != f[17] for f in fields), ref
        elif reason == "INVALID_ID_FORMAT":
            assert re.search(r"\d\.\d+E\+17|\d{4}A\d|\d{10}13\d{5}[\dX]", text), ref
        elif reason == "INVALID_CODE":
            assert any(code in fields for code in ("待定", "冻结", "草签", "待审核", "未知", "歇业", "停业")), ref


def test_truth_addresses_occur_in_their_source_and_blank_codes_are_not_standard_texts(city):
    root, _ = city
    a = root / "a"
    truth = pd.read_csv(a / "truth" / "addresses.csv", dtype=str, keep_default_na=False)
    assert list(truth.columns) == ["source", "address", "address_code"]
    assert set(truth["source"]) == set(SPEC) - {"social_insurance"}
    standard = set(pd.read_csv(a / "reference" / "addresses.csv", dtype=str)["standard_text"])
    for source, group in truth.groupby("source"):
        text = decoded(a, source)
        assert all(t in text for t in group["address"]), source
    blank = truth[truth["address_code"] == ""]
    assert len(blank) > 0 and not blank["address"].isin(standard).any()
    coded = truth[truth["address_code"] != ""]
    assert (coded["address"] != coded["address"].str.strip()).sum() == 0
    assert (~coded["address"].isin(standard)).any() and coded["address"].isin(standard).any()


# ---------------------------------------------------------------- coverage at default rates
def test_every_kind_of_dirt_and_every_category_appears_at_default_rates(city):
    root, summary = city
    a = root / "a"
    assert all(summary["dirt"].get(f, 0) > 0 for f in ("id_spaces", "id_fullwidth", "id_lowercase_x", "id_legacy15",
                                                       "id_trailing_dot0", "id_quote_prefix", "sex_numeric",
                                                       "name_conflict", "duplicate"))
    assert set(summary["truth"]["categories"]) == {"A1", "A2", "B", "C"}
    text = "\n".join(decoded(a, s) for s in SPEC)
    patterns = {"full-width digits": "[０-９]", "lowercase x": r"\d{17}x", "15-digit ID": r"[\",|]\d{15}[\",|]",
                "trailing .0": r"\d{18}\.0", "quote prefix": r"'\d{17}", "padded ID": r" \d{17}[\dX]|\d{17}[\dX] ",
                "slash date": r"\d{4}/\d{1,2}/\d{1,2}", "compact date": r"[,|\"](19|20)\d{6}[,|\"]",
                "chinese date": r"\d{4}年\d{1,2}月\d{1,2}日", "timestamp date": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
                "serial date": r"[,|\"][34]\d{4}[,|\"]", "山东省日照市": "山东省日照市", "日照市 prefix": "[,\"]日照市",
                "3#2-501": r"\d#\d-\d{3}", "3-2-501": r"号[^,\"]*\D\d{1,2}-\d-\d{3}", "栋": r"栋\d单元", "幢": "幢",
                "chinese numerals": "[一二三四五六七八九十]号楼", "号楼 without 室": r"单元\d{3,4}[,\"|]"}
    for what, pattern in patterns.items():
        assert re.search(pattern, text), what
    for source in SPEC:
        lines = decoded(a, source).split("\n")[:-1]
        assert len(set(lines)) <= len(lines)
    all_lines = [ln for s in SPEC for ln in decoded(a, s).split("\n")[1:-1]]
    assert len(set(all_lines)) < len(all_lines)  # exact duplicates exist


def test_cli_arguments_cover_every_dirt_rate_and_reach_synthesize(tmp_path):
    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "c"), "--people", "300", "--dirt-duplicate", "0"])
    assert args.seed == 1 and args.dirt_duplicate == 0.0
    assert args.dirt_address_variant == DirtRates().address_variant
    summary = synth_from_args(args)
    assert summary["dirt"].get("duplicate", 0) == 0
    with pytest.raises(UsageError):
        synthesize(tmp_path / "d", 10, 1)
    with pytest.raises(UsageError):
        synthesize(tmp_path / "e", 300, 1, DirtRates(duplicate=2.0))


def test_records_cover_every_code_value_and_form_the_issue_names(city, delivered):
    recs, _, _ = delivered
    titles = pd.DataFrame(recs["property_title"])
    assert set(titles["share"]) >= {"", "50%", "1/2", "0.5"}
    assert set(titles["co_ownership"]) == {"单独所有", "共同共有", "按份共有"}
    assert set(titles["title_status"]) == {"现势", "历史", "注销"}
    assert set(titles["use"]) - {"住宅"} and "住宅" in set(titles["use"])
    assert any(norm_date(d) > CUTOFF for d in titles["registered_date"])
    credit = titles.loc[titles["owner_id"].str.fullmatch(r"91\d{6}[0-9A-Z]{10}"), "owner_id"]
    assert len(credit) > 0 and credit.str.len().eq(18).all()
    contracts = pd.DataFrame(recs["housing_contract"])
    assert set(contracts["status"]) == {"已备案", "已撤销", "已注销"}
    assert contracts["buyers"].map(len).max() >= 2
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
    assert set(hukou["region"]) == {"371102", "371171", "371103", "371121", "371122"}
    minors = hukou[hukou["birth_date"].map(norm_date) > dt.date(2010, 1, 1)]
    blank = minors["guardian1_id"].str.strip() == ""
    assert 0 < blank.sum() < len(minors) / 2
