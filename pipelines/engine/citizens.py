"""The per-citizen warehouse tables built from the staged frames (warehouse.md).

Everything here is keyed by one person's resident ID, so each function can run on the rows of
one hash bucket of IDs at a time (``pipelines.engine.buckets``). The one exception is the
household rule for guardians, which needs a whole household: ``build_guardianship`` therefore
runs on a bucket of ``household_no``. Whether a record qualifies is ``rules``' business.

Date columns are ``datetime64[ns]`` (midnight), ``NaT`` when unknown. JSON text columns use
``sort_keys=True, ensure_ascii=False`` so reruns are byte-identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import registry
from pipelines.engine import rules
from pipelines.engine.frames import arrow_text, as_dates, as_text, json_text, produced_columns, sort_rows
from pipelines.engine.records import (
    CHILD_OF_HEAD,
    CONTRACT_KIND,
    HEAD_OF_HOUSEHOLD,
    HUKOU_ACTIVE,
    PERSON_OWNER,
    SPOUSE_OF_HEAD,
    TITLE_KIND,
    UNPLACED_ADDRESS,
    business_sources,
    evidence_source,
)
from pipelines.policy import Policy
from pipelines.resident_id import RESIDENT_ID_PATTERN

CITIZEN_COLUMNS = produced_columns("citizen")
GUARDIANSHIP_COLUMNS = produced_columns("guardianship")
# What the household rule reads of the hukou (the marts' forecast links guardians by it too).
HUKOU_FOR_GUARDIANSHIP = [
    "citizen_id",
    "birth_date",
    "household_no",
    "relation_to_head",
    "status",
    "guardian1_id",
    "guardian1_relation",
    "guardian2_id",
    "guardian2_relation",
    "updated_at",
    "record_ref",
]
PROPERTY_COLUMNS = produced_columns("property_holding")
RENTAL_COLUMNS = produced_columns("rental_holding")
EMPLOYMENT_COLUMNS = produced_columns("employment")


def _frame(staged: dict[str, pd.DataFrame], source: str, columns: list[str]) -> pd.DataFrame:
    """The staged frame of a source, or an empty one with the needed columns when absent."""
    frame = staged.get(source)
    if frame is None:
        return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        frame = frame.assign(**{c: None for c in missing})
    return frame


def _is_resident_id(ids: pd.Series) -> pd.Series:
    return ids.astype("str").str.fullmatch(RESIDENT_ID_PATTERN).fillna(False).astype(bool)


PLACING_COLUMNS = ["source", "address", "address_code", "status"]
"""The columns of the address matches that placing reads."""


def _place(texts: pd.Series, source: str, address_match: pd.DataFrame) -> pd.DataFrame:
    """Standard address code and match status of each text, as the addresses step decided.

    A text the address step did not see reads as ``unmatched``; ambiguous and unmatched texts
    carry no code, so they can never place anyone in a catchment.
    """
    of_source = pc.equal(arrow_text(address_match["source"]), source).fill_null(False)
    matches = {column: arrow_text(address_match[column]).filter(of_source) for column in PLACING_COLUMNS[1:]}
    given = arrow_text(texts)
    found = pc.index_in(given, value_set=matches["address"])  # a text's first match, as ever
    status = matches["status"].take(found).fill_null("unmatched")  # a text never seen
    status = pc.if_else(pc.is_null(given), pa.scalar(None, pa.large_string()), status)
    unplaced = pc.is_in(status, value_set=pa.array(UNPLACED_ADDRESS, pa.large_string()))
    code = pc.if_else(pc.invert(unplaced).fill_null(False), matches["address_code"].take(found), None)
    return pd.DataFrame({"address_code": _str_series(code), "address_status": _str_series(status)}).set_axis(
        texts.index
    )


def _str_series(values: pa.Array) -> pd.Series:
    """Arrow text as a pandas text column (no Python object per value)."""
    return pd.Series(pd.array(values, dtype="str"))


def latest_hukou(hukou: pd.DataFrame) -> pd.DataFrame:
    """One hukou row per resident: the most recently updated one (record_ref breaks ties)."""
    if hukou.empty:
        return hukou
    order = [c for c in ("citizen_id", "updated_at", "record_ref") if c in hukou.columns]
    ascending = [True, False, True][: len(order)]
    return sort_rows(hukou, order, ascending, first_of=1)


def _person_owner(titles: pd.DataFrame) -> pd.Series:
    """Title rows owned by a resident (staging's owner_kind; the ID's form when it is absent)."""
    kind = titles["owner_kind"] if "owner_kind" in titles.columns else pd.Series(None, index=titles.index)
    return (kind.eq(PERSON_OWNER) | (kind.isna() & _is_resident_id(titles["owner_id"]))).fillna(False).astype(bool)


def role_frame_name(source: str, role: int) -> str:
    """The staged frame holding the rows for a source's ``role``-th person.

    Bucketed, a record naming two people sits in each one's bucket: the frame of role 0 is the
    source itself, a later role's rows come as ``<source>#<role>``. Unbucketed, every role
    reads the source's one frame.
    """
    return source if role == 0 else f"{source}#{role}"


def _named_residents(frame: pd.DataFrame, person: registry.PersonColumns) -> pd.Series:
    """Rows whose person column names a resident by its kind column (blank: the ID decides)."""
    if person.subject_column is None or person.subject_column not in frame.columns:
        return pd.Series(True, index=frame.index)
    kind = frame[person.subject_column]
    return (kind.eq(person.subject_kind) | kind.isna()).fillna(False).astype(bool)


def _mentions(staged: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every (ID, name, source) a department delivered about a person, IDs not yet checked.

    ``citizen_id`` and ``name`` are text, ``source`` the source's position in
    ``registry.source_keys()``.
    """
    position = {source: i for i, source in enumerate(registry.source_keys())}
    ids, names, sources = [], [], []
    for source, persons in registry.person_columns().items():
        for role, person in enumerate(persons):
            frame = staged.get(role_frame_name(source, role), staged.get(source))
            if frame is None or frame.empty or person.id not in frame.columns:
                continue
            rows = frame[_named_residents(frame, person)]
            rows = rows[rows[person.id].notna()]
            ids.append(rows[person.id].astype("str").reset_index(drop=True))
            if person.name in rows.columns:
                names.append(rows[person.name].astype("str").reset_index(drop=True))
            else:
                names.append(pd.Series(np.nan, index=range(len(rows)), dtype="str"))
            sources.append(np.full(len(rows), position[source], dtype=np.int64))
    if not ids:
        return pd.DataFrame(
            {
                "citizen_id": pd.Series(dtype="str"),
                "name": pd.Series(dtype="str"),
                "source": pd.Series(dtype=np.int64),
            }
        )
    return pd.DataFrame(
        {
            "citizen_id": pd.concat(ids, ignore_index=True),
            "name": pd.concat(names, ignore_index=True),
            "source": np.concatenate(sources),
        }
    )


