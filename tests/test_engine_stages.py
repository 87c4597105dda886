"""The engine's stages (pipelines/engine/buckets.py) as the run's steps: any bucket count gives the
same published bytes, and any stage or bucket run again rewrites the same files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from pipelines import run as steps
from pipelines.config import resolve_settings
from pipelines.engine.buckets import PLAN_FILE, PUBLISHED_PARTS, WorkFolder, bucket_label, read_plan, run_engine
from pipelines.errors import UsageError
from pipelines.policy import load_policy

AS_OF = "2027-08-15"


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """An attempt with a small synthetic city staged, validated and its addresses resolved."""
    from pipelines.synth import synthesize

    root = tmp_path_factory.mktemp("engine_stages")
    synthesize(root / "city", 2500, seed=11)
    settings = resolve_settings(
        {
            "landing": str(root / "city" / "landing"),
            "reference": str(root / "city" / "reference"),
            "warehouse_url": f"sqlite:///{root / 'wh.sqlite'}",
            "as_of": AS_OF,
            "work_dir": str(root / "work"),
        }
    ).with_attempt("stages")
    attempt = steps.Attempt(settings, dt.datetime(2027, 8, 15, 1, tzinfo=dt.UTC))
    done: dict[str, dict] = {}
    for step in steps.STEPS[: [s.name for s in steps.STEPS].index(steps.BUCKET_PLAN)]:
        done[step.name] = steps.do_step(step, attempt, done)
    return attempt


def with_buckets(attempt: steps.Attempt, buckets: int) -> steps.Attempt:
    return dataclasses.replace(attempt, settings=dataclasses.replace(attempt.settings, engine_buckets=buckets))


def run_engine_steps(attempt: steps.Attempt, progress=lambda message: None, workers: int = 1) -> dict[str, dict]:
    done: dict[str, dict] = {}
    for name in steps.ENGINE_STEPS:
        step = next(s for s in steps.STEPS if s.name == name)
        done[name] = steps.do_step(step, attempt, done, progress, workers)
    return done


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def published_bytes(tables: dict[str, str]) -> dict[str, bytes]:
    return {name: Path(path).read_bytes() for name, path in tables.items()}


def test_the_engine_steps_publish_the_same_bytes_for_1_3_and_7_buckets(staged):
    results = {}
    for buckets in (1, 3, 7):
        attempt = with_buckets(staged, buckets)
        said: list[str] = []
        done = run_engine_steps(attempt, said.append)
        assert done[steps.BUCKET_PLAN]["bucket_count"] == buckets
        assert [r["bucket"] for r in done["decide_bucket"].values()] == list(range(buckets))
        assert f"decide eligibility, bucket {buckets} of {buckets}" in said
        results[buckets] = published_bytes(done["gather_buckets"]["tables"])
        # another bucket count replaces the plan and every bucket file of the one before
        assert sorted(p.name for p in (attempt.layout.engine_work_dir / "decided").iterdir()) == sorted(
            str(b) for b in range(buckets)
        )
    assert set(results[1]) == set(PUBLISHED_PARTS) and set(PUBLISHED_PARTS) <= set(steps.PUBLISHED_TABLES)
    assert all(len(pd.read_parquet(path)) for path in done["gather_buckets"]["tables"].values())
    children = pd.read_parquet(done["gather_buckets"]["tables"]["eligibility"])["child_id"].nunique()
    assert children > 20, "the city has enough children for every bucket to decide some"
    for buckets in (3, 7):  # small tables: even the Parquet pages fall alike, so the bytes are equal
        for name, data in results[1].items():
            assert results[buckets][name] == data, (buckets, name)


def test_a_bucket_reads_the_address_matches_of_its_own_rows_texts_only(staged):
    """What a bucket's join holds stays a bucket's as the city grows: its address matches are
    those of the texts its rows hold, and together the buckets hold every match the rows need."""
    from pipelines import registry

    attempt = with_buckets(staged, 3)
    steps.bucket_inputs(attempt)
    work = attempt.layout.engine_work_dir
    city = pd.read_parquet(attempt.layout.addresses_dir / "address_match.parquet")
    held_by_buckets = set()
    for bucket in range(3):
        matches = pd.read_parquet(work / "addresses" / str(bucket) / "address_match.parquet")
        held = set(zip(matches["source"], matches["address"]))
        rows_texts = set()
        for path in (work / "staged" / str(bucket)).glob("*.parquet"):
            source = path.stem.split("#")[0]
            if source in registry.address_columns():
                texts = pd.read_parquet(path)[registry.address_columns()[source]].dropna()
                rows_texts |= {(source, text) for text in texts}
        assert held and held <= rows_texts
        assert len(matches) < len(city)
        held_by_buckets |= held
    assert held_by_buckets == set(zip(city["source"], city["address"])) & held_by_buckets
    wanted = {
        (source, text)
        for source, column in registry.address_columns().items()
        if (attempt.layout.accepted_rows(source)).exists()
        for text in pd.read_parquet(attempt.layout.accepted_rows(source))[column].dropna()
    }
    assert wanted & set(zip(city["source"], city["address"])) == held_by_buckets


def test_two_worker_processes_stage_and_decide_the_same_bytes_as_one(staged):
    """``--workers 2``: a step's sources or buckets in two processes at once change nothing."""
    stage = next(s for s in steps.STEPS if s.name == "stage")
    apart = dataclasses.replace(staged, settings=staged.settings.with_attempt("two-workers"))
    said: list[str] = []
    assert steps.do_step(stage, apart, {}, said.append, workers=2).keys() == set(steps.source_keys())
    assert said == [f"stage {source}" for source in steps.source_keys()]
    for source in steps.source_keys():
        ours = apart.layout.staged_dir / source / "accepted.parquet"
        assert ours.read_bytes() == (staged.layout.staged_dir / source / "accepted.parquet").read_bytes(), source

    one = published_bytes(run_engine_steps(with_buckets(staged, 3), workers=1)["gather_buckets"]["tables"])
    two = run_engine_steps(with_buckets(staged, 3), workers=2)
    assert [r["bucket"] for r in two["decide_bucket"].values()] == [0, 1, 2]
    assert published_bytes(two["gather_buckets"]["tables"]) == one


