"""``zerocert report``: the education bureau's report as one self-contained HTML page.

Demand against capacity per district and per school, the forecast per school against its
capacity, a map of catchments shaded by utilisation, each department's data quality over the
last published runs, and tables of oversubscribed schools. Everything is read from the published
marts (pipelines/marts.py) and the reference catchments; plots are matplotlib PNGs embedded as
data URIs, so the page needs no network and can be mailed as one file.

Plots label schools and districts by code (ASCII), so they need no CJK font; Chinese school
names appear only in the HTML tables, where the reader's browser supplies the font.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UsageError
from pipelines.layout import RunLayout
from pipelines.marts import CATEGORIES

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
CATEGORY_COLOURS = {"A1": "#1b5e20", "A2": "#66bb6a", "B": "#ffa726", "C": "#42a5f5"}
SCHOOLS_PER_PLOT = 40
FORECAST_PANELS = 8


@dataclass(frozen=True)
class ReportData:
    """What the report reads: the published run and its marts, plus the reference catchments."""

    run: Mapping[str, object]
    school: pd.DataFrame
    school_demand: pd.DataFrame
    district_summary: pd.DataFrame
    catchment_forecast: pd.DataFrame
    source_quality: pd.DataFrame
    catchments: pd.DataFrame  # school_code, level, geometry (shapely)


def report_path(work_dir: Path, as_of: dt.date) -> Path:
    """Where a run's report goes: ``<work_dir>/reports/<as_of>/report.html``."""
    return RunLayout(Path(work_dir), as_of).reports_dir / REPORT_FILE


# --- figures (frames in, PNG bytes out) -------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _levels(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["level"].dropna().unique(), key=lambda level: (level != "primary", level))


def _best_by_school(school_demand: pd.DataFrame) -> pd.DataFrame:
    """school_code, level, district_code, capacity, best children per category, total, utilisation."""
    wide = school_demand.pivot_table(
        index=["school_code", "level"], columns="category", values="best_children", aggfunc="sum", fill_value=0
    )
    wide = wide.reindex(columns=list(CATEGORIES), fill_value=0)
    facts = school_demand.drop_duplicates(["school_code", "level"]).set_index(["school_code", "level"])
    wide["total"] = wide[list(CATEGORIES)].sum(axis=1)
    wide["capacity"] = pd.to_numeric(facts["capacity"], errors="coerce")
    wide["district_code"] = facts["district_code"]
    wide["utilisation"] = wide["total"] / wide["capacity"].where(wide["capacity"] > 0)
    return wide.reset_index()


