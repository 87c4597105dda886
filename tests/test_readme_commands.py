"""The README's "After `make demo`" commands work as printed, on the demo's own city.

The Airflow demo is slow, so its stand-in is what it does to the folder: the city ``make demo``
synthesizes (its people and seed), published by ``zerocert run``. Then every line of the
README's block runs as a shell would run it from the checkout, with ``ZEROCERT_HOME`` set as
its export line says. If the synthetic city changes, this is the test that says the README's
example ID or address no longer exists there.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.masking import mask_ids_in
from pipelines.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ". .venv/bin/activate && export ZEROCERT_HOME=$PWD/.demo"


def readme_block() -> list[str]:
    """The lines of the first sh block under the README's heading "After `make demo`"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## After `make demo`", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's 'After make demo' section has no sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def readme_commands() -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in readme_block() if line.startswith("zerocert ")]


def demo_city() -> tuple[str, int, int]:
    """(folder, people, seed) of ``make demo``: the Makefile's DEMO and PEOPLE, the demo's --seed."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "zerocert demo --out $(DEMO) --people $(PEOPLE)" in makefile
    folder = re.search(r"^DEMO\s*\?=\s*(\S+)", makefile, re.M).group(1)
    people = int(re.search(r"^PEOPLE\s*\?=\s*(\d+)", makefile, re.M).group(1))
    return folder, people, build_parser().parse_args(["demo"]).seed


def test_the_readme_block_starts_with_the_line_the_demo_prints():
    folder, _, _ = demo_city()
    assert readme_block()[0] == EXPORT and EXPORT.endswith(f"=$PWD/{folder}")
    demo_source = (ROOT / "pipelines" / "demo.py").read_text(encoding="utf-8")
    assert ". .venv/bin/activate && export ZEROCERT_HOME=" in demo_source


@pytest.fixture(scope="module")
def after_make_demo(tmp_path_factory) -> tuple[Path, dict, str]:
    """A checkout's folder after ``make demo``: ``.demo`` with the city and its published warehouse."""
    checkout = tmp_path_factory.mktemp("checkout")
    folder, people, seed = demo_city()
    home = checkout / folder
    summary = synthesize(home / "city", people, seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCERT_")}
    env["ZEROCERT_HOME"] = str(home)  # what `export ZEROCERT_HOME=$PWD/.demo` sets in the checkout
    published = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--as-of", str(summary["as_of"])],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert published.returncode == 0, mask_ids_in(published.stderr[-2000:])
    return checkout, env, str(summary["as_of"])


def run_as_printed(argv: list[str], checkout: Path, env: dict) -> subprocess.CompletedProcess:
    assert argv[0] == "zerocert"
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *argv[1:]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_readme_command_answers_on_the_demo_city(after_make_demo):
    checkout, env, as_of = after_make_demo
    commands = readme_commands()
    assert {argv[1] for argv in commands} >= {"lookup", "check-address", "run", "report"}
    for argv in commands:
        done = run_as_printed(argv, checkout, env)
        assert done.returncode == 0, f"{argv[1]}: {mask_ids_in(done.stderr[-2000:])}"
        if argv[1] == "run":
            assert argv[argv.index("--as-of") + 1] == as_of, "the README reruns another day than the demo's"
        if argv[1] == "lookup":
            document = json.loads(done.stdout)
            assert document["as_guardian"]["children"], "the README's ID is no parent in the demo city"
            assert any(child["schools"] for child in document["as_guardian"]["children"])
        if argv[1] == "check-address":
            answer = json.loads(done.stdout)
            assert answer["status"] not in ("unmatched", "ambiguous"), answer["status"]
            assert answer["standard_text"] and answer["schools"], "the README's address has no school"
        if argv[1] == "report":
            report = checkout / done.stdout.strip()  # printed relative to where it was run
            assert report.is_file() and report.resolve().is_relative_to(checkout / ".demo")


def test_a_closed_pipe_after_lookup_ends_quietly(after_make_demo):
    """``zerocert lookup ID | head -0``: no BrokenPipeError traceback."""
    checkout, env, _ = after_make_demo
    argv = next(argv for argv in readme_commands() if argv[1] == "lookup")
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *argv[1:]],
            cwd=checkout,
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 141
