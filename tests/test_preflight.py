"""A run checks its configuration before any work, and refuses to publish a gutted warehouse.

Every mistake a new user made (issue 14) exits 2 within seconds with one line, before
anything is staged, and leaves the warehouse as it was; a run that would empty eligibility
is refused (exit 3) until a person accepts it, and the acceptance is kept in run_audit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from warehouse_reader import read

from pipelines.cli import main

AS_OF = "2027-08-15"
HMAC_KEY = "preflight-test-key-0123456789"


def without_key(environ=os.environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith("ZEROCERT_HMAC_KEY")}


def run_args(city: Path, url: str, work: Path, reference: Path | None = None, policy: Path | None = None) -> list[str]:
    return [
        "run",
        "--landing",
        str(city / "landing"),
        "--reference",
        str(reference or city / "reference"),
        "--warehouse",
        url,
        "--as-of",
        AS_OF,
        "--work-dir",
        str(work),
        *(["--policy", str(policy)] if policy else []),
    ]


def zerocert(args: list[str], *, key: bool = True) -> subprocess.CompletedProcess:
    env = without_key() | ({"ZEROCERT_HMAC_KEY": HMAC_KEY} if key else {})
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def audit_rows(url: str) -> list[tuple]:
    return [
        tuple(r)
        for r in read(url, "SELECT run_id, status, started_at FROM run_audit ORDER BY started_at").itertuples(
            index=False
        )
    ]


def count(url: str, table: str) -> int:
    return int(read(url, f"SELECT count(*) AS n FROM {table}").n[0])


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("preflight_city")
    synthesize(out, 2000, seed=7)
    return out


@pytest.fixture(scope="module")
def published(city, tmp_path_factory) -> str:
    """A SQLite warehouse holding one good run, made with the HMAC key (so it holds
    pseudonymized tables)."""
    folder = tmp_path_factory.mktemp("published")
    url = f"sqlite:///{folder / 'wh.sqlite'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZEROCERT_HMAC_KEY", HMAC_KEY)
        assert main(run_args(city, url, folder / "work")) == 0
    assert count(url, "eligibility") > 20 and count(url, "analyst_citizen") > 1000
    return url


def edited_reference(
    city: Path,
    folder: Path,
    *,
    policy: Callable[[dict], None] | None = None,
    catchments: Callable[[dict], None] | None = None,
) -> Path:
    """A copy of the city's reference folder with its policy and/or catchments edited."""
    reference = folder / "reference"
    shutil.copytree(city / "reference", reference)
    for name, edit, load, dump in (
        ("policy.yaml", policy, yaml.safe_load, lambda d: yaml.safe_dump(d, allow_unicode=True)),
        ("catchments.geojson", catchments, json.loads, lambda d: json.dumps(d, ensure_ascii=False)),
    ):
        if edit is not None:
            doc = load((reference / name).read_text(encoding="utf-8"))
            edit(doc)
            (reference / name).write_text(dump(doc), encoding="utf-8")
    return reference


def _year(year: int) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        doc["enrollment_year"] = year

    return edit


def _catchments_of(year: int) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        for feature in doc["features"]:
            feature["properties"]["enrollment_year"] = year

    return edit


def _uses(doc: dict) -> None:
    doc["property"]["uses"] = ["住房"]


def _bow_tie(doc: dict) -> None:
    (ring,) = doc["features"][0]["geometry"]["coordinates"][:1]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    a, b, c, d = min(xs), min(ys), max(xs), max(ys)
    doc["features"][0]["geometry"] = {"type": "Polygon", "coordinates": [[[a, b], [c, d], [a, d], [c, b], [a, b]]]}


def _no_junior(doc: dict) -> None:
    doc["features"] = [f for f in doc["features"] if f["properties"]["level"] != "junior"]


# (id, policy edit, catchments edit, what the one line says)
MISTAKES = [
    (
        "enrollment-year-without-catchments",
        _year(2028),
        None,
        "no catchments for the policy's enrollment year 2028 (the file has 2027)",
    ),
    (
        "catchments-of-another-year",
        None,
        _catchments_of(2026),
        "no catchments for the policy's enrollment year 2027 (the file has 2026)",
    ),
    (
        "use-no-schema-knows",
        _uses,
        None,
        "policy: key 'property.uses' lists 住房, not a code of housing_contract.use or property_title.use",
    ),
    ("self-intersecting-catchment", None, _bow_tie, "not a valid polygon: "),
    ("a-level-without-catchments", None, _no_junior, "no junior catchments for 2027"),
]


