"""The departments' records about the residents, as clean facts (before any dirt).

Every frame keeps the person row it belongs to (``person``) and, where it has one, the
registry room it lies at (``address_code``), so the dirt step can render texts and the truth
step can evaluate policy.md on exactly these facts. Every event date lies on or before its
source's extract date (staging quarantines any later one), and every frame has ``day`` (see
``people.next_day_flags``): records first delivered the next day happened after today's extract.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from pipelines.policy import Policy
from pipelines.synth.names import COMPANY_TYPES, COMPOUND_HEADS, INDUSTRIES, SHOP_KINDS, clean
from pipelines.synth.people import DAY, _d, days_after, next_day_flags
from pipelines.synth.profile import Profile

# the dates of each source that record an event, so cannot lie after the delivery's extract date
EVENT_DATES = {
    "hukou": ("birth_date", "settled_date"),
    "property_title": ("registered_date",),
    "housing_contract": ("signed_date",),
    "rental": ("registered_date",),
    "social_insurance": ("first_insured_date",),
    "individual_business": ("established_date", "closed_date"),
    "enterprise": ("established_date", "approved_date"),
}

CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28])
ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2])


def credit_codes(kind: str, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unified social credit codes (GB 32100) with valid organization-code and final check characters.

    ``kind`` is the two-character registration prefix: 91 enterprise, 92 individual business.
    """
    n = len(regions)
    body = rng.integers(0, 10, (n, 8))
    org_check = (11 - (body * ORG_WEIGHTS).sum(axis=1) % 11) % 11
    region_text = "".join(np.asarray(regions, dtype=str).tolist()).encode("ascii")
    region_digits = (np.frombuffer(region_text, dtype=np.uint8).reshape(n, 6) - ord("0")).astype(np.int64)
    values = np.column_stack(
        [
            np.full(n, int(kind[0])),
            np.full(n, int(kind[1])),
            region_digits,
            body,
            np.where(org_check == 10, CREDIT_CHARS.index("X"), org_check),
        ]
    )
    check = (31 - (values * CREDIT_WEIGHTS).sum(axis=1) % 31) % 31
    table = np.frombuffer(CREDIT_CHARS.encode("ascii"), dtype=np.uint8)
    chars = np.ascontiguousarray(table[np.column_stack([values, check])])
    return chars.view("S18").ravel().astype(str).astype(object)


def _company_names(rng, n: int, prefix: str, kinds: tuple[str, ...], suffix: str) -> np.ndarray:
    heads = np.array(clean(COMPOUND_HEADS), dtype=object)[rng.integers(0, 60, n)]
    return prefix + heads + np.array(kinds, dtype=object)[rng.integers(0, len(kinds), n)] + suffix


def _dates_between(lo: np.datetime64, hi: np.datetime64, n: int, rng) -> np.ndarray:
    span = max(1, int((hi - lo) / DAY))
    return lo + rng.integers(0, span + 1, n) * DAY


def _after_cutoff(cutoff, n, rng):
    return cutoff + rng.integers(1, 10, n) * DAY


