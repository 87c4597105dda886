"""``zerocert synth``: a synthetic city, its departmental deliveries with dirt, and the ground truth.

The city is the project's measuring instrument, so it follows sources.md to the letter and its
truth follows policy.md as read in docs/contracts.md. Its shape (districts, shared road names,
phased compounds, buyers per contract, cohort size, dirt rates, delivery days) comes from a
profile (``pipelines/synth/profiles/*.yaml``). Every source is delivered twice: today's delivery,
which a run with as-of = ``as_of`` uses, and the next day's (a folder dated ``as_of`` + 1 with a
few records added and removed), which a run one day later uses; ``truth/`` holds the truth of
today's and ``truth/next_day/`` that of the next day's. Output is byte-identical per seed and profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UsageError
from pipelines.policy import load_policy
from pipelines.synth import dirt as D
from pipelines.synth.deliveries import deliver, lines_of, render_lines
from pipelines.synth.geography import REGISTRY_COLUMNS, build_geography
from pipelines.synth.people import build_people
from pipelines.synth.profile import SOURCES, DirtRates, Profile, check_dirt, load_profile, profile_names
from pipelines.synth.records import build_records
from pipelines.synth.sources import delivered, render_sources, truth_inputs
from pipelines.synth.truth import compute_truth

__all__ = ["AS_OF", "DirtRates", "Profile", "add_synth_arguments", "load_profile", "synth_from_args", "synthesize"]

AS_OF = dt.date(2027, 8, 15)
OLDER_HUKOU_DAYS = 46  # hukou's older, smaller snapshot, which a run on as-of must not use


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (landing/, reference/, truth/)")
    parser.add_argument("--people", type=int, default=20000, help="registered residents (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; one seed gives byte-identical output")
    parser.add_argument(
        "--profile",
        default="default",
        metavar="NAME_OR_PATH",
        help=f"the city's shape: a shipped profile ({', '.join(profile_names())}) or a YAML file (default: default)",
    )
    parser.add_argument(
        "--exchange",
        metavar="URL",
        help="also load the deliveries into this exchange database (SQLite or PostgreSQL URL)",
    )
    for f in dataclasses.fields(DirtRates):
        parser.add_argument(
            f"--dirt-{f.name.replace('_', '-')}",
            dest=f"dirt_{f.name}",
            type=float,
            default=None,
            metavar="RATE",
            help=f"rate of {f.name.replace('_', ' ')} (default: the profile's; {f.default} in default)",
        )


def synth_from_args(args: argparse.Namespace) -> dict:
    profile = load_profile(getattr(args, "profile", None) or "default")
    given = {
        f.name: getattr(args, f"dirt_{f.name}")
        for f in dataclasses.fields(DirtRates)
        if getattr(args, f"dirt_{f.name}", None) is not None
    }
    summary = synthesize(
        Path(args.out), args.people, args.seed, dataclasses.replace(profile.dirt, **given), profile=profile
    )
    if getattr(args, "exchange", None):
        from pipelines.synth.exchange import load_exchange

        summary["exchange"] = load_exchange(Path(args.out), args.exchange)
    return summary


def synthesize(
    out: Path,
    people: int,
    seed: int,
    dirt: DirtRates | None = None,
    as_of: dt.date = AS_OF,
    profile: str | Path | Profile = "default",
) -> dict:
    """Write the city under ``out`` and return a summary (rows per file, truth counts, dirt counts).

    ``dirt`` replaces the profile's dirt rates when given.
    """
    if people < 200:
        raise UsageError(f"synth: --people must be at least 200, got {people}")
    profile = load_profile(profile)
    dirt = profile.dirt if dirt is None else dirt
    check_dirt(dirt, "synth: --dirt-")
    out = Path(out)
    rates = dataclasses.asdict(dirt)
    lag = dict(profile.delivery_lag)
    extract = {s: as_of - dt.timedelta(days=lag[s]) for s in SOURCES}
    next_as_of = as_of + dt.timedelta(days=1)
    day = np.timedelta64(1, "D")

    def rng(stage: int) -> np.random.Generator:
        return np.random.default_rng([seed, stage])

    reference = out / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "policy.yaml").write_text(profile.policy_yaml(), encoding="utf-8")
    policy = load_policy(reference / "policy.yaml")

    geo = build_geography(people, rng(1), policy.enrollment_year, profile)
    _write_csv(geo.registry[REGISTRY_COLUMNS], reference / "addresses.csv")
    _write_csv(geo.schools, reference / "schools.csv")
    (reference / "catchments.geojson").write_text(
        json.dumps(geo.catchments, ensure_ascii=False, sort_keys=True), encoding="utf-8"
    )

    extract_day = {s: np.datetime64(d, "D") for s, d in extract.items()}
    next_day = np.datetime64(next_as_of, "D")
    p = build_people(people, policy, geo.registry, rng(2), as_of, profile, extract_day["hukou"], next_day)
    rec = build_records(p, geo.registry, geo.blocks, policy, rng(3), as_of, profile, extract_day, next_day)
    p = p[
        [
            "hh",
            "citizen_id",
            "name",
            "sex",
            "birth_date",
            "ethnicity",
            "household_no",
            "relation",
            "address_code",
            "region",
            "settled_date",
            "guardian1_id",
            "guardian1_relation",
            "guardian2_id",
            "guardian2_relation",
            "status",
            "updated_at",
            "day",
        ]
    ]  # what rendering and truth still read (memory at city scale)
    counts: dict[str, int] = {}
    texts = render_sources(p, rec, geo.registry, policy, rates, rng(4), counts, profile.city, next_day + day)
    kept = {}

    files: dict[bool, dict[str, int]] = {False: {}, True: {}}
    changes: dict[str, dict[str, int]] = {"added": {}, "removed": {}}
    quarantine: dict[bool, list] = {False: [], True: []}
    address_rows: list[pd.DataFrame] = []
    address_changes = []
    reasons = np.array([D.REASON[k] for k in D.DAMAGE], dtype=object)
    dup_rng, older_rng = rng(5), rng(6)
    for source, st in texts:
        lines, name = render_lines(st, dup_rng, rates["duplicate"], counts)
        st.fields = None  # the text is in ``lines`` now; keep memory low at city scale
        damaged = st.damage >= 0
        changes["added"][source] = int((st.day == 1).sum())
        changes["removed"][source] = int((st.day == -1).sum())
        for is_next in (False, True):
            present = delivered(st, is_next)
            day_rows, line = lines_of(lines, st, present)
            path = deliver(out, source, next_as_of if is_next else extract[source], lines, day_rows)
            files[is_next][str(path.relative_to(out))] = len(day_rows)
            q = damaged & present
            quarantine[is_next].append(
                pd.DataFrame({"source": source, "line": line[q], "reason_code": reasons[st.damage[q]]}).assign(
                    file=name
                )
            )
            if source == "rental" and not is_next:  # a folder still being written: no _SUCCESS
                half = day_rows[: len(day_rows) // 2]
                partial = deliver(out, source, as_of, lines, half, complete=False)
                files[False][str(partial.relative_to(out)) + " (incomplete)"] = len(half)
        if source == "hukou":  # an older, smaller snapshot: 90 % of the people who lived here by then
            older = as_of - dt.timedelta(days=OLDER_HUKOU_DAYS)
            by_then = np.datetime64(older, "D")
            facts = st.facts
            happened = (facts["birth_date"].to_numpy() <= by_then) & (facts["settled_date"].to_numpy() <= by_then)
            chosen = delivered(st, False) & happened & (older_rng.random(len(facts)) < 0.9)
            older_rows, _ = lines_of(lines, st, chosen)
            path = deliver(out, source, older, lines, older_rows)
            files[False][str(path.relative_to(out))] = len(older_rows)
        if st.addresses is not None:
            today, gone, added = _address_truth(source, st.addresses, ~damaged, st.day)
            address_rows.append(today)
            address_changes.append((gone, added))
            st.addresses = st.addresses[["code"]]
        kept[source] = st
        del lines

    summary = {
        "out": str(out),
        "seed": seed,
        "profile": profile.name,
        "people": int(len(p)),
        "as_of": as_of.isoformat(),
        "files": files[False],
        "reference": {
            "addresses": int(len(geo.registry)),
            "schools": int(len(geo.schools)),
            "catchments": len(geo.catchments["features"]),
        },
    }
    addrs = None
    for is_next in (False, True):
        truth_dir = out / "truth" / ("next_day" if is_next else "")
        truth_dir.mkdir(parents=True, exist_ok=True)
        q = pd.concat(quarantine[is_next], ignore_index=True).sort_values(["source", "line"])
        q = pd.DataFrame(
            {
                "source": q["source"],
                "record_ref": q["file"] + ":" + q["line"].astype(str),
                "reason_code": q["reason_code"],
            }
        )
        _write_csv(q, truth_dir / "quarantine.csv")
        if is_next:
            addrs = _next_day_addresses(addrs, address_changes)
        else:
            addrs = pd.concat(address_rows, ignore_index=True).drop_duplicates()
        if addrs.duplicated(["source", "address"]).any():
            raise AssertionError("synth: one address text was given two truth codes or variants")
        _write_csv(addrs.sort_values(["source", "address"]), truth_dir / "addresses.csv")
        truth = None  # the other day's truth is written: free it first
        truth = compute_truth(policy, **truth_inputs(p, rec, kept, is_next), membership=geo.membership)
        _write_csv(
            truth["eligibility"].sort_values(["child_id", "level", "school_code"]), truth_dir / "eligibility.csv"
        )
        _write_csv(truth["ineligible"], truth_dir / "ineligible.csv")
        figures = _truth_figures(truth, q, addrs)
        if is_next:
            summary["next_day"] = {"as_of": next_as_of.isoformat(), "files": files[True], **changes, "truth": figures}
        else:
            summary["truth"] = figures
    summary["dirt"] = dict(sorted(counts.items()))
    return summary


def _address_truth(
    source: str, addresses: pd.DataFrame, undamaged: np.ndarray, day: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """truth/addresses.csv rows of one source today, and the next day's changes to them: texts
    gone with the records removed (unless a record of both days carries them too) and texts added."""

    def rows(mask: np.ndarray) -> pd.DataFrame:
        a = addresses[mask]
        return pd.DataFrame(
            {
                "source": source,
                "address": pd.Series(a["text"]).str.strip().to_numpy(),
                "address_code": a["code"].to_numpy(),
                "variant": a["variant"].to_numpy(),
            }
        ).drop_duplicates()

    gone = rows(undamaged & (day == -1))
    staying = pd.Series(addresses["text"].to_numpy()[undamaged & (day == 0)], dtype=object).str.strip()
    gone = gone[~pd.Series(gone["address"].to_numpy(), dtype=object).isin(staying.to_numpy()).to_numpy()]
    return rows(undamaged & (day != 1)), gone, rows(undamaged & (day == 1))


def _next_day_addresses(today: pd.DataFrame, changes: list[tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    gone = pd.concat([g for g, _ in changes], ignore_index=True)
    key = today["source"] + "\t" + today["address"]
    keep = ~key.isin((gone["source"] + "\t" + gone["address"]).to_numpy())
    return pd.concat([today[keep.to_numpy()]] + [a for _, a in changes], ignore_index=True).drop_duplicates()


def _truth_figures(truth: dict, quarantine: pd.DataFrame, addresses: pd.DataFrame) -> dict:
    elig = truth["eligibility"]
    return {
        "eligibility": int(len(elig)),
        "children_eligible": int(elig["child_id"].nunique()),
        "ineligible": int(len(truth["ineligible"])),
        "quarantine": int(len(quarantine)),
        "addresses": int(len(addresses)),
        "categories": {k: int(v) for k, v in sorted(elig["category"].value_counts().items())},
        "reasons": dict(sorted(truth["reasons"].items())),
    }


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
