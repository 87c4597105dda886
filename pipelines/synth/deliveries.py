"""Render clean facts into the seven departmental deliveries, dirt included, and record what
the truth needs: which records were damaged (and their line), which texts each source carries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.synth import dirt as D

HEADERS = {
    "hukou": ["公民身份号码", "姓名", "性别", "出生日期", "民族", "户号", "与户主关系", "户籍地址", "户籍地行政区划代码",
              "迁入本址日期", "监护人一公民身份号码", "监护人一关系", "监护人二公民身份号码", "监护人二关系", "人员状态", "更新时间"],
    "property_title": ["不动产权证号", "不动产单元号", "权利人", "权利人证件号码", "共有方式", "权利份额", "坐落", "规划用途",
                       "建筑面积", "登记日期", "权属状态"],
    "social_insurance": ["证件号码", "姓名", "险种类型", "参保状态", "单位名称", "统一社会信用代码", "首次参保日期",
                         "本地累计缴费月数", "最近缴费年月"],
    "individual_business": ["统一社会信用代码", "字号名称", "经营者姓名", "经营者身份证号码", "经营场所", "组成形式", "成立日期",
                            "登记状态", "注销日期"],
    "enterprise": ["统一社会信用代码", "企业名称", "企业类型", "法定代表人", "法定代表人证件号码", "住所", "成立日期", "登记状态",
                   "核准日期"],
}
FILES = {"hukou": ("hukou.csv", ",", "gb18030"), "property_title": ("property_title.csv", ",", "utf-8-sig"),
         "housing_contract": ("housing_contract.jsonl", None, "utf-8"), "rental": ("rental.jsonl", None, "utf-8"),
         "social_insurance": ("social_insurance.csv", "|", "gb18030"),
         "individual_business": ("individual_business.csv", ",", "utf-8"), "enterprise": ("enterprise.csv", ",", "utf-8")}
BAD_CODE = {"hukou": "待定", "property_title": "冻结", "housing_contract": "草签", "rental": "待审核",
            "social_insurance": "未知", "individual_business": "歇业", "enterprise": "停业"}


@dataclass
class SourceText:
    """One source as delivered text, one row per record, plus what damage may touch."""
    source: str
    fields: pd.DataFrame                 # str columns in delivery order (JSON: keys; buyers as list column)
    id_col: str                          # the ID that damage to IDs hits
    date_col: str
    code_col: str
    required_col: str
    damageable: np.ndarray               # bool per row
    clean_ids: np.ndarray = field(default=None)  # the clean 18-character ID behind ``id_col``
    facts: pd.DataFrame = field(default=None)      # the clean facts, row-aligned (for the truth)
    addresses: pd.DataFrame | None = None  # per row: text (as delivered), code (truth; '' if unresolvable)
    damage: np.ndarray = field(default=None)  # per row DAMAGE index or -1 (filled by apply_damage)
    line: np.ndarray = field(default=None)    # per row: physical line of its first copy


def apply_damage(st: SourceText, rng, rates: dict[str, float], counts: dict[str, int]) -> None:
    n = len(st.fields)
    kind = D.choose_damage(rng, n, rates, st.damageable)
    f = st.fields
    for k, name in enumerate(D.DAMAGE):
        m = kind == k
        if not m.any():
            continue
        counts[name] = counts.get(name, 0) + int(m.sum())
        if name == "damage_checksum":
            f.loc[m, st.id_col] = D.wrong_checksum(st.clean_ids[m])
        elif name == "damage_id_format":
            f.loc[m, st.id_col] = D.bad_format_ids(st.clean_ids[m], rng)
        elif name == "damage_date":
            f.loc[m, st.date_col] = D.bad_dates(int(m.sum()), rng)
        elif name == "damage_missing":
            f.loc[m, st.required_col] = ""
        elif name == "damage_code":
            f.loc[m, st.code_col] = BAD_CODE[st.source]
    st.damage = kind


def _json_lines(f: pd.DataFrame) -> pd.Series:
    """JSON objects by concatenation: values never hold quotes, backslashes or control characters."""
    out = None
    for col in f.columns:
        if col == "buyers":
            value = f[col]
        else:
            value = '"' + f[col].astype(object) + '"'
        piece = '"' + col + '": ' + value
        out = ("{" + piece) if out is None else (out + ", " + piece)
    return out + "}"


def render_lines(st: SourceText, rng, duplicate_rate: float, counts: dict[str, int]) -> tuple[list[str], str]:
    """The file's lines (no header) in delivery order, with exact duplicates; sets ``st.line``."""
    name, sep, _ = FILES[st.source]
    f = st.fields
    for col in f.columns:
        if col == "buyers":
            continue
        bad = f[col].astype(str).str.contains(r'["\\\n\r]' + ("" if sep is None else "|" + ("\\|" if sep == "|" else sep)),
                                             regex=True)
        if bad.any():
            raise ValueError(f"synth: {st.source}.{col} holds a character that would need quoting")
    if sep is None:
        lines = _json_lines(f).astype(object)
    else:
        lines = f.iloc[:, 0].astype(object)
        for col in f.columns[1:]:
            lines = lines + sep + f[col].astype(object)
    lines = lines.to_numpy(dtype=object).copy()
    malformed = st.damage == D.DAMAGE.index("damage_malformed")
    if malformed.any():
        mal = pd.Series(lines[malformed])
        if sep is None:
            mal = mal.str.slice(0, -2)  # a cut-off JSON object
        else:
            extra = rng.random(len(mal)) < 0.5
            mal = pd.Series(np.where(extra, mal + sep + "备注", mal.str.rsplit(sep, n=1).str[0]))
        lines[malformed] = mal.to_numpy(dtype=object)
    n = len(lines)
    dup = (rng.random(n) < duplicate_rate) & (st.damage < 0)
    counts["duplicate"] = counts.get("duplicate", 0) + int(dup.sum())
    src = np.flatnonzero(dup)
    keys = np.concatenate([np.arange(n, dtype=float), src + 0.5 + rng.random(len(src)) * (n - src - 0.5)])
    order = np.argsort(keys, kind="stable")
    all_lines = np.concatenate([lines, lines[src]])[order]
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))
    first_line = 2 if sep is not None else 1
    st.line = position[:n] + first_line
    if sep is not None:
        header = sep.join(HEADERS[st.source])
        return [header] + all_lines.tolist(), name
    return all_lines.tolist(), name


def write_file(folder: Path, name: str, lines: list[str], encoding: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    data = text.encode("gb18030" if encoding == "gb18030" else "utf-8")
    if encoding == "utf-8-sig":
        data = b"\xef\xbb\xbf" + data
    (folder / name).write_bytes(data)
    return len(data)


def deliver(root: Path, source: str, day: dt.date, lines: list[str], complete: bool = True) -> Path:
    name, _, encoding = FILES[source]
    folder = root / "landing" / source / day.isoformat()
    write_file(folder, name, lines, encoding)
    if complete:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder / name
