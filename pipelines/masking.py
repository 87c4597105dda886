"""Keep resident IDs out of every log line: a logging filter that masks them in place.

Names cannot be recognised in free text, so code never logs names; IDs are caught here as a
second line of defence (``371102********1234``).
"""

from __future__ import annotations

import logging
import re
import sys

from pipelines.resident_id import mask_id

ID_PATTERN = re.compile(r"(?<!\d)\d{15}(?:\d{2}[\dXx])?(?!\d)")


def mask_ids_in(text: str) -> str:
    """Mask every 15- or 18-character resident ID in ``text``."""
    return ID_PATTERN.sub(lambda m: mask_id(m.group(0)), text)


class MaskingFilter(logging.Filter):
    """Rewrites the formatted message so no whole ID reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_ids_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (it may be swapped after set-up)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def mask_every_log_record() -> None:
    """Mask IDs in every record any logger creates, whatever handler (Airflow's included) writes it."""
    current = logging.getLogRecordFactory()
    if getattr(current, "zerocert_masking", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        masked = mask_ids_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    factory.zerocert_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(level: int = logging.INFO) -> None:
    """Plain one-line logs on stderr, masked."""
    mask_every_log_record()
    root = logging.getLogger()
    if not any(isinstance(f, MaskingFilter) for h in root.handlers for f in h.filters):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(MaskingFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("great_expectations", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
