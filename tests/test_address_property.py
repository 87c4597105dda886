"""Property test over a whole registry and thousands of department-style texts.

The registry repeats road names across three districts, holds rooms that exist in two
districts and rooms that exist in one, phased compounds and compound names ending in a
number. Texts are written from registry rows the way departments write them. What must hold:

- a resolved text has exactly its one code as candidates; ``ambiguous`` has no code and two
  or more distinct registry codes; ``unmatched`` has no code and no candidates;
- a text written from an address, without a district or with its own, never resolves to
  another address (a wrong match is worse than none);
- for texts that keep every component (no typo, no space inside a number), the outcome is
  exactly what the registry says: the addresses with those components (in the district
  written, if one is) — one resolves, several are ambiguous and all listed, none is unmatched;
- the review hint says ``district_missing`` exactly when no district is written and the
  addresses that fit lie in several districts.
"""

from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest

from pipelines.addresses import AddressRegistry, resolve_texts
from pipelines.addresses.match import HINTS, explain
from pipelines.synth.dirt import DIGITS
from pipelines.synth.dirt import chinese_numeral as chinese  # 26 → 二十六, as people write numbers

DISTRICTS = {"371102": "东港区", "371103": "岚山区", "371122": "莒县"}
ROADS = ["人民路", "中山路", "解放路", "海曲中路", "海曲东路", "泰安路"]
COMPOUNDS = [
    "阳光花园",
    "金色家园",
    "明珠花园三期",
    "明珠花园二期",
    "明珠花园小区东区",
    "丽景湾小区",
    "翠竹苑",
    "阳光100",
    "花园城一",
    "海韵3期",
]
PHASE = re.compile(
    r"^(?P<stem>.*?)(?:小区)?(?P<number>[0-9]+|[一二三四五六七八九十]+|[东南西北中])"
    r"(?P<kind>期|区)$"
)


def digit_by_digit(n: int) -> str:
    """501 → 五零一 (how people write room numbers)."""
    return "".join(DIGITS[int(d)] for d in str(n))


def build_registry(rng: random.Random) -> pd.DataFrame:
    """Blocks (road, door, compound) each with one building layout; every district holding a
    block keeps its own random three quarters of the rooms."""
    blocks = {}
    for road in ROADS:
        for door in rng.sample(range(1, 40, 2), 3):
            for compound in rng.sample(COMPOUNDS, rng.choice([1, 2])):
                layout = [
                    (b, u, floor * 100 + side)
                    for b in rng.sample(range(1, 13), rng.randint(1, 3))
                    for u in ([""] if rng.random() < 0.3 else ["1", "2"][: rng.randint(1, 2)])
                    for floor in range(1, rng.randint(2, 7))
                    for side in (1, 2)
                ]
                districts = rng.sample(list(DISTRICTS), rng.choice([1, 2, 2, 3]))
                blocks[(road, str(door), compound)] = (layout, districts)
    rows = []
    for (road, door, compound), (layout, districts) in blocks.items():
        for district in districts:
            for b, u, room in layout:
                if rng.random() < 0.75:
                    tail = f"{b}号楼{u}单元{room}室" if u else f"{b}号楼{room}室"
                    rows.append(
                        dict(
                            district_code=district,
                            street="街道",
                            community="社区",
                            road=road,
                            door_no=door,
                            compound=compound,
                            building=str(b),
                            unit=u,
                            room=str(room),
                            lon=1.0,
                            lat=1.0,
                            standard_text=f"{DISTRICTS[district]}{road}{door}号{compound}{tail}",
                        )
                    )
    frame = pd.DataFrame(rows)
    frame.insert(0, "address_code", [f"{d}{i:06d}" for i, d in enumerate(frame["district_code"])])
    return frame


