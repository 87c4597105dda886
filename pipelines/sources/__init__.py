"""One staging module per source; the registry finds them by name.

A source module ``<source>.py`` defines ``stage_<source>(raw, extract_date) -> Staged``; with
``schemas/<source>.yaml`` that is all an eighth source needs.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
from collections.abc import Callable

import pandas as pd

from pipelines.errors import UsageError
from pipelines.staging import Staged

StageFunction = Callable[[pd.DataFrame, dt.date], Staged]


def source_keys() -> list[str]:
    """Every source that has a staging module, in name order."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def stage_function(source: str) -> StageFunction:
    """The ``stage_<source>`` function of ``pipelines/sources/<source>.py``."""
    if source not in source_keys():
        raise UsageError(f"unknown source {source!r} (known: {', '.join(source_keys())})")
    module = importlib.import_module(f"{__name__}.{source}")
    return getattr(module, f"stage_{source}")


SOURCES: dict[str, StageFunction] = {key: stage_function(key) for key in source_keys()}
