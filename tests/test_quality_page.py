"""Each run explains itself: a quality page that opens offline, and logs that carry counts.

A small city runs through ``run_pipeline`` with one extra, deliberately failing expectation
(warn level: the run still publishes); a second run has an error-level one and stops. The page
is read back as a user reads it -- its tables -- and checked against the warehouse.
"""

from __future__ import annotations

import ast
import logging
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_report import chromium, headless  # noqa: F401 (a fixture)
from warehouse_reader import read

from pipelines import validation
from pipelines.config import resolve_settings
from pipelines.errors import ValidationFailed
from pipelines.run import published_row_counts, run_pipeline

pytestmark = pytest.mark.e2e

AS_OF = "2027-08-15"
PEOPLE = 2000
# Adults have no guardian: most hukou rows fail this check, which no shipped suite has.
WARN_CHECK = "  - {check: not_null, column: guardian1_id, severity: warn}\n"
ERROR_CHECK = "  - {check: not_null, column: guardian1_id}\n"
NETWORK = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # any scheme, or protocol-relative


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.name, record.getMessage()))


class PageReader(HTMLParser):
    """What a reader of the page sees: each table (under its section's heading) as rows of cell
    texts, every attribute that may load something, and the CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.references: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.css = ""
        self._cell: list[str] | None = None
        self._in = ""

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data", "background") or "url(" in (value or ""):
                self.references.append((tag, name, value or ""))
        if tag == "h2":
            self.section = dict(attrs).get("id", "")
        if tag == "table":
            self.tables.append((self.section, []))
        if tag == "tr":
            self.tables[-1][1].append([])
        if tag in ("td", "th"):
            self._cell = []
        self._in = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        self._in = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in == "style":
            self.css += data

    def table(self, section: str, first_header: str) -> list[dict[str, str]]:
        found = [rows for name, rows in self.tables if name == section and rows and rows[0][0] == first_header]
        assert len(found) <= 1
        if not found:
            return []
        header, *body = found[0]
        return [dict(zip(header, row)) for row in body]


def number(text: str) -> int:
    return int(text.replace(",", ""))


def suites_with(extra_check: str, root: Path) -> Path:
    folder = root / "expectations"
    shutil.copytree(validation.DEFAULT_EXPECTATIONS_DIR, folder)
    hukou = folder / "hukou.yaml"
    text = hukou.read_text(encoding="utf-8")
    hukou.write_text(text.replace("row_checks:\n", "row_checks:\n" + extra_check, 1), encoding="utf-8")
    return folder


def settings_for(city: Path, root: Path):
    return resolve_settings(
        {
            "landing": str(city / "landing"),
            "reference": str(city / "reference"),
            "warehouse_url": f"sqlite:///{root / 'wh.sqlite'}",
            "as_of": AS_OF,
            "work_dir": str(root / "work"),
        }
    )


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from pipelines.synth import synthesize

    out = tmp_path_factory.mktemp("quality_city")
    synthesize(out, PEOPLE, seed=13)
    return out


@pytest.fixture(scope="module")
def published(city, tmp_path_factory):
    """One whole run, three engine buckets, a failing warn-level hukou check; its log records."""
    root = tmp_path_factory.mktemp("quality_run")
    settings = settings_for(city, root)
    records = _Records()
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(records)
    root_logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(validation, "DEFAULT_EXPECTATIONS_DIR", suites_with(WARN_CHECK, root))
            patch.setattr("pipelines.run.RESIDENTS_PER_BUCKET", 700)
            result = run_pipeline(settings)
    finally:
        root_logger.removeHandler(records)
        root_logger.setLevel(level)
    page = Path(result["quality_page"])
    return settings.with_attempt(page.parent.name), page, records.messages


@pytest.fixture(scope="module")
def page_of(published) -> PageReader:
    reader = PageReader()
    reader.feed(published[1].read_text(encoding="utf-8"))
    return reader


def test_the_page_has_no_network_reference_script_or_outside_font(published, page_of):
    text = published[1].read_text(encoding="utf-8")
    assert page_of.tables, "the page has tables"
    assert not {"script", "link", "img", "iframe", "object", "embed"} & page_of.tags
    assert all(value.startswith("#") for _, _, value in page_of.references), page_of.references
    assert not any(NETWORK.match(value) for _, _, value in page_of.references)
    assert "url(" not in page_of.css and "@import" not in page_of.css and "@font-face" not in page_of.css
    assert "http://" not in text and "https://" not in text


def test_the_page_is_in_the_attempt_and_copied_beside_the_data_docs(published):
    settings, page, _ = published
    assert page.parent.parent.parent == settings.work_dir / "runs"
    assert page.name == "quality.html" and page.parent.name.startswith("cli-")
    latest = settings.work_dir / "validation" / "quality" / f"{AS_OF}.html"
    assert latest.read_bytes() == page.read_bytes()


def test_counts_per_source_are_the_published_source_snapshot(published, page_of):
    settings, _, _ = published
    snapshot = read(settings.warehouse_url, "SELECT * FROM source_snapshot").set_index("source")
    overview = {row["source"]: row for row in page_of.table("", "source")}
    assert sorted(overview) == sorted(snapshot.index) and len(overview) == 7
    for source, row in overview.items():
        expected = snapshot.loc[source]
        assert row["delivery"] == str(expected["delivery"])[:10]
        assert [number(row[k]) for k in ("rows in", "accepted", "duplicate", "quarantined")] == [
            int(expected[k]) for k in ("rows_in", "rows_accepted", "rows_duplicate", "rows_quarantined")
        ]
    assert overview["hukou"]["validation"] == "warnings"
    assert {row["validation"] for source, row in overview.items() if source != "hukou"} == {"passed"}


def test_quarantine_reasons_are_the_published_quarantine_counts(published, page_of):
    settings, _, _ = published
    quarantine = read(settings.warehouse_url, "SELECT source, reason_code, COUNT(*) AS n FROM quarantine GROUP BY 1, 2")
    assert len(quarantine) > 5  # the synthetic city is dirty in several ways
    on_page = {
        (source, row["reason"]): number(row["rows"])
        for source in quarantine["source"].unique()
        for row in page_of.table(f"source-{source}", "reason")
    }
    assert on_page == {(s, r): int(n) for s, r, n in quarantine.itertuples(index=False)}


def test_the_failing_expectation_is_named_with_its_column_counts_and_severity(published, page_of):
    settings, _, _ = published
    accepted = pd.read_parquet(settings.layout.accepted_rows("hukou"), columns=["guardian1_id"])
    failed = page_of.table("source-hukou", "expectation")
    assert [row["expectation"] for row in failed] == ["not_null(guardian1_id)"]
    (row,) = failed
    assert row["column"] == "guardian1_id" and row["severity"] == "warn"
    assert number(row["unexpected rows"]) == int(accepted["guardian1_id"].isna().sum()) > 100
    assert row["unexpected"] == f"{100 * accepted['guardian1_id'].isna().mean():.3g}%"
    for source in ("enterprise", "rental", "social_insurance"):
        assert page_of.table(f"source-{source}", "expectation") == []


def test_published_rows_per_table_are_the_run_audit_counts(published, page_of):
    settings, _, _ = published
    on_page = {row["table"]: number(row["rows"]) for row in page_of.table("published", "table")}
    assert on_page == published_row_counts(settings) and on_page["eligibility"] > 0


def test_the_page_shows_no_resident_id_or_name(published, city):
    settings, page, _ = published
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\d{15,}", text)
    hukou = pd.read_parquet(settings.layout.accepted_rows("hukou"), columns=["citizen_id", "name"])
    assert not any(value in text for value in [*hukou["citizen_id"], *hukou["name"].dropna()])


def test_the_page_renders_offline_in_headless_chromium(published, chromium, tmp_path):  # noqa: F811
    _, page, _ = published
    probe = tmp_path / "probe.html"  # the page plus a script reporting what the browser loaded and shows
    probe.write_text(
        page.read_text(encoding="utf-8").replace(
            "</body>",
            """<script>window.addEventListener("load", () => { const b = document.body;
b.setAttribute("data-resources", performance.getEntriesByType("resource").length);
b.setAttribute("data-header-bg", getComputedStyle(document.querySelector("th")).backgroundColor);
b.setAttribute("data-text", b.innerText.length); });</script></body>""",
        ),
        encoding="utf-8",
    )
    offline = "--host-resolver-rules=MAP * ~NOTFOUND"  # no name resolves: nothing could load from outside
    dom = headless(chromium, offline, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    seen = dict(re.findall(r'data-(resources|header-bg|text)="([^"]*)"', dom.stdout))
    assert seen.get("resources") == "0", seen  # nothing fetched besides the page itself
    assert seen["header-bg"] == "rgb(238, 241, 245)"  # the inline CSS applies
    assert int(seen["text"]) > 1000
    assert "zerocert data quality, as of 2027-08-15" in dom.stdout and "not_null(guardian1_id)" in dom.stdout

    shot = tmp_path / "quality.png"
    done = headless(chromium, offline, "--window-size=1280,3000", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-500:]
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and tables: far from a blank page


def _logged(messages: list[tuple[str, str]], pattern: str) -> list[re.Match]:
    return [m for _, message in messages if (m := re.search(pattern, message))]


def test_the_logs_carry_counts_at_every_step(published):
    settings, _, messages = published
    url = settings.warehouse_url
    snapshot = read(url, "SELECT * FROM source_snapshot").set_index("source")
    for source, row in snapshot.iterrows():
        staged = _logged(messages, rf"^{source} \S+: (\d+) in, (\d+) accepted, (\d+) quarantined, (\d+) duplicate$")
        assert [tuple(map(int, m.groups())) for m in staged] == [
            (row.rows_in, row.rows_accepted, row.rows_quarantined, row.rows_duplicate)
        ]
        assert len(_logged(messages, rf"^{source}: \d+ rows checked by \d+ expectations, \d+ failed")) == 1

    (addresses,) = _logged(messages, r"^addresses: (\d+) texts, by status (\{.*\})$")
    by_status = read(url, "SELECT status, COUNT(*) AS n FROM address_match GROUP BY status")
    assert ast.literal_eval(addresses.group(2)) == dict(zip(by_status["status"], by_status["n"]))

    buckets = _logged(messages, r"^bucket (\d+) of (\d+) decided: (\d+) children")
    assert [(int(m.group(1)), int(m.group(2))) for m in buckets] == [(1, 3), (2, 3), (3, 3)]
    assert len(_logged(messages, r"^bucket \d+ of 3 joined: \d+ staged rows in")) == 3
    (levels,) = _logged(messages, r"^children per level: (\{.*\})$")
    per_level = ast.literal_eval(levels.group(1))
    assert sum(int(m.group(3)) for m in buckets) == sum(per_level.values()) > 0
    decided = read(url, "SELECT level, COUNT(DISTINCT child_id) AS n FROM eligibility GROUP BY level")
    (schools,) = _logged(messages, r"^children with a school per level: (\{.*\}); with none: (\{.*\})$")
    assert ast.literal_eval(schools.group(1)) == dict(zip(decided["level"], decided["n"]))

    (tables,) = _logged(messages, r"^run \S+ published: \d+ rows in \d+ tables in \S+ s; rows per table: (.*)$")
    logged = {name: int(n) for name, n in (item.rsplit(" ", 1) for item in tables.group(1).split(", "))}
    assert logged == published_row_counts(settings)


def test_the_logs_hold_no_whole_resident_id(published):
    _, _, messages = published
    assert messages and not [m for _, m in messages if re.search(r"\d{15,}", m)]


def test_a_run_stopped_by_validation_leaves_a_page_naming_the_failure(city, tmp_path, monkeypatch):
    settings = settings_for(city, tmp_path)
    monkeypatch.setattr(validation, "DEFAULT_EXPECTATIONS_DIR", suites_with(ERROR_CHECK, tmp_path))
    with pytest.raises(ValidationFailed, match=r"hukou: row check not_null\(guardian1_id\) failed") as failed:
        run_pipeline(settings)
    named = re.search(r"see (\S+quality\.html)", str(failed.value))
    assert named, str(failed.value)
    reader = PageReader()
    reader.feed(Path(named.group(1)).read_text(encoding="utf-8"))
    overview = {row["source"]: row["validation"] for row in reader.table("", "source")}
    assert overview["hukou"] == "failed"
    assert {overview[s] for s in ("enterprise", "housing_contract")} == {"passed"}
    assert {overview[s] for s in ("individual_business", "property_title", "rental", "social_insurance")} == {
        "not validated"
    }
    (row,) = reader.table("source-hukou", "expectation")
    assert (row["expectation"], row["severity"]) == ("not_null(guardian1_id)", "error")
    assert reader.table("published", "table") == []  # nothing published


def test_the_warehouse_dag_doc_names_the_folders_a_run_writes(published):
    settings, page, _ = published
    dags = Path(__file__).resolve().parent.parent / "dags"
    doc = ast.get_docstring(ast.parse((dags / "zerocert_warehouse.py").read_text(encoding="utf-8")))
    paths = set(re.findall(r"`(<work_dir>/[^`]+)`", doc))
    assert "<work_dir>/validation/quality/<as_of>.html" in paths
    for path in paths - {"<work_dir>/reports/<as_of>/report.html"}:  # the report comes after publish
        named = path.replace("<work_dir>", str(settings.work_dir)).replace("<as_of>", AS_OF)
        if "airflow-<run id>" in named:
            named = named.replace("airflow-<run id>", page.parent.name)
        assert Path(named.replace("<source>", "hukou")).exists(), path
    run_id, folder = re.search(r"the run\s+`([^`]+)` works in `airflow-([^`]+)`", doc).groups()
    assert settings.with_attempt(f"airflow-{run_id}").attempt == f"airflow-{folder}"
    assert "quality.html" in doc and (page.parent / "addresses" / "review").is_dir()
