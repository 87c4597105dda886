"""Where a run reads and writes: one ``Settings`` value from flags, Airflow or ``ZEROCERT_*``.

Precedence: explicit values (CLI flags, Airflow variables and connections) over ``ZEROCERT_*``
environment variables over the embedded default, which needs none of them: a home folder
(``ZEROCERT_HOME``, default ``~/.zerocert``) holding the demo city, the work files and a SQLite
warehouse.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import UsageError
from pipelines.layout import RunLayout

ENV_KEYS = {
    "landing": "ZEROCERT_LANDING",
    "exchange_url": "ZEROCERT_EXCHANGE_URL",
    "reference": "ZEROCERT_REFERENCE",
    "warehouse_url": "ZEROCERT_WAREHOUSE_URL",
    "policy": "ZEROCERT_POLICY",
    "as_of": "ZEROCERT_AS_OF",
    "work_dir": "ZEROCERT_WORK_DIR",
    "max_table_shrink": "ZEROCERT_MAX_TABLE_SHRINK",
    "engine_buckets": "ZEROCERT_ENGINE_BUCKETS",
    "engine_work_url": "ZEROCERT_ENGINE_WORK_URL",
}
MAX_TABLE_SHRINK = 0.5
"""Default of ``Settings.max_table_shrink``: a published table may lose at most half its rows
against the previous run before a person has to accept the change (``--accept-change TABLE``).
One figure for every table, unlike the per-source ``max_change_fraction`` of the expectation
suites: a source's size follows its department, a table's follows the whole run, and a lost
half is a broken input, not a season."""


@dataclass(frozen=True)
class Settings:
    landing: Path | None
    exchange_url: str | None
    reference: Path
    warehouse_url: str
    policy_path: Path
    as_of: dt.date
    work_dir: Path
    # source or published table -> the engineer's reason: this run may publish its change in size
    accepted_changes: Mapping[str, str] = field(default_factory=dict)
    attempt: str = ""  # names this attempt's own folder; see with_attempt
    max_table_shrink: float = MAX_TABLE_SHRINK  # fraction of a published table's rows a run may lose
    engine_buckets: int = 0  # buckets the engine splits the city into; 0: from its size (pipelines.run)
    # where the engine's bucket files go, shared by every worker: a path or a URL (file://, s3://…);
    # "": the attempt's own folder (RunLayout.engine_work_location)
    engine_work_url: str = ""

    @property
    def layout(self) -> RunLayout:
        """Every folder and file of this run under the work folder (pipelines/layout.py); the
        attempt's own folder needs an attempt (``with_attempt``)."""
        return RunLayout(self.work_dir, self.as_of, self.attempt)

    def with_attempt(self, name: str) -> Settings:
        """The same settings for the attempt ``name`` (an Airflow run id, or a time and pid)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "attempt"
        return dataclasses.replace(self, attempt=safe[:120])

    def as_dict(self) -> dict:
        """Every setting as JSON-able values, database URLs and their passwords included: for this
        process only, never for XCom or a log (the warehouse DAG's tasks pass
        ``pipelines.run.Attempt.as_dict`` and each resolves its own settings)."""
        return {
            "landing": str(self.landing) if self.landing else None,
            "exchange_url": self.exchange_url,
            "reference": str(self.reference),
            "warehouse_url": self.warehouse_url,
            "policy": str(self.policy_path),
            "as_of": self.as_of.isoformat(),
            "work_dir": str(self.work_dir),
            "accepted_changes": dict(self.accepted_changes),
            "attempt": self.attempt,
            "max_table_shrink": self.max_table_shrink,
            "engine_buckets": self.engine_buckets,
            "engine_work_url": self.engine_work_url,
        }


def zerocert_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("ZEROCERT_HOME") or Path.home() / ".zerocert").expanduser().resolve()


def default_warehouse_url(home: Path) -> str:
    return f"sqlite:///{home / 'warehouse.sqlite'}"


def default_landing(home: Path) -> Path:
    return home / "city" / "landing"


def default_reference(home: Path) -> Path:
    return home / "city" / "reference"


def parse_as_of(value: str, setting: str = "as-of date") -> dt.date:
    """An ISO date; ``setting`` names where it came from, so the message says what to fix.

    A text of the right shape naming no day (2027-13-01, 2027-02-30) is "not a date", which
    is a different mistake from a text in another form (15/08/2027).
    """
    text = value.strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    shape = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    if shape is None:
        raise UsageError(f"{setting} must be YYYY-MM-DD, got {value!r}")
    try:
        return dt.date(*map(int, shape.groups()))
    except ValueError as exc:
        raise UsageError(f"{setting} {text} is not a date: {exc}") from None


def parse_max_table_shrink(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise UsageError(f"ZEROCERT_MAX_TABLE_SHRINK must be a fraction in (0, 1], got {value!r}")
    return fraction


def parse_engine_buckets(value: str) -> int:
    """A whole number of buckets, 0 for "from the city's size"."""
    try:
        buckets = int(value.strip())
    except ValueError:
        buckets = -1
    if buckets < 0:
        raise UsageError(
            f"ZEROCERT_ENGINE_BUCKETS must be a whole number of buckets (0: from the city's size), got {value!r}"
        )
    return buckets


def accepted_changes(sources: str | list[str] | None, reason: str | None) -> dict[str, str]:
    """``--accept-change NAME[,NAME] --reason TEXT`` as {name: reason}; both or neither. A name is a
    source (its delivery's size change) or a published table (its shrinking against the last run)."""
    if isinstance(sources, str):
        sources = sources.split(",")
    names = sorted({name.strip() for given in sources or [] for name in (given or "").split(",") if name.strip()})
    reason = (reason or "").strip()
    if names and not reason:
        raise UsageError("--accept-change needs --reason TEXT: what was checked, and with whom")
    if reason and not names:
        raise UsageError("--reason goes with --accept-change SOURCE")
    return {name: reason for name in names}


def resolve_settings(
    explicit: Mapping[str, object | None] | None = None,
    *,
    lookup: Callable[[str], str | None] | None = None,
    environ: Mapping[str, str] = os.environ,
    today: dt.date | None = None,
) -> Settings:
    """Combine explicit values, an optional ``lookup`` (Airflow variables) and the environment.

    ``lookup`` receives the lower-case variable name (``zerocert_landing`` …).
    """
    explicit = dict(explicit or {})

    def pick(key: str) -> str | None:
        value = explicit.get(key)
        if value is None and lookup is not None:
            value = lookup(ENV_KEYS[key].lower())
        if value is None:
            value = environ.get(ENV_KEYS[key])
        return None if value in (None, "") else str(value)

    def setting(key: str, label: str) -> str:
        """Where pick(key) found its value, as the person who set it would name it."""
        if explicit.get(key) not in (None, ""):
            return label
        if lookup is not None and lookup(ENV_KEYS[key].lower()) not in (None, ""):
            return f"Airflow variable {ENV_KEYS[key].lower()}"
        return ENV_KEYS[key] if environ.get(ENV_KEYS[key]) else ""

    def hint(key: str, flag: str) -> str:
        """What to change: the setting that gave the value, or how to replace the default."""
        given = setting(key, flag)
        if given:
            return f"(from {given})"
        return f"(the default under ZEROCERT_HOME={home}; give {flag} or set {ENV_KEYS[key]})"

    home = zerocert_home(environ)
    landing, exchange = pick("landing"), pick("exchange_url")
    if landing and exchange:
        raise UsageError("give either a landing directory or an exchange database, not both")
    if not landing and not exchange:
        landing = str(default_landing(home))
    reference = Path(pick("reference") or default_reference(home)).expanduser()
    if landing and not Path(landing).expanduser().is_dir():
        raise UsageError(f"landing directory not found: {landing} {hint('landing', '--landing')}")
    if not reference.is_dir():
        raise UsageError(f"reference directory not found: {reference} {hint('reference', '--reference')}")
    policy = Path(pick("policy") or reference / "policy.yaml").expanduser()
    if not policy.is_file():
        where = hint("policy", "--policy") if setting("policy", "--policy") else "(REFERENCE/policy.yaml; or --policy)"
        raise UsageError(f"policy file not found: {policy} {where}")
    as_of_text = pick("as_of")
    as_of = parse_as_of(as_of_text, setting("as_of", "as-of date")) if as_of_text else (today or dt.date.today())
    shrink_text = pick("max_table_shrink")
    buckets_text = pick("engine_buckets")
    return Settings(
        landing=Path(landing).expanduser().resolve() if landing else None,
        exchange_url=exchange,
        reference=reference.resolve(),
        warehouse_url=pick("warehouse_url") or default_warehouse_url(home),
        policy_path=policy.resolve(),
        as_of=as_of,
        work_dir=Path(pick("work_dir") or home / "work").expanduser().resolve(),
        accepted_changes=accepted_changes(explicit.get("accept_change"), explicit.get("accept_reason")),
        max_table_shrink=parse_max_table_shrink(shrink_text) if shrink_text else MAX_TABLE_SHRINK,
        engine_buckets=parse_engine_buckets(buckets_text) if buckets_text else 0,
        engine_work_url=pick("engine_work_url") or "",
    )


def settings_from_dict(doc: Mapping[str, object]) -> Settings:
    """Inverse of ``Settings.as_dict``."""
    return Settings(
        landing=Path(str(doc["landing"])) if doc.get("landing") else None,
        exchange_url=str(doc["exchange_url"]) if doc.get("exchange_url") else None,
        reference=Path(str(doc["reference"])),
        warehouse_url=str(doc["warehouse_url"]),
        policy_path=Path(str(doc["policy"])),
        as_of=dt.date.fromisoformat(str(doc["as_of"])),
        work_dir=Path(str(doc["work_dir"])),
        accepted_changes=dict(doc.get("accepted_changes") or {}),
        attempt=str(doc.get("attempt") or ""),
        max_table_shrink=float(doc.get("max_table_shrink") or MAX_TABLE_SHRINK),
        engine_buckets=int(doc.get("engine_buckets") or 0),
        engine_work_url=str(doc.get("engine_work_url") or ""),
    )