@pytest.mark.parametrize("policy_edit,catchments_edit,says", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_configuration_mistake_exits_2_before_staging(city, published, tmp_path, policy_edit, catchments_edit, says):
    reference = edited_reference(city, tmp_path, policy=policy_edit, catchments=catchments_edit)
    before = audit_rows(published)
    began = time.monotonic()
    done = zerocert(run_args(city, published, tmp_path / "work", reference))
    assert done.returncode == 2, done.stderr[-800:]
    assert time.monotonic() - began < 10
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("zerocert: ") and says in line, line
    assert files_under(tmp_path / "work") == []
    assert audit_rows(published) == before


def test_a_self_intersecting_catchment_is_named_with_its_school(city, published, tmp_path):
    reference = edited_reference(city, tmp_path, catchments=_bow_tie)
    school = json.loads((reference / "catchments.geojson").read_text(encoding="utf-8"))["features"][0]
    done = zerocert(run_args(city, published, tmp_path / "work", reference))
    assert done.returncode == 2
    assert f"not a valid polygon: {school['properties']['school_code']} primary: Self-intersection" in done.stderr


def test_an_impossible_cutoff_date_names_its_key(city, published, tmp_path):
    policy = tmp_path / "policy.yaml"
    text = (city / "reference" / "policy.yaml").read_text(encoding="utf-8")
    policy.write_text(text.replace("cutoff_date: 2027-07-31", "cutoff_date: 2027-07-32"), encoding="utf-8")
    done = zerocert(run_args(city, published, tmp_path / "work", policy=policy))
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.strip().splitlines() == [
        "zerocert: policy: key 'cutoff_date' must be a date YYYY-MM-DD, got '2027-07-32'"
    ]
    assert files_under(tmp_path / "work") == []


def test_an_unwritable_sqlite_path_exits_2_and_creates_nothing(city, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'sub' / 'wh.sqlite'}"
    done = zerocert(run_args(city, url, tmp_path / "work"))
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.strip().splitlines() == [
        f"zerocert: the SQLite warehouse {blocker / 'sub' / 'wh.sqlite'} cannot be created: {blocker} is not a folder"
    ]
    assert files_under(tmp_path) == [blocker]


def test_a_file_that_is_not_a_database_is_refused_untouched(city, tmp_path):
    not_db = tmp_path / "wh.sqlite"
    not_db.write_text("child_id,level\n")
    done = zerocert(run_args(city, f"sqlite:///{not_db}", tmp_path / "work"))
    assert done.returncode == 2
    assert "is not a writable SQLite database: file is not a database" in done.stderr.strip().splitlines()[-1]
    assert not_db.read_text() == "child_id,level\n" and files_under(tmp_path) == [not_db]


BAD_URLS = [
    pytest.param(
        "postgresql+psycopg://postgres@127.0.0.1:1/zerocert", "cannot connect to the warehouse", id="nothing-listens"
    ),
    pytest.param(
        "postgresql+psycopg://postgres@127.0.0.1:5432/zerocert_no_such_database",
        'database "zerocert_no_such_database" does not exist',
        id="no-such-database",
        marks=pytest.mark.postgres,
    ),
    pytest.param("mysql://user@127.0.0.1/zerocert", "unsupported warehouse database 'mysql'", id="unsupported"),
]


@pytest.mark.parametrize("url,says", BAD_URLS)
def test_a_bad_warehouse_url_exits_2_within_10_s_and_leaves_no_files(city, tmp_path, url, says):
    work = tmp_path / "work"
    began = time.monotonic()
    done = zerocert(run_args(city, url, work))
    took = time.monotonic() - began
    assert done.returncode == 2, done.stderr[-800:]
    (line,) = done.stderr.strip().splitlines()
    assert says in line, line
    assert took < 10, f"{took:.1f} s"
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "exchange,says",
    [
        pytest.param(
            "sqlite:///{tmp}/no-exchange.sqlite",
            "exchange database not found: {tmp}/no-exchange.sqlite",
            id="missing-sqlite-file",
        ),
        pytest.param(
            "postgresql+psycopg://postgres@127.0.0.1:1/exchange",
            "cannot reach the exchange database: ",
            id="nothing-listens",
        ),
    ],
)
def test_an_unreachable_exchange_exits_2_and_creates_nothing(city, tmp_path, exchange, says):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    args = [
        "run",
        "--exchange",
        exchange.format(tmp=tmp_path),
        "--reference",
        str(city / "reference"),
        "--warehouse",
        url,
        "--as-of",
        AS_OF,
        "--work-dir",
        str(tmp_path / "work"),
    ]
    began = time.monotonic()
    done = zerocert(args)
    assert done.returncode == 2, done.stderr[-800:]
    assert time.monotonic() - began < 10
    (line,) = done.stderr.strip().splitlines()
    assert says.format(tmp=tmp_path) in line, line
    assert files_under(tmp_path) == []


