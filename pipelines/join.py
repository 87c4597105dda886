"""The join per resident: the per-citizen warehouse tables built from the staged frames.

Everything here is keyed by one person's resident ID, so each function can run on the rows of
one hash bucket of IDs at a time (see ``person_bucket``) and the driver in
``pipelines.eligibility.run_engine`` can keep memory bounded as the city grows. The one
exception is the household rule for guardians, which needs a whole household:
``build_guardianship`` therefore runs on a bucket of ``household_no`` (``household_bucket``).

Date columns are ``datetime64[ns]`` (midnight), ``NaT`` when unknown. JSON text columns use
``sort_keys=True, ensure_ascii=False`` so reruns are byte-identical.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipelines.policy import Policy

SOURCES = ("hukou", "property_title", "housing_contract", "rental", "social_insurance",
           "individual_business", "enterprise")

# Which column of each staged frame names the person the record is about, and their name.
PERSON_COLUMNS: dict[str, tuple[str, str]] = {
    "hukou": ("citizen_id", "name"),
    "property_title": ("owner_id", "owner_name"),
    "housing_contract": ("buyer_id", "buyer_name"),
    "rental": ("tenant_id", "tenant_name"),
    "social_insurance": ("citizen_id", "name"),
    "individual_business": ("operator_id", "operator_name"),
    "enterprise": ("legal_rep_id", "legal_rep_name"),
}
# Where two departments spell a name differently, the citizen row shows the first of these.
NAME_AUTHORITY = ("hukou", "social_insurance", "property_title", "housing_contract", "rental",
                  "individual_business", "enterprise")

# Codes of the source contract (sources.md), not policy parameters.
HUKOU_ACTIVE = "正常"
HEAD_OF_HOUSEHOLD = "户主"
SPOUSE_OF_HEAD = "配偶"
CHILD_OF_HEAD = ("子", "女")
CHILD_STATUSES = ("正常", "迁出", "死亡")  # 注销 is not a child (policy readings)
PERSON_OWNER = "person"
UNPLACED_ADDRESS = ("ambiguous", "unmatched")

RESIDENT_ID_PATTERN = r"^\d{17}[\dX]$"

CITIZEN_COLUMNS = ["citizen_id", "name", "sex", "birth_date", "household_no", "hukou_status",
                   "hukou_region_code", "hukou_address", "hukou_address_code",
                   "hukou_address_status", "settled_date", "urban_hukou", "sources",
                   "name_conflict"]
GUARDIANSHIP_COLUMNS = ["child_id", "guardian_id", "relation", "basis"]
PROPERTY_COLUMNS = ["citizen_id", "kind", "record_key", "use", "status", "record_date", "share",
                    "address", "address_code", "address_status", "qualifying", "record_ref"]
RENTAL_COLUMNS = ["citizen_id", "record_no", "address", "address_code", "address_status",
                  "start_date", "end_date", "registered_date", "status", "qualifying",
                  "record_ref"]
EMPLOYMENT_COLUMNS = ["citizen_id", "kind", "record_key", "org_code", "since", "local_months",
                      "status", "scheme", "qualifying", "record_ref"]


def json_text(value: object) -> str:
    """The one JSON spelling used in every table: sorted keys, Chinese kept readable."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def member(values: pd.Series, pool: pd.Series | pd.Index) -> np.ndarray:
    """``values.isin(pool)`` through one hash table of Python strings.

    pandas' Arrow-string ``isin`` walks a large pool in Python; IDs and address codes here
    meet pools of millions, so membership goes through an object ``Index`` instead.
    """
    pool = np.asarray(pool, dtype=object)
    index = pd.Index(pd.unique(pool[pd.notna(pool)]), dtype=object)
    return index.get_indexer(np.asarray(values, dtype=object)) >= 0


def _bucket_of_digits(values: pd.Series, buckets: int) -> np.ndarray:
    """Bucket from four digits of the value; deterministic across processes and machines."""
    if buckets <= 1:
        return np.zeros(len(values), dtype=np.int64)
    digits = pd.to_numeric(values.astype("str").str[-5:-1], errors="coerce")
    return (digits.fillna(0).astype(np.int64) % buckets).to_numpy()


