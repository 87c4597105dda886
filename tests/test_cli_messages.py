"""What a person sees when they get a command wrong: one line, one ``zerocert:``, what to fix.

Every test runs the real command in a subprocess, as a shell would, so what is asserted is
exactly what reaches the terminal (no pytest capture, no in-process argparse exit).
"""

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "pipelines.cli"]
RESIDENT = "371102197806020479"  # any ID with a valid check character


def zerocert(*args, home, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCERT_")}
    env["ZEROCERT_HOME"] = str(home)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, **kwargs)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("zerocert: ") and lines[0].count("zerocert:") == 1, lines[0]
    return lines[0]


@pytest.fixture()
def city(tmp_path):
    """Just enough of a city for configuration to pass up to the as-of date."""
    (tmp_path / "city" / "landing").mkdir(parents=True)
    (tmp_path / "city" / "reference").mkdir(parents=True)
    (tmp_path / "city" / "reference" / "policy.yaml").write_text("policy_id: x\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "args,expected",
    [
        (["run", "--nonsense"], "unrecognized arguments: --nonsense"),
        ([], "required: command"),
        (["run", "--as-of"], "run: argument --as-of: expected one argument"),
        (["lookup"], "lookup: the following arguments are required: id"),
    ],
)
def test_bad_usage_is_one_line_with_one_prefix(tmp_path, args, expected):
    done = zerocert(*args, home=tmp_path)
    assert done.returncode == 2
    assert expected in one_line(done.stderr)
    assert "--help" in done.stderr  # where to read the right usage


@pytest.mark.parametrize("text", ["2027-13-01", "2027-02-30", "2027-00-10"])
def test_an_impossible_as_of_date_is_not_a_date(city, text):
    done = zerocert("run", "--as-of", text, home=city)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert f"{text} is not a date" in line and "YYYY-MM-DD" not in line


def test_an_as_of_date_in_another_form_names_the_form(city):
    done = zerocert("run", "--as-of", "15/08/2027", home=city)
    assert done.returncode == 2
    assert "must be YYYY-MM-DD, got '15/08/2027'" in one_line(done.stderr)


def test_a_bad_as_of_date_from_the_environment_names_the_variable(city):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCERT_")}
    env |= {"ZEROCERT_HOME": str(city), "ZEROCERT_AS_OF": "2027-13-01"}
    done = subprocess.run([*CLI, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "ZEROCERT_AS_OF 2027-13-01 is not a date" in one_line(done.stderr)


def test_a_missing_default_landing_says_how_to_point_elsewhere(tmp_path):
    done = zerocert("run", home=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert str(tmp_path / "city" / "landing") in line and "--landing" in line and "ZEROCERT_LANDING" in line


def test_lookup_without_a_warehouse_names_the_path_and_creates_nothing(tmp_path):
    done = zerocert("lookup", RESIDENT, home=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert str(tmp_path / "warehouse.sqlite") in line and "zerocert run" in line
    assert list(tmp_path.iterdir()) == []  # no empty warehouse file left behind
    assert RESIDENT not in done.stderr


def test_lookup_in_a_warehouse_never_published_says_so(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "warehouse.sqlite").close()
    done = zerocert("lookup", RESIDENT, home=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert "no published run yet" in line and str(tmp_path / "warehouse.sqlite") in line
    assert "no such table" not in line


def test_report_without_a_warehouse_creates_nothing(tmp_path):
    (tmp_path / "city" / "reference").mkdir(parents=True)
    done = zerocert("report", "--out", str(tmp_path / "out"), home=tmp_path)
    assert done.returncode == 2
    assert str(tmp_path / "warehouse.sqlite") in one_line(done.stderr)
    assert not (tmp_path / "warehouse.sqlite").exists() and not (tmp_path / "out").exists()


def test_check_address_without_a_registry_names_the_file_and_the_setting(tmp_path):
    done = zerocert("check-address", "东港区中山大道1号", home=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert str(tmp_path / "city" / "reference" / "addresses.csv") in line and "--reference" in line


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``zerocert synth … | head -0``: the reader is gone before the first byte; no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader went away before the command wrote anything
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCERT_")}
    try:
        done = subprocess.run(
            [*CLI, "synth", "--out", str(tmp_path / "city"), "--people", "200"],
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports for any writer cut off