def _residents(mentions: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """The resident IDs mentioned (credit codes are not residents), in ID order, and for each
    mention the position of its resident in that order (-1: not a resident ID)."""
    codes, uniques = pd.factorize(mentions["citizen_id"])
    uniques = pd.Series(uniques, dtype="str")
    order = pc.sort_indices(pa.array(uniques.array)).to_numpy()
    residents = order[_is_resident_id(uniques).to_numpy()[order]]
    slot = np.full(len(uniques) + 1, -1, dtype=np.int64)  # the last slot: a missing ID
    slot[residents] = np.arange(len(residents))
    return uniques.take(residents).reset_index(drop=True), slot[codes]


def _id_birth_and_sex(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Birth date and sex read from an 18-digit ID (digits 7–14; odd 17th digit = male)."""
    text = ids.astype("str")
    birth = pd.to_datetime(text.str[6:14], format="%Y%m%d", errors="coerce").astype("datetime64[ns]")
    odd = pd.to_numeric(text.str[16], errors="coerce") % 2
    sex = pd.Series(np.where(odd == 1, "男", "女"), index=ids.index, dtype="object")
    return birth, sex.where(odd.notna(), None)


def build_citizens(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """``citizen``: one row per resident named as the subject of any delivered record.

    Hukou fields (household, status, region, address, settled date) stay null for people the
    hukou does not list, and their ``urban_hukou`` is False; their sex and birth date are read
    from the ID itself, which is certain. ``sources`` is the sorted JSON list of the sources
    that mention them; ``name_conflict`` says two sources spell the name differently.
    """
    mentions = _mentions(staged)
    citizen_ids, resident = _residents(mentions)
    known = resident >= 0
    resident, source, name = resident[known], mentions["source"].to_numpy()[known], mentions["name"][known]
    count = len(citizen_ids)

    # The spelling of the most authoritative source naming them (first delivered among equals).
    sources = registry.source_keys()
    authority = {s: rank for rank, s in enumerate(registry.name_authority())}
    rank = np.array([authority.get(s, len(authority)) for s in sources], dtype=np.int64)[source]
    spelled = np.flatnonzero(name.notna().to_numpy())
    spelled = spelled[np.argsort(rank[spelled], kind="stable")]
    first = np.flatnonzero(~pd.Series(resident[spelled]).duplicated().to_numpy())
    spelling_of = np.full(count, -1, dtype=np.int64)
    spelling_of[resident[spelled[first]]] = spelled[first]
    names = name.array.take(spelling_of, allow_fill=True)
    spelling = pd.factorize(name.take(spelled))[0].astype(np.int64)
    width = int(spelling.max(initial=0)) + 1
    pairs = pd.unique(resident[spelled] * width + spelling)  # one per (resident, spelling)
    distinct = np.bincount(pairs // width, minlength=count)

    # Which sources mention them, as one bit each.
    masks = np.zeros(count, dtype=np.int64)
    for i in np.unique(source).tolist():
        masks[resident[source == i]] |= 1 << i
    mask_text = {
        mask: json_text(sorted(s for i, s in enumerate(sources) if mask & (1 << i)))
        for mask in np.unique(masks).tolist()
    }

    citizens = pd.DataFrame({"citizen_id": citizen_ids})
    citizens["name"] = names
    citizens["sources"] = pd.Series(masks).map(mask_text).to_numpy()
    citizens["name_conflict"] = distinct > 1

    hukou_source = evidence_source("hukou")
    hukou_columns = [
        "citizen_id",
        "sex",
        "birth_date",
        "household_no",
        "status",
        "hukou_region_code",
        "hukou_address",
        "settled_date",
        "updated_at",
        "record_ref",
    ]
    hukou = latest_hukou(_frame(staged, hukou_source, hukou_columns)[hukou_columns])
    hukou = hukou.assign(urban_hukou=rules.urban_hukou(hukou, policy))
    placed = _place(hukou["hukou_address"], hukou_source, address_match)
    hukou = hukou.assign(hukou_address_code=placed["address_code"], hukou_address_status=placed["address_status"])
    hukou = hukou.rename(columns={"status": "hukou_status"})[
        [
            "citizen_id",
            "sex",
            "birth_date",
            "household_no",
            "hukou_status",
            "hukou_region_code",
            "hukou_address",
            "hukou_address_code",
            "hukou_address_status",
            "settled_date",
            "urban_hukou",
        ]
    ]
    citizens = citizens.merge(hukou, on="citizen_id", how="left")
    id_birth, id_sex = _id_birth_and_sex(citizens["citizen_id"])
    citizens["birth_date"] = as_dates(citizens["birth_date"]).fillna(id_birth)
    citizens["sex"] = citizens["sex"].where(citizens["sex"].notna(), id_sex)
    citizens["settled_date"] = as_dates(citizens["settled_date"])
    citizens["urban_hukou"] = citizens["urban_hukou"].astype("boolean").fillna(False).astype(bool)
    return citizens[CITIZEN_COLUMNS].reset_index(drop=True)  # in ID order since _residents


def build_guardianship(hukou: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """``guardianship`` of the school-age children this policy concerns (policy readings).

    A child is a hukou row born inside a level window whose status is not 注销. Its guardians
    are the IDs in 监护人一/二 when any is present (basis ``guardian_field``, relation as
    delivered); otherwise, for a 子/女 of the household, the active 户主 and 配偶 rows of the same
    ``household_no`` (basis ``household``, relation = their relation to the head). Nothing
    else is inferred. Runs on whole households (bucket by ``household_no``).
    """
    hukou = latest_hukou(_frame({"hukou": hukou}, "hukou", HUKOU_FOR_GUARDIANSHIP)[HUKOU_FOR_GUARDIANSHIP])
    children = hukou[rules.school_level(as_dates(hukou["birth_date"]), hukou["status"], policy).notna()]

    named = children["guardian1_id"].notna() | children["guardian2_id"].notna()
    field_edges = []
    for id_column, relation_column in (("guardian1_id", "guardian1_relation"), ("guardian2_id", "guardian2_relation")):
        rows = children[named & children[id_column].notna()]
        field_edges.append(
            pd.DataFrame(
                {
                    "child_id": rows["citizen_id"].astype("object"),
                    "guardian_id": rows[id_column].astype("object"),
                    "relation": rows[relation_column].astype("object"),
                    "basis": "guardian_field",
                }
            )
        )

    offspring = children[~named & children["relation_to_head"].isin(CHILD_OF_HEAD)]
    heads = hukou[
        hukou["relation_to_head"].isin((HEAD_OF_HOUSEHOLD, SPOUSE_OF_HEAD)) & hukou["status"].eq(HUKOU_ACTIVE)
    ]
    household_edges = offspring[["citizen_id", "household_no"]].merge(
        heads[["citizen_id", "household_no", "relation_to_head"]], on="household_no", suffixes=("", "_guardian")
    )
    household_edges = pd.DataFrame(
        {
            "child_id": household_edges["citizen_id"].astype("object"),
            "guardian_id": household_edges["citizen_id_guardian"].astype("object"),
            "relation": household_edges["relation_to_head"].astype("object"),
            "basis": "household",
        }
    )

    edges = pd.concat([*field_edges, household_edges], ignore_index=True)
    edges = edges[edges["child_id"] != edges["guardian_id"]]
    return sort_rows(edges[GUARDIANSHIP_COLUMNS], ["child_id", "guardian_id", "basis"], first_of=2).reset_index(
        drop=True
    )


def build_property_holding(
    staged: dict[str, pd.DataFrame], address_match: pd.DataFrame, policy: Policy
) -> pd.DataFrame:
    """``property_holding``: one row per resident owner of a title and per buyer of a contract.

    ``qualifying`` is ``rules.qualifying_property``. Corporate owners are not residents and are
    left out. ``share`` is the title's share (NaN for sole owners and for contracts, which
    record none).
    """
    title_source, contract_source = evidence_source("title"), evidence_source("contract")
    titles = _frame(
        staged,
        title_source,
        [
            "certificate_no",
            "owner_id",
            "owner_kind",
            "share",
            "address",
            "use",
            "registered_date",
            "title_status",
            "record_ref",
        ],
    )
    titles = titles[_person_owner(titles)]
    title_rows = pd.DataFrame(
        {
            "citizen_id": as_text(titles["owner_id"]),
            "kind": TITLE_KIND,
            "record_key": as_text(titles["certificate_no"]),
            "use": as_text(titles["use"]),
            "status": as_text(titles["title_status"]),
            "record_date": as_dates(titles["registered_date"]),
            "share": pd.to_numeric(titles["share"], errors="coerce").astype("float64"),
            "address": as_text(titles["address"]),
            "record_ref": as_text(titles["record_ref"]),
        }
    )
    title_rows = title_rows.join(_place(title_rows["address"], title_source, address_match))

    contracts = _frame(
        staged, contract_source, ["contract_no", "buyer_id", "address", "use", "signed_date", "status", "record_ref"]
    )
    contracts = contracts[contracts["buyer_id"].notna()]
    contract_rows = pd.DataFrame(
        {
            "citizen_id": as_text(contracts["buyer_id"]),
            "kind": CONTRACT_KIND,
            "record_key": as_text(contracts["contract_no"]),
            "use": as_text(contracts["use"]),
            "status": as_text(contracts["status"]),
            "record_date": as_dates(contracts["signed_date"]),
            "share": np.nan,
            "address": as_text(contracts["address"]),
            "record_ref": as_text(contracts["record_ref"]),
        }
    )
    contract_rows = contract_rows.join(_place(contract_rows["address"], contract_source, address_match))

    rows = pd.concat([title_rows, contract_rows], ignore_index=True)
    rows["qualifying"] = rules.qualifying_property(rows, policy).holds
    return sort_rows(rows[PROPERTY_COLUMNS], ["citizen_id", "kind", "record_key"], first_of=3).reset_index(drop=True)


def build_rental_holding(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """``rental_holding``: one row per registration, by tenant; ``qualifying`` is
    ``rules.qualifying_rental``."""
    rental_source = evidence_source("rental")
    rentals = _frame(
        staged,
        rental_source,
        ["record_no", "tenant_id", "address", "start_date", "end_date", "registered_date", "status", "record_ref"],
    )
    rentals = rentals[rentals["tenant_id"].notna()]
    rows = pd.DataFrame(
        {
            "citizen_id": as_text(rentals["tenant_id"]),
            "record_no": as_text(rentals["record_no"]),
            "address": as_text(rentals["address"]),
            "start_date": as_dates(rentals["start_date"]),
            "end_date": as_dates(rentals["end_date"]),
            "registered_date": as_dates(rentals["registered_date"]),
            "status": as_text(rentals["status"]),
            "record_ref": as_text(rentals["record_ref"]),
        }
    )
    rows["qualifying"] = rules.qualifying_rental(rows, policy).holds
    rows = rows.join(_place(rows["address"], rental_source, address_match))
    return sort_rows(rows[RENTAL_COLUMNS], ["citizen_id", "record_no"], first_of=2).reset_index(drop=True)


def build_employment(staged: dict[str, pd.DataFrame], policy: Policy) -> pd.DataFrame:
    """``employment``: insurance enrolments, businesses operated and enterprises represented.

    ``qualifying`` is ``rules.stable_employment``. ``record_key`` is ``<citizen_id>:<scheme>`` for
    insurance (its natural key: two parents in one scheme are two records of evidence) and the
    credit code for businesses.
    """
    insurance = _frame(
        staged,
        evidence_source("insurance"),
        [
            "citizen_id",
            "scheme",
            "insurance_status",
            "employer_code",
            "first_insured_date",
            "local_months",
            "record_ref",
        ],
    )
    insurance = insurance[insurance["citizen_id"].notna()]
    months = pd.to_numeric(insurance["local_months"], errors="coerce").astype("Int64")
    insured = pd.DataFrame(
        {
            "citizen_id": as_text(insurance["citizen_id"]),
            "kind": evidence_source("insurance"),
            "record_key": as_text(insurance["citizen_id"].astype("str") + ":" + insurance["scheme"].astype("str")),
            "org_code": as_text(insurance["employer_code"]),
            "since": as_dates(insurance["first_insured_date"]),
            "local_months": months,
            "status": as_text(insurance["insurance_status"]),
            "scheme": as_text(insurance["scheme"]),
            "record_ref": as_text(insurance["record_ref"]),
        }
    )

    parts = [insured]
    for source in business_sources():
        id_column = registry.source(source).persons[0].id
        frame = _frame(staged, source, ["credit_code", id_column, "established_date", "reg_status", "record_ref"])
        frame = frame[frame[id_column].notna()]
        part = pd.DataFrame(
            {
                "citizen_id": as_text(frame[id_column]),
                "kind": source,
                "record_key": as_text(frame["credit_code"]),
                "org_code": as_text(frame["credit_code"]),
                "since": as_dates(frame["established_date"]),
                "local_months": pd.array([pd.NA] * len(frame), dtype="Int64"),
                "status": as_text(frame["reg_status"]),
                "scheme": None,
                "record_ref": as_text(frame["record_ref"]),
            }
        )
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True)
    rows["qualifying"] = rules.stable_employment(rows, policy).holds
    rows = rows[_is_resident_id(rows["citizen_id"])]
    rows["local_months"] = rows["local_months"].astype("Int64")
    return sort_rows(rows[EMPLOYMENT_COLUMNS], ["citizen_id", "kind", "record_key"], first_of=3).reset_index(drop=True)


def build_person_tables(
    staged: dict[str, pd.DataFrame], address_match: pd.DataFrame, policy: Policy
) -> dict[str, pd.DataFrame]:
    """The tables keyed by one person: runs on the rows of one person bucket."""
    return {
        "citizen": build_citizens(staged, address_match, policy),
        "property_holding": build_property_holding(staged, address_match, policy),
        "rental_holding": build_rental_holding(staged, address_match, policy),
        "employment": build_employment(staged, policy),
    }


def build_citizen_tables(
    staged: dict[str, pd.DataFrame], address_match: pd.DataFrame, policy: Policy
) -> dict[str, pd.DataFrame]:
    """citizen, guardianship, property_holding, rental_holding, employment (warehouse.md)."""
    tables = build_person_tables(staged, address_match, policy)
    tables["guardianship"] = build_guardianship(_frame(staged, evidence_source("hukou"), ["citizen_id"]), policy)
    return tables
