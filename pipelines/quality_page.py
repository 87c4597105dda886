"""Each run's quality page: one self-contained HTML file that opens on a closed network.

The Great Expectations Data Docs index pulls its styles and its list of runs from CDNs, so on
the bureau's network it shows nothing. This page carries its CSS inline and nothing else: no
script, font, image or link to anywhere. It says, per source, how many rows came in and how
many were accepted, dropped as duplicates or quarantined (the staging snapshot), why rows were
quarantined (reason codes with counts, never the rows), and which expectations failed (name,
column, unexpected rows, severity) -- and, after a publish, the rows of each published table.

It is written after each source's validation (the run may stop there) and again after publish,
into the attempt's folder, with a copy at a stable path per as-of date (``RunLayout``). The GX
results it reads are masked in pipelines/validation.py; every text is masked again here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import html
import json
import os
import shutil
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines import registry
from pipelines.layout import SNAPSHOT_FILE, RunLayout
from pipelines.masking import mask_ids_in

SEVERITY_ORDER = {"table": 0, "error": 1, "warn": 2}


@dataclass(frozen=True)
class SourceQuality:
    """What one source's staging and validation found in this attempt (None: not reached)."""

    source: str
    snapshot: Mapping[str, object] | None
    reasons: Mapping[str, int] = field(default_factory=dict)
    validation: Mapping[str, object] | None = None

    @property
    def verdict(self) -> str:
        if self.snapshot is None:
            return "not staged"
        if self.validation is None:
            return "not validated"
        failures = self.validation.get("failures") or []
        if any(f.get("severity") != "warn" for f in failures):
            return "failed"
        return "warnings" if failures else "passed"


@dataclass(frozen=True)
class RunQuality:
    as_of: dt.date
    attempt: str
    sources: tuple[SourceQuality, ...]
    published: Mapping[str, int] | None = None
    run_id: str | None = None
    results_dir: Path | None = None


def record_validation(layout: RunLayout, source: str, report: Mapping[str, object]) -> Path:
    """Keep what this attempt's validation of ``source`` found (its report from
    ``validate_staged``: counts and failed expectations, no values), for the page."""
    keep = ("source", "success", "rows", "expectations", "failures", "accepted_change")
    path = layout.validation_summary(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, json.dumps({k: report.get(k) for k in keep}, ensure_ascii=False, indent=1, default=str))
    return path


def quarantine_reasons(quarantine_path: Path) -> dict[str, int]:
    """Rows per reason code of a staged quarantine file, most frequent first."""
    path = Path(quarantine_path)
    if not path.exists():
        return {}
    codes = pd.read_parquet(path, columns=["reason_code"])["reason_code"]
    counts = codes.value_counts()
    return {str(code): int(n) for code, n in sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))}


def run_quality(layout: RunLayout, published: Mapping[str, int] | None = None, run_id: str | None = None) -> RunQuality:
    """Gather the page's figures from the attempt's own files (its snapshots, quarantine files
    and validation summaries), for every source the installation knows."""
    sources = []
    for source in registry.source_keys():
        snapshot_file = layout.staged(source) / SNAPSHOT_FILE
        snapshot = json.loads(snapshot_file.read_text(encoding="utf-8")) if snapshot_file.exists() else None
        summary = layout.validation_summary(source)
        sources.append(
            SourceQuality(
                source=source,
                snapshot=snapshot,
                reasons=quarantine_reasons(Path(str(snapshot["quarantine_path"]))) if snapshot else {},
                validation=json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else None,
            )
        )
    return RunQuality(layout.as_of, layout.attempt, tuple(sources), published, run_id, layout.validation_dir)