def person_bucket(citizen_ids: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a resident ID: its sequence digits (positions 14–17) modulo ``buckets``.

    The sequence digits are close to uniform across a city, unlike region or birth digits.
    """
    return _bucket_of_digits(citizen_ids, buckets)


def household_bucket(household_nos: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of a household number, so a household's rows always meet in one bucket."""
    return _bucket_of_digits(household_nos, buckets)


def _cutoff(policy: Policy) -> pd.Timestamp:
    return pd.Timestamp(policy.cutoff_date)


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


def _place(texts: pd.Series, source: str, address_match: pd.DataFrame) -> pd.DataFrame:
    """Standard address code and match status of each text, as the addresses step decided.

    A text the address step did not see reads as ``unmatched``; ambiguous and unmatched texts
    carry no code, so they can never place anyone in a catchment.
    """
    matches = address_match.loc[address_match["source"] == source, ["address", "address_code", "status"]]
    matches = matches.drop_duplicates("address")
    placed = pd.DataFrame({"address": texts.to_numpy()}).merge(matches, on="address", how="left")
    status = placed["status"].astype("object").where(placed["status"].notna(), "unmatched")
    status = status.where(placed["address"].notna(), None)
    code = placed["address_code"].astype("object").where(~status.isin(UNPLACED_ADDRESS) & status.notna(), None)
    return pd.DataFrame({"address_code": code.to_numpy(), "address_status": status.to_numpy()},
                        index=texts.index)


def _dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")


def latest_hukou(hukou: pd.DataFrame) -> pd.DataFrame:
    """One hukou row per resident: the most recently updated one (record_ref breaks ties)."""
    if hukou.empty:
        return hukou
    order = [c for c in ("citizen_id", "updated_at", "record_ref") if c in hukou.columns]
    ascending = [True, False, True][: len(order)]
    return hukou.sort_values(order, ascending=ascending, kind="stable").drop_duplicates("citizen_id")


def urban_hukou(hukou: pd.DataFrame, policy: Policy) -> pd.Series:
    """policy.md: active, in an urban county, settled at this address on or before the cutoff."""
    return (hukou["status"].eq(HUKOU_ACTIVE)
            & hukou["hukou_region_code"].astype("str").isin(policy.urban_region_codes)
            & (_dates(hukou["settled_date"]) <= _cutoff(policy))).fillna(False).astype(bool)


def _person_owner(titles: pd.DataFrame) -> pd.Series:
    """Title rows owned by a resident (staging's owner_kind; the ID's form when it is absent)."""
    kind = titles["owner_kind"] if "owner_kind" in titles.columns else pd.Series(None, index=titles.index)
    return (kind.eq(PERSON_OWNER) | (kind.isna() & _is_resident_id(titles["owner_id"]))).fillna(False).astype(bool)


def _mentions(staged: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every (resident, source, name) a department delivered; credit codes are not residents."""
    parts = []
    for source, (id_column, name_column) in PERSON_COLUMNS.items():
        frame = staged.get(source)
        if frame is None or frame.empty:
            continue
        rows = frame[_person_owner(frame)] if source == "property_title" else frame
        part = pd.DataFrame({"citizen_id": rows[id_column].astype("object"),
                             "name": rows[name_column].astype("object") if name_column in rows else None,
                             "source": source})
        parts.append(part[part["citizen_id"].notna()])
    if not parts:
        return pd.DataFrame({"citizen_id": pd.Series(dtype="object"),
                             "name": pd.Series(dtype="object"), "source": pd.Series(dtype="object")})
    mentions = pd.concat(parts, ignore_index=True)
    return mentions[_is_resident_id(mentions["citizen_id"])]


def _id_birth_and_sex(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Birth date and sex read from an 18-digit ID (digits 7–14; odd 17th digit = male)."""
    text = ids.astype("str")
    birth = pd.to_datetime(text.str[6:14], format="%Y%m%d", errors="coerce").astype("datetime64[ns]")
    odd = pd.to_numeric(text.str[16], errors="coerce") % 2
    sex = pd.Series(np.where(odd == 1, "男", "女"), index=ids.index, dtype="object")
    return birth, sex.where(odd.notna(), None)


def build_citizens(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame,
                   policy: Policy) -> pd.DataFrame:
    """``citizen``: one row per resident named as the subject of any delivered record.

    Hukou fields (household, status, region, address, settled date) stay null for people the
    hukou does not list, and their ``urban_hukou`` is False; their sex and birth date are read
    from the ID itself, which is certain. ``sources`` is the sorted JSON list of the sources
    that mention them; ``name_conflict`` says two sources spell the name differently.
    """
    mentions = _mentions(staged)
    authority = {source: rank for rank, source in enumerate(NAME_AUTHORITY)}
    mentions = mentions.assign(rank=mentions["source"].map(authority))
    spellings = mentions.loc[mentions["name"].notna(), ["citizen_id", "name", "rank"]]
    spellings = spellings.sort_values("rank", kind="stable").drop_duplicates(["citizen_id", "name"])
    chosen = spellings.drop_duplicates("citizen_id").set_index("citizen_id")["name"]
    conflicting = spellings.loc[spellings["citizen_id"].duplicated(), "citizen_id"]

    bits = mentions["source"].map({s: 1 << i for i, s in enumerate(SOURCES)}).astype(np.int64)
    masks = (pd.DataFrame({"citizen_id": mentions["citizen_id"], "bit": bits})
             .drop_duplicates().groupby("citizen_id")["bit"].sum())
    mask_text = {mask: json_text(sorted(s for i, s in enumerate(SOURCES) if mask & (1 << i)))
                 for mask in masks.unique()}

    citizens = pd.DataFrame({"citizen_id": masks.index.astype("object")})
    citizens["name"] = citizens["citizen_id"].map(chosen).astype("object")
    citizens["sources"] = masks.map(mask_text).to_numpy()
    citizens["name_conflict"] = member(citizens["citizen_id"], conflicting)

    hukou = latest_hukou(_frame(staged, "hukou", [
        "citizen_id", "sex", "birth_date", "household_no", "status", "hukou_region_code",
        "hukou_address", "settled_date", "updated_at", "record_ref"]))
    hukou = hukou.assign(urban_hukou=urban_hukou(hukou, policy))
    placed = _place(hukou["hukou_address"], "hukou", address_match)
    hukou = hukou.assign(hukou_address_code=placed["address_code"],
                         hukou_address_status=placed["address_status"])
    hukou = hukou.rename(columns={"status": "hukou_status"})[[
        "citizen_id", "sex", "birth_date", "household_no", "hukou_status", "hukou_region_code",
        "hukou_address", "hukou_address_code", "hukou_address_status", "settled_date", "urban_hukou"]]
    citizens = citizens.merge(hukou, on="citizen_id", how="left")
    id_birth, id_sex = _id_birth_and_sex(citizens["citizen_id"])
    citizens["birth_date"] = _dates(citizens["birth_date"]).fillna(id_birth)
    citizens["sex"] = citizens["sex"].astype("object").where(citizens["sex"].notna(), id_sex)
    citizens["settled_date"] = _dates(citizens["settled_date"])
    citizens["urban_hukou"] = citizens["urban_hukou"].astype("boolean").fillna(False).astype(bool)
    return citizens[CITIZEN_COLUMNS].sort_values("citizen_id", ignore_index=True)


def build_guardianship(hukou: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """``guardianship`` of the school-age children this policy concerns (policy readings).

    A child is a hukou row born inside a level window whose status is not 注销. Its guardians
    are the IDs in 监护人一/二 when any is present (basis ``guardian_field``, relation as
    delivered); otherwise, for a 子/女 of the household, the active 户主 and 配偶 rows of the same
    ``household_no`` (basis ``household``, relation = their relation to the head). Nothing
    else is inferred. Runs on whole households (bucket by ``household_no``).
    """
    columns = ["citizen_id", "birth_date", "household_no", "relation_to_head", "status",
               "guardian1_id", "guardian1_relation", "guardian2_id", "guardian2_relation",
               "updated_at", "record_ref"]
    hukou = latest_hukou(_frame({"hukou": hukou}, "hukou", columns))
    birth = _dates(hukou["birth_date"])
    in_window = pd.Series(False, index=hukou.index)
    for window in policy.levels:
        in_window |= (birth >= pd.Timestamp(window.birth_from)) & (birth <= pd.Timestamp(window.birth_to))
    children = hukou[in_window & hukou["status"].isin(CHILD_STATUSES)]

    named = children["guardian1_id"].notna() | children["guardian2_id"].notna()
    field_edges = []
    for id_column, relation_column in (("guardian1_id", "guardian1_relation"),
                                       ("guardian2_id", "guardian2_relation")):
        rows = children[named & children[id_column].notna()]
        field_edges.append(pd.DataFrame({"child_id": rows["citizen_id"].astype("object"),
                                         "guardian_id": rows[id_column].astype("object"),
                                         "relation": rows[relation_column].astype("object"),
                                         "basis": "guardian_field"}))

    offspring = children[~named & children["relation_to_head"].isin(CHILD_OF_HEAD)]
    heads = hukou[hukou["relation_to_head"].isin((HEAD_OF_HOUSEHOLD, SPOUSE_OF_HEAD))
                  & hukou["status"].eq(HUKOU_ACTIVE)]
    household_edges = offspring[["citizen_id", "household_no"]].merge(
        heads[["citizen_id", "household_no", "relation_to_head"]], on="household_no",
        suffixes=("", "_guardian"))
    household_edges = pd.DataFrame({
        "child_id": household_edges["citizen_id"].astype("object"),
        "guardian_id": household_edges["citizen_id_guardian"].astype("object"),
        "relation": household_edges["relation_to_head"].astype("object"),
        "basis": "household"})

    edges = pd.concat([*field_edges, household_edges], ignore_index=True)
    edges = edges[edges["child_id"] != edges["guardian_id"]]
    return (edges.sort_values(["child_id", "guardian_id", "basis"], kind="stable")
            .drop_duplicates(["child_id", "guardian_id"])[GUARDIANSHIP_COLUMNS]
            .reset_index(drop=True))


def build_property_holding(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame,
                           policy: Policy) -> pd.DataFrame:
    """``property_holding``: one row per resident owner of a title and per buyer of a contract.

    ``qualifying`` is policy.md's qualifying property (use, status, date ≤ cutoff). The address
    does not enter ``qualifying``: an unplaceable property is still held (policy readings).
    Corporate owners are not residents and are left out. ``share`` is the title's share
    (NaN for sole owners and for contracts, which record none).
    """
    cutoff = _cutoff(policy)
    titles = _frame(staged, "property_title", [
        "certificate_no", "owner_id", "owner_kind", "share", "address", "use", "registered_date",
        "title_status", "record_ref"])
    titles = titles[_person_owner(titles)]
    title_rows = pd.DataFrame({
        "citizen_id": titles["owner_id"].astype("object"), "kind": "title",
        "record_key": titles["certificate_no"].astype("object"), "use": titles["use"].astype("object"),
        "status": titles["title_status"].astype("object"),
        "record_date": _dates(titles["registered_date"]),
        "share": pd.to_numeric(titles["share"], errors="coerce").astype("float64"),
        "address": titles["address"].astype("object"), "record_ref": titles["record_ref"].astype("object")})
    title_rows["qualifying"] = (title_rows["status"].isin(policy.title_status)
                                & title_rows["use"].isin(policy.property_uses)
                                & (title_rows["record_date"] <= cutoff))
    title_rows = title_rows.join(_place(title_rows["address"], "property_title", address_match))

    contracts = _frame(staged, "housing_contract", [
        "contract_no", "buyer_id", "address", "use", "signed_date", "status", "record_ref"])
    contracts = contracts[contracts["buyer_id"].notna()]
    contract_rows = pd.DataFrame({
        "citizen_id": contracts["buyer_id"].astype("object"), "kind": "contract",
        "record_key": contracts["contract_no"].astype("object"), "use": contracts["use"].astype("object"),
        "status": contracts["status"].astype("object"), "record_date": _dates(contracts["signed_date"]),
        "share": np.nan, "address": contracts["address"].astype("object"),
        "record_ref": contracts["record_ref"].astype("object")})
    contract_rows["qualifying"] = (contract_rows["status"].isin(policy.contract_status)
                                   & contract_rows["use"].isin(policy.property_uses)
                                   & (contract_rows["record_date"] <= cutoff))
    contract_rows = contract_rows.join(_place(contract_rows["address"], "housing_contract", address_match))

    rows = pd.concat([title_rows, contract_rows], ignore_index=True)
    rows["qualifying"] = rows["qualifying"].fillna(False).astype(bool)
    return (rows.sort_values(["citizen_id", "kind", "record_key"], kind="stable")
            .drop_duplicates(["citizen_id", "kind", "record_key"])[PROPERTY_COLUMNS]
            .reset_index(drop=True))


def build_rental_holding(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame,
                         policy: Policy) -> pd.DataFrame:
    """``rental_holding``: one row per registration, by tenant; ``qualifying`` per policy.md
    (status listed, filed by the cutoff, and the lease running on the cutoff date)."""
    cutoff = _cutoff(policy)
    rentals = _frame(staged, "rental", ["record_no", "tenant_id", "address", "start_date",
                                        "end_date", "registered_date", "status", "record_ref"])
    rentals = rentals[rentals["tenant_id"].notna()]
    rows = pd.DataFrame({
        "citizen_id": rentals["tenant_id"].astype("object"),
        "record_no": rentals["record_no"].astype("object"),
        "address": rentals["address"].astype("object"),
        "start_date": _dates(rentals["start_date"]), "end_date": _dates(rentals["end_date"]),
        "registered_date": _dates(rentals["registered_date"]),
        "status": rentals["status"].astype("object"), "record_ref": rentals["record_ref"].astype("object")})
    rows["qualifying"] = (rows["status"].isin(policy.rental_status)
                          & (rows["registered_date"] <= cutoff)
                          & (rows["start_date"] <= cutoff) & (rows["end_date"] >= cutoff)
                          ).fillna(False).astype(bool)
    rows = rows.join(_place(rows["address"], "rental", address_match))
    return (rows.sort_values(["citizen_id", "record_no"], kind="stable")
            .drop_duplicates(["citizen_id", "record_no"])[RENTAL_COLUMNS].reset_index(drop=True))


def build_employment(staged: dict[str, pd.DataFrame], policy: Policy) -> pd.DataFrame:
    """``employment``: insurance enrolments, businesses operated and enterprises represented.

    ``qualifying`` is policy.md's stable employment: a listed scheme in a listed status with
    at least ``min_local_months``; or a business/enterprise in a listed status established on
    or before cutoff − ``min_business_months``. ``record_key`` is ``<citizen_id>:<scheme>`` for
    insurance (its natural key: two parents in one scheme are two records of evidence) and the
    credit code for businesses.
    """
    established_by = pd.Timestamp(policy.business_established_by)
    insurance = _frame(staged, "social_insurance", [
        "citizen_id", "scheme", "insurance_status", "employer_code", "first_insured_date",
        "local_months", "record_ref"])
    insurance = insurance[insurance["citizen_id"].notna()]
    months = pd.to_numeric(insurance["local_months"], errors="coerce").astype("Int64")
    insured = pd.DataFrame({
        "citizen_id": insurance["citizen_id"].astype("object"), "kind": "social_insurance",
        "record_key": (insurance["citizen_id"].astype("str") + ":"
                       + insurance["scheme"].astype("str")).astype("object"),
        "org_code": insurance["employer_code"].astype("object"),
        "since": _dates(insurance["first_insured_date"]), "local_months": months,
        "status": insurance["insurance_status"].astype("object"),
        "scheme": insurance["scheme"].astype("object"),
        "record_ref": insurance["record_ref"].astype("object")})
    insured["qualifying"] = (insured["scheme"].isin(policy.insurance_schemes)
                             & insured["status"].isin(policy.insurance_status)
                             & (months >= policy.min_local_months).fillna(False).to_numpy())

    parts = [insured]
    for source, id_column in (("individual_business", "operator_id"), ("enterprise", "legal_rep_id")):
        frame = _frame(staged, source, ["credit_code", id_column, "established_date", "reg_status",
                                        "record_ref"])
        frame = frame[frame[id_column].notna()]
        part = pd.DataFrame({
            "citizen_id": frame[id_column].astype("object"), "kind": source,
            "record_key": frame["credit_code"].astype("object"),
            "org_code": frame["credit_code"].astype("object"),
            "since": _dates(frame["established_date"]), "local_months": pd.array([pd.NA] * len(frame), dtype="Int64"),
            "status": frame["reg_status"].astype("object"), "scheme": None,
            "record_ref": frame["record_ref"].astype("object")})
        part["qualifying"] = part["status"].isin(policy.business_status) & (part["since"] <= established_by)
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True)
    rows = rows[_is_resident_id(rows["citizen_id"])]
    rows["qualifying"] = rows["qualifying"].fillna(False).astype(bool)
    rows["local_months"] = rows["local_months"].astype("Int64")
    return (rows.sort_values(["citizen_id", "kind", "record_key"], kind="stable")
            .drop_duplicates(["citizen_id", "kind", "record_key"])[EMPLOYMENT_COLUMNS]
            .reset_index(drop=True))


def build_person_tables(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame,
                        policy: Policy) -> dict[str, pd.DataFrame]:
    """The tables keyed by one person: runs on the rows of one person bucket."""
    return {
        "citizen": build_citizens(staged, address_match, policy),
        "property_holding": build_property_holding(staged, address_match, policy),
        "rental_holding": build_rental_holding(staged, address_match, policy),
        "employment": build_employment(staged, policy),
    }


def build_citizen_tables(staged: dict[str, pd.DataFrame], address_match: pd.DataFrame,
                         policy: Policy) -> dict[str, pd.DataFrame]:
    """citizen, guardianship, property_holding, rental_holding, employment (warehouse.md)."""
    tables = build_person_tables(staged, address_match, policy)
    tables["guardianship"] = build_guardianship(_frame(staged, "hukou", ["citizen_id"]), policy)
    return tables


def run_engine(staged_dir, address_dir, policy: Policy, run_id: str, out_dir, buckets: int = 1) -> dict:
    """The bucketed join-and-decide driver; lives in ``pipelines.eligibility`` (imported lazily,
    since the engine builds on this module)."""
    from pipelines.eligibility import run_engine as engine

    return engine(staged_dir, address_dir, policy, run_id, out_dir, buckets=buckets)