def compound_forms(name: str) -> list[str]:
    """The ways departments write one compound: 小区 added or dropped, phase numerals."""
    base = name.removesuffix("小区")
    forms = {name, base, base + "小区"}
    phase = PHASE.match(base)
    if phase:
        stem, number, kind = phase["stem"], phase["number"], phase["kind"]
        numbers = {number}
        if number.isdigit():
            numbers.add(chinese(int(number)))
        elif number[0] in DIGITS + "十":
            numbers.add(
                str(int("".join(str(DIGITS.index(c)) for c in number if c != "十") if "十" not in number else 10))
            )
        for n in numbers:
            forms |= {stem + n + kind, stem + "小区" + n + kind, stem + n + kind + "小区"}
    return sorted(forms)


def write_text(row: dict, rng: random.Random) -> dict:
    """One department text for a registry row, and what was done to it."""
    own = row["district_code"]
    choice = rng.random()
    district = own if choice < 0.4 else (None if choice < 0.85 else rng.choice([d for d in DISTRICTS if d != own]))
    prefix = rng.choice(["", "日照市", "山东省日照市"]) + (DISTRICTS[district] if district else "")
    door = int(row["door_no"])
    building, unit, room = int(row["building"]), row["unit"], int(row["room"])
    corrupt = rng.random()
    missing_room = corrupt < 0.1
    typo = 0.1 <= corrupt < 0.18 and len(row["compound"]) >= 4
    if missing_room:
        room = 9901
    spaced_number = not missing_room and rng.random() < 0.1

    door_s = chinese(door) if rng.random() < 0.2 else str(door)
    compound = rng.choice(compound_forms(row["compound"]))
    if typo:
        at = rng.randrange(len(compound) - 1)
        compound = compound[:at] + ("圆" if compound[at] != "圆" else "苑") + compound[at + 1 :]
    worded = rng.random() < 0.6
    numerals = worded and rng.random() < 0.3
    b_s = chinese(building) if numerals else str(building)
    u_s = chinese(int(unit)) if numerals and unit else unit
    r_s = digit_by_digit(room) if numerals and rng.random() < 0.5 else str(room)
    if spaced_number and not numerals:
        r_s = r_s[:1] + " " + r_s[1:]
    if spaced_number and door_s.isdigit() and len(door_s) > 1 and rng.random() < 0.5:
        door_s = door_s[:1] + " " + door_s[1:]
    if worded:
        mark = rng.choice(["号楼", "栋", "幢"])
        tail = (f"{b_s}{mark}{u_s}单元{r_s}" if unit else f"{b_s}{mark}{r_s}") + rng.choice(["", "室", "号"])
    else:
        tail = rng.choice([f"{b_s}-{u_s}-{r_s}", f"{b_s}#{u_s}-{r_s}"]) if unit else f"{b_s}-{r_s}"
    gap = lambda: " " if rng.random() < 0.1 else ""  # noqa: E731
    text = f"{prefix}{gap()}{row['road']}{door_s}号{gap()}{compound}{gap()}{tail}"
    spaced_number = spaced_number and re.search(r"[0-9] [0-9]", text) is not None
    return dict(
        text=text,
        code=row["address_code"],
        district=district,
        own_district=district in (None, own),
        clean=not (typo or spaced_number),
        missing_room=missing_room,
        road=row["road"],
        door_no=row["door_no"],
        compound=row["compound"],
        building=row["building"],
        unit=row["unit"],
        room=str(room),
    )