def test_the_warehouse_dags_configure_step_runs_the_same_checks(city, tmp_path):
    from pipelines.airflow_glue import start_warehouse_run
    from pipelines.config import resolve_settings
    from pipelines.errors import UsageError

    settings = resolve_settings(
        {
            "landing": str(city / "landing"),
            "reference": str(city / "reference"),
            "as_of": AS_OF,
            "warehouse_url": "postgresql+psycopg://postgres@127.0.0.1:1/zerocert",
            "work_dir": str(tmp_path / "work"),
        }
    ).with_attempt("airflow-manual__1")
    with pytest.raises(UsageError, match="cannot connect to the warehouse"):
        start_warehouse_run(settings)
    assert files_under(tmp_path) == []


@pytest.mark.postgres
def test_a_read_only_postgresql_warehouse_exits_2_and_is_left_empty(city, tmp_path, pg_database):
    url = pg_database()
    read_only = url + "?options=-cdefault_transaction_read_only%3Don"
    done = zerocert(run_args(city, read_only, tmp_path / "work"))
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.strip().splitlines() == [
        "zerocert: the warehouse is read-only (a standby, or default_transaction_read_only is on)"
    ]
    assert files_under(tmp_path / "work") == []
    assert read(url, "SELECT to_regnamespace('zerocert') IS NULL AS absent").absent[0]


@pytest.mark.postgres
def test_a_role_that_may_not_create_tables_is_refused(city, tmp_path, pg_database):
    import secrets

    import psycopg

    url = pg_database()
    role = f"zerocert_test_nocreate_{secrets.token_hex(3)}"
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            done = zerocert(run_args(city, url.replace("//postgres@", f"//{role}@"), tmp_path / "work"))
        finally:
            admin.execute(f"DROP ROLE {role}")
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.strip().splitlines() == [
        "zerocert: the warehouse's role may not create tables there (it needs CREATE on the database)"
    ]
    assert files_under(tmp_path / "work") == []


def test_without_the_hmac_key_a_warehouse_with_pseudonymized_tables_is_refused(city, published, tmp_path):
    before, analysts = audit_rows(published), count(published, "analyst_citizen")
    done = zerocert(run_args(city, published, tmp_path / "work"), key=False)
    assert done.returncode == 2, done.stderr[-800:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"zerocert: the warehouse holds pseudonymized tables (analyst_citizen ({analysts} rows)")
    assert "no HMAC key is configured: set ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE" in line
    assert files_under(tmp_path / "work") == []
    assert audit_rows(published) == before and count(published, "analyst_citizen") == analysts


def _catchments_far_away(doc: dict) -> None:
    """Valid polygons of the right year and levels, ten degrees east of every address."""

    def east(node: list) -> list:
        return [node[0] + 10, node[1]] if isinstance(node[0], (int, float)) else [east(part) for part in node]

    for feature in doc["features"]:
        feature["geometry"]["coordinates"] = east(feature["geometry"]["coordinates"])


