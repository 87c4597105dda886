"""A synth city year by year: births, families moving in, out and within, by district.

The forecast of ``catchment_forecast`` can only be judged against what followed, so this
module starts from the synth's city (the clean facts ``synthesize`` draws from the same seed and
profile, before any dirt; nothing it writes changes) and lets it live on: each year children are
born per district, households leave the city, arrive and move between rooms, at the profile's
``evolution`` rates. The dynamics are the evolution's own, not the forecast's: every rate has a
district multiplier per age group of the family's youngest child (0-2, 3-6, 7-14, none), drawn
from the seed and drifting each year; families with children choose catchments by a pull of
their own; births follow a trend of their own; a mover buys or rents, and its hukou may stay
behind. A forecast that assumes a stationary pattern can therefore be wrong, and by how much is
what ``pipelines.forecast_score`` measures.

Each year ends in a ``Snapshot``: the frames ``marts.catchment_forecast`` reads (``citizen``,
``guardianship``, ``property_holding``, ``rental_holding``) and the year's policy (the synth's
policy moved on by that many years). The city "N years before" is the snapshot N years before the
last; the entrants of a year are the children of the entering cohort who live in a catchment in
that year's snapshot, placed by the mart's own definition of where a child lives
(``marts.residence_places``), since that is the quantity the forecast predicts.

People the evolution adds (births, arrivals) carry opaque IDs ``EV<year><number>``, not resident
IDs: the forecast reads IDs as keys only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

from pipelines.policy import LevelWindow, Policy, policy_from_dict
from pipelines.synth.profile import SOURCES, EvolutionRates, Profile, load_profile

AGE_GROUPS = ("none", "0-2", "3-6", "7-14")  # by the family's youngest child under 15
_OUT_BY_AGE = np.array([1.0, 1.2, 1.0, 0.7])  # leaving the city, times move_out
_WITHIN_BY_AGE = np.array([0.8, 1.3, 1.0, 0.8])  # moving within, times move_within (3-6: x school_age_boost)
_ARRIVAL_CHILD_MIX = np.array([0.4, 0.36, 0.24])  # arriving families by youngest child (0-2, 3-6, 7-14)
_AGE_SPAN = ((0, 0), (0, 2), (3, 6), (7, 14))  # children's ages (years) of an arriving family per group
_STAGE = 100  # the evolution's random streams: np.random.default_rng([seed, _STAGE + k]); the synth uses 1-6


@dataclass(frozen=True, repr=False, eq=False)
class Snapshot:
    """The city on ``as_of`` of evolution year ``year`` (0: the synth's city), as the forecast reads it."""

    year: int
    as_of: dt.date
    policy: Policy
    citizen: pd.DataFrame  # citizen_id, birth_date, hukou_status, hukou_address_code, hukou_region_code
    guardianship: pd.DataFrame  # child_id, guardian_id
    property_holding: pd.DataFrame  # citizen_id, kind, address_code, qualifying
    rental_holding: pd.DataFrame  # citizen_id, address_code, qualifying

    def __repr__(self) -> str:  # counts only: the frames hold resident IDs
        return f"Snapshot(year={self.year}, as_of={self.as_of}, citizens={len(self.citizen)})"


@dataclass(frozen=True, repr=False, eq=False)
class Evolution:
    """Yearly snapshots of one synth city and the flows between them.

    ``flows``: year, district_code, births, arrived_households, arrived_people, left_households,
    left_people, moved_out_of_district, moved_into_district (people moving within the city count
    in both their old and their new district), arrived_children, left_children (under 15 on
    arrival or departure), residents (register rows of status 正常 at the
    year's end, by household district).
    """

    profile: str
    seed: int
    snapshots: dict[int, Snapshot]
    flows: pd.DataFrame
    schools: pd.DataFrame  # school_code, level, school_name, district_code, capacity
    address_catchment: pd.DataFrame  # address_code, level, school_code, enrollment_year

    def __repr__(self) -> str:
        return f"Evolution(profile={self.profile!r}, seed={self.seed}, years={sorted(self.snapshots)})"

    @property
    def last_year(self) -> int:
        return max(self.snapshots)

    def city_before(self, years: int) -> Snapshot:
        """The city as it was ``years`` years before the last snapshot."""
        year = self.last_year - years
        if year not in self.snapshots:
            raise KeyError(f"the evolution kept no city {years} years before its last year")
        return self.snapshots[year]

    def entrants(self, year: int) -> pd.DataFrame:
        """school_code, level, district_code, entry_year, entrants: the children of the cohort
        entering in ``year``'s enrollment year who live in each catchment then (a child in two
        overlapping catchments counts half in each, as in the forecast)."""
        from pipelines.marts import cohort_children, entry_cohorts, residence_places

        snap = self.snapshots[year]
        cohorts = entry_cohorts(snap.policy, 0)
        kids = cohort_children(snap.citizen, cohorts)
        placed = residence_places(
            kids, snap.guardianship, snap.property_holding, snap.rental_holding, self.address_catchment
        )
        counts = placed.groupby(["school_code", "level"])["weight"].sum().rename("entrants").reset_index()
        places = self.schools[["school_code", "level", "district_code"]].astype("string")
        out = places.merge(
            counts.astype({"school_code": "string", "level": "string"}), on=["school_code", "level"], how="left"
        )
        out["entrants"] = out["entrants"].fillna(0.0)
        out["entry_year"] = snap.policy.enrollment_year
        return out[["school_code", "level", "district_code", "entry_year", "entrants"]]


def policy_in(policy: Policy, years: int) -> Policy:
    """The policy ``years`` later: enrollment year, cutoff and every birth window moved on."""

    def later(day: dt.date) -> dt.date:
        return (
            day.replace(year=day.year + years)
            if not (day.month == 2 and day.day == 29)
            else dt.date(day.year + years, 2, 28)
        )

    windows = tuple(LevelWindow(w.level, later(w.birth_from), later(w.birth_to)) for w in policy.levels)
    return dataclasses.replace(
        policy, enrollment_year=policy.enrollment_year + years, cutoff_date=later(policy.cutoff_date), levels=windows
    )


def _years_later(day: dt.date, years: int) -> dt.date:
    return day.replace(year=day.year + years)


def base_city(people: int, seed: int, profile: Profile):
    """The synth's clean facts for (people, seed, profile): the same draws ``synthesize`` makes."""
    from pipelines.synth import AS_OF
    from pipelines.synth.geography import build_geography
    from pipelines.synth.people import build_people
    from pipelines.synth.records import build_records

    policy = policy_from_dict(yaml.safe_load(profile.policy_yaml()))

    def rng(stage: int) -> np.random.Generator:
        return np.random.default_rng([seed, stage])

    lag = dict(profile.delivery_lag)
    extract = {s: np.datetime64(AS_OF - dt.timedelta(days=lag[s]), "D") for s in SOURCES}
    next_day = np.datetime64(AS_OF + dt.timedelta(days=1), "D")
    geo = build_geography(people, rng(1), policy.enrollment_year, profile)
    p = build_people(people, policy, geo.registry, rng(2), AS_OF, profile, extract["hukou"], next_day)
    rec = build_records(p, geo.registry, geo.blocks, policy, rng(3), AS_OF, profile, extract, next_day)
    return geo, policy, p, rec, AS_OF


class _City:
    """The evolving state: persons, households and the qualifying residential holdings."""

    def __init__(self, p: pd.DataFrame, rec: dict, registry: pd.DataFrame, policy: Policy) -> None:
        today = p["day"].to_numpy() != 1  # people of the next day's delivery are not here yet
        self.persons = pd.DataFrame(
            {
                "citizen_id": p["citizen_id"].to_numpy(dtype=object),
                "birth_date": p["birth_date"].to_numpy().astype("datetime64[D]"),
                "hh": p["hh"].to_numpy(dtype=np.int64),
                "status": np.where(today, p["status"].to_numpy(dtype=object), "注销"),
            }
        )
        g1, g2 = p["guardian1_idx"].to_numpy(), p["guardian2_idx"].to_numpy()
        # no guardian named: a 子/女 has the household's 户主 and 配偶 (the join's rule), here its parents
        own_child = np.isin(p["relation"].to_numpy(), ["子", "女"]) & (g1 < 0) & (g2 < 0)
        parent = p["parent_idx"].to_numpy()
        partner = np.full(len(p), -1)
        has = p["partner_idx"].to_numpy() >= 0
        partner[p["partner_idx"].to_numpy()[has]] = np.flatnonzero(has)
        self.persons["guardian_a"] = np.where(own_child, parent, g1)
        self.persons["guardian_b"] = np.where(own_child & (parent >= 0), partner[np.maximum(parent, 0)], g2)
        hh = p.drop_duplicates("hh").set_index("hh").sort_index()
        self.households = pd.DataFrame(
            {
                "hukou_room": hh["address_code"].to_numpy(dtype=object),
                "home_room": hh["address_code"].to_numpy(dtype=object),
                "present": True,
            },
            index=hh.index.to_numpy(),
        )
        self.district_of_room = pd.Series(
            registry["district_code"].to_numpy(dtype=object), index=registry["address_code"].to_numpy(dtype=object)
        )
        cutoff = np.datetime64(policy.cutoff_date, "D")
        t = rec["property_title"]
        titles = t[(t["person"] >= 0) & (t["use"] == "住宅") & (t["title_status"] == "现势") & (t["day"] != 1)]
        c = rec["housing_contract"]
        c = c[(c["use"] == "住宅") & (c["status"] == "已备案") & (c["day"] != 1)]
        buyers = pd.concat(
            [c[[b, "address_code"]].rename(columns={b: "person"}) for b in ("buyer1", "buyer2", "buyer3")]
        )
        r = rec["rental"]
        r = r[(r["status"] == "有效") & (r["end_date"].to_numpy() >= cutoff) & (r["day"] != 1)]
        self.holdings = pd.concat(
            [
                pd.DataFrame(
                    {
                        "person": titles["person"].to_numpy(),
                        "kind": "title",
                        "address_code": titles["address_code"].to_numpy(),
                    }
                ),
                pd.DataFrame(
                    {
                        "person": buyers["person"].to_numpy(),
                        "kind": "contract",
                        "address_code": buyers["address_code"].to_numpy(),
                    }
                ).query("person >= 0"),
                pd.DataFrame(
                    {"person": r["person"].to_numpy(), "kind": "rental", "address_code": r["address_code"].to_numpy()}
                ),
            ],
            ignore_index=True,
        ).astype({"person": np.int64})
        self.next_id = 0

    def snapshot(self, year: int, as_of: dt.date, policy: Policy) -> Snapshot:
        ps = self.persons
        hukou_room = self.households["hukou_room"].reindex(ps["hh"].to_numpy()).to_numpy(dtype=object)
        ids = ps["citizen_id"].to_numpy(dtype=object)
        citizen = pd.DataFrame(
            {
                "citizen_id": pd.array(ids, dtype="string"),
                "birth_date": ps["birth_date"].to_numpy(),
                "hukou_status": pd.array(ps["status"].to_numpy(dtype=object), dtype="string"),
                "hukou_address_code": pd.array(hukou_room, dtype="string"),
                "hukou_region_code": pd.array(
                    self.district_of_room.reindex(hukou_room).to_numpy(dtype=object), dtype="string"
                ),
            }
        )
        age = (np.datetime64(as_of, "D") - ps["birth_date"].to_numpy()) / np.timedelta64(1, "D") / 365.25
        minors = age < 18
        pairs = [
            (ids[minors & (ps[g].to_numpy() >= 0)], ids[ps[g].to_numpy()[minors & (ps[g].to_numpy() >= 0)]])
            for g in ("guardian_a", "guardian_b")
        ]
        guardianship = pd.DataFrame(
            {"child_id": np.concatenate([c for c, _ in pairs]), "guardian_id": np.concatenate([g for _, g in pairs])}
        ).astype("string")
        guardianship = guardianship.drop_duplicates().reset_index(drop=True)
        h = self.holdings
        holder = pd.array(ids[h["person"].to_numpy()], dtype="string")
        props = h["kind"].to_numpy() != "rental"
        property_holding = pd.DataFrame(
            {
                "citizen_id": holder[props],
                "kind": pd.array(h["kind"].to_numpy()[props], dtype="string"),
                "address_code": pd.array(h["address_code"].to_numpy()[props], dtype="string"),
                "qualifying": True,
            }
        )
        rental_holding = pd.DataFrame(
            {
                "citizen_id": holder[~props],
                "address_code": pd.array(h["address_code"].to_numpy()[~props], dtype="string"),
                "qualifying": True,
            }
        )
        return Snapshot(year, as_of, policy, citizen, guardianship, property_holding, rental_holding)


def evolve(
    people: int, seed: int, profile: str | Profile = "default", years: int | None = None, keep_from: int | None = None
) -> Evolution:
    """Evolve the synth city of (people, seed, profile) for ``years`` years (default: the
    profile's burn-in plus five) and keep the snapshots from ``keep_from`` (default: the burn-in
    year, so the city five years before the last is the first kept).

    Deterministic per (people, seed, profile); the synth's own output does not change.
    """
    from pipelines.access import school_table
    from pipelines.marts import address_catchment

    profile = load_profile(profile)
    rates = profile.evolution
    years = rates.burn_in_years + 5 if years is None else years
    keep_from = max(0, years - 5) if keep_from is None else keep_from
    geo, policy, p, rec, as_of = base_city(people, seed, profile)
    city = _City(p, rec, geo.registry, policy)
    del p, rec
    rng = np.random.default_rng([seed, _STAGE])
    districts = [d.code for d in profile.city.districts]
    dynamics = _Dynamics(rates, districts, geo, rng)
    dynamics.calibrate_births(city, as_of)
    snapshots = {0: city.snapshot(0, as_of, policy)} if keep_from == 0 else {}
    flows = []
    for year in range(1, years + 1):
        start, end = _years_later(as_of, year - 1), _years_later(as_of, year)
        flows.append(dynamics.step(city, year, start, end))
        if year >= keep_from:
            snapshots[year] = city.snapshot(year, end, policy_in(policy, year))
    enrollment = address_catchment(geo.membership, policy.enrollment_year)
    return Evolution(
        profile.name, seed, snapshots, pd.concat(flows, ignore_index=True), school_table(geo.schools), enrollment
    )


class _Dynamics:
    """The evolution's rates in force: district multipliers per age group, drifting yearly."""

    def __init__(self, rates: EvolutionRates, districts: list[str], geo, rng: np.random.Generator) -> None:
        self.rates, self.districts, self.rng = rates, np.array(districts, dtype=object), rng
        shape = (len(districts), len(AGE_GROUPS))
        spread = rates.district_spread
        self.out = rng.lognormal(0.0, spread, shape)
        self.within = rng.lognormal(0.0, spread, shape)
        self.pull = rng.lognormal(0.0, spread, shape)  # where movers and arrivals go
        self.births = np.ones(len(districts))  # year 1 continues each district's young cohorts
        self.rooms = geo.registry["address_code"].to_numpy(dtype=object)
        self.room_district = np.searchsorted(
            self.districts, geo.registry["district_code"].to_numpy(dtype=object), sorter=np.argsort(self.districts)
        )
        self.room_district = np.argsort(self.districts)[self.room_district]
        primary = geo.membership[geo.membership["level"] == "primary"].drop_duplicates("address_code")
        schools = primary["school_code"].unique()
        attraction = pd.Series(rng.lognormal(0.0, rates.school_pull, len(schools)), index=schools)
        self.room_attraction = (
            pd.Series(primary["school_code"].to_numpy(), index=primary["address_code"].to_numpy())
            .map(attraction)
            .reindex(self.rooms)
            .fillna(1.0)
            .to_numpy()
        )
        self.base_births = np.zeros(len(districts))

    def calibrate_births(self, city: _City, as_of: dt.date) -> None:
        """Births per district in year 1 before its multiplier: the district's mean cohort aged 0-5 now."""
        ps = city.persons
        age = _age(ps["birth_date"].to_numpy(), as_of)
        young = (age < 6) & (ps["status"].to_numpy() == "正常")
        district = self._district_of_households(city)[ps["hh"].to_numpy()]
        self.base_births = np.bincount(district[young], minlength=len(self.districts)) / 6.0

    def _district_of_households(self, city: _City) -> np.ndarray:
        home = city.households["home_room"].to_numpy(dtype=object)
        codes = city.district_of_room.reindex(home).to_numpy(dtype=object)
        out = np.full(len(home), -1)
        order = np.argsort(self.districts)
        found = np.minimum(np.searchsorted(self.districts, codes.astype(str), sorter=order), len(order) - 1)
        ok = self.districts[order[found]] == codes
        out[ok] = order[found[ok]]
        return out

    def _groups(self, city: _City, on: dt.date) -> np.ndarray:
        """Per household: its age group (index of AGE_GROUPS) by its youngest child under 15."""
        ps = city.persons
        age = _age(ps["birth_date"].to_numpy(), on)
        kid = (age < 15) & (ps["status"].to_numpy() == "正常")
        youngest = pd.Series(age[kid]).groupby(ps["hh"].to_numpy()[kid]).min()
        group = np.zeros(len(city.households), dtype=int)
        y = youngest.to_numpy()
        group[youngest.index.to_numpy()] = np.select([y < 3, y < 7], [1, 2], 3)
        return group

    def _drift(self) -> None:
        d = self.rates.drift
        for name in ("out", "within", "pull"):
            setattr(self, name, getattr(self, name) * self.rng.lognormal(0.0, d, getattr(self, name).shape))
        self.births = self.births * self.rng.lognormal(0.0, d / 3, self.births.shape)

    def _destinations(self, groups: np.ndarray) -> np.ndarray:
        """A room for each moving household: district by the pull of its age group, and for
        families with children the catchment's own pull."""
        out = np.empty(len(groups), dtype=object)
        for g in range(len(AGE_GROUPS)):
            chosen = groups == g
            if not chosen.any():
                continue
            weight = self.pull[self.room_district, g] * (self.room_attraction if g > 0 else 1.0)
            out[chosen] = self.rooms[self.rng.choice(len(self.rooms), int(chosen.sum()), p=weight / weight.sum())]
        return out

    def step(self, city: _City, year: int, start: dt.date, end: dt.date) -> pd.DataFrame:
        """One year: leave, move within, arrive, be born (in that order); the year's flows."""
        self._drift()
        rates, rng = self.rates, self.rng
        hh = city.households
        ps = city.persons
        n_d = len(self.districts)
        district = self._district_of_households(city)
        group = self._groups(city, start)
        active = pd.Series(ps["status"].to_numpy() == "正常").groupby(ps["hh"].to_numpy()).sum()
        occupied = hh["present"].to_numpy() & (active.reindex(hh.index, fill_value=0).to_numpy() > 0) & (district >= 0)
        d, g = np.maximum(district, 0), group
        flows = {
            k: np.zeros(n_d, dtype=np.int64)
            for k in (
                "births",
                "arrived_households",
                "arrived_people",
                "left_households",
                "left_people",
                "moved_out_of_district",
                "moved_into_district",
                "arrived_children",
                "left_children",
            )
        }

        # leaving the city: members become 迁出, what they held ends
        p_out = np.clip(rates.move_out * _OUT_BY_AGE[g] * self.out[d, g], 0, 0.9)
        leaving = occupied & (rng.random(len(hh)) < p_out)
        gone = ps["hh"].isin(hh.index[leaving]).to_numpy() & (ps["status"].to_numpy() == "正常")
        np.add.at(flows["left_households"], d[leaving], 1)
        np.add.at(flows["left_people"], d[ps["hh"].to_numpy()[gone]], 1)
        young = gone & (_age(ps["birth_date"].to_numpy(), start) < 15)
        np.add.at(flows["left_children"], d[ps["hh"].to_numpy()[young]], 1)
        city.persons.loc[gone, "status"] = "迁出"
        city.holdings = city.holdings[~np.isin(city.holdings["person"].to_numpy(), np.flatnonzero(gone))]
        hh.loc[leaving, "present"] = False

        # moving within the city: a new room, bought or rented; the hukou follows or stays behind
        boost = np.where(g == 2, rates.school_age_boost, _WITHIN_BY_AGE[g])
        p_move = np.clip(rates.move_within * boost * self.within[d, g], 0, 0.9)
        moving = occupied & ~leaving & (rng.random(len(hh)) < p_move)
        movers = np.flatnonzero(moving)
        rooms = self._destinations(g[movers])
        new_d = self.room_district[pd.Index(self.rooms).get_indexer(rooms)]
        active_people = ps["status"].to_numpy() == "正常"
        people_of = active.reindex(hh.index[movers], fill_value=0).to_numpy()
        changed = new_d != d[movers]
        np.add.at(flows["moved_out_of_district"], d[movers][changed], people_of[changed])
        np.add.at(flows["moved_into_district"], new_d[changed], people_of[changed])
        moved_people = ps["hh"].isin(hh.index[movers]).to_numpy() & active_people
        city.holdings = city.holdings[~np.isin(city.holdings["person"].to_numpy(), np.flatnonzero(moved_people))]
        hh.iloc[movers, hh.columns.get_loc("home_room")] = rooms
        follows = rng.random(len(movers)) < rates.hukou_follows
        hh.iloc[movers[follows], hh.columns.get_loc("hukou_room")] = rooms[follows]
        self._hold(city, hh.index[movers].to_numpy(), rooms, end)

        # arrivals: new households with their children, registered at the room they move to
        present = int(occupied.sum())
        n_new = rng.poisson(rates.move_in * present)
        if n_new:
            w = rates.arrivals_with_children
            groups = rng.choice(len(AGE_GROUPS), n_new, p=np.r_[1.0 - w, w * _ARRIVAL_CHILD_MIX])
            rooms = self._destinations(groups)
            new_hh = np.arange(len(hh), len(hh) + n_new) + (int(hh.index.max()) + 1 - len(hh))
            city.households = hh = pd.concat(
                [hh, pd.DataFrame({"hukou_room": rooms, "home_room": rooms, "present": True}, index=new_hh)]
            )
            adults = np.where(rng.random(n_new) < 0.85, 2, 1)
            kids = np.where(groups == 0, 0, rng.choice([1, 2], n_new, p=[0.7, 0.3]))
            first = len(city.persons)
            rows = []
            day = np.datetime64(start, "D")
            for k in range(2):
                who = adults > k
                rows.append(
                    pd.DataFrame(
                        {
                            "hh": new_hh[who],
                            "birth_date": day
                            - (rng.integers(26, 42, who.sum()) * 365 + rng.integers(0, 365, who.sum()))
                            * np.timedelta64(1, "D"),
                            "adult": k,
                        }
                    )
                )
            for k in range(2):
                who = kids > k
                lo = np.array([_AGE_SPAN[x][0] for x in groups[who]])
                hi = np.array([_AGE_SPAN[x][1] for x in groups[who]])
                age_days = (rng.integers(0, 10**6, who.sum()) % ((hi - lo + 1) * 365)) + lo * 365
                rows.append(
                    pd.DataFrame(
                        {"hh": new_hh[who], "birth_date": day - age_days * np.timedelta64(1, "D"), "adult": -1}
                    )
                )
            new = pd.concat(rows, ignore_index=True)
            new = new[new["birth_date"] < np.datetime64(end, "D")].reset_index(drop=True)
            idx = first + np.arange(len(new))
            parents = new[new["adult"] >= 0]
            parent_of = {
                a: pd.Series(
                    idx[(new["adult"] == a).to_numpy()], index=parents.loc[parents["adult"] == a, "hh"].to_numpy()
                )
                for a in (0, 1)
            }
            child = (new["adult"] < 0).to_numpy()
            ga = np.full(len(new), -1)
            gb = np.full(len(new), -1)
            ga[child] = parent_of[0].reindex(new["hh"].to_numpy()[child]).fillna(-1).to_numpy(dtype=np.int64)
            gb[child] = parent_of[1].reindex(new["hh"].to_numpy()[child]).fillna(-1).to_numpy(dtype=np.int64)
            city.persons = ps = pd.concat(
                [
                    ps,
                    pd.DataFrame(
                        {
                            "citizen_id": self._ids(city, year, len(new)),
                            "birth_date": new["birth_date"].to_numpy().astype("datetime64[D]"),
                            "hh": new["hh"].to_numpy(dtype=np.int64),
                            "status": "正常",
                            "guardian_a": ga,
                            "guardian_b": gb,
                        }
                    ),
                ],
                ignore_index=True,
            )
            arrived_d = self.room_district[pd.Index(self.rooms).get_indexer(rooms)]
            np.add.at(flows["arrived_households"], arrived_d, 1)
            np.add.at(flows["arrived_people"], arrived_d[new["hh"].to_numpy() - new_hh[0]], 1)
            np.add.at(flows["arrived_children"], arrived_d[new["hh"].to_numpy()[child] - new_hh[0]], 1)
            self._hold(city, new_hh, rooms, end, buy=rates.own_home * 0.8)

        # births: per district, to a household with adults of parents' age, registered at its hukou room
        district = self._district_of_households(city)
        age = _age(ps["birth_date"].to_numpy(), start)
        parent_age = (age >= 22) & (age < 42) & (ps["status"].to_numpy() == "正常")
        mothers = pd.DataFrame({"hh": ps["hh"].to_numpy()[parent_age], "person": np.flatnonzero(parent_age)})
        mothers = mothers[hh["present"].reindex(mothers["hh"]).to_numpy()]
        couples = mothers.groupby("hh")["person"].agg(["min", "max"])
        couple_d = district[couples.index.to_numpy()]
        expected = self.base_births * (1.0 + rates.birth_trend) ** year * self.births
        born = []
        for k in range(n_d):
            pool = couples[couple_d == k]
            n = min(len(pool), int(rng.poisson(expected[k])))
            if n:
                pick = pool.iloc[rng.choice(len(pool), n, replace=False)]
                born.append(
                    pd.DataFrame(
                        {
                            "hh": pick.index.to_numpy(),
                            "guardian_a": pick["min"].to_numpy(),
                            "guardian_b": np.where(pick["max"] != pick["min"], pick["max"], -1),
                        }
                    )
                )
                flows["births"][k] = n
        if born:
            babies = pd.concat(born, ignore_index=True)
            span = (np.datetime64(end, "D") - np.datetime64(start, "D")) / np.timedelta64(1, "D")
            birth = np.datetime64(start, "D") + rng.integers(1, int(span) + 1, len(babies)) * np.timedelta64(1, "D")
            city.persons = pd.concat(
                [
                    city.persons,
                    pd.DataFrame(
                        {
                            "citizen_id": self._ids(city, year, len(babies)),
                            "birth_date": birth,
                            "hh": babies["hh"].to_numpy(),
                            "status": "正常",
                            "guardian_a": babies["guardian_a"].to_numpy(),
                            "guardian_b": babies["guardian_b"].to_numpy(),
                        }
                    ),
                ],
                ignore_index=True,
            )

        ps = city.persons
        district = self._district_of_households(city)
        where = district[ps["hh"].to_numpy()[ps["status"].to_numpy() == "正常"]]
        residents = np.bincount(where[where >= 0], minlength=n_d)
        return pd.DataFrame({"year": year, "district_code": self.districts, **flows, "residents": residents})

    def _hold(
        self, city: _City, households: np.ndarray, rooms: np.ndarray, on: dt.date, buy: float | None = None
    ) -> None:
        """A new home for each household: a title (buyers) or a rental (the others), held by the
        guardian of its youngest child if it has one, else by its eldest adult."""
        if not len(households):
            return
        ps = city.persons
        here = ps[ps["hh"].isin(households) & (ps["status"] == "正常")]
        age = _age(here["birth_date"].to_numpy(), on)
        kids = here[age < 18].assign(age=age[age < 18]).sort_values("age")
        guardian = kids[kids["guardian_a"] >= 0].drop_duplicates("hh").set_index("hh")["guardian_a"]
        adults = here[age >= 18].assign(age=age[age >= 18]).sort_values("age", ascending=False)
        first = adults.drop_duplicates("hh")
        eldest = pd.Series(first.index.to_numpy(), index=first["hh"].to_numpy(), dtype=np.int64)
        holder = guardian.reindex(households).fillna(eldest.reindex(households)).fillna(-1).to_numpy(dtype=np.int64)
        buys = self.rng.random(len(households)) < (self.rates.own_home if buy is None else buy)
        ok = holder >= 0
        city.holdings = pd.concat(
            [
                city.holdings,
                pd.DataFrame(
                    {"person": holder[ok], "kind": np.where(buys[ok], "title", "rental"), "address_code": rooms[ok]}
                ),
            ],
            ignore_index=True,
        )

    def _ids(self, city: _City, year: int, n: int) -> np.ndarray:
        ids = np.array([f"EV{year:02d}{city.next_id + k:09d}" for k in range(n)], dtype=object)
        city.next_id += n
        return ids


def _age(birth: np.ndarray, on: dt.date) -> np.ndarray:
    return (np.datetime64(on, "D") - birth.astype("datetime64[D]")) / np.timedelta64(1, "D") / 365.25