def _stacked_utilisation(axes, rows: pd.DataFrame, labels: pd.Series) -> None:
    """Horizontal bars: each category's best-option children as % of seats, stacked; the
    numbers (children / seats) at the bar's end; a dashed line at capacity (100 %)."""
    y = np.arange(len(rows))
    seats = rows["capacity"].where(rows["capacity"] > 0).to_numpy(dtype=float)
    left = np.zeros(len(rows))
    for category in CATEGORIES:
        share = 100 * rows[category].to_numpy(dtype=float) / seats
        axes.barh(y, np.nan_to_num(share), left=left, color=CATEGORY_COLOURS[category], label=f"best option {category}")
        left += np.nan_to_num(share)
    for row, end, children, capacity in zip(y, left, rows["total"], rows["capacity"]):
        seats_text = "no seats listed" if pd.isna(capacity) or capacity <= 0 else f"{int(capacity):,} seats"
        axes.annotate(
            f"{int(children):,} / {seats_text}",
            (end, row),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    top = max(110.0, float(np.nanmax(left, initial=0)) * 1.25)
    axes.axvline(100, color="black", linestyle="--", linewidth=1, label="capacity (100 %)")
    axes.set_xlim(0, top)
    axes.set_yticks(y, labels, fontsize=7)
    axes.set_xlabel("best-option children, % of seats")
    axes.legend(fontsize=7, ncols=5, loc="lower right")


def plot_district_demand(school_demand: pd.DataFrame) -> bytes:
    """Per level and district: children whose best option is there, by category, against seats."""
    schools = _best_by_school(school_demand)
    levels = _levels(schools) or ["primary"]
    per_level = {
        level: schools[schools["level"] == level]
        .groupby(schools["district_code"].fillna("?"))[[*CATEGORIES, "total", "capacity"]]
        .sum(min_count=1)
        .iloc[::-1]
        for level in levels
    }
    figure = _figure(11, sum(1.3 + 0.35 * len(rows) for rows in per_level.values()))
    grid = figure.add_gridspec(len(levels), 1, height_ratios=[max(1, len(r)) for r in per_level.values()])
    for k, level in enumerate(levels):
        axes = figure.add_subplot(grid[k])
        rows = per_level[level]
        _stacked_utilisation(axes, rows, pd.Series(rows.index, dtype="string"))
        axes.set_title(f"{level}: children by best category against seats, per district")
    return _png(figure)


def plot_school_demand(school_demand: pd.DataFrame) -> bytes:
    """Per level, the schools under most pressure: best-option children by category over seats."""
    schools = _best_by_school(school_demand)
    levels = _levels(schools) or ["primary"]
    shown = {
        level: schools[schools["level"] == level]
        .sort_values(["utilisation", "total"], ascending=False, na_position="last")
        .head(SCHOOLS_PER_PLOT)
        for level in levels
    }
    figure = _figure(11, sum(1.3 + 0.22 * max(1, len(rows)) for rows in shown.values()))
    grid = figure.add_gridspec(len(levels), 1, height_ratios=[max(1, len(r)) for r in shown.values()])
    for k, level in enumerate(levels):
        axes = figure.add_subplot(grid[k])
        rows = shown[level].iloc[::-1]
        _stacked_utilisation(axes, rows, rows["school_code"])
        total = int((schools["level"] == level).sum())
        axes.set_title(f"{level}: best-option children per school against seats ({len(rows)} most utilised of {total})")
    return _png(figure)


def _capacity_line(
    axes, capacity: float, highest: float, *, label: str | None = None, shown: str | None = None
) -> None:
    """The capacity as a dashed line, or a note when it lies far above everything plotted."""
    if capacity <= 2 * highest or highest <= 0:
        axes.axhline(capacity, color="black", linestyle="--", linewidth=1, label=label)
        axes.set_ylim(0, max(capacity, highest) * 1.1 or 1)
    else:
        axes.set_ylim(0, highest * 1.25)
        axes.annotate(
            f"capacity {shown or f'{capacity:,.0f}'} is above the plot",
            (0.98, 0.95),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize=7,
        )


def plot_forecast_utilisation(catchment_forecast: pd.DataFrame) -> bytes:
    """One line per school: expected entrants over this year's capacity; dashed: capacity."""
    forecast = catchment_forecast.dropna(subset=["utilisation"])
    panels = sorted(
        {(level, district) for level, district in zip(forecast["level"], forecast["district_code"].fillna("?"))},
        key=lambda p: (p[0] != "primary", p),
    )
    columns = 2 if len(panels) > 1 else 1
    rows_n = max(1, -(-len(panels) // columns))
    figure = _figure(11, 2.8 * rows_n)
    for k, (level, district) in enumerate(panels):
        axes = figure.add_subplot(rows_n, columns, k + 1)
        rows = forecast[(forecast["level"] == level) & (forecast["district_code"].fillna("?") == district)]
        for school, line in rows.groupby("school_code"):
            axes.plot(line["entry_year"], 100 * line["utilisation"], marker="o", markersize=3, linewidth=1)
            last = line.iloc[-1]
            axes.annotate(
                school,
                (last["entry_year"], 100 * last["utilisation"]),
                fontsize=6,
                xytext=(2, 0),
                textcoords="offset points",
            )
        _capacity_line(axes, 100.0, float(100 * rows["utilisation"].max()), shown="(100 %)")
        axes.set_title(f"{level}, district {district}", fontsize=9)
        axes.set_ylabel("% of this year's capacity")
    if not panels:
        figure.add_subplot(1, 1, 1).text(0.5, 0.5, "no forecast published", ha="center")
    return _png(figure)


def plot_forecast_schools(catchment_forecast: pd.DataFrame) -> bytes:
    """The schools whose forecast peaks highest against capacity: entrants and capacity lines."""
    forecast = catchment_forecast.dropna(subset=["expected_entrants"])
    peak = forecast.groupby(["school_code", "level"])["utilisation"].max().sort_values(ascending=False)
    chosen = list(peak.head(FORECAST_PANELS).index)
    columns = 4
    rows_n = max(1, -(-len(chosen) // columns))
    figure = _figure(11, 2.6 * rows_n)
    for k, (school, level) in enumerate(chosen):
        axes = figure.add_subplot(rows_n, columns, k + 1)
        line = forecast[(forecast["school_code"] == school) & (forecast["level"] == level)]
        axes.plot(line["entry_year"], line["expected_entrants"], marker="o", color="#1565c0", label="expected")
        axes.plot(line["entry_year"], line["children_now"], linestyle=":", color="#1565c0", label="living there now")
        capacity = line["capacity"].dropna()
        highest = float(line[["expected_entrants", "children_now"]].max().max())
        if len(capacity):
            _capacity_line(axes, float(capacity.iloc[0]), highest, label="capacity")
        else:
            axes.set_ylim(0, highest * 1.25 or 1)
        axes.set_title(f"{school} ({level})", fontsize=9)
        axes.tick_params(labelsize=7)
        if k == 0:
            axes.legend(fontsize=7)
    if not chosen:
        figure.add_subplot(1, 1, 1).text(0.5, 0.5, "no forecast published", ha="center")
    return _png(figure)


def plot_catchment_map(catchments: pd.DataFrame, school_demand: pd.DataFrame) -> bytes:
    """Catchment polygons per level, shaded by best-option children over capacity."""
    import shapely
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    utilisation = _best_by_school(school_demand).set_index(["school_code", "level"])["utilisation"]
    levels = _levels(catchments) or ["primary"]
    figure = _figure(11, 5.2)
    highest = float(utilisation.max()) if utilisation.notna().any() else 1.0
    # full capacity is the top of the scale once any school nears it; below that the scale
    # stretches to the busiest school so differences stay visible (the colour bar says which)
    top = max(highest, 1.0) if highest >= 0.5 else max(highest, 0.01)
    norm, cmap = Normalize(0, top), colormaps["YlOrRd"]
    for k, level in enumerate(levels):
        axes = figure.add_subplot(1, len(levels), k + 1)
        rows = catchments[catchments["level"] == level]
        for school, geometry in zip(rows["school_code"], rows["geometry"]):
            value = utilisation.get((school, level), np.nan)
            colour = "#e0e0e0" if pd.isna(value) else cmap(norm(value))
            for polygon in getattr(geometry, "geoms", [geometry]):
                rings = [polygon.exterior, *polygon.interiors]
                vertices = np.concatenate([np.asarray(r.coords) for r in rings])
                codes = np.concatenate(
                    [[MplPath.MOVETO] + [MplPath.LINETO] * (len(r.coords) - 2) + [MplPath.CLOSEPOLY] for r in rings]
                )
                axes.add_patch(
                    PathPatch(
                        MplPath(vertices, codes), facecolor=colour, edgecolor="#424242", linewidth=0.5, alpha=0.75
                    )
                )
            centre = shapely.point_on_surface(geometry)
            axes.annotate(school, (centre.x, centre.y), fontsize=5, ha="center")
        axes.autoscale_view()
        axes.set_aspect("equal")
        axes.set_title(f"{level} catchments: best-option children / capacity", fontsize=10)
        axes.tick_params(labelsize=7)
    from matplotlib.ticker import PercentFormatter

    figure.colorbar(
        _scalar_mappable(norm, cmap),
        ax=figure.axes,
        shrink=0.7,
        format=PercentFormatter(1.0),
        label="best-option children / seats" + ("" if top >= 1.0 else " (scale to the busiest school)"),
    )
    return _png(figure)


def _scalar_mappable(norm, cmap):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def plot_quality(source_quality: pd.DataFrame) -> bytes:
    """Per department over the last published runs: accepted share, quarantined rows per 1 000
    and the age of the delivery each run used."""
    quality = source_quality.sort_values("as_of")
    figure = _figure(11, 3.6)
    accepted, quarantined, age = (figure.add_subplot(1, 3, k) for k in (1, 2, 3))
    for source, rows in quality.groupby("source"):
        when = pd.to_datetime(rows["as_of"])
        accepted.plot(when, 100 * rows["accepted_share"], marker="o", label=source)
        per_mille = 1000 * rows["rows_quarantined"] / rows["rows_in"].where(rows["rows_in"] > 0)
        quarantined.plot(when, per_mille, marker="o", label=source)
        age.plot(when, pd.to_numeric(rows["delivery_age_days"], errors="coerce"), marker="o", label=source)
    accepted.set_title("rows accepted, % of delivered", fontsize=10)
    quarantined.set_title("rows quarantined per 1 000 delivered", fontsize=10)
    age.set_title("age of the delivery used, days", fontsize=10)
    age.set_ylim(bottom=0)
    runs = sorted(pd.to_datetime(quality["as_of"]).unique())
    for axes in (accepted, quarantined, age):
        axes.set_xticks(runs, [f"{day:%Y-%m-%d}" for day in pd.to_datetime(runs)])
        axes.tick_params(labelsize=7)
        axes.tick_params(axis="x", rotation=30)
    age.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(figure)


# --- the page ---------------------------------------------------------------------------------

_CSS = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Microsoft YaHei", sans-serif;
       margin: 2em auto; max-width: 1150px; color: #212121; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #1565c0; padding-bottom: 0.2em; }
p.meta, p.note { color: #616161; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #bdbdbd; padding: 3px 7px; text-align: right; }
th { background: #e3f2fd; } td.text, th.text { text-align: left; }
tr.alert td { background: #ffebee; }
img { max-width: 100%; display: block; margin: 0.5em 0 1em; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, *, text_columns: tuple[str, ...] = (), alert: pd.Series | None = None) -> str:
    if frame.empty:
        return '<p class="note">none</p>'
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in frame.columns
    )
    body = []
    flags = alert.to_numpy() if alert is not None else np.zeros(len(frame), dtype=bool)
    for flag, row in zip(flags, frame.itertuples(index=False)):
        cells = []
        for column, value in zip(frame.columns, row):
            if isinstance(value, float) and column.endswith(("ratio", "share", "utilisation")):
                shown = "" if np.isnan(value) else f"{value:.1%}"
            elif isinstance(value, float):
                shown = "" if np.isnan(value) else f"{value:,.1f}"
            else:
                shown = "" if value is None or value is pd.NA else str(value)
            cells.append(f'<td class="{"text" if column in text_columns else ""}">{html.escape(shown)}</td>')
        body.append(f'<tr class="{"alert" if flag else ""}">{"".join(cells)}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def oversubscribed_schools(school_demand: pd.DataFrame, school: pd.DataFrame) -> pd.DataFrame:
    """Schools whose best-option children exceed their seats, or whose A1 children alone do."""
    schools = _best_by_school(school_demand)
    a1 = (
        school_demand[school_demand["category"] == "A1"]
        .set_index(["school_code", "level"])["children"]
        .rename("A1 eligible")
    )
    schools = schools.merge(a1.reset_index(), on=["school_code", "level"], how="left")
    over = schools[(schools["total"] > schools["capacity"]) | (schools["A1 eligible"] > schools["capacity"])]
    names = school[["school_code", "school_name"]].drop_duplicates("school_code")
    over = over.merge(names, on="school_code", how="left").sort_values("utilisation", ascending=False)
    return over[
        [
            "school_code",
            "school_name",
            "district_code",
            "level",
            "capacity",
            *CATEGORIES,
            "total",
            "utilisation",
            "A1 eligible",
        ]
    ].rename(columns={"total": "best-option children"})


def render_report(data: ReportData, generated: dt.datetime) -> str:
    """The whole page as HTML text (no script, no link, no reference outside the page)."""
    run = data.run
    demand, forecast, quality = data.school_demand, data.catchment_forecast, data.source_quality
    summary = data.district_summary.copy()
    over = oversubscribed_schools(demand, data.school)
    figures = {
        "district": plot_district_demand(demand),
        "schools": plot_school_demand(demand),
        "map": plot_catchment_map(data.catchments, demand),
        "forecast": plot_forecast_utilisation(forecast),
        "forecast_schools": plot_forecast_schools(forecast),
        "quality": plot_quality(quality),
    }
    # the frames always carry the registry's columns (_read), so an empty mart is an empty table
    latest = quality[quality["measured_run_id"] == run["run_id"]]
    scorecard = latest[
        [
            "source",
            "delivery",
            "delivery_age_days",
            "rows_in",
            "rows_accepted",
            "rows_duplicate",
            "rows_quarantined",
            "accepted_share",
        ]
    ]
    reasons = [c for c in quality.columns if c.startswith("quarantined_")]
    by_reason = latest[["source", *reasons]].rename(columns=lambda c: c.removeprefix("quarantined_"))
    summary_shown = summary[
        [
            "district_code",
            "level",
            "school_age_children",
            "with_school",
            "best_a1",
            "best_a2",
            "best_b",
            "best_c",
            "no_school",
            "decided_from_data_share",
            "address_review_backlog",
        ]
    ]
    no_school = [c for c in summary.columns if c.startswith("no_school_")]
    by_place = summary.set_index([summary["district_code"].fillna("?"), "level"])[no_school]
    reasons_shown = by_place.T.loc[lambda t: (t != 0).any(axis=1)]
    reasons_shown.columns = [f"{district} {level}" for district, level in reasons_shown.columns]
    reasons_shown = (
        reasons_shown.rename(index=lambda c: c.removeprefix("no_school_")).rename_axis("reason").reset_index()
    )
    methods = sorted(set(forecast["method"].dropna()))
    years = sorted(forecast["entry_year"].dropna().astype(int).unique())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        "<title>zerocert: school places, demand and data quality</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>School places, demand and data quality</h1>",
        f'<p class="meta">Run {html.escape(str(run["run_id"]))}, as of {html.escape(str(run["as_of"]))}, '
        f"policy {html.escape(str(run['policy_id']))}; generated {generated:%Y-%m-%d %H:%M} UTC. "
        "Counts are children (distinct per level); a child's best option is its best category, then its "
        "earliest priority date (docs/marts.md).</p>",
        "<h2>Oversubscribed schools</h2>",
        '<p class="note">Best-option children above the seats planned, or A1-eligible children alone above '
        "them (highlighted).</p>",
        _table(
            over,
            text_columns=("school_code", "school_name", "district_code", "level"),
            alert=over["A1 eligible"] > over["capacity"] if len(over) else None,
        ),
        "<h2>Demand against capacity per district</h2>",
        _img(figures["district"], "demand per district"),
        _table(summary_shown, text_columns=("district_code", "level")),
        "<h3>Children with no school, by reason</h3>",
        '<p class="note">Children per district and level; a child may have several reasons; reasons no child '
        "has are left out.</p>",
        _table(reasons_shown, text_columns=("reason",)),
        "<h2>Demand against capacity per school</h2>",
        _img(figures["schools"], "demand per school"),
        "<h2>Catchments shaded by utilisation</h2>",
        _img(figures["map"], "catchment map"),
        "<h2>Forecast of entrants per school</h2>",
        f'<p class="note">Entry years {years[0] if years else ""}–{years[-1] if years else ""}. '
        f"Method: {html.escape('; '.join(methods))}.</p>",
        _img(figures["forecast"], "forecast utilisation per school"),
        _img(figures["forecast_schools"], "forecast per school against capacity"),
        "<h2>Data quality per department</h2>",
        _img(figures["quality"], "data quality over runs"),
        "<h3>This run's deliveries</h3>",
        _table(scorecard, text_columns=("source", "delivery")),
        "<h3>Quarantined rows by reason</h3>",
        _table(by_reason, text_columns=("source",)),
        "</body></html>",
    ]
    return "\n".join(parts)


# --- reading and writing ----------------------------------------------------------------------


def _read(url: str, table: str) -> pd.DataFrame:
    from pipelines.warehouse import read_table
    from pipelines.warehouse_schema import TABLES

    return pd.DataFrame(read_table(url, table), columns=TABLES[table].column_names)


def load_report_data(url: str, reference: Path) -> ReportData:
    """The published run's marts and the reference catchments of its enrollment year."""
    import psycopg

    from pipelines.addresses.catchments import load_catchments
    from pipelines.warehouse import read_current_run

    try:
        run = read_current_run(url)
        if run is None:
            raise UsageError("the warehouse holds no published run yet: `zerocert run` first")
        frames = {
            name: _read(url, name)
            for name in ("school", "school_demand", "district_summary", "catchment_forecast", "source_quality")
        }
    except psycopg.errors.InsufficientPrivilege:
        raise UsageError(
            "the report reads run_audit and the exact marts, which only the warehouse owner "
            "may read: connect as zerocert_etl"
        ) from None
    if frames["school_demand"].empty:
        raise UsageError(
            f"run {run['run_id']} published no school_demand: it predates the marts; "
            "run `zerocert run` again with this version"
        )
    for name, columns in {
        "catchment_forecast": ["entry_year", "children_now", "expected_entrants", "capacity", "utilisation"],
        "source_quality": ["rows_in", "rows_quarantined", "accepted_share"],
        "school_demand": ["capacity", "children", "best_children"],
    }.items():
        for column in columns:
            frames[name][column] = pd.to_numeric(frames[name][column], errors="coerce")
    forecast = frames["catchment_forecast"]
    year = int(forecast["entry_year"].min()) if len(forecast) else None
    catchments = load_catchments(Path(reference) / "catchments.geojson", year)
    return ReportData(run=run, catchments=catchments, **frames)


def write_report(url: str, reference: Path, out_dir: Path, *, now: dt.datetime | None = None) -> Path:
    """Write ``out_dir/report.html`` from the published warehouse; returns its path."""
    reference = Path(reference)
    if not reference.is_dir():
        raise UsageError(f"reference directory not found: {reference}")
    data = load_report_data(url, reference)
    generated = now or dt.datetime.now(dt.UTC)
    out = Path(out_dir) / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data, generated), encoding="utf-8")
    log.info("report of run %s written to %s", data.run["run_id"], out)
    return out


def write_run_report(settings) -> dict:
    """The report after a publish (the warehouse DAG's last task): its path, for XCom."""
    path = write_report(settings.warehouse_url, settings.reference, settings.layout.reports_dir)
    return {"report": str(path)}
