"""Reading a synthesized city's files the way sources.md describes them: the delivery format of
each source (typed out again here on purpose, not imported from the implementation), the
delivery a run uses, its lines as records keyed in English, and the values normalized as a
careful reader would. The synth and the profile tests measure the city through these."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd
import yaml
from resident_ids import resident_id

import pipelines.synth

AS_OF = dt.date(2027, 8, 15)
PROFILES = ("default", "weifang")
PROFILE_DIR = Path(pipelines.synth.__file__).parent / "profiles"

# sources.md, typed out again here on purpose (not imported from the implementation)
SPEC = {
    "hukou": (
        "hukou.csv",
        ",",
        "gb18030",
        "公民身份号码,姓名,性别,出生日期,民族,户号,与户主关系,户籍地址,户籍地行政区划代码,"
        "迁入本址日期,监护人一公民身份号码,监护人一关系,监护人二公民身份号码,监护人二关系,人员状态,更新时间",
    ),
    "property_title": (
        "property_title.csv",
        ",",
        "utf-8-sig",
        "不动产权证号,不动产单元号,权利人,权利人证件号码,共有方式,权利份额,坐落,规划用途,建筑面积,登记日期,权属状态",
    ),
    "housing_contract": (
        "housing_contract.jsonl",
        None,
        "utf-8",
        "contract_no,buyers,seller,project_name,address,use,signed_date,status",
    ),
    "rental": (
        "rental.jsonl",
        None,
        "utf-8",
        "record_no,tenant_name,tenant_id,landlord_id,address,start_date,end_date,registered_date,status",
    ),
    "social_insurance": (
        "social_insurance.csv",
        "|",
        "gb18030",
        "证件号码|姓名|险种类型|参保状态|单位名称|统一社会信用代码|首次参保日期|本地累计缴费月数|最近缴费年月",
    ),
    "individual_business": (
        "individual_business.csv",
        ",",
        "utf-8",
        "统一社会信用代码,字号名称,经营者姓名,经营者身份证号码,经营场所,组成形式,成立日期,登记状态,注销日期",
    ),
    "enterprise": (
        "enterprise.csv",
        ",",
        "utf-8",
        "统一社会信用代码,企业名称,企业类型,法定代表人,法定代表人证件号码,住所,成立日期,登记状态,核准日期",
    ),
}
KEYS = {
    "hukou": "citizen_id name sex birth_date ethnicity household_no relation hukou_address region settled_date "
    "guardian1_id guardian1_relation guardian2_id guardian2_relation status updated_at",
    "property_title": "certificate_no unit_no owner_name owner_id co_ownership share address use floor_area "
    "registered_date title_status",
    "social_insurance": "citizen_id name scheme insurance_status employer_name employer_code first_insured_date "
    "local_months last_paid_month",
    "individual_business": "credit_code trade_name operator_name operator_id address form established_date "
    "reg_status closed_date",
    "enterprise": "credit_code name company_type legal_rep_name legal_rep_id address established_date reg_status "
    "approved_date",
}
# sources.md "Dates": events that cannot have happened after the extract date
EVENTS = {
    "hukou": ("birth_date", "settled_date"),
    "property_title": ("registered_date",),
    "housing_contract": ("signed_date",),
    "rental": ("registered_date",),
    "social_insurance": ("first_insured_date",),
    "individual_business": ("established_date", "closed_date"),
    "enterprise": ("established_date", "approved_date"),
}
FULLWIDTH = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789Xx")


class Opaque(tuple):
    """Fixture values whose repr never shows the residents' IDs or names in a failure report."""

    def __repr__(self) -> str:
        return f"<{len(self)} synth objects>"


def profile_doc(name: str) -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def newest_complete(root: Path, source: str, as_of: dt.date = AS_OF) -> Path:
    """The delivery a run with this as-of uses (sources.md): newest complete folder dated on or before it."""
    days = sorted(
        d
        for d in (root / "landing" / source).iterdir()
        if (d / "_SUCCESS").exists() and dt.date.fromisoformat(d.name) <= as_of
    )
    return days[-1] / SPEC[source][0]


def decoded(root: Path, source: str, as_of: dt.date = AS_OF) -> str:
    return newest_complete(root, source, as_of).read_bytes().decode(SPEC[source][2])


def truth_dir(root: Path, as_of: dt.date) -> Path:
    return root / "truth" if as_of == AS_OF else root / "truth" / "next_day"


def norm_id(value: str) -> str:
    v = value.strip().translate(FULLWIDTH).upper()
    v = v[1:] if v.startswith("'") else v
    v = v[:-2] if v.endswith(".0") else v
    if len(v) == 15:
        v = resident_id(v[:6] + "19" + v[6:])
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


def maybe_date(value: str) -> dt.date | None:
    try:
        return norm_date(value)
    except (AttributeError, ValueError):
        return None


def parse_lines(root: Path, source: str, as_of: dt.date = AS_OF) -> list[dict | None]:
    """Every line of the delivery as a record keyed by the spec's English keys (None: does not parse)."""
    name, sep, _, header = SPEC[source]
    lines = decoded(root, source, as_of).split("\n")[:-1]
    out: list[dict | None] = []
    if sep is None:
        for n, line in enumerate(lines, start=1):
            try:
                out.append(json.loads(line) | {"_line": n})
            except json.JSONDecodeError:
                out.append(None)
        return out
    keys = KEYS[source].split()
    out.append(None)  # the header
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split(sep)
        out.append(dict(zip(keys, fields)) | {"_line": n} if len(fields) == len(keys) else None)
    return out


def records(root: Path, source: str, as_of: dt.date = AS_OF) -> list[dict]:
    """The delivered records that the truth does not quarantine, with their line."""
    name = SPEC[source][0]
    quarantined = set(pd.read_csv(truth_dir(root, as_of) / "quarantine.csv", dtype=str)["record_ref"])
    return [r for r in parse_lines(root, source, as_of) if r is not None and f"{name}:{r['_line']}" not in quarantined]