def fitting(registry: pd.DataFrame, written: pd.DataFrame) -> pd.Series:
    """Per text, the registry addresses with its components (in the district written, if any)."""
    components = ["road", "door_no", "compound", "building", "unit", "room"]
    addresses = {}
    for row in registry.itertuples(index=False):
        key = tuple(getattr(row, c) for c in components)
        addresses.setdefault(key, []).append((row.district_code, row.address_code))
    return pd.Series(
        [
            sorted(
                code
                for district, code in addresses.get(tuple(w[c] for c in components), [])
                if w["district"] is None or district == w["district"]
            )
            for w in written.to_dict("records")
        ],
        index=written.index,
        dtype=object,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_status_candidates_and_codes_follow_the_registry(seed):
    rng = random.Random(seed)
    frame = build_registry(rng)
    registry = AddressRegistry.from_frame(frame)
    components = ["road", "door_no", "compound", "building", "unit", "room"]
    spread = frame.groupby(components)["district_code"].nunique()
    # The registry must hold what the test is about.
    assert (spread > 1).any() and (spread == 1).any()
    assert frame.groupby("road")["district_code"].nunique().min() > 1

    rows = frame.to_dict("records")
    written = pd.DataFrame(
        [write_text(rows[rng.randrange(len(rows))], rng) for _ in range(3000)], dtype=object
    ).drop_duplicates("text")
    resolved = resolve_texts(written["text"], registry).set_index("address")
    written = written.join(resolved, on="text")
    written["candidates"] = written["candidates"].map(json.loads)
    codes = set(frame["address_code"])
    assert set(written["status"]) <= {"exact", "normalized", "fuzzy", "ambiguous", "unmatched"}

    placed = written["status"].isin(["exact", "normalized", "fuzzy"])
    assert (written.loc[placed, "candidates"] == written.loc[placed, "address_code"].map(lambda c: [c])).all()
    assert written.loc[placed, "address_code"].isin(codes).all()
    ambiguous = written.loc[written["status"] == "ambiguous"]
    assert ambiguous["address_code"].isna().all()
    assert ambiguous["candidates"].map(lambda c: len(c) >= 2 and len(set(c)) == len(c) and set(c) <= codes).all()
    unmatched = written.loc[written["status"] == "unmatched"]
    assert unmatched["address_code"].isna().all() and (unmatched["candidates"].map(len) == 0).all()

    own = written.loc[written["own_district"]]
    wrong = own.loc[own["address_code"].notna() & (own["address_code"] != own["code"])]
    assert wrong.empty, wrong[["text", "code", "address_code"]].head().to_dict("records")
    assert written.loc[written["missing_room"], "status"].eq("unmatched").all()

    clean = written.loc[written["clean"]].copy()
    clean["expected"] = fitting(frame, clean)
    got = [
        c if s in ("exact", "normalized", "ambiguous") else ([] if s == "unmatched" else ["fuzzy"])
        for s, c in zip(clean["status"], clean["candidates"])
    ]
    differs = clean.loc[[g != e for g, e in zip(got, clean["expected"])]]
    assert differs.empty, differs[["text", "status", "candidates", "expected"]].head().to_dict("records")
    assert (clean["expected"].map(len) == 1).sum() > 500 and (clean["expected"].map(len) >= 2).sum() > 50

    review = clean.loc[clean["status"] == "ambiguous"]
    hints = explain(review["text"], registry).to_numpy()
    assert set(hints) <= set(HINTS)
    district_of = frame.set_index("address_code")["district_code"]
    spans = review["candidates"].map(lambda c: district_of[c].nunique() > 1).to_numpy()
    expected_hint = [
        "district_missing" if s and d is None else "several_codes" for s, d in zip(spans, review["district"])
    ]
    assert list(hints) == expected_hint


def test_texts_resolved_a_few_at_a_time_resolve_as_all_at_once():
    rng = random.Random(4)
    frame = build_registry(rng)
    registry = AddressRegistry.from_frame(frame)
    rows = frame.to_dict("records")
    texts = pd.Series([write_text(rows[rng.randrange(len(rows))], rng)["text"] for _ in range(2000)])
    texts = pd.concat([texts, texts.sample(300, random_state=4), pd.Series([None])], ignore_index=True)
    at_once = resolve_texts(texts, registry)
    assert set(at_once["status"]) == {"exact", "normalized", "fuzzy", "ambiguous", "unmatched"}
    for per_pass in (13, 500):
        pd.testing.assert_frame_equal(resolve_texts(texts, registry, per_pass=per_pass), at_once)
