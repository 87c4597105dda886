"""Clean facts to per-source delivered text (with repairable dirt and damage), and back to the
clean, undamaged facts the truth is computed from."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from pipelines.policy import Policy
from pipelines.synth import dirt as D
from pipelines.synth.deliveries import SourceText, apply_damage
from pipelines.synth.profile import City
from pipelines.synth.records import EVENT_DATES


def _dates(values, rng, rates) -> np.ndarray:
    values = np.asarray(values).astype("datetime64[D]")
    return D.format_dates(values, D.dirty_date_forms(rng, len(values), rates["date_forms"]))


def _ids(values, rng, rates, counts) -> np.ndarray:
    return D.dirty_ids(np.asarray(values, dtype=object), rng, rates, counts)


def _address_frame(rendered: D.RenderedAddresses, at=slice(None)) -> pd.DataFrame:
    return pd.DataFrame({"text": rendered.text[at], "code": rendered.truth_code[at], "variant": rendered.variant[at]})


def _damaged(st: SourceText, rng, rates, counts) -> SourceText:
    apply_damage(st, rng, rates, counts)
    return st


def render_sources(
    p: pd.DataFrame,
    rec: dict[str, pd.DataFrame],
    registry: pd.DataFrame,
    policy: Policy,
    rates: dict[str, float],
    rng: np.random.Generator,
    counts: dict[str, int],
    city: City,
    future_from: np.datetime64,
) -> Iterator[tuple[str, SourceText]]:
    """Each source in turn (rendered lazily so only one source's text is in memory at a time).

    Every record of both delivery days is rendered once; ``SourceText.day`` says on which days
    it is delivered. Future-date damage lies after ``future_from``, past both days' extracts.
    """
    ids = p["citizen_id"].to_numpy(dtype=object)
    names = p["name"].to_numpy(dtype=object)

    def _addresses(codes) -> D.RenderedAddresses:
        return D.render_addresses(np.asarray(codes, dtype=object), registry, rng, rates, counts, city)

    def source_text(source, f, *args, facts, addresses=None, **kw) -> SourceText:
        return SourceText(
            source,
            f,
            *args,
            facts=facts,
            addresses=addresses,
            event_cols=EVENT_DATES[source],
            future_from=future_from,
            day=facts["day"].to_numpy(),
            **kw,
        )

    # ---- hukou: one address text per household, shared by its members
    hh_codes = p.groupby("hh", sort=True)["address_code"].first()
    hh_addr = _addresses(hh_codes.to_numpy())
    at = np.searchsorted(hh_codes.index.to_numpy(), p["hh"].to_numpy())
    sex = p["sex"].to_numpy(dtype=object)
    numeric = D.pick(rng, len(p), rates["sex_numeric"])
    counts["sex_numeric"] = int(numeric.sum())
    sex = np.where(numeric, np.where(sex == "男", "1", "2"), sex)
    updated = (
        pd.to_datetime(p["updated_at"]).dt.strftime("%Y-%m-%d")
        + " "
        + pd.Series(np.array(["08:15:00", "10:02:31", "15:47:09", "17:30:00"], dtype=object)[np.arange(len(p)) % 4])
    )
    # column by column, so each temporary object array is freed once it is stored as Arrow text
    f = pd.DataFrame(index=pd.RangeIndex(len(p)))
    f["citizen_id"] = _ids(ids, rng, rates, counts)
    f["name"] = names
    f["sex"] = sex
    f["birth_date"] = _dates(p["birth_date"], rng, rates)
    f["ethnicity"] = p["ethnicity"].to_numpy()
    f["household_no"] = p["household_no"].to_numpy()
    f["relation"] = p["relation"].to_numpy()
    f["hukou_address"] = hh_addr.text[at]
    f["hukou_region_code"] = p["region"].to_numpy()
    f["settled_date"] = _dates(p["settled_date"], rng, rates)
    f["guardian1_id"] = _ids(p["guardian1_id"], rng, rates, counts)
    f["guardian1_relation"] = p["guardian1_relation"].to_numpy()
    f["guardian2_id"] = _ids(p["guardian2_id"], rng, rates, counts)
    f["guardian2_relation"] = p["guardian2_relation"].to_numpy()
    f["status"] = p["status"].to_numpy()
    f["updated_at"] = updated.to_numpy()
    del sex, updated
    birth = p["birth_date"].to_numpy()
    window = np.zeros(len(p), bool)
    for w in policy.levels:
        window |= (birth >= np.datetime64(w.birth_from)) & (birth <= np.datetime64(w.birth_to))
    st = _damaged(
        source_text(
            "hukou",
            f,
            "citizen_id",
            "birth_date",
            "status",
            "citizen_id",
            ~window,
            clean_ids=ids,
            facts=p,
            addresses=_address_frame(hh_addr, at),
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "hukou", st

    # ---- property titles: one address text per certificate
    t = rec["property_title"]
    certs = t.drop_duplicates("certificate_no")
    cert_addr = _addresses(certs["address_code"].to_numpy())
    at = pd.Index(certs["certificate_no"]).get_indexer(t["certificate_no"])
    person = (t["owner_kind"] == "person").to_numpy()
    owner_id = t["owner_id"].to_numpy(dtype=object).copy()
    owner_id[person] = _ids(owner_id[person], rng, rates, counts)
    owner_name = t["owner_name"].to_numpy(dtype=object).copy()
    owner_name[person] = D.conflicting_names(owner_name[person], rng, rates["name_conflict"], counts)
    f = pd.DataFrame(
        {
            "certificate_no": t["certificate_no"].to_numpy(dtype=object),
            "unit_no": t["unit_no"].to_numpy(dtype=object),
            "owner_name": owner_name,
            "owner_id": owner_id,
            "co_ownership": t["co_ownership"].to_numpy(dtype=object),
            "share": t["share"].to_numpy(dtype=object),
            "address": cert_addr.text[at],
            "use": t["use"].to_numpy(dtype=object),
            "floor_area": t["floor_area"].map("{:.2f}".format).to_numpy(dtype=object),
            "registered_date": _dates(t["registered_date"], rng, rates),
            "title_status": t["title_status"].to_numpy(dtype=object),
        }
    )
    t = rec["property_title"] = t[["owner_kind", "owner_id", "use", "title_status", "registered_date", "day"]]
    st = _damaged(
        source_text(
            "property_title",
            f,
            "owner_id",
            "registered_date",
            "title_status",
            "owner_id",
            person,
            clean_ids=t["owner_id"].to_numpy(dtype=object),
            facts=t,
            addresses=_address_frame(cert_addr, at),
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "property_title", st

    # ---- housing contracts: buyers as a nested list
    c = rec["housing_contract"]
    c_addr = _addresses(c["address_code"].to_numpy())
    f = pd.DataFrame({"contract_no": c["contract_no"].to_numpy(dtype=object)})
    for k in (1, 2, 3):
        idx = c[f"buyer{k}"].to_numpy()
        has = idx >= 0
        f[f"buyer{k}_id"] = np.where(has, _ids(ids[np.maximum(idx, 0)], rng, rates, counts), "")
        f[f"buyer{k}_name"] = np.where(
            has, D.conflicting_names(names[np.maximum(idx, 0)], rng, rates["name_conflict"], counts), ""
        )
    for col in ("seller", "project_name"):
        f[col] = c[col].to_numpy(dtype=object)
    f["address"] = c_addr.text
    f["use"] = c["use"].to_numpy(dtype=object)
    f["signed_date"] = _dates(c["signed_date"], rng, rates)
    f["status"] = c["status"].to_numpy(dtype=object)
    st = source_text(
        "housing_contract",
        f,
        "buyer1_id",
        "signed_date",
        "status",
        "contract_no",
        np.ones(len(c), bool),
        clean_ids=ids[c["buyer1"].to_numpy()],
        facts=c,
        addresses=_address_frame(c_addr),
    )
    apply_damage(st, rng, rates, counts)
    buyers = None
    for k in (1, 2, 3):
        one = '{"name": "' + f[f"buyer{k}_name"].astype(object) + '", "id": "' + f[f"buyer{k}_id"].astype(object) + '"}'
        one = one.where(c[f"buyer{k}"].to_numpy() >= 0, "")
        buyers = one if buyers is None else buyers + np.where(one != "", ", " + one, "")
    st.fields = pd.DataFrame(
        {
            "contract_no": f["contract_no"],
            "buyers": "[" + buyers + "]",
            **{k: f[k] for k in ("seller", "project_name", "address", "use", "signed_date", "status")},
        }
    )
    f = None
    yield "housing_contract", st

    # ---- rentals
    r = rec["rental"]
    r_addr = _addresses(r["address_code"].to_numpy())
    pid = r["person"].to_numpy()
    f = pd.DataFrame(
        {
            "record_no": r["record_no"].to_numpy(dtype=object),
            "tenant_name": D.conflicting_names(names[pid], rng, rates["name_conflict"], counts),
            "tenant_id": _ids(ids[pid], rng, rates, counts),
            "landlord_id": r["landlord_id"].to_numpy(dtype=object),
            "address": r_addr.text,
            "start_date": _dates(r["start_date"], rng, rates),
            "end_date": _dates(r["end_date"], rng, rates),
            "registered_date": _dates(r["registered_date"], rng, rates),
            "status": r["status"].to_numpy(dtype=object),
        }
    )
    st = _damaged(
        source_text(
            "rental",
            f,
            "tenant_id",
            "start_date",
            "status",
            "record_no",
            np.ones(len(r), bool),
            clean_ids=ids[pid],
            facts=r.assign(tenant_id=ids[pid]),
            addresses=_address_frame(r_addr),
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "rental", st

    # ---- social insurance
    s = rec["social_insurance"]
    pid = s["person"].to_numpy()
    f = pd.DataFrame(index=pd.RangeIndex(len(s)))
    f["citizen_id"] = _ids(ids[pid], rng, rates, counts)
    f["name"] = D.conflicting_names(names[pid], rng, rates["name_conflict"], counts)
    for col in ("scheme", "insurance_status", "employer_name", "employer_code"):
        f[col] = s[col].to_numpy()
    f["first_insured_date"] = _dates(s["first_insured_date"], rng, rates)
    f["local_months"] = s["local_months"].astype(str).to_numpy()
    f["last_paid_month"] = s["last_paid_month"].to_numpy()
    s = rec["social_insurance"] = s[
        ["person", "scheme", "insurance_status", "local_months", "day"]
    ]  # what the truth reads
    st = _damaged(
        source_text(
            "social_insurance",
            f,
            "citizen_id",
            "first_insured_date",
            "insurance_status",
            "citizen_id",
            np.ones(len(s), bool),
            clean_ids=ids[pid],
            facts=s,
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "social_insurance", st

    # ---- individual businesses and enterprises
    b = rec["individual_business"]
    b_addr = _addresses(b["address_code"].to_numpy())
    pid = b["person"].to_numpy()
    f = pd.DataFrame(
        {
            "credit_code": b["credit_code"].to_numpy(dtype=object),
            "trade_name": b["trade_name"].to_numpy(dtype=object),
            "operator_name": D.conflicting_names(names[pid], rng, rates["name_conflict"], counts),
            "operator_id": _ids(ids[pid], rng, rates, counts),
            "address": b_addr.text,
            "form": b["form"].to_numpy(dtype=object),
            "established_date": _dates(b["established_date"], rng, rates),
            "reg_status": b["reg_status"].to_numpy(dtype=object),
            "closed_date": _dates(b["closed_date"], rng, rates),
        }
    )
    st = _damaged(
        source_text(
            "individual_business",
            f,
            "operator_id",
            "established_date",
            "reg_status",
            "credit_code",
            np.ones(len(b), bool),
            clean_ids=ids[pid],
            facts=b.assign(person_id=ids[pid]),
            addresses=_address_frame(b_addr),
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "individual_business", st
    e = rec["enterprise"]
    e_addr = _addresses(e["address_code"].to_numpy())
    pid = e["person"].to_numpy()
    f = pd.DataFrame(
        {
            "credit_code": e["credit_code"].to_numpy(dtype=object),
            "name": e["name"].to_numpy(dtype=object),
            "company_type": e["company_type"].to_numpy(dtype=object),
            "legal_rep_name": D.conflicting_names(names[pid], rng, rates["name_conflict"], counts),
            "legal_rep_id": _ids(ids[pid], rng, rates, counts),
            "address": e_addr.text,
            "established_date": _dates(e["established_date"], rng, rates),
            "reg_status": e["reg_status"].to_numpy(dtype=object),
            "approved_date": _dates(e["approved_date"], rng, rates),
        }
    )
    st = _damaged(
        source_text(
            "enterprise",
            f,
            "legal_rep_id",
            "established_date",
            "reg_status",
            "credit_code",
            np.ones(len(e), bool),
            clean_ids=ids[pid],
            facts=e.assign(person_id=ids[pid]),
            addresses=_address_frame(e_addr),
        ),
        rng,
        rates,
        counts,
    )
    f = None  # a suspended generator must not pin this source's text
    yield "enterprise", st


def delivered(st: SourceText, next_day: bool) -> np.ndarray:
    """Per row: is it in today's delivery (or the next day's)?"""
    return st.day != (-1 if next_day else 1)


def truth_inputs(
    p: pd.DataFrame, rec: dict[str, pd.DataFrame], texts: dict[str, SourceText], next_day: bool = False
) -> dict:
    """The clean facts of every undamaged record of one delivery day, in the shapes ``compute_truth`` reads."""
    ids = p["citizen_id"].to_numpy(dtype=object)

    def kept(source):
        st = texts[source]
        keep = (st.damage < 0) & delivered(st, next_day)
        return st.facts[keep], (st.addresses["code"].to_numpy()[keep] if st.addresses is not None else None)

    h, hcode = kept("hukou")
    hukou = pd.DataFrame(
        {
            "citizen_id": h["citizen_id"],
            "birth_date": h["birth_date"],
            "status": h["status"],
            "relation": h["relation"],
            "household_no": h["household_no"],
            "region": h["region"],
            "settled_date": h["settled_date"],
            "guardian1_id": h["guardian1_id"],
            "guardian2_id": h["guardian2_id"],
            "address_code": hcode,
        }
    )
    t, tcode = kept("property_title")
    person = (t["owner_kind"] == "person").to_numpy()
    titles = pd.DataFrame(
        {
            "holder_id": t["owner_id"],
            "kind": "title",
            "use": t["use"],
            "status": t["title_status"],
            "record_date": t["registered_date"],
            "address_code": tcode,
        }
    )[person]
    c, ccode = kept("housing_contract")
    buyers = []
    for k in (1, 2, 3):
        idx = c[f"buyer{k}"].to_numpy()
        has = idx >= 0
        buyers.append(
            pd.DataFrame(
                {
                    "holder_id": ids[idx[has]],
                    "kind": "contract",
                    "use": c["use"].to_numpy()[has],
                    "status": c["status"].to_numpy()[has],
                    "record_date": c["signed_date"].to_numpy()[has],
                    "address_code": ccode[has],
                }
            )
        )
    properties = pd.concat([titles] + buyers, ignore_index=True)
    r, rcode = kept("rental")
    rentals = pd.DataFrame(
        {
            "tenant_id": r["tenant_id"],
            "status": r["status"],
            "registered_date": r["registered_date"],
            "start_date": r["start_date"],
            "end_date": r["end_date"],
            "address_code": rcode,
        }
    )
    s, _ = kept("social_insurance")
    insurance = pd.DataFrame(
        {
            "citizen_id": ids[s["person"].to_numpy()],
            "scheme": s["scheme"].to_numpy(),
            "insurance_status": s["insurance_status"].to_numpy(),
            "local_months": s["local_months"].to_numpy(),
        }
    )
    b, _ = kept("individual_business")
    e, _ = kept("enterprise")
    firms = pd.concat(
        [b[["person_id", "reg_status", "established_date"]], e[["person_id", "reg_status", "established_date"]]],
        ignore_index=True,
    )
    return {"hukou": hukou, "properties": properties, "rentals": rentals, "insurance": insurance, "firms": firms}
