"""Households and residents: who lives where, who is whose child, with valid resident IDs.

Household kinds mirror a real hukou register: couples with children, three generations under
one 户主, children registered with grandparents while the parents live elsewhere, single and
elderly households, and collective households, in the profile's mix. Each enrollment birth window
holds the profile's cohort share of the residents (real cities: about 1.1–1.4 % per birth year);
the other children spread evenly over the remaining ages.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from pipelines.errors import UsageError
from pipelines.policy import Policy
from pipelines.resident_id import check_characters
from pipelines.synth.names import ETHNICITIES, GIVEN_CHARS, SURNAMES
from pipelines.synth.profile import Profile

DAY = np.timedelta64(1, "D")


def _d(day: dt.date) -> np.datetime64:
    return np.datetime64(day, "D")


def _years(n: np.ndarray | float) -> np.ndarray:
    return (np.asarray(n) * 365.25).astype(int) * DAY


def next_day_flags(n: int, added: float, removed: float, rng: np.random.Generator) -> np.ndarray:
    """Per record: 0 delivered both days, 1 first delivered the next day, -1 gone from the next day's
    delivery. At least one of each when the rate is positive, so even a small city shows both."""
    day = np.zeros(n, dtype=np.int8)
    k_add = min(n // 3, max(1, int(round(added * n)))) if added > 0 else 0
    k_rem = min(n // 3, max(1, int(round(removed * n)))) if removed > 0 else 0
    chosen = rng.permutation(n)[: k_add + k_rem]
    day[chosen[:k_add]] = 1
    day[chosen[k_add:]] = -1
    return day


def days_after(day: np.datetime64, until: np.datetime64, n: int, rng: np.random.Generator) -> np.ndarray:
    """Dates in (day, until]: when a record first delivered the next day happened."""
    return day + rng.integers(1, max(1, int((until - day) / DAY)) + 1, n) * DAY


def _births_outside(
    first: np.datetime64,
    last: np.datetime64,
    holes: list[tuple[np.datetime64, np.datetime64]],
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Birth dates uniform over [first, last] leaving out the (inclusive) windows in ``holes``."""
    segments, at = [], first
    for lo, hi in sorted(holes):
        if lo > at:
            segments.append((at, min(lo - DAY, last)))
        at = max(at, hi + DAY)
    if at <= last:
        segments.append((at, last))
    lengths = np.array([int((b - a) / DAY) + 1 for a, b in segments])
    offset = rng.integers(0, lengths.sum(), n)
    seg = np.searchsorted(np.cumsum(lengths), offset, side="right")
    starts = np.array([a for a, _ in segments])
    return starts[seg] + (offset - (np.cumsum(lengths) - lengths)[seg]) * DAY