# --- rendering (pure) ----------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #1b1f24; background: #fff; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #c9ced6; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef1f5; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #57606a; } .none { color: #57606a; font-style: italic; }
.passed { color: #1a7f37; } .warnings { color: #9a6700; } .failed { color: #cf222e; font-weight: bold; }
.not-validated, .not-staged { color: #57606a; }
"""


def _text(value: object) -> str:
    """Escaped and masked: no whole resident ID reaches the page, whatever a result holds."""
    return html.escape(mask_ids_in("" if value is None else str(value)))


def _count(value: object) -> str:
    return "–" if value is None else f"{int(value):,}"


def _percent(value: object) -> str:
    return "–" if value is None else f"{float(value):.3g}%"


def _table(headers: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _css_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _overview(quality: RunQuality) -> str:
    rows = []
    for item in quality.sources:
        snap = item.snapshot or {}
        failures = (item.validation or {}).get("failures") or []
        rows.append(
            [
                f'<a href="#source-{_text(item.source)}">{_text(item.source)}</a>',
                _text(snap.get("delivery", "–")),
                _count(snap.get("rows_in")),
                _count(snap.get("rows_accepted")),
                _count(snap.get("rows_duplicate")),
                _count(snap.get("rows_quarantined")),
                _count(len(failures)) if item.validation is not None else "–",
                f'<span class="{_css_class(item.verdict)}">{_text(item.verdict)}</span>',
            ]
        )
    headers = ["source", "delivery", "rows in", "accepted", "duplicate", "quarantined", "failed checks", "validation"]
    return _table(headers, rows, numeric={2, 3, 4, 5, 6})


def _source_section(item: SourceQuality) -> str:
    parts = [f'<h2 id="source-{_text(item.source)}">{_text(item.source)}</h2>']
    snap = item.snapshot
    if snap is None:
        parts.append('<p class="none">Not staged in this attempt (the run stopped before it).</p>')
        return "".join(parts)
    parts.append(
        f"<p>Delivery {_text(snap.get('delivery'))}: {_count(snap.get('rows_in'))} rows in, "
        f"{_count(snap.get('rows_accepted'))} accepted, {_count(snap.get('rows_duplicate'))} duplicate, "
        f"{_count(snap.get('rows_quarantined'))} quarantined.</p>"
    )
    parts.append("<h3>Quarantine reasons</h3>")
    if item.reasons:
        rows = [[_text(code), _count(n)] for code, n in item.reasons.items()]
        parts.append(_table(["reason", "rows"], rows, numeric={1}))
    else:
        parts.append('<p class="none">No row quarantined.</p>')
    parts.append("<h3>Failed expectations</h3>")
    validation = item.validation
    if validation is None:
        parts.append('<p class="none">Not validated in this attempt (the run stopped before it).</p>')
        return "".join(parts)
    failures = sorted(
        validation.get("failures") or [], key=lambda f: (SEVERITY_ORDER.get(str(f.get("severity")), 9), f.get("check"))
    )
    checked_rows, expectations = _count(validation.get("rows")), _count(validation.get("expectations"))
    checked = f"{checked_rows} staged rows checked by {expectations} expectations"
    if failures:
        rows = [
            [
                _text(f.get("check")),
                _text(f.get("column") or "–"),
                _count(f.get("unexpected_count")),
                _percent(f.get("unexpected_percent")),
                f'<span class="{"warnings" if f.get("severity") == "warn" else "failed"}">'
                f"{_text(f.get('severity'))}</span>",
                _text(f.get("numbers")),
            ]
            for f in failures
        ]
        parts.append(f"<p>{checked}; {len(failures)} failed.</p>")
        parts.append(
            _table(["expectation", "column", "unexpected rows", "unexpected", "severity", "detail"], rows, {2, 3})
        )
    else:
        parts.append(f'<p class="passed">{checked}; none failed.</p>')
    change = validation.get("accepted_change")
    if change:
        parts.append(
            f"<p>Size change accepted by an engineer ({_text(change.get('reason'))}): "
            f"{_count(change.get('rows'))} records against {_count(change.get('previous_rows'))} "
            "in the published run.</p>"
        )
    return "".join(parts)


def _published_section(published: Mapping[str, int] | None) -> str:
    if published is None:
        return '<h2 id="published">Published tables</h2><p class="none">Not published (yet) by this attempt.</p>'
    rows = [[_text(name), _count(n)] for name, n in published.items()]
    total = sum(int(n) for n in published.values())
    return f'<h2 id="published">Published tables</h2><p>{_count(total)} rows in {len(published)} tables.</p>' + _table(
        ["table", "rows"], rows, numeric={1}
    )


def render_quality_page(quality: RunQuality, written_at: dt.datetime) -> str:
    """The page as one HTML document with its CSS inline and no reference to anything outside."""
    verdicts = [item.verdict for item in quality.sources]
    failed = [item.source for item in quality.sources if item.verdict == "failed"]
    if failed:
        headline = f'<span class="failed">Validation failed for {_text(", ".join(failed))}: nothing published.</span>'
    elif quality.published is not None:
        headline = '<span class="passed">Every source validated; the run is published.</span>'
    else:
        done = sum(v in ("passed", "warnings") for v in verdicts)
        headline = f"{done} of {len(verdicts)} sources validated so far."
    run = f", run {_text(quality.run_id)}" if quality.run_id else ""
    body = "".join(
        [
            f"<h1>zerocert data quality, as of {quality.as_of.isoformat()}</h1>",
            f'<p class="meta">Attempt {_text(quality.attempt)}{run}; written {written_at:%Y-%m-%d %H:%M:%S %Z}.</p>',
            f"<p>{headline}</p>",
            _overview(quality),
            "".join(_source_section(item) for item in quality.sources),
            _published_section(quality.published),
            f'<p class="meta">Every check of the newest validation of each source, values masked: '
            f"{_text(quality.results_dir)}/&lt;source&gt;/validation.json.</p>"
            if quality.results_dir
            else "",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>zerocert data quality {quality.as_of.isoformat()}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


# --- writing -------------------------------------------------------------------------------------


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def _one_writer(layout: RunLayout) -> Iterator[None]:
    """The warehouse DAG validates sources in parallel tasks; each rewrites the page after it
    has recorded its own result, one at a time, so the last page holds every result."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.run_dir / ".quality.lock", "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_quality_page(
    layout: RunLayout,
    published: Mapping[str, int] | None = None,
    run_id: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> Path:
    """Write the attempt's page (``layout.quality_page``) and its copy for the as-of date
    (``layout.latest_quality_page``); returns the attempt's page."""
    with _one_writer(layout):
        page = render_quality_page(run_quality(layout, published, run_id), now or dt.datetime.now(dt.UTC))
        _replace(layout.quality_page, page)
        layout.latest_quality_page.parent.mkdir(parents=True, exist_ok=True)
        temporary = layout.latest_quality_page.with_name(f".{layout.latest_quality_page.name}.{os.getpid()}.tmp")
        shutil.copyfile(layout.quality_page, temporary)
        os.replace(temporary, layout.latest_quality_page)
    return layout.quality_page
