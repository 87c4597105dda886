"""The ``zerocert`` command: the same pipeline as the DAGs, without a scheduler.

Exit status (interfaces.md): 0 published / done; 2 bad usage or configuration; 3 a source
failed validation (nothing published); 1 anything else. A user's mistake prints one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from pipelines.errors import UsageError, ZerocertError
from pipelines.masking import configure_logging, mask_ids_in

log = logging.getLogger("zerocert")
PROG = "zerocert"
SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is a UsageError (exit 2) with one line.

    ``main`` prefixes every message with ``zerocert:`` once, so the subcommand alone names
    where the mistake is (``zerocert: run: argument --as-of: expected one argument``).
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")


_STARTED = time.monotonic()


def _progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def cmd_synth(args: argparse.Namespace) -> int:
    from pipelines.synth import synth_from_args

    summary = synth_from_args(args)
    print(json.dumps(summary, ensure_ascii=False, indent=1, default=str))
    return 0


def cmd_forecast_score(args: argparse.Namespace) -> int:
    from pipelines.forecast_score import render, score_city

    if args.people < 200:
        raise UsageError(f"forecast-score: --people must be at least 200, got {args.people}")
    print(render(score_city(args.profile, args.seed, args.people)))
    return 0


def _settings_from_args(args: argparse.Namespace):
    from pipelines.config import resolve_settings

    return resolve_settings(
        {
            "landing": args.landing,
            "exchange_url": args.exchange,
            "reference": args.reference,
            "warehouse_url": args.warehouse,
            "policy": args.policy,
            "as_of": args.as_of,
            "work_dir": args.work_dir,
            "accept_change": args.accept_change,
            "accept_reason": args.reason,
        }
    )


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.run import run_pipeline

    settings = _settings_from_args(args)
    result = run_pipeline(settings, progress=_progress, workers=args.workers)
    _progress(f"quality page (opens offline): {result['quality_page']}")
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _warehouse_url(args: argparse.Namespace) -> str:
    """--warehouse, else ZEROCERT_WAREHOUSE_URL, else the SQLite file in ZEROCERT_HOME (as ``run``)."""
    from pipelines.config import default_warehouse_url, zerocert_home

    return args.warehouse or os.environ.get("ZEROCERT_WAREHOUSE_URL") or default_warehouse_url(zerocert_home())


def _reference_dir(args: argparse.Namespace) -> Path:
    """--reference, else ZEROCERT_REFERENCE, else ZEROCERT_HOME/city/reference (as ``run``)."""
    from pipelines.config import default_reference, zerocert_home

    return Path(args.reference or os.environ.get("ZEROCERT_REFERENCE") or default_reference(zerocert_home()))


def cmd_lookup(args: argparse.Namespace) -> int:
    from pipelines.lookup import lookup

    document = lookup(_warehouse_url(args), args.id)
    print(json.dumps(document, ensure_ascii=False, indent=1, default=str))
    return 0


def cmd_check_address(args: argparse.Namespace) -> int:
    from pipelines.addresses import check_address

    reference = _reference_dir(args)
    if not (reference / "addresses.csv").is_file():
        raise UsageError(
            f"no address registry at {reference / 'addresses.csv'}: give --reference DIR or set ZEROCERT_REFERENCE "
            "(after `make demo`: export ZEROCERT_HOME=$PWD/.demo)"
        )
    print(json.dumps(check_address(args.text, reference), ensure_ascii=False, indent=1, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo
    from pipelines.demo_ui import demo_processes, serve, stop

    out = Path(args.out).resolve()
    if args.stop:
        return stop(out, progress=_progress)
    if args.serve and (out / "warehouse.sqlite").exists():
        return serve(out, port=args.port, progress=_progress)
    if demo_processes(out):  # its scheduler would share the SQLite metadata with the runs below
        stop(out, progress=_progress)
    status = run_demo(out, people=args.people, seed=args.seed, progress=_progress)
    return serve(out, port=args.port, progress=_progress) if args.serve and status == 0 else status


def worker_count(text: str) -> int:
    """``--workers``: a whole number of processes, at least 1."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, at least 1, not {text!r}")
    return count


def cmd_bench(args: argparse.Namespace) -> int:
    from pipelines.bench import run_bench

    print(
        json.dumps(
            run_bench(
                people=args.people,
                seed=args.seed,
                workdir=args.workdir,
                warehouse_url=args.warehouse,
                city=args.city,
                buckets=args.buckets,
                workers=args.workers,
            ),
            ensure_ascii=False,
            indent=1,
        )
    )
    return 0


