"""What the engine reads of each delivered source: the sources by their role, the code lists.

These are the source contract (sources.md), not policy parameters; policy lists and
thresholds come from ``Policy`` only.
"""

from __future__ import annotations

from pipelines import registry
from pipelines.errors import UsageError

# Which sources there are, who their records name, whose spelling of a name wins, and what
# the policy reads from each: the sources' own declarations (pipelines/registry.py).
TITLE_KIND, CONTRACT_KIND = "title", "contract"  # property_holding.kind


def evidence_source(evidence: str) -> str:
    """The one source the policy reads as ``evidence`` (hukou, title, contract, rental, insurance)."""
    found = registry.with_evidence(evidence)
    if len(found) != 1:
        raise UsageError(
            f"schemas: exactly one source must have roles: evidence: {evidence} (found {', '.join(found) or 'none'})"
        )
    return found[0]


def business_sources() -> list[str]:
    """The sources of registered businesses (employment.kind is always the source's key)."""
    return registry.with_evidence("business")


def property_source() -> dict[str, str]:
    """property_holding.kind → the source it comes from."""
    return {TITLE_KIND: evidence_source("title"), CONTRACT_KIND: evidence_source("contract")}


HUKOU_ACTIVE = "正常"
HEAD_OF_HOUSEHOLD = "户主"
SPOUSE_OF_HEAD = "配偶"
CHILD_OF_HEAD = ("子", "女")
CHILD_STATUSES = ("正常", "迁出", "死亡")  # 注销 is not a child (policy readings)
DECEASED = "死亡"
PERSON_OWNER = "person"
UNPLACED_ADDRESS = ("ambiguous", "unmatched")
