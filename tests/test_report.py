"""The bureau's report: one self-contained page that renders, with its plots, in a real browser."""

from __future__ import annotations

import base64
import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.report import REPORT_FILE, oversubscribed_schools, report_path

REPO = Path(__file__).resolve().parent.parent
PEOPLE = 2000
IMAGE = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, str]:
    """A synthetic city run twice (two as-of dates, so the scorecard has a history)."""
    from pipelines.synth import synthesize

    city = tmp_path_factory.mktemp("report_city")
    synthesize(city, PEOPLE, seed=9)
    url = f"sqlite:///{city / 'wh.sqlite'}"
    for as_of in ("2027-08-15", "2027-08-16"):
        assert (
            main(
                [
                    "run",
                    "--landing",
                    str(city / "landing"),
                    "--reference",
                    str(city / "reference"),
                    "--warehouse",
                    url,
                    "--as-of",
                    as_of,
                    "--work-dir",
                    str(city / "work"),
                ]
            )
            == 0
        )
    return city, url


@pytest.fixture(scope="module")
def report(published, tmp_path_factory) -> Path:
    city, url = published
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--warehouse", url, "--reference", str(city / "reference"), "--out", str(out)]) == 0
    return out / REPORT_FILE


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by .ci/browser where it is missing (as `make test` does)."""
    if shutil.which("chromium") is None:
        done = subprocess.run([str(REPO / ".ci" / "browser")], capture_output=True, text=True)
        if done.returncode != 0 or shutil.which("chromium") is None:
            pytest.fail(f"headless Chromium is needed and could not be installed: {done.stderr.strip()}", pytrace=False)
    return shutil.which("chromium")


def headless(chromium: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_the_report_is_one_page_with_every_plot_and_no_outside_reference(report, published):
    page = report.read_text(encoding="utf-8")
    images = IMAGE.findall(page)
    assert [alt for alt, _ in images] == [
        "demand per district",
        "demand per school",
        "catchment map",
        "forecast utilisation per school",
        "forecast per school against capacity",
        "data quality over runs",
    ]
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "http://" not in page and "https://" not in page
    for heading in (
        "Oversubscribed schools",
        "Demand against capacity per district",
        "Catchments shaded by utilisation",
        "Forecast of entrants per school",
        "Data quality per department",
    ):
        assert f">{heading}<" in page
    city, url = published
    ids = pd.read_csv(city / "truth" / "eligibility.csv", dtype=str)["child_id"]
    assert not any(child in page for child in ids)  # aggregates only: no resident ID


@pytest.mark.e2e
def test_the_report_renders_in_headless_chromium_with_all_its_images(report, chromium, tmp_path):
    probe = tmp_path / "probe.html"  # the report plus a script that writes what the browser loaded
    probe.write_text(
        report.read_text(encoding="utf-8").replace(
            "</body>",
            """<script>
window.addEventListener("load", () => { document.body.setAttribute("data-image-widths",
  Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1).join(",")); });
</script></body>""",
        ),
        encoding="utf-8",
    )
    dom = headless(chromium, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    widths = re.search(r'data-image-widths="([^"]*)"', dom.stdout)
    assert widths, "the page did not finish loading"
    widths = [int(w) for w in widths.group(1).split(",")]
    assert len(widths) == 6 and all(w > 300 for w in widths), widths

    shot = tmp_path / "report.png"
    done = headless(chromium, "--window-size=1280,6000", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-500:]
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, bars, maps: far from a blank page


def test_oversubscribed_schools_are_those_whose_best_options_or_a1_children_exceed_seats():
    rows = []
    for school, capacity, best, a1 in (
        ("S1", 10, {"A1": 6, "C": 5}, 6),
        ("S2", 10, {"A1": 3}, 12),
        ("S3", 10, {"A1": 9}, 9),
    ):
        for category in ("A1", "A2", "B", "C"):
            rows.append(
                {
                    "school_code": school,
                    "level": "primary",
                    "category": category,
                    "district_code": "D",
                    "children": a1 if category == "A1" else 0,
                    "best_children": best.get(category, 0),
                    "capacity": capacity,
                }
            )
    over = oversubscribed_schools(
        pd.DataFrame(rows), pd.DataFrame({"school_code": ["S1", "S2", "S3"], "school_name": ["甲", "乙", "丙"]})
    )
    assert over["school_code"].tolist() == ["S1", "S2"]  # 11 best-option children; 12 A1 children
    assert over.set_index("school_code").loc["S1", "best-option children"] == 11


def test_report_without_a_published_run_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "reference").mkdir()
    code = main(
        [
            "report",
            "--warehouse",
            f"sqlite:///{tmp_path / 'none.sqlite'}",
            "--reference",
            str(tmp_path / "reference"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("zerocert: ") and "\n" not in err and "no published run" in err
    assert not (tmp_path / "out").exists()


def test_the_runs_report_lives_under_the_work_folder_by_as_of_date(tmp_path):
    assert report_path(tmp_path, dt.date(2027, 8, 15)) == tmp_path / "reports" / "2027-08-15" / "report.html"