def test_run_engine_in_one_process_gives_the_steps_bytes_on_a_file_url_work_folder(staged, tmp_path):
    attempt = with_buckets(staged, 3)
    stepped = published_bytes(run_engine_steps(attempt)["gather_buckets"]["tables"])
    layout = attempt.layout
    run_id = read_plan(WorkFolder(layout.engine_work_dir))["run_id"]
    work = tmp_path / "engine work"
    paths = run_engine(
        layout.staged_dir,
        layout.addresses_dir,
        load_policy(attempt.settings.policy_path),
        run_id,
        tmp_path / "out",
        buckets=3,
        work=work.as_uri(),
    )
    assert {name: path.read_bytes() for name, path in paths.items()} == stepped
    assert (work / PLAN_FILE).exists(), "a work folder given is kept"
    assert not list(work.rglob("*.tmp"))


def test_any_stage_or_bucket_run_again_rewrites_the_same_files(staged):
    attempt = with_buckets(staged, 3)
    done = run_engine_steps(attempt)
    folder = attempt.layout.engine_work_dir
    before = digests(folder)
    tables = published_bytes(done["gather_buckets"]["tables"])
    assert any(name.startswith("decided/1/") for name in before)
    steps.decide_bucket(attempt, 1)
    steps.decide_bucket(attempt, 1)  # twice over: still the same
    steps.join_bucket(attempt, 0)
    steps.link_bucket(attempt, 2)
    steps.prefill_bucket(attempt, 1)
    steps.route_edges(attempt)
    assert steps.bucket_inputs(attempt) == done[steps.BUCKET_PLAN]
    steps.gather_buckets(attempt)
    assert digests(folder) == before
    assert published_bytes(done["gather_buckets"]["tables"]) == tables


def test_a_stage_refuses_to_run_before_every_bucket_it_reads_is_there(staged):
    import shutil

    attempt = with_buckets(staged, 3)
    run_engine_steps(attempt)
    folder = attempt.layout.engine_work_dir
    before = digests(folder)
    shutil.rmtree(folder / "edges" / "from2")  # holder bucket 3 of 3 not linked (its worker died)
    with pytest.raises(FileNotFoundError, match="edges/from2/0/edge_guardians.parquet is missing"):
        steps.decide_bucket(attempt, 0)
    with pytest.raises(ValueError, match="bucket 3 is not one of the plan's buckets"):
        steps.decide_bucket(attempt, 3)
    steps.link_bucket(attempt, 2)  # the one bucket run again
    steps.decide_bucket(attempt, 0)
    assert digests(folder) == before


