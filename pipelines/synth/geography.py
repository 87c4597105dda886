"""The city's ground: districts, a road grid, compounds, the address registry, schools, catchments.

Each district is a lon/lat box cut by a grid of roads into blocks; one compound per block, its
buildings strictly inside the block, so a catchment drawn along roads (a union of blocks)
contains or excludes every building without touching one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from pipelines.synth.names import PHASE_NUMERALS, ZONE_DIRECTIONS, road_names_by_district, unique_compound_bases
from pipelines.synth.profile import Profile

LEVELS = ("primary", "junior")


@dataclass(frozen=True)
class Geography:
    blocks: pd.DataFrame  # block_id, district_code, row, col, lon0, lat0, lon1, lat1, road, door_no, compound
    registry: pd.DataFrame  # addresses.csv columns + block_id, n_units, max_floor, n_buildings, the compound's
    #                           parts (compound_base, compound_xiaoqu, compound_label) and road_shared
    schools: pd.DataFrame  # schools.csv columns
    catchments: dict  # GeoJSON FeatureCollection
    membership: pd.DataFrame  # address_code, level, school_code (one row per containing catchment)


def _grid(total_blocks: int, profile: Profile) -> list[tuple[str, str, int, int, tuple]]:
    out = []
    for d in profile.city.districts:
        side = max(4, int(round(np.sqrt(total_blocks * d.share))))
        out.append((d.code, d.name, side, side, d.box))
    return out


def build_geography(people: int, rng: np.random.Generator, enrollment_year: int, profile: Profile) -> Geography:
    target_addresses = max(400, int(people * 0.4))
    rooms_per_compound = 60
    total_blocks = max(80, target_addresses // rooms_per_compound)
    grid = _grid(total_blocks, profile)
    n_blocks = sum(r * c for _, _, r, c, _ in grid)
    rooms_per_compound = max(8, target_addresses / n_blocks)

    road_names = road_names_by_district(
        [r for _, _, r, _, _ in grid], profile.shared_road_names, profile.direction_siblings, rng
    )
    streets = np.array([s + "街道" for s in profile.city.streets], dtype=object)

    frames = []
    for (code, _, rows, cols, (x0, y0, x1, y1)), roads in zip(grid, road_names):
        xs = np.linspace(x0, x1, cols + 1).round(6)
        ys = np.linspace(y0, y1, rows + 1).round(6)
        r, c = np.divmod(np.arange(rows * cols), cols)
        door = 1 + 12 * c + 2 * rng.integers(0, 5, rows * cols)
        frames.append(
            pd.DataFrame(
                {
                    "district_code": code,
                    "row": r,
                    "col": c,
                    "lon0": xs[c],
                    "lat0": ys[r],
                    "lon1": xs[c + 1],
                    "lat1": ys[r + 1],
                    "road": np.array(roads, dtype=object)[r],
                    "door_no": door.astype(str),
                    "street": streets[(r // 3) % len(streets)],
                }
            )
        )
    blocks = pd.concat(frames, ignore_index=True)
    blocks["block_id"] = np.arange(len(blocks))
    districts_of_road = blocks.groupby("road")["district_code"].nunique()
    blocks["road_shared"] = blocks["road"].map(districts_of_road).to_numpy() > 1
    blocks = _compounds(blocks, profile, rng)
    blocks = _twins(blocks, profile.repeated_compounds, rng)
    blocks["community"] = blocks["compound"].str.slice(0, 2) + "社区"

    registry = _rooms(blocks, rooms_per_compound, rng, profile)
    schools, catchments, polygons = _schools_and_catchments(blocks, registry, rng, enrollment_year, profile)
    schools["capacity"] = planned_seats(schools, people)
    membership = _membership(registry, polygons)
    return Geography(blocks, registry, schools, catchments, membership)


def _compounds(blocks: pd.DataFrame, profile: Profile, rng: np.random.Generator) -> pd.DataFrame:
    """One compound per block; a share of them are phases or zones of one estate on neighbouring
    blocks of the same road (明珠花园一期, 明珠花园二期; 阳光花园小区东区), the first phase sometimes
    keeping the bare name. Base names are unique city-wide, so base + phase names one compound."""
    n = len(blocks)
    bases = np.array(unique_compound_bases(n, rng), dtype=object)
    base = bases.copy()
    label = np.full(n, "", dtype=object)
    xiaoqu = rng.random(n) < profile.xiaoqu_compounds
    target = int(round(profile.phased_compounds * n))
    key = blocks["district_code"].to_numpy() + ":" + blocks["row"].astype(str).to_numpy()
    col = blocks["col"].to_numpy()
    width = blocks.groupby(["district_code", "row"])["col"].transform("max").to_numpy() + 1
    taken = np.zeros(n, bool)
    labelled = 0
    for start in rng.permutation(n):
        if labelled >= target:
            break
        size = int(rng.integers(2, 5))
        if (
            col[start] + size > width[start]
            or taken[start : start + size].any()
            or (key[start : start + size] != key[start]).any()
        ):
            continue
        members = np.arange(start, start + size)  # blocks of a row are consecutive, west to east
        style = rng.random()
        if style < 0.6:
            bare_first = rng.random() < 0.3
            names = [PHASE_NUMERALS[k] + "期" for k in range(size)]
            if bare_first:
                names[0] = ""
        elif style < 0.8:
            names = [PHASE_NUMERALS[k] + "区" for k in range(size)]
        else:
            names = [ZONE_DIRECTIONS[k] for k in rng.permutation(len(ZONE_DIRECTIONS))[:size]]
        taken[members] = True
        base[members] = bases[start]
        label[members] = names
        xiaoqu[members] = xiaoqu[start]
        labelled += sum(1 for x in names if x)
    blocks["compound_base"] = base
    blocks["compound_xiaoqu"] = xiaoqu
    blocks["compound_label"] = label
    blocks["compound"] = base + np.where(xiaoqu, "小区", "") + label
    return blocks


def _twins(blocks: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """A share of compounds whose name and door number recur on the road of the same name in
    another district (阳光花园 at 人民路13号 in two districts, as real cities have): without its
    district a text there fits two registry addresses, so only the district places it."""
    pairs = int(round(share * len(blocks) / 2))
    plain = blocks[blocks["road_shared"] & (blocks["compound_label"] == "")]
    groups = [g.to_numpy() for _, g in plain.groupby(["road", "col"], sort=True)["block_id"] if len(g) >= 2]
    used = np.zeros(len(blocks), bool)
    done = 0
    for k in rng.permutation(len(groups)):
        if done >= pairs:
            break
        a, b = rng.permutation(groups[k])[:2]
        if used[a] or used[b]:
            continue
        for col in ("compound_base", "compound_xiaoqu", "compound", "door_no"):
            blocks.loc[b, col] = blocks.loc[a, col]
        used[[a, b]] = True
        done += 1
    return blocks


def _rooms(blocks: pd.DataFrame, rooms_per_compound: float, rng: np.random.Generator, profile: Profile) -> pd.DataFrame:
    """Buildings, units and rooms of every compound, sized so the registry holds the target count."""
    n = len(blocks)
    max_floor_cap = int(np.clip(rooms_per_compound / 6, 3, 18))
    floors_per_building = rng.integers(2, max_floor_cap + 1, n)
    units_choice = rng.choice([1, 2, 2, 3], n)
    per_building = floors_per_building * units_choice * 2
    n_buildings = np.maximum(1, np.round(rooms_per_compound / per_building)).astype(int)

    b_block = np.repeat(np.arange(n), n_buildings)
    b_no = _within(n_buildings) + 1
    b_units = np.where(rng.random(len(b_block)) < 0.15, 1, units_choice[b_block])
    b_floors = np.clip(floors_per_building[b_block] + rng.integers(-1, 2, len(b_block)), 2, None)
    frac = (b_no - 0.5) / n_buildings[b_block]
    lon = (
        blocks["lon0"].to_numpy()[b_block] + (0.15 + 0.7 * frac) * (blocks["lon1"] - blocks["lon0"]).to_numpy()[b_block]
    )
    lat = (
        blocks["lat0"].to_numpy()[b_block]
        + (0.3 + 0.4 * (b_no % 2)) * (blocks["lat1"] - blocks["lat0"]).to_numpy()[b_block]
    )

    u_building = np.repeat(np.arange(len(b_block)), b_units)
    u_no = _within(b_units) + 1
    rooms_per_unit = b_floors[u_building] * 2
    r_unit = np.repeat(np.arange(len(u_building)), rooms_per_unit)
    k = _within(rooms_per_unit)
    floor, side = np.divmod(k, 2)
    r_building = u_building[r_unit]
    r_block = b_block[r_building]

    reg = pd.DataFrame(
        {
            "district_code": blocks["district_code"].to_numpy()[r_block],
            "street": blocks["street"].to_numpy()[r_block],
            "community": blocks["community"].to_numpy()[r_block],
            "road": blocks["road"].to_numpy()[r_block],
            "door_no": blocks["door_no"].to_numpy()[r_block],
            "compound": blocks["compound"].to_numpy()[r_block],
            "building": b_no[r_building].astype(str),
            "unit": u_no[r_unit].astype(str),
            "room": ((floor + 1) * 100 + side + 1).astype(str),
            "lon": lon[r_building].round(6),
            "lat": lat[r_building].round(6),
            "block_id": r_block,
            "building_id": r_building,
            "n_units": b_units[r_building],
            "max_floor": b_floors[r_building],
            "n_buildings": n_buildings[r_block],
            **{
                c: blocks[c].to_numpy()[r_block]
                for c in ("compound_base", "compound_xiaoqu", "compound_label", "road_shared")
            },
        }
    )
    reg.insert(
        0, "address_code", pd.Series(reg["district_code"] + pd.Series(np.arange(len(reg)) + 1).map("{:010d}".format))
    )
    district = reg["district_code"].map(profile.city.district_names)
    reg.insert(
        10,
        "standard_text",
        district
        + reg["road"]
        + reg["door_no"]
        + "号"
        + reg["compound"]
        + reg["building"]
        + "号楼"
        + reg["unit"]
        + "单元"
        + reg["room"]
        + "室",
    )
    # rooms whose text without the district fits another district's room too
    reg["twin_room"] = reg.duplicated(
        ["road", "door_no", "compound", "building", "unit", "room"], keep=False
    ).to_numpy()
    return reg


SCHOOL_KIND = {"primary": "小学", "junior": "初级中学"}
CLASS_SIZE = 45
ENTRY_COHORT_SHARE = 1 / 75  # one birth year of a city's residents, roughly


def planned_seats(schools: pd.DataFrame, people: int) -> pd.Series:
    """Seats planned for the enrollment year (sources.md): near each school's share of one
    cohort, from 0.6× to 1.4× of it, so some schools are oversubscribed and some half empty, as
    in a real city, whatever its size; whole classes where a school has several, else steps of 5
    seats (a small synthetic city has small schools)."""
    per_school = people * ENTRY_COHORT_SHARE / schools.groupby("level")["school_code"].transform("size")
    margin = 0.6 + (schools["capacity"] - 4) * 0.1
    step = np.where(per_school >= 2 * CLASS_SIZE, CLASS_SIZE, 5)
    return (np.maximum(1, np.round(per_school * margin / step)) * step).astype(int)


def _within(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each group, concatenated (the vectorized ``range`` per group)."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _schools_and_catchments(blocks, registry, rng, year, profile: Profile):
    """Catchments as unions of blocks: one tile of blocks per school, with gaps, overlaps, islands."""
    total = len(blocks)
    tile_p = int(max(2, round(np.sqrt(total / max(20, total * 60 * 2.5 / 6000)))))
    schools, features, polygons = [], [], []
    names = profile.city.district_names
    for level, city_tile, letter in (("primary", tile_p, "P"), ("junior", 2 * tile_p, "J")):
        assign = []  # (block_id, school index)
        for code, dblocks in blocks.groupby("district_code", sort=True):
            # at least two schools across a district, so even a small district has overlaps
            tile = max(1, min(city_tile, (int(dblocks["col"].max()) + 1) // 2))
            tr = dblocks["row"].to_numpy() // tile
            tc = dblocks["col"].to_numpy() // tile
            ntc = tc.max() + 1
            tile_id = tr * ntc + tc
            ids = dblocks["block_id"].to_numpy()
            uniq = np.unique(tile_id)
            base = len(schools)
            for k, t in enumerate(uniq):
                members = ids[tile_id == t]
                centre = members[len(members) // 2]
                b = blocks.loc[centre]
                name_stem = b["compound"][:2]
                schools.append(
                    {
                        "school_code": f"{letter}{code}{k + 1:03d}",
                        "school_name": f"{profile.city.name}{names[code]}{name_stem}{SCHOOL_KIND[level]}",
                        "level": level,
                        "district_code": code,
                        "address": f"{names[code]}{b['road']}{b['door_no']}号",
                        "capacity": int(rng.integers(4, 13)),  # the planners' margin, in tenths (planned_seats)
                        "lon": round((b["lon0"] + b["lon1"]) / 2, 6),
                        "lat": round((b["lat0"] + b["lat1"]) / 2, 6),
                    }
                )
            school_of_block = base + np.searchsorted(uniq, tile_id)
            # gaps: blocks in no catchment of this level (at least one per district); every school keeps its centre
            centre = np.isin(ids, [ids[tile_id == t][len(ids[tile_id == t]) // 2] for t in uniq])
            gap = (rng.random(len(ids)) < 0.08) & ~centre
            if not gap.any():
                gap[rng.choice(np.flatnonzero(~centre))] = True
            keep = ~gap
            assign += list(zip(ids[keep], school_of_block[keep]))
            # overlaps: edge blocks also belong to the next tile's school to the east
            east = (
                (dblocks["col"].to_numpy() % tile == tile - 1) & (tc + 1 < ntc) & (rng.random(len(ids)) < 0.35) & keep
            )
            assign += list(zip(ids[east], base + np.searchsorted(uniq, tile_id[east] + 1)))
            # islands: a far block of the east neighbour's tile joins a school -> MultiPolygon
            for t in uniq[rng.random(len(uniq)) < 0.3]:
                if (t % ntc) + 1 < ntc:
                    nb = ids[(tile_id == t + 1) & (dblocks["col"].to_numpy() % tile == tile - 1) & keep]
                    if tile >= 2 and len(nb):
                        assign.append((nb[0], base + int(np.searchsorted(uniq, t))))
        assign = sorted(set((int(b), int(s)) for b, s in assign))
        by_school: dict[int, list[int]] = {}
        for b, s in assign:
            by_school.setdefault(s, []).append(b)
        for s, bl in sorted(by_school.items()):
            sub = blocks.loc[bl]
            boxes = shapely.box(sub["lon0"], sub["lat0"], sub["lon1"], sub["lat1"])
            geom = shapely.union_all(boxes).normalize()
            polygons.append((schools[s]["school_code"], level, geom))
            features.append(
                {
                    "type": "Feature",
                    "properties": {"school_code": schools[s]["school_code"], "level": level, "enrollment_year": year},
                    "geometry": json.loads(shapely.to_geojson(shapely.set_precision(geom, 1e-6))),
                }
            )
    collection = {"type": "FeatureCollection", "features": features}
    return pd.DataFrame(schools), collection, polygons


def _membership(registry: pd.DataFrame, polygons: list) -> pd.DataFrame:
    """Which catchments contain each address point (point-in-polygon on building points)."""
    buildings = registry.drop_duplicates("building_id")[["building_id", "lon", "lat"]]
    tree = shapely.STRtree([g for _, _, g in polygons])
    points = shapely.points(buildings["lon"].to_numpy(), buildings["lat"].to_numpy())
    pt_idx, poly_idx = tree.query(points, predicate="within")
    hits = pd.DataFrame(
        {
            "building_id": buildings["building_id"].to_numpy()[pt_idx],
            "school_code": [polygons[i][0] for i in poly_idx],
            "level": [polygons[i][1] for i in poly_idx],
        }
    )
    out = registry[["address_code", "building_id"]].merge(hits, on="building_id")
    return out[["address_code", "level", "school_code"]].sort_values(
        ["address_code", "level", "school_code"], ignore_index=True
    )


REGISTRY_COLUMNS = [
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