def cmd_roles(args: argparse.Namespace) -> int:

    from pipelines.access import create_roles, district_passwords_from_config, hmac_key_from_config, revoke_districts

    if args.revoke:
        for district, sessions in revoke_districts(args.warehouse, args.revoke).items():
            print(f"district {district}: login revoked, {sessions} open session(s) terminated")
        return 0
    done = create_roles(
        args.warehouse,
        hmac_key=hmac_key_from_config(),
        district_passwords=district_passwords_from_config(args.passwords),
        issue=args.issue,
        analyst_password=os.environ.get("ZEROCERT_ANALYST_PASSWORD"),
        etl_password=os.environ.get("ZEROCERT_ETL_PASSWORD"),
    )
    print(
        f"roles zerocert_etl, analyst and group enrollment_reader are in place with "
        f"{len(done['districts'])} district login(s); passwords issued for: "
        f"{', '.join(done['issued']) or 'none'} (see warehouse/roles.md)"
    )
    return 0


def cmd_audit_lookups(args: argparse.Namespace) -> int:
    from pipelines.access import hmac_key_from_config
    from pipelines.lookup import audit_lookups

    report = audit_lookups(args.warehouse, args.id, hmac_key_from_config(), gaps=args.gaps)
    print(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    return 0


def cmd_bench_lookups(args: argparse.Namespace) -> int:
    from pipelines.lookup_bench import run_lookup_bench

    run_lookup_bench(
        args.warehouse, clients=args.clients, seconds=args.seconds, district=args.district, sample_ids=args.sample_ids
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.lookup import require_warehouse_file
    from pipelines.report import write_report

    url = _warehouse_url(args)
    require_warehouse_file(url)
    print(write_report(url, _reference_dir(args), Path(args.out)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        epilog="Defaults (city, warehouse, work folder) derive from ZEROCERT_HOME (default ~/.zerocert); "
        "after `make demo`: export ZEROCERT_HOME=$PWD/.demo. Reference: docs/commands.md.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    synth = sub.add_parser("synth", help="write a synthetic city with its ground truth")
    from pipelines.synth import add_synth_arguments

    add_synth_arguments(synth)
    synth.set_defaults(func=cmd_synth)

    run = sub.add_parser("run", help="one full run: stage, validate, join, decide, publish")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--landing", help="landing directory, file form (default: ZEROCERT_HOME/city/landing)")
    source.add_argument("--exchange", help="exchange database SQLAlchemy URL (database form)")
    run.add_argument("--reference", help="reference directory (default: ZEROCERT_HOME/city/reference)")
    run.add_argument("--warehouse", help="warehouse SQLAlchemy URL (default: SQLite ZEROCERT_HOME/warehouse.sqlite)")
    run.add_argument("--as-of", dest="as_of", help="as-of date YYYY-MM-DD (default: today)")
    run.add_argument("--policy", help="policy file (default: REFERENCE/policy.yaml)")
    run.add_argument("--work-dir", dest="work_dir", help="where staged files go (default: ZEROCERT_HOME/work)")
    run.add_argument(
        "--accept-change",
        dest="accept_change",
        metavar="NAME",
        action="append",
        help="publish although this source's delivery, or this published table, changed in size beyond "
        "its threshold (checked by a person; repeatable or comma-separated; recorded in run_audit)",
    )
    run.add_argument("--reason", help="with --accept-change: what was checked, and with whom")
    run.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="processes that do a step's sources or buckets at once (default 1; each may need a few GB)",
    )
    run.set_defaults(func=cmd_run)

    lookup = sub.add_parser("lookup", help="prefill document of a guardian or eligibility of a child")
    lookup.add_argument("id", help="resident ID")
    lookup.add_argument("--warehouse", help="warehouse SQLAlchemy URL (default: as for run)")
    lookup.set_defaults(func=cmd_lookup)

    check = sub.add_parser("check-address", help="resolve an address text and list its catchments")
    check.add_argument("text")
    check.add_argument("--reference", help="reference directory (default: as for run)")
    check.set_defaults(func=cmd_check_address)

    demo = sub.add_parser("demo", help="synthesize a small city, run the Airflow DAGs on it, show the result")
    demo.add_argument("--out", default=".demo", help="demo folder (default .demo)")
    demo.add_argument("--people", type=int, default=20000)
    demo.add_argument("--seed", type=int, default=1)
    ui = demo.add_mutually_exclusive_group()
    ui.add_argument(
        "--serve",
        action="store_true",
        help="start the demo's Airflow UI in the background (running the demo first if none)",
    )
    ui.add_argument("--stop", action="store_true", help="stop every process --serve started, and check none is left")
    demo.add_argument("--port", type=int, default=8080, help="the UI's port with --serve (default 8080)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="time and measure memory of every phase at city scale")
    bench.add_argument("--people", type=int, default=3_000_000)
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--workdir", help="scratch folder (default: a temporary folder)")
    bench.add_argument("--warehouse", help="warehouse URL to publish into (default: SQLite in workdir)")
    bench.add_argument(
        "--city",
        "--skip-synth",
        dest="city",
        metavar="DIR",
        help="reuse a synthesized city in this folder (synthesize it there if absent)",
    )
    bench.add_argument(
        "--buckets",
        type=int,
        default=None,
        help="the engine's buckets (default: ZEROCERT_ENGINE_BUCKETS, else from the city's size)",
    )
    bench.add_argument(
        "--workers",
        type=worker_count,
        default=min(2, os.cpu_count() or 1),
        help="processes that do a step's sources or buckets at once (default: 2, or 1 on one core)",
    )
    bench.set_defaults(func=cmd_bench)

    roles = sub.add_parser("roles", help="create or refresh the PostgreSQL roles, district logins and lookup functions")
    roles.add_argument("--warehouse", required=True, help="PostgreSQL warehouse URL (as a superuser or owner)")
    roles.add_argument(
        "--passwords",
        metavar="FILE",
        help="district passwords, 'district_code = password' per line (default: "
        "ZEROCERT_DISTRICT_PASSWORDS_FILE; ZEROCERT_DISTRICT_PASSWORD_<code> too)",
    )
    roles.add_argument(
        "--issue",
        action="append",
        metavar="DISTRICT",
        help="(re)issue only this district's password (repeatable; default: every configured one)",
    )
    roles.add_argument(
        "--revoke",
        action="append",
        metavar="DISTRICT",
        help="withdraw this district's login and end its sessions (repeatable); nothing else",
    )
    roles.set_defaults(func=cmd_roles)

    audit = sub.add_parser("audit-lookups", help="who looked up a person: the lookup audit for one ID")
    audit.add_argument("--warehouse", required=True, help="PostgreSQL warehouse URL (as the owner)")
    audit.add_argument("--id", required=True, help="the resident ID a family asks about")
    audit.add_argument("--gaps", action="store_true", help="also count calls whose audit row was rolled back")
    audit.set_defaults(func=cmd_audit_lookups)

    lookups = sub.add_parser("bench-lookups", help="p50/p99 and throughput of the lookup functions")
    lookups.add_argument("--warehouse", required=True, help="PostgreSQL warehouse URL (as the owner)")
    lookups.add_argument("--clients", type=int, default=8)
    lookups.add_argument("--seconds", type=float, default=20.0)
    lookups.add_argument("--sample-ids", dest="sample_ids", type=int, default=10000)
    lookups.add_argument("--district", help="district whose login the clients use (default: the busiest)")
    lookups.set_defaults(func=cmd_bench_lookups)

    score = sub.add_parser("forecast-score", help="the catchment forecast's error on a synth city's own future")
    score.add_argument("--profile", default="default", metavar="NAME_OR_PATH", help="synth profile (default: default)")
    score.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    score.add_argument("--people", type=int, default=20000, help="registered residents (default 20000)")
    score.set_defaults(func=cmd_forecast_score)

    report = sub.add_parser("report", help="the education bureau's HTML report: demand, forecast, data quality")
    report.add_argument("--warehouse", help="warehouse SQLAlchemy URL (default: as for run)")
    report.add_argument("--reference", help="reference directory with catchments.geojson (default: as for run)")
    report.add_argument("--out", required=True, help="folder to write report.html into")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    os.umask(0o077)  # what zerocert writes (staged rows, quarantine, warehouse) is its owner's only
    try:
        args = build_parser().parse_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at interpreter exit
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except ZerocertError as exc:
        print(f"zerocert: {mask_ids_in(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("zerocert: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not a user's mistake: keep the trace, masked
        import traceback

        print(mask_ids_in(traceback.format_exc()), file=sys.stderr)
        print(f"zerocert: unexpected {type(exc).__name__}: {mask_ids_in(str(exc))}", file=sys.stderr)
        return 1


def _reader_went_away() -> int:
    """``zerocert lookup ID | head``: the reader has what it wanted; end quietly, as ``cat`` does.

    Standard output is pointed at /dev/null so the interpreter's last flush cannot fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return SIGPIPE_STATUS


if __name__ == "__main__":
    sys.exit(main())