class _Builder:
    """Collects member rows (one array per column) household kind by kind."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []
        self.next_household = 0

    def households(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_household, self.next_household + n)
        self.next_household += n
        return ids

    def add(self, **cols) -> None:
        self.parts.append(pd.DataFrame(cols))

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.parts, ignore_index=True)


def build_people(
    people: int,
    policy: Policy,
    rooms: pd.DataFrame,
    rng: np.random.Generator,
    as_of: dt.date,
    profile: Profile,
    extract: np.datetime64,
    next_extract: np.datetime64,
) -> pd.DataFrame:
    """One row per resident: clean hukou facts plus the links the records generator needs.

    Columns: citizen_id, name, surname, sex, birth_date, ethnicity, household_no, hh, relation,
    address_code, region, settled_date, guardian1_idx, guardian1_relation, guardian2_idx,
    guardian2_relation, status, updated_at, role, partner_idx (spouse's row), parent_idx (a parent's row),
    day (see ``next_day_flags``). Every date is on or before ``extract`` (hukou's delivery), except
    the settlement of the people first delivered the next day, which lies in (extract, next_extract].
    """
    windows = [(_d(w.birth_from), _d(w.birth_to)) for w in policy.levels]
    today = _d(as_of)

    shares = dict(profile.households)
    kids_weights = np.array(profile.children_per_family) / sum(profile.children_per_family)
    mean_kids = float((np.arange(1, 4) * kids_weights).sum())
    mean_size = {
        "nuclear": 2 - 0.08 + mean_kids,
        "three_gen": 5.5,
        "with_grandparents": 5.0,
        "adults": 1.5,
        "collective": 9.0,
    }
    n_hh = people / sum(shares[k] * mean_size[k] for k in shares)
    count = {k: max(2, int(round(n_hh * shares[k]))) if shares[k] > 0 else 0 for k in shares}
    expected_children = (
        count["nuclear"] * mean_kids
        + count["three_gen"] * 1.5
        + count["with_grandparents"]
        + count["collective"] * 8 * 0.08
    )
    # each window holds cohort_share of the residents per year of its length
    in_window = [
        profile.cohort_share * people * (int((hi - lo) / DAY) + 1) / 365.25 / expected_children for lo, hi in windows
    ]
    if sum(in_window) > 0.9:
        raise UsageError(
            f"synth: profile {profile.name}: cohort_share {profile.cohort_share} needs more children "
            "than its household mix has"
        )

    def child_births(n: int) -> np.ndarray:
        pick = rng.random(n)
        out = _births_outside(today - 18 * 365 * DAY, today - 30 * DAY, windows, n, rng)
        edge = 0.0
        for share, (lo, hi) in zip(in_window, windows):
            inside = (pick >= edge) & (pick < edge + share)
            span = int((hi - lo) / DAY) + 1
            out = np.where(inside, lo + rng.integers(0, span, n) * DAY, out)
            edge += share
        return out

    b = _Builder()
    rows_so_far = [0]

    def add_members(hh, role, relation, birth, sex, surname_of=None, **extra):
        n = len(hh)
        start = rows_so_far[0]
        rows_so_far[0] += n
        b.add(
            hh=hh,
            role=role,
            relation=relation,
            birth_date=birth,
            sex=sex,
            surname_from=(np.arange(start, start + n) if surname_of is None else surname_of),
            **{k: v for k, v in extra.items()},
        )
        return np.arange(start, start + n)

    empty = -1

    # --- couples with children (some single parents)
    n = count["nuclear"]
    hh = b.households(n)
    kids = rng.choice([1, 2, 3], n, p=kids_weights)
    single_parent = rng.random(n) < 0.08
    c_hh = np.repeat(hh, kids)
    c_birth = child_births(len(c_hh))
    eldest = pd.Series(c_birth).groupby(c_hh).transform("min").to_numpy()
    first_kid = pd.Series(c_birth).groupby(c_hh).min().reindex(hh).to_numpy()
    father_birth = first_kid - _years(rng.uniform(24, 38, n))
    mother_birth = father_birth + _years(rng.uniform(-2, 5, n))
    fathers = add_members(hh, "parent", "户主", father_birth, "男")
    mothers = add_members(
        hh[~single_parent], "parent", "配偶", mother_birth[~single_parent], "女", partner_idx=fathers[~single_parent]
    )
    mother_of = np.full(n, empty)
    mother_of[~single_parent] = mothers
    pos = np.searchsorted(hh, c_hh)
    c_sex = np.where(rng.random(len(c_hh)) < 0.52, "男", "女")
    guard_filled = rng.random(len(c_hh)) < 0.8
    add_members(
        c_hh,
        "child",
        np.where(c_sex == "男", "子", "女"),
        c_birth,
        c_sex,
        surname_of=fathers[pos],
        parent_idx=fathers[pos],
        g1=np.where(guard_filled, fathers[pos], empty),
        g1_rel=np.where(guard_filled, "父亲", ""),
        g2=np.where(guard_filled, mother_of[pos], empty),
        g2_rel=np.where(guard_filled & (mother_of[pos] >= 0), "母亲", ""),
    )
    del eldest

    # --- three generations: grandparents head the household, parents and grandchildren live with them
    n = count["three_gen"]
    hh = b.households(n)
    kids = rng.choice([1, 2], n)
    c_hh = np.repeat(hh, kids)
    c_birth = child_births(len(c_hh))
    first_kid = pd.Series(c_birth).groupby(c_hh).min().reindex(hh).to_numpy()
    son_line = rng.random(n) < 0.75  # 子+儿媳 with 孙子/孙女, else 女+女婿 with 外孙子/外孙女
    parent_birth = first_kid - _years(rng.uniform(24, 36, n))
    gp_birth = parent_birth - _years(rng.uniform(22, 32, n))
    gfathers = add_members(hh, "grandparent", "户主", gp_birth, "男")
    add_members(hh, "grandparent", "配偶", gp_birth + _years(rng.uniform(-1, 4, n)), "女", partner_idx=gfathers)
    blood = add_members(
        hh,
        "parent",
        np.where(son_line, "子", "女"),
        parent_birth,
        np.where(son_line, "男", "女"),
        surname_of=gfathers,
        parent_idx=gfathers,
    )
    inlaw = add_members(
        hh,
        "parent",
        np.where(son_line, "儿媳", "女婿"),
        parent_birth + _years(rng.uniform(-3, 3, n)),
        np.where(son_line, "女", "男"),
        partner_idx=blood,
    )
    father = np.where(son_line, blood, inlaw)
    mother = np.where(son_line, inlaw, blood)
    pos = np.searchsorted(hh, c_hh)
    c_sex = np.where(rng.random(len(c_hh)) < 0.52, "男", "女")
    rel = np.where(son_line[pos], np.where(c_sex == "男", "孙子", "孙女"), np.where(c_sex == "男", "外孙子", "外孙女"))
    guard_filled = rng.random(len(c_hh)) < 0.8
    add_members(
        c_hh,
        "child",
        rel,
        c_birth,
        c_sex,
        surname_of=father[pos],
        parent_idx=father[pos],
        g1=np.where(guard_filled, father[pos], empty),
        g1_rel=np.where(guard_filled, "父亲", ""),
        g2=np.where(guard_filled, mother[pos], empty),
        g2_rel=np.where(guard_filled, "母亲", ""),
    )

    # --- a child registered with grandparents; the parents are a household of their own elsewhere
    n = count["with_grandparents"]
    hh_gp = b.households(n)
    hh_par = b.households(n)
    c_birth = child_births(n)
    parent_birth = c_birth - _years(rng.uniform(24, 36, n))
    gp_birth = parent_birth - _years(rng.uniform(22, 32, n))
    pa = add_members(hh_par, "parent", "户主", parent_birth, "男")
    ma = add_members(hh_par, "parent", "配偶", parent_birth + _years(rng.uniform(-2, 4, n)), "女", partner_idx=pa)
    gf = add_members(hh_gp, "grandparent", "户主", gp_birth, "男", surname_of=pa)
    gm = add_members(hh_gp, "grandparent", "配偶", gp_birth + _years(rng.uniform(-1, 4, n)), "女", partner_idx=gf)
    how = rng.random(n)  # guardians: the parents, the grandparents, or nobody recorded
    c_sex = np.where(rng.random(n) < 0.52, "男", "女")
    add_members(
        hh_gp,
        "child",
        np.where(c_sex == "男", "孙子", "孙女"),
        c_birth,
        c_sex,
        surname_of=pa,
        parent_idx=pa,
        g1=np.select([how < 0.6, how < 0.8], [pa, gf], empty),
        g1_rel=np.select([how < 0.6, how < 0.8], ["父亲", "祖父母"], ""),
        g2=np.select([how < 0.6, how < 0.8], [ma, gm], empty),
        g2_rel=np.select([how < 0.6, how < 0.8], ["母亲", "祖父母"], ""),
    )

    # --- adults on their own or as a couple
    n = count["adults"]
    hh = b.households(n)
    couple = rng.random(n) < 0.5
    birth = today - _years(rng.uniform(19, 92, n))
    heads = add_members(hh, "adult", "户主", birth, np.where(rng.random(n) < 0.5, "男", "女"))
    add_members(
        hh[couple],
        "adult",
        "配偶",
        birth[couple] + _years(rng.uniform(-3, 3, couple.sum())),
        "女",
        partner_idx=heads[couple],
    )

    # --- collective households (dormitories): unrelated adults, now and then a minor with nobody linked
    n = count["collective"]
    hh = b.households(n)
    size = rng.integers(4, 15, n)
    m_hh = np.repeat(hh, size)
    first = np.r_[True, m_hh[1:] != m_hh[:-1]]
    minor = ~first & (rng.random(len(m_hh)) < 0.08)
    birth = np.where(minor, child_births(len(m_hh)), today - _years(rng.uniform(18, 60, len(m_hh))))
    add_members(
        m_hh,
        np.where(minor, "child", "adult"),
        np.where(first, "户主", "其他"),
        birth,
        np.where(rng.random(len(m_hh)) < 0.5, "男", "女"),
    )

    p = b.frame()
    for col in ("g1", "g2", "partner_idx", "parent_idx"):
        p[col] = p[col].fillna(empty).astype(np.int64) if col in p else empty
    for col in ("g1_rel", "g2_rel"):
        p[col] = p[col].fillna("")
    p["birth_date"] = p["birth_date"].to_numpy().astype("datetime64[D]")
    p["birth_date"] = np.minimum(p["birth_date"].to_numpy(), today - 30 * DAY)
    return _finish(p, rooms, rng, policy, today, profile, extract, next_extract)


def _finish(
    p: pd.DataFrame,
    rooms: pd.DataFrame,
    rng: np.random.Generator,
    policy: Policy,
    today: np.datetime64,
    profile: Profile,
    extract: np.datetime64,
    next_extract: np.datetime64,
) -> pd.DataFrame:
    n = len(p)
    n_hh = int(p["hh"].max()) + 1
    cutoff = _d(policy.cutoff_date)
    # one room per household (without replacement while rooms last); the room fixes the district
    order = rng.permutation(len(rooms))
    room_of_hh = order[np.arange(n_hh) % len(rooms)]
    p["address_code"] = rooms["address_code"].to_numpy()[room_of_hh][p["hh"]]
    p["region"] = rooms["district_code"].to_numpy()[room_of_hh][p["hh"]]
    p["household_no"] = (
        pd.Series(100000000 + rng.choice(899999999, n_hh, replace=False)).astype(str).to_numpy()[p["hh"]]
    )

    surnames = np.array(SURNAMES, dtype=object)[rng.integers(0, len(SURNAMES), n)]
    p["surname"] = surnames[p["surname_from"].to_numpy()]
    given = np.array(GIVEN_CHARS, dtype=object)
    two = rng.random(n) < 0.7
    p["name"] = (
        p["surname"] + given[rng.integers(0, len(given), n)] + np.where(two, given[rng.integers(0, len(given), n)], "")
    )
    p["ethnicity"] = np.array(ETHNICITIES, dtype=object)[rng.integers(0, len(ETHNICITIES), n)]

    # settlement: households arrive over decades; a few after the cutoff; people born later settle at birth
    hh_settle = today - rng.integers(60, 30 * 365, n_hh) * DAY
    late = rng.random(n_hh) < 0.03
    hh_settle = np.where(late, cutoff + rng.integers(1, 10, n_hh) * DAY, hh_settle)
    birth = p["birth_date"].to_numpy()
    p["settled_date"] = np.maximum(hh_settle[p["hh"]], birth + rng.integers(5, 60, n) * DAY)
    p["settled_date"] = np.minimum(p["settled_date"].to_numpy(), extract)

    status = np.full(n, "正常", dtype=object)
    moved = rng.random(n_hh) < 0.04
    status[moved[p["hh"]]] = "迁出"
    age = (today - birth) / DAY / 365.25
    r = rng.random(n)
    status[(age > 70) & (r < 0.12)] = "死亡"
    status[(p["role"] == "child").to_numpy() & (r < 0.012)] = "死亡"
    status[(age <= 70) & (r > 0.995)] = "注销"
    p["status"] = status
    p["updated_at"] = np.minimum(
        np.maximum(p["settled_date"].to_numpy(), today - 900 * DAY) + rng.integers(0, 3, n) * DAY, extract
    )
    # a few people register here only in the next day's delivery, a few leave it
    p["day"] = next_day_flags(n, profile.next_day_added, profile.next_day_removed, rng)
    arriving = (p["day"] == 1).to_numpy()
    arrived = days_after(extract, next_extract, int(arriving.sum()), rng)
    p.loc[arriving, "settled_date"] = arrived
    p.loc[arriving, "updated_at"] = arrived

    # resident IDs: region + birth + sequence (odd for men) + check character
    ymd = pd.Series(pd.to_datetime(birth).strftime("%Y%m%d"))
    key = pd.DataFrame({"r": p["region"], "b": ymd, "s": p["sex"]})
    k = key.groupby(["r", "b", "s"], sort=False).cumcount().to_numpy()
    offset = (pd.to_datetime(birth).day_of_year.to_numpy() * 7 + p["region"].astype(int).to_numpy()) % 90
    seq = 2 * (k + offset) + np.where(p["sex"] == "男", 1, 2)
    if seq.max() >= 1000:
        raise ValueError("too many people born on one day in one county for 3-digit sequences")
    first17 = p["region"] + ymd + pd.Series(seq).map("{:03d}".format)
    p["citizen_id"] = (first17 + check_characters(first17)).to_numpy()

    ids = p["citizen_id"].to_numpy()
    for g in ("g1", "g2"):
        idx = p[g].to_numpy()
        p[f"guardian{g[1]}_id"] = np.where(idx >= 0, ids[np.maximum(idx, 0)], "")
    p = p.rename(
        columns={
            "g1_rel": "guardian1_relation",
            "g2_rel": "guardian2_relation",
            "g1": "guardian1_idx",
            "g2": "guardian2_idx",
        }
    )
    p["person"] = np.arange(n)
    return p
