"""Where one run's files live under the work folder: one object, so no module rebuilds a path.

::

    <work_dir>/
      .zerocert-run.lock                one ``zerocert run`` at a time
      staged/<as_of>/<source>/          what the source DAGs staged, for the warehouse DAG to reuse
      validation/                       Great Expectations results and Data Docs (every attempt)
        quality/<as_of>.html            the newest attempt's quality page for that date
      reports/<as_of>/report.html       the education bureau's report after a publish
      runs/<as_of>/<attempt>/           one attempt's own files (two runs never share them)
        quality.html                    the attempt's quality page (opens offline)
        validation/<source>.json        what this attempt's validation of the source found
        staged/<source>/                accepted.parquet, quarantine.parquet, snapshot.json
        accepted_changes/<source>.json  a size change an engineer accepted for this run
        addresses/                      address_match.parquet, address_catchment.parquet
          review/                       the departments' review lists
        engine/                         the engine's work files, bucket by bucket (until published;
                                        elsewhere when ZEROCERT_ENGINE_WORK_URL is set)
        tables/                         join outputs and audit tables, as Parquet
          access/  marts/               the access and mart tables built at publish
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".zerocert-run.lock"
SNAPSHOT_FILE = "snapshot.json"  # in each staged source's folder, beside its Parquet files
KEEP_ATTEMPTS = 2  # this attempt and the one before it stay on disk for engineers to read


@dataclass(frozen=True)
class RunLayout:
    """The folders and files of one as-of date's run (and, given its attempt, of that attempt)."""

    work_dir: Path
    as_of: dt.date
    attempt: str = ""

    # --- shared by every attempt of the work folder ---------------------------------------------

    @property
    def lock_file(self) -> Path:
        return self.work_dir / LOCK_NAME

    @property
    def shared_staged_dir(self) -> Path:
        """Where the source DAGs stage each source for this as-of date (a delivery folder with
        ``_SUCCESS`` never changes, so the warehouse DAG may reuse it)."""
        return self.work_dir / "staged" / self.as_of.isoformat()

    def shared_staged(self, source: str) -> Path:
        return self.shared_staged_dir / source

    @property
    def validation_dir(self) -> Path:
        return self.work_dir / "validation"

    @property
    def data_docs(self) -> Path:
        return self.validation_dir / "data_docs" / "index.html"

    @property
    def latest_quality_page(self) -> Path:
        """The newest attempt's quality page for this as-of date, beside the Data Docs (a stable
        path to link; each attempt keeps its own in ``quality_page``)."""
        return self.validation_dir / "quality" / f"{self.as_of.isoformat()}.html"

    @property
    def reports_dir(self) -> Path:
        return self.work_dir / "reports" / self.as_of.isoformat()

    @property
    def runs_dir(self) -> Path:
        """Every attempt of every as-of date: ``runs/<as_of>/<attempt>``."""
        return self.work_dir / "runs"

    @property
    def attempts_dir(self) -> Path:
        """The attempts of this as-of date."""
        return self.runs_dir / self.as_of.isoformat()

    def attempt_dirs(self, prefix: str = "", *, every_day: bool = False) -> list[Path]:
        """Attempt folders named ``prefix…`` of this as-of date (or of every date), by name."""
        pattern = f"*/{prefix}*" if every_day else f"{prefix}*"
        root = self.runs_dir if every_day else self.attempts_dir
        return sorted(p for p in root.glob(pattern) if p.is_dir())

    def prune_attempts(self, prefix: str) -> None:
        """Remove the folders of older attempts named ``prefix…`` of any date, keeping the newest
        few (this attempt's own folder always stays)."""
        own = self.run_dir if self.attempt else None
        attempts = sorted(
            (p for p in self.attempt_dirs(prefix, every_day=True) if p != own), key=lambda p: p.stat().st_mtime
        )
        for old in attempts[: max(0, len(attempts) - (KEEP_ATTEMPTS - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    # --- one attempt ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Work files of one attempt: staged Parquet, addresses, join outputs.

        Every attempt has its own folder, so two runs never read each other's files.
        """
        if not self.attempt:
            raise ValueError("settings without an attempt have no run folder (call with_attempt)")
        return self.attempts_dir / self.attempt

    @property
    def staged_dir(self) -> Path:
        return self.run_dir / "staged"

    def staged(self, source: str) -> Path:
        return self.staged_dir / source

    def snapshot_file(self, source: str) -> Path:
        return self.staged(source) / SNAPSHOT_FILE

    def accepted_rows(self, source: str) -> Path:
        return self.staged(source) / "accepted.parquet"

    @property
    def quality_page(self) -> Path:
        """The attempt's self-contained quality page: counts, quarantine reasons, failed checks."""
        return self.run_dir / "quality.html"

    def validation_summary(self, source: str) -> Path:
        """What this attempt's validation of ``source`` found (the shared GX results hold the
        newest validation of any attempt)."""
        return self.run_dir / "validation" / f"{source}.json"

    def accepted_change(self, source: str) -> Path:
        return self.run_dir / "accepted_changes" / f"{source}.json"

    @property
    def addresses_dir(self) -> Path:
        return self.run_dir / "addresses"

    @property
    def address_match(self) -> Path:
        return self.addresses_dir / "address_match.parquet"

    @property
    def address_catchment(self) -> Path:
        return self.addresses_dir / "address_catchment.parquet"

    @property
    def review_dir(self) -> Path:
        return self.addresses_dir / "review"

    @property
    def engine_work_dir(self) -> Path:
        """The engine's work files of this attempt (pipelines/engine/buckets.py): staged rows
        split by bucket, each stage's parts. Kept between the warehouse DAG's tasks and for a
        task run again; removed once the run is published."""
        return self.run_dir / "engine"

    def engine_work_location(self, base: str = "") -> str:
        """Where this attempt's engine work files go: ``engine_work_dir``, or under a shared
        location every worker reaches (a path or a URL such as ``s3://bucket/zerocert``), the
        as-of date and the attempt's folder name added: ``<base>/<as_of>/<attempt>``."""
        if not base:
            return str(self.engine_work_dir)
        if not self.attempt:
            raise ValueError("settings without an attempt have no engine work folder (call with_attempt)")
        if "://" in base:
            return f"{base.rstrip('/')}/{self.as_of.isoformat()}/{self.attempt}"
        return str(Path(base).expanduser() / self.as_of.isoformat() / self.attempt)

    @property
    def tables_dir(self) -> Path:
        return self.run_dir / "tables"

    @property
    def access_tables_dir(self) -> Path:
        return self.tables_dir / "access"

    @property
    def marts_dir(self) -> Path:
        return self.tables_dir / "marts"