def test_a_bucket_file_is_replaced_whole_or_not_at_all(tmp_path):
    work = WorkFolder(tmp_path / "w")
    work.write_frame(pd.DataFrame({"a": ["x", "y"]}), "part", 0, "t.parquet")
    written = (tmp_path / "w" / "part" / "0" / "t.parquet").read_bytes()

    def dies_half_way(temp: str) -> None:
        with work.fs.open_output_stream(temp) as out:
            out.write(written[: len(written) // 2])
        raise OSError("worker killed")

    with pytest.raises(OSError, match="worker killed"):
        work._replace(dies_half_way, ("part", 0, "t.parquet"))
    assert (tmp_path / "w" / "part" / "0" / "t.parquet").read_bytes() == written
    assert [p.name for p in (tmp_path / "w" / "part" / "0").iterdir()] == ["t.parquet"]
    (tmp_path / "w" / "part" / "0" / ".t.parquet.dead.tmp").write_bytes(b"left by a killed worker")
    assert work.files("part", 0) == ["t.parquet"]
    work.sweep()
    assert [p.name for p in (tmp_path / "w" / "part" / "0").iterdir()] == ["t.parquet"]


def test_a_stage_without_the_plan_says_which_stage_comes_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run bucket_inputs first"):
        read_plan(WorkFolder(tmp_path))


def test_bucket_labels_count_from_one():
    assert bucket_label(0, 12) == "bucket 1 of 12"
    assert bucket_label(11, 12) == "bucket 12 of 12"


@pytest.fixture()
def home(tmp_path):
    (tmp_path / "city" / "landing").mkdir(parents=True)
    (tmp_path / "city" / "reference").mkdir(parents=True)
    (tmp_path / "city" / "reference" / "policy.yaml").write_text("policy_id: x\n", encoding="utf-8")
    return tmp_path


def test_the_bucket_count_is_a_setting_or_follows_the_city(home):
    env = {"ZEROCERT_HOME": str(home)}
    assert resolve_settings(environ=env).engine_buckets == 0
    assert resolve_settings(environ={**env, "ZEROCERT_ENGINE_BUCKETS": "12"}).engine_buckets == 12
    variables = {"zerocert_engine_buckets": "5"}
    assert resolve_settings(lookup=variables.get, environ={**env, "ZEROCERT_ENGINE_BUCKETS": "12"}).engine_buckets == 5
    for bad in ("-1", "many", "2.5"):
        with pytest.raises(UsageError, match="ZEROCERT_ENGINE_BUCKETS must be a whole number"):
            resolve_settings(environ={**env, "ZEROCERT_ENGINE_BUCKETS": bad})
    assert steps.engine_buckets(1) == 1 and steps.engine_buckets(3_000_000) == 6


def test_a_configured_work_location_holds_each_attempts_bucket_files(staged, tmp_path):
    shared = tmp_path / "shared engine"
    attempt = with_buckets(staged, 3)
    expected = published_bytes(run_engine_steps(attempt)["gather_buckets"]["tables"])
    for location in (str(shared), shared.as_uri()):
        elsewhere = dataclasses.replace(
            attempt, settings=dataclasses.replace(attempt.settings, engine_work_url=location)
        )
        done = run_engine_steps(elsewhere)
        assert published_bytes(done["gather_buckets"]["tables"]) == expected
        folder = shared / AS_OF / attempt.settings.attempt
        assert (folder / PLAN_FILE).exists() and (folder / "decided" / "2" / "eligibility.parquet").exists()
        steps.engine_work(elsewhere).clear()
        assert not folder.exists()


def test_a_work_location_that_cannot_be_opened_stops_the_run_before_any_work(home):
    from pipelines.preflight import check_engine_work

    env = {"ZEROCERT_HOME": str(home), "ZEROCERT_ENGINE_WORK_URL": "nosuch://user:secret@bucket/prefix"}
    settings = resolve_settings(environ=env)
    assert settings.engine_work_url.startswith("nosuch://")
    with pytest.raises(UsageError, match="engine work location") as failed:
        check_engine_work(settings.engine_work_url)
    assert "secret" not in str(failed.value)
    check_engine_work(str(home / "anywhere"))  # a plain path is made when first written


def test_the_arrow_bucket_of_a_column_is_the_bucket_of_its_values():
    import pyarrow as pa

    from pipelines.engine.buckets import (
        household_bucket,
        household_bucket_of_column,
        person_bucket,
        person_bucket_of_column,
    )

    # well-formed IDs and the odd values the pandas spelling buckets its own way (missing, short, non-ASCII)
    values = ["110101200001011234", "11010120000101123X", None, "12", "12345", "ab12c3d", "１２３４５６", "-123x"]
    column = pa.chunked_array([pa.array(values[:4], pa.large_string()), pa.array(values[4:], pa.large_string())])
    for buckets in (1, 3, 7):
        assert person_bucket_of_column(column, buckets).tolist() == person_bucket(pd.Series(values), buckets).tolist()
        assert (
            household_bucket_of_column(column, buckets).tolist()
            == household_bucket(pd.Series(values), buckets).tolist()
        )
