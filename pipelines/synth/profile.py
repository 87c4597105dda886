"""The shape of a synthetic city as data: a profile (YAML) checked into a typed ``Profile``.

Our synth is an instrument, not the world: what a real city varies — its districts and codes,
how often a road name runs through several districts, phased compounds, buyers per contract,
the size of a birth cohort, how dirty each department writes — is a knob here, so the pipeline
can be measured on cities of other shapes. Shipped profiles live in ``profiles/<name>.yaml``;
``load_profile`` also reads any YAML path. A bad profile is a one-line ``UsageError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import UsageError
from pipelines.policy import DEMO_POLICY_YAML

SOURCES = (
    "hukou",
    "property_title",
    "housing_contract",
    "rental",
    "social_insurance",
    "individual_business",
    "enterprise",
)
HOUSEHOLD_KINDS = ("nuclear", "three_gen", "with_grandparents", "adults", "collective")


@dataclass(frozen=True)
class DirtRates:
    """Fraction of eligible values or rows that get each kind of dirt.

    The ``addr_*`` kinds are shares of the texts written in a variant form (``address_variant``);
    ``damage_*`` kinds are shares of rows damaged beyond repair (quarantined in the truth).
    """

    id_spaces: float = 0.01
    id_fullwidth: float = 0.01
    id_lowercase_x: float = 0.01  # of IDs ending in X (boosted internally: 1 in 11 IDs is eligible)
    id_legacy15: float = 0.01  # of IDs of people born 19xx
    id_trailing_dot0: float = 0.01
    id_quote_prefix: float = 0.01
    date_forms: float = 0.12  # dates written in a non-ISO form of sources.md
    sex_numeric: float = 0.05  # 1/2 instead of 男/女
    address_variant: float = 0.35  # address texts in a variant form of the standard text
    address_unresolvable: float = 0.02
    addr_prefix: float = 0.3  # province and city in front of the district
    addr_no_district: float = 0.15  # district dropped (with or without the city)
    addr_fullwidth: float = 0.35
    addr_numerals: float = 0.35  # Chinese numerals for building and unit
    addr_door_numerals: float = 0.1  # Chinese numerals for the door number (十三号)
    addr_number_spaces: float = 0.1  # a space inside a door or room number (10 3号, 3 02)
    addr_format: float = 0.35  # 3#2-501, 3-2-501, 3栋2单元501, ...
    addr_room_suffix: float = 0.35  # 室 / 号 on the room present or missing
    addr_xiaoqu: float = 0.35  # 小区 added or dropped
    addr_phase_form: float = 0.5  # of phased compounds: 3期 for 三期, 2区 for 二区
    addr_spaces: float = 0.35  # spaces between the parts
    name_conflict: float = 0.01
    damage_checksum: float = 0.002
    damage_id_format: float = 0.002
    damage_date: float = 0.002
    damage_missing: float = 0.002
    damage_code: float = 0.002
    damage_malformed: float = 0.002
    damage_future_date: float = 0.002  # an event date after the delivery's extract date
    duplicate: float = 0.003


def check_dirt(dirt: DirtRates, where: str) -> None:
    for f in dataclasses.fields(DirtRates):
        value = getattr(dirt, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 0.5:
            raise UsageError(f"{where}{f.name.replace('_', '-')} must be between 0 and 0.5, got {value!r}")


@dataclass(frozen=True)
class EvolutionRates:
    """How the city changes from year to year (``synth.evolution``); optional in a profile.

    Rates are per household and year, before the district- and age-specific multipliers the
    evolution draws from its seed (``district_spread``) and lets drift each year (``drift``), so
    migration differs by district and by the age of a family's youngest child and is not stationary.
    """

    birth_trend: float = -0.04  # yearly change of births, against the city's young cohorts today
    move_out: float = 0.03  # households leaving the city
    move_in: float = 0.03  # households arriving, as a share of the households present
    move_within: float = 0.06  # households moving to another room of the city
    arrivals_with_children: float = 0.4  # arriving households with a child under 15
    school_age_boost: float = 1.8  # moving rate of families whose youngest child is 3-6, times the base
    school_pull: float = 0.6  # spread (log sd) of catchments' pull on families moving with children
    district_spread: float = 0.35  # spread (log sd) of district multipliers of every rate
    drift: float = 0.1  # yearly change (log sd) of the district multipliers (births: a third)
    own_home: float = 0.55  # movers and arrivals who buy (else rent) where they move to
    hukou_follows: float = 0.5  # movers within the city whose hukou moves with them
    burn_in_years: int = 12  # years evolved before the city the scoring forecasts from, so every
    #                                 child of a forecast cohort was born in the evolution


@dataclass(frozen=True)
class District:
    code: str  # GB/T 2260 county code
    name: str
    share: float  # of the city's blocks
    box: tuple[float, float, float, float]  # lon0, lat0, lon1, lat1


@dataclass(frozen=True)
class City:
    province: str  # 山东省
    province_short: str  # 鲁, as in certificate numbers
    name: str  # 日照市
    districts: tuple[District, ...]
    urban_region_codes: tuple[str, ...]
    streets: tuple[str, ...]  # stems of 街道 names

    @property
    def short_name(self) -> str:
        """日照市 → 日照, as in company names."""
        return self.name[:-1] if self.name.endswith("市") and len(self.name) > 2 else self.name

    @property
    def district_names(self) -> dict[str, str]:
        return {d.code: d.name for d in self.districts}


@dataclass(frozen=True)
class Profile:
    name: str
    city: City
    shared_road_names: float  # share of road names that run through two or more districts
    direction_siblings: float  # share of road names with a sibling differing only by direction
    phased_compounds: float  # share of compounds named with a phase or zone
    xiaoqu_compounds: float  # share of compound names carrying 小区
    repeated_compounds: float  # share of compounds whose name and door recur on that road in another district
    households: tuple[tuple[str, float], ...]  # (kind, share of households)
    children_per_family: tuple[float, float, float]  # weights of 1, 2, 3 children in a couple's household
    buyers_per_contract: tuple[float, float, float]  # weights of 1, 2, 3 buyers
    cohort_share: float  # residents born in one enrollment birth year / all residents
    delivery_lag: tuple[tuple[str, int], ...]  # (source, days before as-of of today's delivery)
    next_day_added: float  # share of a source's records first delivered the next day
    next_day_removed: float  # share of a source's records gone from the next day's delivery
    dirt: DirtRates
    evolution: EvolutionRates = EvolutionRates()

    @property
    def mean_buyers(self) -> float:
        w = self.buyers_per_contract
        return (1 * w[0] + 2 * w[1] + 3 * w[2]) / sum(w)

    def policy_yaml(self) -> str:
        """The reference policy.yaml: the demo policy with this city's urban region codes."""
        codes = ", ".join(json.dumps(c) for c in self.city.urban_region_codes)
        text, n = re.subn(
            r"^urban_region_codes: \[[^\]]*\]", f"urban_region_codes: [{codes}]", DEMO_POLICY_YAML, flags=re.M
        )
        if n != 1:
            raise AssertionError("DEMO_POLICY_YAML has no urban_region_codes line")
        return text


