"""Package data: what a source, the warehouse and the reference policy are, as files.

``schemas/``, ``expectations/``, ``migrations/``, ``dags/`` and the published-table DDL here are
links to the repository's top-level ``schemas/``, ``expectations/``, ``warehouse/`` and ``dags/``
(the design card's places, where people edit them); a wheel carries the files themselves. Code finds them only through
``importlib.resources``, so a wheel install and a DAG bundle read the same declarations.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["data_path", "reference_policy_text"]


def data_path(*parts: str) -> Path:
    """A file or folder of the package data (a real path: the package is installed unzipped)."""
    return Path(str(files(__name__).joinpath(*parts)))


def reference_policy_text() -> str:
    """``policy.yaml``: the reference policy the demo and the synth write into a city's reference."""
    return data_path("policy.yaml").read_text(encoding="utf-8")
