"""The city's standard address registry (标准地址库), keyed the way texts are parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.addresses.normalize import (
    XIAOQU_SUFFIX,
    compound_key,
    halfwidth_readings,
    normalize_name,
    number_key,
)
from pipelines.errors import UsageError

REGISTRY_COLUMNS = (
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
)
KEY_SEP = "\x1f"


def component_key(
    road: pd.Series, door_no: pd.Series, compound: pd.Series, building: pd.Series, unit: pd.Series, room: pd.Series
) -> pd.Series:
    """One string per address that texts and registry rows share when they mean the same room."""
    key = road
    for part in (door_no, compound, building, unit, room):
        key = key + KEY_SEP + part
    return key


@dataclass
class AddressRegistry:
    """Built once per run; ``keys`` is what texts are joined against.

    ``frame``: the registry as delivered (codes as text, lon/lat float).
    ``keys``: address_code, district_code, road, door_no, compound, building, unit, room and
    ``key`` (all but the district), normalized like department texts.
    ``exact``: standard_text → address_code for texts that name one code only.
    ``roads``: normalized road → the district codes it runs through.
    ``district_names``: district name (as in standard_text) → code, longest first.
    ``numbered_compounds``: compounds whose name ends in a number (阳光100, 花园城一): ``base``,
    the key without its trailing digits (阳光), and ``name`` as texts write it (阳光100, and
    花园城一 as well as 花园城1), for texts that run the name into the building number.
    """

    frame: pd.DataFrame
    keys: pd.DataFrame
    exact: pd.Series
    roads: dict[str, frozenset[str]]
    district_names: dict[str, str]
    duplicate_texts: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    numbered_compounds: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"base": [], "name": []}, dtype="str")
    )

    @classmethod
    def load(cls, path: Path) -> AddressRegistry:
        """Read ``REFERENCE/addresses.csv``."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"address registry not found: {path}")
        text_columns = {c: "str" for c in REGISTRY_COLUMNS if c not in ("lon", "lat")}
        try:
            frame = pd.read_csv(path, dtype=text_columns, keep_default_na=False, encoding="utf-8-sig", engine="pyarrow")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"address registry {path} cannot be read: {exc}") from None
        return cls.from_frame(frame, origin=str(path))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, origin: str = "address registry") -> AddressRegistry:
        """Build from a frame with the addresses.csv columns."""
        missing = [c for c in REGISTRY_COLUMNS if c not in frame.columns]
        if missing:
            raise UsageError(f"{origin} lacks columns: {', '.join(missing)}")
        frame = frame.loc[:, list(REGISTRY_COLUMNS)].copy()
        for column in REGISTRY_COLUMNS[:-2]:
            frame[column] = frame[column].fillna("").astype("str").str.strip()
        frame["lon"] = pd.to_numeric(frame["lon"], errors="coerce")
        frame["lat"] = pd.to_numeric(frame["lat"], errors="coerce")
        frame = frame.reset_index(drop=True)

        keys = pd.DataFrame(
            {
                "address_code": frame["address_code"],
                "district_code": frame["district_code"],
                "road": _per_distinct(frame["road"], normalize_name),
                "door_no": _per_distinct(frame["door_no"], lambda v: number_key(normalize_name(v))),
                "compound": _per_distinct(frame["compound"], lambda v: compound_key(normalize_name(v))),
                "building": _per_distinct(frame["building"], lambda v: number_key(normalize_name(v))),
                "unit": _per_distinct(frame["unit"], lambda v: number_key(normalize_name(v))),
                "room": _per_distinct(frame["room"], lambda v: number_key(normalize_name(v))),
            }
        )
        keys["key"] = component_key(
            keys["road"], keys["door_no"], keys["compound"], keys["building"], keys["unit"], keys["room"]
        )

        repeated = frame["standard_text"].duplicated(keep=False).to_numpy()
        unique = frame.loc[~repeated]
        exact = pd.Series(unique["address_code"].to_numpy(), index=unique["standard_text"].to_numpy())
        duplicates = frame.loc[repeated].groupby("standard_text")["address_code"].agg(sorted)

        roads = {
            road: frozenset(codes) for road, codes in keys.groupby("road")["district_code"].unique().items() if road
        }
        return cls(
            frame=frame,
            keys=keys,
            exact=exact,
            roads=roads,
            district_names=district_names(frame),
            duplicate_texts=duplicates,
            numbered_compounds=_numbered_compounds(frame["compound"], keys["compound"]),
        )

    def find_standard_texts(self, texts: pd.Series) -> tuple[pd.Series, pd.Series]:
        """Texts equal to a standard_text: (position → its one code, position → its codes).

        ``texts`` is indexed 0..n-1; Arrow's hash lookup keeps this cheap for millions of texts.
        """
        values = pc.cast(pa.array(texts.astype("str").array), pa.large_string())
        found = []
        for table, index in zip((self.exact, self.duplicate_texts), self._standard_text_index):
            at = pc.index_in(values, value_set=index)
            positions = np.flatnonzero(pc.is_valid(at).to_numpy(zero_copy_only=False))
            rows = pc.drop_null(at).to_numpy(zero_copy_only=False)
            found.append(pd.Series(table.to_numpy()[rows], index=positions, dtype=object))
        return found[0], found[1]

    @cached_property
    def _standard_text_index(self) -> tuple[pa.Array, pa.Array]:
        return tuple(
            pa.array(table.index.to_numpy(dtype=object), type=pa.large_string())
            for table in (self.exact, self.duplicate_texts)
        )

    def standard_text(self, codes: list[str]) -> list[str]:
        """The standard texts of some codes, in the given order."""
        lookup = pd.Series(self.frame["standard_text"].to_numpy(), index=self.frame["address_code"])
        return [str(lookup.get(code, "")) for code in codes]


def _per_distinct(values: pd.Series, normalize) -> pd.Series:
    """Normalize each distinct value once: a registry repeats few roads, numbers and compounds."""
    codes, uniques = pd.factorize(values)
    normalized = normalize(pd.Series(uniques, dtype="str")).to_numpy(dtype=object)
    return pd.Series(normalized[codes], index=values.index, dtype="str")


def _numbered_compounds(names: pd.Series, keyed: pd.Series) -> pd.DataFrame:
    """base, name for each compound whose key ends in digits (see ``AddressRegistry``)."""
    distinct = pd.DataFrame({"raw": names, "key": keyed}).drop_duplicates()
    base = distinct["key"].str.extract(r"^(.*?)[0-9]+$")[0]
    distinct = distinct.assign(base=base).dropna(subset=["base"])
    written = halfwidth_readings(distinct["raw"])[0].str.replace(XIAOQU_SUFFIX, "", regex=True)
    both = pd.concat(
        [
            pd.DataFrame({"base": distinct["base"], "name": written}),
            pd.DataFrame({"base": distinct["base"], "name": distinct["key"]}),
        ]
    )
    return both.loc[both["name"] != ""].drop_duplicates().reset_index(drop=True)


def district_names(frame: pd.DataFrame) -> dict[str, str]:
    """District names as standard_text spells them (the text before the road), per code."""
    names: dict[str, str] = {}
    for row in frame.drop_duplicates("district_code").itertuples(index=False):
        tail = f"{row.road}{row.door_no}号{row.compound}{row.building}号楼{row.unit}单元{row.room}室"
        text = row.standard_text
        if text.endswith(tail):
            name = text[: len(text) - len(tail)]
        else:
            position = text.find(row.road) if row.road else -1
            name = text[:position] if position > 0 else ""
        if name:
            names[name] = row.district_code
    return dict(sorted(names.items(), key=lambda item: -len(item[0])))