def _nobody_born_yet(doc: dict) -> None:
    """Birth windows after every resident's birth: no child, so no eligibility and no ineligibility."""
    doc["levels"] = {
        "primary": {"birth_from": dt.date(2031, 9, 1), "birth_to": dt.date(2032, 8, 31)},
        "junior": {"birth_from": dt.date(2030, 9, 1), "birth_to": dt.date(2031, 8, 31)},
    }


@pytest.mark.parametrize(
    "edit",
    [{"catchments": _catchments_far_away}, {"policy": _nobody_born_yet}],
    ids=["catchments-far-away", "nobody-born-yet"],
)
def test_a_run_that_would_empty_eligibility_is_refused_until_a_person_accepts_it(
    city, published, tmp_path, monkeypatch, capsys, edit
):
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    source = Path(published.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy2(f"{source}{suffix}", f"{tmp_path / 'wh.sqlite'}{suffix}")
    monkeypatch.setenv("ZEROCERT_HMAC_KEY", HMAC_KEY)
    reference = edited_reference(city, tmp_path, **edit)
    eligible = count(url, "eligibility")
    (good_run,) = read(url, "SELECT DISTINCT run_id FROM eligibility").run_id
    capsys.readouterr()

    assert main(run_args(city, url, tmp_path / "work", reference)) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        f"zerocert: table eligibility would be published empty: {eligible} rows in the published run, 0 in this one"
    ), line
    assert count(url, "eligibility") == eligible
    assert read(url, "SELECT DISTINCT run_id FROM eligibility").run_id.tolist() == [good_run]
    audit = read(url, "SELECT status, reason FROM run_audit ORDER BY started_at")
    assert audit.status.tolist() == ["published", "failed"]
    assert "table eligibility would be published empty" in audit.reason.iloc[-1]

    flag = re.search(r"--accept-change (\S+) --reason TEXT$", line).group(1)
    assert flag.split(",")[0] == "eligibility"
    reason = "the bureau changed the catchments or the policy, checked with its planners"
    assert main([*run_args(city, url, tmp_path / "work", reference), "--accept-change", flag, "--reason", reason]) == 0
    assert count(url, "eligibility") == 0
    newest = read(
        url,
        "SELECT run_id, accepted_changes FROM run_audit WHERE status = 'published' ORDER BY finished_at DESC LIMIT 1",
    )
    assert newest.run_id[0] != good_run
    changes = {c["table"]: c for c in json.loads(newest.accepted_changes[0])}
    assert set(changes) == set(flag.split(","))
    assert changes["eligibility"] == {
        "table": "eligibility",
        "previous_rows": eligible,
        "rows": 0,
        "max_shrink_fraction": 0.5,
        "reason": reason,
    }


def test_an_accepted_table_name_is_checked_like_a_source(city, published, tmp_path):
    done = zerocert(
        [*run_args(city, published, tmp_path / "work"), "--accept-change", "eligibilty", "--reason", "typo"]
    )
    assert done.returncode == 2
    assert "unknown source(s) eligibilty" in done.stderr and files_under(tmp_path / "work") == []


# --- the pure checks -----------------------------------------------------------------------------


def test_shrink_guard_thresholds():
    from pipelines.preflight import shrunk_tables

    previous = {"eligibility": 1000, "prefill": 1000, "quarantine": 500, "demand_by_school": 8, "school": 0}
    rows = {"eligibility": 499, "prefill": 500, "quarantine": 0, "demand_by_school": 3}
    assert [c["table"] for c in shrunk_tables(previous, rows, 0.5)] == ["eligibility"]
    assert shrunk_tables(previous, {**rows, "demand_by_school": 0}, None) == [
        {"table": "demand_by_school", "previous_rows": 8, "rows": 0, "max_shrink_fraction": None}
    ]


def test_a_business_status_known_to_one_business_source_is_enough():
    from pipelines import registry
    from pipelines.policy import DEMO_POLICY_YAML, policy_from_dict
    from pipelines.preflight import code_lists, unknown_policy_codes

    lists = code_lists(registry.sources())
    assert "在业" not in lists["employment.business_status"]["individual_business.reg_status"]
    policy = policy_from_dict(yaml.safe_load(DEMO_POLICY_YAML))
    assert unknown_policy_codes(policy, lists) == []
