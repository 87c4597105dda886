"""``zerocert synth``: a synthetic city, its departmental deliveries with dirt, and the ground truth.

The city is the project's measuring instrument, so it follows sources.md to the letter and its
truth follows policy.md as read in docs/contracts.md. Output is byte-identical per seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UsageError
from pipelines.policy import DEMO_POLICY_YAML, load_policy
from pipelines.synth import dirt as D
from pipelines.synth.deliveries import FILES, SourceText, apply_damage, deliver, render_lines, write_file
from pipelines.synth.geography import LEVELS, REGISTRY_COLUMNS, build_geography, DISTRICTS
from pipelines.synth.people import build_people
from pipelines.synth.records import build_records
from pipelines.synth.sources import render_sources, truth_inputs
from pipelines.synth.truth import compute_truth

__all__ = ["DirtRates", "add_synth_arguments", "synth_from_args", "synthesize"]


@dataclass(frozen=True)
class DirtRates:
    """Fraction of eligible values or rows that get each kind of dirt (defaults: all appear in 2 k people)."""
    id_spaces: float = 0.01
    id_fullwidth: float = 0.01
    id_lowercase_x: float = 0.01     # of IDs ending in X (boosted internally: 1 in 11 IDs is eligible)
    id_legacy15: float = 0.01        # of IDs of people born 19xx
    id_trailing_dot0: float = 0.01
    id_quote_prefix: float = 0.01
    date_forms: float = 0.12         # dates written in a non-ISO form of sources.md
    sex_numeric: float = 0.05        # 1/2 instead of 男/女
    address_variant: float = 0.35    # address texts in a variant form of the standard text
    address_unresolvable: float = 0.01
    name_conflict: float = 0.01
    damage_checksum: float = 0.002
    damage_id_format: float = 0.002
    damage_date: float = 0.002
    damage_missing: float = 0.002
    damage_code: float = 0.002
    damage_malformed: float = 0.002
    duplicate: float = 0.003


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (landing/, reference/, truth/)")
    parser.add_argument("--people", type=int, default=20000, help="registered residents (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; one seed gives byte-identical output")
    parser.add_argument("--exchange", metavar="URL",
                        help="also load the deliveries into this exchange database (SQLite or PostgreSQL URL)")
    for f in dataclasses.fields(DirtRates):
        parser.add_argument(f"--dirt-{f.name.replace('_', '-')}", dest=f"dirt_{f.name}", type=float,
                            default=f.default, metavar="RATE", help=f"rate of {f.name.replace('_', ' ')} (default {f.default})")


def synth_from_args(args: argparse.Namespace) -> dict:
    rates = DirtRates(**{f.name: getattr(args, f"dirt_{f.name}") for f in dataclasses.fields(DirtRates)})
    summary = synthesize(Path(args.out), args.people, args.seed, rates)
    if getattr(args, "exchange", None):
        from pipelines.synth.exchange import load_exchange

        summary["exchange"] = load_exchange(Path(args.out), args.exchange)
    return summary


def synthesize(out: Path, people: int, seed: int, dirt: DirtRates = DirtRates(),
               as_of: dt.date = dt.date(2027, 8, 15)) -> dict:
    """Write the city under ``out`` and return a summary (rows per file, truth counts, dirt counts)."""
    if people < 200:
        raise UsageError(f"synth: --people must be at least 200, got {people}")
    for f in dataclasses.fields(DirtRates):
        value = getattr(dirt, f.name)
        if not 0.0 <= value <= 0.5:
            raise UsageError(f"synth: --dirt-{f.name.replace('_', '-')} must be between 0 and 0.5, got {value}")
    out = Path(out)
    rates = dataclasses.asdict(dirt)

    def rng(stage: int) -> np.random.Generator:
        return np.random.default_rng([seed, stage])

    reference = out / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "policy.yaml").write_text(DEMO_POLICY_YAML, encoding="utf-8")
    policy = load_policy(reference / "policy.yaml")

    geo = build_geography(people, rng(1), policy.enrollment_year)
    _write_csv(geo.registry[REGISTRY_COLUMNS], reference / "addresses.csv")
    _write_csv(geo.schools, reference / "schools.csv")
    (reference / "catchments.geojson").write_text(
        json.dumps(geo.catchments, ensure_ascii=False, sort_keys=True), encoding="utf-8")

    p = build_people(people, policy, geo.registry, rng(2), as_of)
    rec = build_records(p, geo.registry, geo.blocks, policy, rng(3), as_of)
    p = p[["hh", "citizen_id", "name", "sex", "birth_date", "ethnicity", "household_no", "relation", "address_code",
           "region", "settled_date", "guardian1_id", "guardian1_relation", "guardian2_id", "guardian2_relation",
           "status", "updated_at"]]  # what rendering and truth still read (memory at city scale)
    counts: dict[str, int] = {}
    texts = render_sources(p, rec, geo.registry, policy, rates, rng(4), counts)
    kept = {}

    deliveries = {"hukou": 1, "property_title": 2, "housing_contract": 3, "rental": 1,
                  "social_insurance": 5, "individual_business": 4, "enterprise": 4}
    summary_files: dict[str, int] = {}
    dup_rng, quarantine, address_rows = rng(5), [], []
    for source, st in texts:
        lines, name = render_lines(st, dup_rng, rates["duplicate"], counts)
        st.fields = None  # the text is in ``lines`` now; keep memory low at city scale
        day = as_of - dt.timedelta(days=deliveries[source])
        path = deliver(out, source, day, lines)
        summary_files[str(path.relative_to(out))] = len(lines)
        damaged = st.damage >= 0
        reasons = np.array([D.REASON[k] for k in D.DAMAGE], dtype=object)
        quarantine.append(pd.DataFrame({"source": source,
                                        "record_ref": name + ":" + pd.Series(st.line[damaged]).astype(str),
                                        "reason_code": reasons[st.damage[damaged]]}))
        if st.addresses is not None:
            ok = st.addresses[~damaged]
            address_rows.append(pd.DataFrame({"source": source, "address": pd.Series(ok["text"]).str.strip(),
                                              "address_code": ok["code"].to_numpy()}).drop_duplicates())
            st.addresses = st.addresses[["code"]]
        if source == "hukou":  # an older, smaller snapshot that a run on as-of must not use
            keep = np.sort(rng(6).permutation(len(lines))[: int(len(lines) * 0.9)])
            older = deliver(out, source, as_of - dt.timedelta(days=46), lines.take(keep))
            summary_files[str(older.relative_to(out))] = len(keep)
        if source == "rental":  # a folder still being written: no _SUCCESS
            partial = deliver(out, source, as_of, lines.take(np.arange(len(lines) // 2)), complete=False)
            summary_files[str(partial.relative_to(out)) + " (incomplete)"] = len(lines) // 2
        kept[source] = st
        del lines

    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    q = pd.concat(quarantine, ignore_index=True)
    q["line"] = q["record_ref"].str.rsplit(":", n=1).str[1].astype(int)
    q = q.sort_values(["source", "line"]).drop(columns="line")
    _write_csv(q, truth_dir / "quarantine.csv")
    addrs = pd.concat(address_rows, ignore_index=True).drop_duplicates()
    if addrs.duplicated(["source", "address"]).any():
        raise AssertionError("synth: one address text was given two truth codes")
    _write_csv(addrs.sort_values(["source", "address"]), truth_dir / "addresses.csv")

    truth = compute_truth(policy, **truth_inputs(p, rec, kept), membership=geo.membership)
    _write_csv(truth["eligibility"].sort_values(["child_id", "level", "school_code"]), truth_dir / "eligibility.csv")
    _write_csv(truth["ineligible"], truth_dir / "ineligible.csv")
    elig = truth["eligibility"]
    return {
        "out": str(out), "seed": seed, "people": int(len(p)), "as_of": as_of.isoformat(),
        "files": summary_files,
        "reference": {"addresses": int(len(geo.registry)), "schools": int(len(geo.schools)),
                      "catchments": len(geo.catchments["features"])},
        "truth": {"eligibility": int(len(elig)), "children_eligible": int(elig["child_id"].nunique()),
                  "ineligible": int(len(truth["ineligible"])), "quarantine": int(len(q)),
                  "addresses": int(len(addrs)),
                  "categories": {k: int(v) for k, v in sorted(elig["category"].value_counts().items())},
                  "reasons": dict(sorted(truth["reasons"].items()))},
        "dirt": dict(sorted(counts.items())),
    }


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