def profile_names() -> list[str]:
    folder = resources.files("pipelines.synth") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """A shipped profile by name (``default``, ``weifang``) or a YAML file by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith((".yaml", ".yml")) or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"synth: cannot read profile {path}: {type(exc).__name__}") from None
        label = str(path)
    else:
        if text_name not in profile_names():
            raise UsageError(
                f"synth: no profile named {text_name!r} (shipped: {', '.join(profile_names())}; "
                "or give a path to a YAML file)"
            )
        text = (resources.files("pipelines.synth") / "profiles" / f"{text_name}.yaml").read_text(encoding="utf-8")
        label = text_name
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"synth: profile {label} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return profile_from_dict(doc, label)


class _Doc:
    """Typed reads from a parsed profile; every error names the profile and the dotted key."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key: str, what: str) -> None:
        raise UsageError(f"synth: profile {self.label}: '{key}' {what}")

    def mapping(self, node: Any, key: str, allowed: tuple[str, ...] | None, complete: bool = True) -> dict:
        if not isinstance(node, dict):
            self.fail(key, "must be a mapping")
        if allowed is not None:
            unknown = sorted(str(k) for k in node if k not in allowed)
            if unknown:
                self.fail(key, f"has unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
            missing = [k for k in allowed if k not in node]
            if missing and complete:
                self.fail(f"{key}.{missing[0]}" if key else missing[0], "is missing")
        return node

    def share(self, node: Any, key: str, low: float = 0.0, high: float = 1.0) -> float:
        if isinstance(node, bool) or not isinstance(node, (int, float)) or not low <= node <= high:
            self.fail(key, f"must be a number between {low:g} and {high:g}, got {node!r}")
        return float(node)

    def text(self, node: Any, key: str) -> str:
        if not isinstance(node, str) or not node.strip():
            self.fail(key, "must be a non-empty text")
        return node.strip()

    def code(self, node: Any, key: str) -> str:
        value = str(node) if isinstance(node, (str, int)) and not isinstance(node, bool) else ""
        if not re.fullmatch(r"\d{6}", value):
            self.fail(key, f"must be a 6-digit region code, got {node!r}")
        return value

    def weights(self, node: Any, key: str) -> tuple[float, float, float]:
        """{1: w, 2: w, 3: w}: relative weights (at least one positive)."""
        self.mapping(node, key, None)
        if not set(node) <= {1, 2, 3} or not node:
            self.fail(key, "must map 1, 2, 3 to weights")
        w = tuple(self.share(node.get(k, 0), f"{key}.{k}", 0.0, 1e9) for k in (1, 2, 3))
        if sum(w) <= 0:
            self.fail(key, "needs a positive weight")
        return w  # type: ignore[return-value]


def profile_from_dict(doc: Any, label: str = "<dict>") -> Profile:
    r = _Doc(label)
    evolution_doc = None
    if isinstance(doc, dict) and "evolution" in doc:  # optional: absent, EvolutionRates' defaults
        evolution_doc = doc["evolution"]
        doc = {k: v for k, v in doc.items() if k != "evolution"}
    top = r.mapping(
        doc,
        "",
        (
            "name",
            "city",
            "roads",
            "compounds",
            "households",
            "children_per_family",
            "contracts",
            "cohort_share",
            "deliveries",
            "dirt",
        ),
    )
    city_doc = r.mapping(
        top["city"], "city", ("province", "province_short", "name", "urban_region_codes", "streets", "districts")
    )
    if not isinstance(city_doc["districts"], list) or len(city_doc["districts"]) < 2:
        r.fail("city.districts", "must list at least two districts")
    districts = []
    for k, d in enumerate(city_doc["districts"]):
        key = f"city.districts[{k}]"
        d = r.mapping(d, key, ("code", "name", "share", "box"))
        box = d["box"]
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            or not (box[0] < box[2] and box[1] < box[3])
        ):
            r.fail(f"{key}.box", "must be [lon0, lat0, lon1, lat1] with lon0 < lon1 and lat0 < lat1")
        districts.append(
            District(
                r.code(d["code"], f"{key}.code"),
                r.text(d["name"], f"{key}.name"),
                r.share(d["share"], f"{key}.share", 0.01, 1.0),
                tuple(float(v) for v in box),
            )
        )
    codes = [d.code for d in districts]
    if len(set(codes)) != len(codes) or len({d.name for d in districts}) != len(districts):
        r.fail("city.districts", "repeats a district code or name")
    if abs(sum(d.share for d in districts) - 1.0) > 0.01:
        r.fail("city.districts", f"shares must sum to 1, got {sum(d.share for d in districts):.3f}")
    urban = city_doc["urban_region_codes"]
    if not isinstance(urban, list) or not urban:
        r.fail("city.urban_region_codes", "must be a non-empty list")
    urban = tuple(r.code(c, "city.urban_region_codes") for c in urban)
    if not set(urban) <= set(codes) or set(urban) == set(codes):
        r.fail("city.urban_region_codes", "must be some, not all, of the district codes")
    streets = city_doc["streets"]
    if not isinstance(streets, list) or not streets:
        r.fail("city.streets", "must be a non-empty list")
    city = City(
        r.text(city_doc["province"], "city.province"),
        r.text(city_doc["province_short"], "city.province_short"),
        r.text(city_doc["name"], "city.name"),
        tuple(districts),
        urban,
        tuple(r.text(s, "city.streets") for s in streets),
    )

    roads = r.mapping(top["roads"], "roads", ("shared_across_districts", "direction_siblings"))
    compounds = r.mapping(top["compounds"], "compounds", ("phased", "xiaoqu", "repeated_across_districts"))
    households = r.mapping(top["households"], "households", HOUSEHOLD_KINDS)
    mix = tuple((k, r.share(households[k], f"households.{k}")) for k in HOUSEHOLD_KINDS)
    if abs(sum(v for _, v in mix) - 1.0) > 0.01:
        r.fail("households", f"shares must sum to 1, got {sum(v for _, v in mix):.3f}")
    if min(v for _, v in mix) <= 0:
        r.fail("households", "needs a positive share of every kind")
    contracts = r.mapping(top["contracts"], "contracts", ("buyers",))
    deliveries = r.mapping(top["deliveries"], "deliveries", ("days_before_as_of", "next_day"))
    lag_doc = r.mapping(deliveries["days_before_as_of"], "deliveries.days_before_as_of", SOURCES)
    lag = []
    for s in SOURCES:
        v = lag_doc[s]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 14:
            r.fail(f"deliveries.days_before_as_of.{s}", f"must be a whole number of days from 1 to 14, got {v!r}")
        lag.append((s, v))
    next_day = r.mapping(deliveries["next_day"], "deliveries.next_day", ("added", "removed"))
    # dirt may name only the rates it changes; the others keep DirtRates' defaults
    dirt_doc = r.mapping(top["dirt"], "dirt", tuple(f.name for f in dataclasses.fields(DirtRates)), complete=False)
    dirt = DirtRates(**{k: r.share(v, f"dirt.{k}", 0.0, 0.5) for k, v in dirt_doc.items()})
    return Profile(
        name=r.text(top["name"], "name"),
        city=city,
        shared_road_names=r.share(roads["shared_across_districts"], "roads.shared_across_districts"),
        direction_siblings=r.share(roads["direction_siblings"], "roads.direction_siblings", 0.0, 0.9),
        phased_compounds=r.share(compounds["phased"], "compounds.phased", 0.0, 0.8),
        xiaoqu_compounds=r.share(compounds["xiaoqu"], "compounds.xiaoqu"),
        repeated_compounds=r.share(
            compounds["repeated_across_districts"], "compounds.repeated_across_districts", 0.0, 0.2
        ),
        households=mix,
        children_per_family=r.weights(top["children_per_family"], "children_per_family"),
        buyers_per_contract=r.weights(contracts["buyers"], "contracts.buyers"),
        cohort_share=r.share(top["cohort_share"], "cohort_share", 0.002, 0.04),
        delivery_lag=tuple(lag),
        next_day_added=r.share(next_day["added"], "deliveries.next_day.added", 0.0, 0.1),
        next_day_removed=r.share(next_day["removed"], "deliveries.next_day.removed", 0.0, 0.1),
        dirt=dirt,
        evolution=_evolution(r, evolution_doc),
    )


def _evolution(r: _Doc, node: Any) -> EvolutionRates:
    """The optional ``evolution`` mapping: only the rates it changes."""
    if node is None:
        return EvolutionRates()
    fields = {f.name: f for f in dataclasses.fields(EvolutionRates)}
    r.mapping(node, "evolution", tuple(fields), complete=False)
    given = {}
    for key, value in node.items():
        if key == "burn_in_years":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
                r.fail("evolution.burn_in_years", f"must be a whole number of years from 0 to 20, got {value!r}")
            given[key] = value
        elif key == "birth_trend":
            given[key] = r.share(value, f"evolution.{key}", -0.5, 0.5)
        elif key in ("school_age_boost",):
            given[key] = r.share(value, f"evolution.{key}", 0.0, 5.0)
        elif key in ("school_pull", "district_spread", "drift"):
            given[key] = r.share(value, f"evolution.{key}", 0.0, 2.0)
        else:
            given[key] = r.share(value, f"evolution.{key}", 0.0, 0.5 if key.startswith("move") else 1.0)
    return EvolutionRates(**given)
