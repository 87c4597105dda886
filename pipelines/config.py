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
}


@dataclass(frozen=True)
class Settings:
    landing: Path | None
    exchange_url: str | None
    reference: Path
    warehouse_url: str
    policy_path: Path
    as_of: dt.date
    work_dir: Path
    # source -> the engineer's reason: this run may publish that delivery's change in size
    accepted_changes: Mapping[str, str] = field(default_factory=dict)
    attempt: str = ""  # names this attempt's own folder; see with_attempt

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
        }


def zerocert_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("ZEROCERT_HOME") or Path.home() / ".zerocert").expanduser().resolve()


def default_warehouse_url(home: Path) -> str:
    return f"sqlite:///{home / 'warehouse.sqlite'}"


def parse_as_of(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"as-of date must be YYYY-MM-DD, got {value!r}") from None


def accepted_changes(sources: str | list[str] | None, reason: str | None) -> dict[str, str]:
    """``--accept-change SOURCE[,SOURCE] --reason TEXT`` as {source: reason}; both or neither."""
    if isinstance(sources, str):
        sources = sources.split(",")
    names = sorted({s.strip() for s in sources or [] if s and s.strip()})
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

    home = zerocert_home(environ)
    landing, exchange = pick("landing"), pick("exchange_url")
    if landing and exchange:
        raise UsageError("give either a landing directory or an exchange database, not both")
    if not landing and not exchange:
        landing = str(home / "city" / "landing")
    reference = Path(pick("reference") or home / "city" / "reference").expanduser()
    if landing and not Path(landing).expanduser().is_dir():
        raise UsageError(f"landing directory not found: {landing}")
    if not reference.is_dir():
        raise UsageError(f"reference directory not found: {reference}")
    policy = Path(pick("policy") or reference / "policy.yaml").expanduser()
    if not policy.is_file():
        raise UsageError(f"policy file not found: {policy}")
    as_of_text = pick("as_of")
    as_of = parse_as_of(as_of_text) if as_of_text else (today or dt.date.today())
    return Settings(
        landing=Path(landing).expanduser().resolve() if landing else None,
        exchange_url=exchange,
        reference=reference.resolve(),
        warehouse_url=pick("warehouse_url") or default_warehouse_url(home),
        policy_path=policy.resolve(),
        as_of=as_of,
        work_dir=Path(pick("work_dir") or home / "work").expanduser().resolve(),
        accepted_changes=accepted_changes(explicit.get("accept_change"), explicit.get("accept_reason")),
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
    )