def build_records(
    p: pd.DataFrame,
    rooms: pd.DataFrame,
    blocks: pd.DataFrame,
    policy: Policy,
    rng: np.random.Generator,
    as_of: dt.date,
    profile: Profile,
    extract: dict[str, np.datetime64],
    next_extract: np.datetime64,
) -> dict[str, pd.DataFrame]:
    cutoff = _d(policy.cutoff_date)
    today = _d(as_of)
    city, short = profile.city, profile.city.short_name
    home_region = city.urban_region_codes[0]
    adult = (p["role"] != "child").to_numpy() & ((today - p["birth_date"].to_numpy()) / DAY > 18 * 365)
    alive = p["status"].to_numpy() != "死亡"
    room_codes = rooms["address_code"].to_numpy()
    room_block = rooms["block_id"].to_numpy()

    def random_rooms(n):
        return room_codes[rng.integers(0, len(room_codes), n)]

    # ---------------- property titles: the family home, second homes, shops, history, companies
    heads = p.index[(p["relation"] == "户主").to_numpy() & adult].to_numpy()
    partner = np.full(len(p), -1)
    has_partner = p["partner_idx"].to_numpy() >= 0
    partner[p["partner_idx"].to_numpy()[has_partner]] = np.flatnonzero(has_partner)
    # couples who may own: household heads, and the parent couples inside three-generation homes
    inner = p.index[(p["role"] == "parent").to_numpy() & np.isin(p["relation"].to_numpy(), ["子", "女"])].to_numpy()
    owners_main = np.concatenate([heads, inner])
    own = rng.random(len(owners_main)) < np.where(np.isin(owners_main, inner), 0.35, 0.66)
    owners_main = owners_main[own]
    is_inner = np.isin(owners_main, inner)
    home = np.where(is_inner, random_rooms(len(owners_main)), p["address_code"].to_numpy()[owners_main])
    second = rng.random(len(owners_main)) < 0.25
    shop = rng.random(len(owners_main)) < 0.12
    earlier = rng.random(len(owners_main)) < 0.3  # the title this owner held before a re-registration
    title_person = np.concatenate([owners_main, owners_main[second], owners_main[earlier], owners_main[shop]])
    title_room = np.concatenate([home, random_rooms(second.sum()), home[earlier], random_rooms(shop.sum())])
    k = len(title_person)
    n_home = len(owners_main) + second.sum() + earlier.sum()
    superseded = (np.arange(k) >= len(owners_main) + second.sum()) & (np.arange(k) < n_home)
    use = np.where(
        np.arange(k) < n_home,
        "住宅",
        np.array(["商业", "办公", "车库", "工业", "其他"], dtype=object)[rng.integers(0, 5, k)],
    )
    use = np.where((np.arange(k) < n_home) & (rng.random(k) < 0.02), "车库", use)
    r = rng.random(k)
    status = np.select([superseded, r < 0.88, r < 0.95], ["历史", "现势", "历史"], "注销")
    reg = _dates_between(np.datetime64("2001-01-01"), cutoff, k, rng)
    reg = np.where(superseded, reg - rng.integers(400, 4000, k) * DAY, reg)
    reg = np.where(rng.random(k) < 0.05, _after_cutoff(cutoff, k, rng), reg)
    co = rng.random(k)
    pa = partner[title_person]
    joint = (pa >= 0) & (co < 0.7)
    mode = np.where(joint, np.where(co < 0.35, "共同共有", "按份共有"), "单独所有")
    cert_year = pd.DatetimeIndex(reg).year.to_numpy()
    cert_no = (
        city.province_short
        + "("
        + pd.Series(cert_year).astype(str)
        + ")"
        + city.name
        + "不动产权第"
        + pd.Series(rng.choice(9_000_000, k, replace=False) + 1_000_000).astype(str)
        + "号"
    ).to_numpy(dtype=object)
    unit_no = (
        pd.Series(title_room).str.slice(0, 6)
        + "00"
        + pd.Series(title_room).str.slice(-4)
        + "GB"
        + pd.Series(rng.integers(0, 99999, k)).map("{:05d}".format)
        + "F"
        + pd.Series(rng.integers(0, 99999999, k)).map("{:08d}".format)
    ).to_numpy()
    area = np.round(rng.uniform(45, 180, k), 2)
    base = pd.DataFrame(
        {
            "certificate_no": cert_no,
            "unit_no": unit_no,
            "co_ownership": mode,
            "address_code": title_room,
            "use": use,
            "floor_area": area,
            "registered_date": reg,
            "title_status": status,
            "person": title_person,
            "share_kind": rng.integers(0, 4, k),
        }
    )
    second_owner = base[joint].copy()
    second_owner["person"] = pa[joint]
    titles = pd.concat([base, second_owner], ignore_index=True)
    shares = np.array(["50%", "1/2", "0.5", ""], dtype=object)
    titles["share"] = np.where(titles["co_ownership"] == "按份共有", shares[titles["share_kind"]], "")
    titles["owner_kind"] = "person"
    # a few titles held by companies
    nc = max(3, k // 100)
    companies = pd.DataFrame(
        {
            "certificate_no": [
                f"{city.province_short}(20{y:02d}){city.name}不动产权第{n:07d}号"
                for y, n in zip(rng.integers(5, 27, nc), rng.choice(900_000, nc, replace=False))
            ],
            "unit_no": [
                f"{c[:6]}00{c[-4:]}GB{u:05d}F{v:08d}"
                for c, u, v in zip(random_rooms(nc), rng.integers(0, 99999, nc), rng.integers(0, 99999999, nc))
            ],
            "co_ownership": "单独所有",
            "address_code": random_rooms(nc),
            "use": np.array(["商业", "办公", "住宅", "工业"], dtype=object)[rng.integers(0, 4, nc)],
            "floor_area": np.round(rng.uniform(80, 2000, nc), 2),
            "registered_date": _dates_between(np.datetime64("2005-01-01"), cutoff, nc, rng),
            "title_status": "现势",
            "person": -1,
            "share": "",
            "owner_kind": "organization",
        }
    )
    companies["owner_id"] = credit_codes("91", companies["address_code"].str.slice(0, 6).to_numpy(), rng)
    companies["owner_name"] = _company_names(rng, nc, short, INDUSTRIES, "有限公司")
    titles["owner_id"] = p["citizen_id"].to_numpy()[titles["person"]]
    titles["owner_name"] = p["name"].to_numpy()[titles["person"]]
    titles = pd.concat([titles.drop(columns="share_kind"), companies], ignore_index=True)
    # the company certificate numbers must not collide with the personal ones
    titles = titles.drop_duplicates(["certificate_no", "owner_id"])

    # ---------------- purchase contracts: families without a title buying a new flat
    parents = p.index[(p["role"] == "parent").to_numpy() & ~np.isin(p.index, titles["person"])].to_numpy()
    buy = parents[(rng.random(len(parents)) < 0.18) & alive[parents]]
    others = p.index[adult & alive & (p["role"] != "parent").to_numpy()].to_numpy()
    buy = np.concatenate([buy, others[rng.random(len(others)) < 0.05]])
    buy = buy[~np.isin(buy, partner[buy])] if len(buy) else buy  # one contract per couple
    m = len(buy)
    pa = partner[buy]
    # co-buyers: the spouse, else a parent, else another adult (a sibling, a partner not married yet)
    n_buyers = rng.choice(3, m, p=np.array(profile.buyers_per_contract) / sum(profile.buyers_per_contract)) + 1
    co_pool = p.index[adult & alive].to_numpy()
    parent_of = p["parent_idx"].to_numpy()
    own_parent = parent_of[buy]
    own_parent = np.where((own_parent >= 0) & alive[np.maximum(own_parent, 0)], own_parent, -1)

    def another_adult(*taken: np.ndarray) -> np.ndarray:
        pick = co_pool[rng.integers(0, len(co_pool), m)]
        for _ in range(8):
            clash = np.logical_or.reduce([pick == t for t in taken])
            if not clash.any():
                break
            pick[clash] = co_pool[rng.integers(0, len(co_pool), int(clash.sum()))]
        return pick

    second = np.where(pa >= 0, pa, np.where(own_parent >= 0, own_parent, another_adult(buy)))
    third = np.where((own_parent >= 0) & (own_parent != second), own_parent, another_adult(buy, second))
    blocks_sel = rng.integers(0, len(blocks), m)
    compounds = blocks["compound"].to_numpy()[blocks_sel]
    # a room of that compound
    first_room = np.searchsorted(room_block, blocks_sel)
    room_count = np.searchsorted(room_block, blocks_sel, side="right") - first_room
    addr = room_codes[first_room + (rng.random(m) * room_count).astype(int)]
    r = rng.random(m)
    contracts = pd.DataFrame(
        {
            "contract_no": pd.Series(rng.choice(90_000_000, m, replace=False) + 10_000_000)
            .map("HT{:d}".format)
            .to_numpy(),
            "buyer1": buy,
            "buyer2": np.where(n_buyers >= 2, second, -1),
            "buyer3": np.where(n_buyers >= 3, third, -1),
            "seller": (short + pd.Series(compounds, dtype=object).str.slice(0, 2) + "置业有限公司").to_numpy(
                dtype=object
            ),
            "project_name": compounds,
            "address_code": addr,
            "use": np.where(rng.random(m) < 0.93, "住宅", np.where(rng.random(m) < 0.5, "商业", "车库")),
            "signed_date": np.where(
                rng.random(m) < 0.06,
                _after_cutoff(cutoff, m, rng),
                _dates_between(np.datetime64("2022-01-01"), cutoff, m, rng),
            ),
            "status": np.select([r < 0.85, r < 0.93], ["已备案", "已撤销"], "已注销"),
        }
    )

    # ---------------- rentals: families without property rent; some rentals miss the cutoff
    renters = p.index[(p["role"] == "parent").to_numpy() & (p["relation"].isin(["户主"])).to_numpy()].to_numpy()
    renters = renters[(rng.random(len(renters)) < 0.3) & alive[renters]]
    owners_any = np.isin(renters, titles["person"]) | np.isin(renters, contracts["buyer1"])
    renters = np.concatenate([renters[~owners_any], renters[owners_any][: len(renters) // 20]])
    extra_adults = p.index[adult & alive].to_numpy()
    extra_adults = extra_adults[rng.random(len(extra_adults)) < 0.045]
    tenants = np.concatenate([renters, extra_adults])
    # now and then the spouse or a grandparent signs instead
    t = len(tenants)
    swap = (rng.random(t) < 0.2) & (partner[tenants] >= 0)
    tenants = np.where(swap, partner[tenants], tenants)
    r = rng.random(t)
    start = _dates_between(cutoff - 700 * DAY, cutoff - 10 * DAY, t, rng)
    length = rng.choice([365, 730, 1095], t) * DAY
    start = np.where(r < 0.08, cutoff + rng.integers(1, 10, t) * DAY, start)  # starts after cutoff
    start = np.where((r >= 0.08) & (r < 0.16), cutoff - 800 * DAY, start)  # ended before cutoff
    end = np.where((r >= 0.08) & (r < 0.16), cutoff - rng.integers(30, 200, t) * DAY, start + length)
    registered = np.minimum(start + rng.integers(0, 20, t) * DAY, extract["rental"])
    registered = np.where(rng.random(t) < 0.04, _after_cutoff(cutoff, t, rng), registered)
    landlord_person = rng.integers(0, len(p), t)
    landlord_company = rng.random(t) < 0.1
    rentals = pd.DataFrame(
        {
            "record_no": pd.Series(rng.choice(9_000_000, t, replace=False) + 1_000_000).map("ZL{:d}".format).to_numpy(),
            "person": tenants,
            "landlord_id": np.where(
                landlord_company,
                credit_codes("91", np.full(t, home_region), rng),
                p["citizen_id"].to_numpy()[landlord_person],
            ),
            "address_code": random_rooms(t),
            "start_date": start,
            "end_date": end,
            "registered_date": registered,
            "status": np.where(rng.random(t) < 0.9, "有效", "已注销"),
        }
    )

    # ---------------- social insurance: several schemes per working-age adult
    working = p.index[adult & alive & ((today - p["birth_date"].to_numpy()) / DAY < 62 * 365)].to_numpy()
    n_employers = max(5, len(working) // 40)
    employer_code = credit_codes("91", np.full(n_employers, home_region), rng)
    employer_name = _company_names(rng, n_employers, short, INDUSTRIES, "有限公司")
    employed = rng.random(len(working)) < 0.72
    emp_of = rng.integers(0, n_employers, len(working))
    parts = []
    for scheme, share, resident in (
        ("企业职工基本养老保险", 1.0, False),
        ("城镇职工基本医疗保险", 0.85, False),
        ("失业保险", 0.6, False),
        ("工伤保险", 0.5, False),
        ("城乡居民基本养老保险", 1.0, True),
        ("城乡居民基本医疗保险", 0.9, True),
    ):
        sel = (employed != resident) & (rng.random(len(working)) < share)
        w = working[sel]
        n = len(w)
        r = rng.random(n)
        months = np.where(rng.random(n) < 0.18, rng.integers(1, 12, n), rng.integers(12, 300, n))
        first = np.minimum(
            np.maximum(cutoff - months * 31 * DAY, p["birth_date"].to_numpy()[w] + 18 * 366 * DAY),
            extract["social_insurance"],
        )
        parts.append(
            pd.DataFrame(
                {
                    "person": w,
                    "scheme": scheme,
                    "insurance_status": np.select([r < 0.85, r < 0.93], ["参保缴费", "暂停缴费"], "终止参保"),
                    "employer_name": "" if resident else employer_name[emp_of[sel]],
                    "employer_code": "" if resident else employer_code[emp_of[sel]],
                    "first_insured_date": first,
                    "local_months": months,
                    "last_paid_month": np.where(r < 0.85, "202707", "202512"),
                }
            )
        )
    insurance = pd.concat(parts, ignore_index=True)

    # ---------------- individual businesses and enterprises
    def firms(share, kind):
        who = p.index[adult & alive].to_numpy()
        who = who[rng.random(len(who)) < share]
        n = len(who)
        young = rng.random(n) < 0.15
        est = np.where(
            young,
            _dates_between(cutoff - 330 * DAY, cutoff, n, rng),
            _dates_between(np.datetime64("1998-01-01"), cutoff - 400 * DAY, n, rng),
        )
        return who, n, est

    who, n, est = firms(0.095, "92")
    r = rng.random(n)
    st = np.select([r < 0.82, r < 0.93], ["存续", "注销"], "吊销")
    closed = np.where(
        st != "存续",
        np.minimum(est + rng.integers(100, 3000, n) * DAY, extract["individual_business"]),
        np.datetime64("NaT"),
    )
    biz_rooms = random_rooms(n)
    businesses = pd.DataFrame(
        {
            "credit_code": credit_codes("92", pd.Series(biz_rooms).str.slice(0, 6).to_numpy(), rng),
            "trade_name": _company_names(rng, n, city.name, SHOP_KINDS, ""),
            "person": who,
            "address_code": biz_rooms,
            "form": np.where(rng.random(n) < 0.8, "个人经营", "家庭经营"),
            "established_date": est,
            "reg_status": st,
            "closed_date": closed,
        }
    )
    who, n, est = firms(0.04, "91")
    r = rng.random(n)
    st = np.select([r < 0.5, r < 0.82, r < 0.9, r < 0.95], ["存续", "在业", "注销", "吊销"], "迁出")
    ent_rooms = random_rooms(n)
    enterprises = pd.DataFrame(
        {
            "credit_code": credit_codes("91", pd.Series(ent_rooms).str.slice(0, 6).to_numpy(), rng),
            "name": _company_names(rng, n, short, INDUSTRIES, "有限公司"),
            "company_type": np.array(COMPANY_TYPES, dtype=object)[rng.integers(0, len(COMPANY_TYPES), n)],
            "person": who,
            "address_code": ent_rooms,
            "established_date": est,
            "reg_status": st,
            "approved_date": np.minimum(est + rng.integers(0, 2000, n) * DAY, extract["enterprise"]),
        }
    )
    businesses = businesses.drop_duplicates("credit_code")
    enterprises = enterprises.drop_duplicates("credit_code")
    enterprises = enterprises[~enterprises["credit_code"].isin(businesses["credit_code"])]
    records = {
        "property_title": titles.reset_index(drop=True),
        "housing_contract": contracts,
        "rental": rentals,
        "social_insurance": insurance,
        "individual_business": businesses.reset_index(drop=True),
        "enterprise": enterprises.reset_index(drop=True),
    }
    for source, frame in records.items():
        for col in EVENT_DATES[source]:
            frame[col] = np.minimum(frame[col].to_numpy(), extract[source])
        _next_day(source, frame, profile, extract[source], next_extract, rng)
    return records


def _next_day(
    source: str,
    frame: pd.DataFrame,
    profile: Profile,
    extract: np.datetime64,
    next_extract: np.datetime64,
    rng: np.random.Generator,
) -> None:
    """Mark the records gone from, or new in, the next day's delivery; a new record is a new event."""
    frame["day"] = next_day_flags(len(frame), profile.next_day_added, profile.next_day_removed, rng)
    new = (frame["day"] == 1).to_numpy()
    when = days_after(extract, next_extract, int(new.sum()), rng)
    first = EVENT_DATES[source][0]
    frame.loc[new, first] = when
    if source == "social_insurance":
        frame.loc[new, "local_months"] = 1
    elif source == "individual_business":
        frame.loc[new, "reg_status"] = "存续"
        frame.loc[new, "closed_date"] = np.datetime64("NaT")
    elif source == "enterprise":
        frame.loc[new, "approved_date"] = when
        frame.loc[new, "reg_status"] = "存续"
