"""What the engine reads of each delivered source: the columns naming a person, the code lists.

These are the source contract (sources.md), not policy parameters; policy lists and
thresholds come from ``Policy`` only.
"""

from __future__ import annotations

SOURCES = ("hukou", "property_title", "housing_contract", "rental", "social_insurance",
           "individual_business", "enterprise")

# Which column of each staged frame names the person the record is about, and their name.
PERSON_COLUMNS: dict[str, tuple[str, str]] = {
    "hukou": ("citizen_id", "name"),
    "property_title": ("owner_id", "owner_name"),
    "housing_contract": ("buyer_id", "buyer_name"),
    "rental": ("tenant_id", "tenant_name"),
    "social_insurance": ("citizen_id", "name"),
    "individual_business": ("operator_id", "operator_name"),
    "enterprise": ("legal_rep_id", "legal_rep_name"),
}
# Where two departments spell a name differently, the citizen row shows the first of these.
NAME_AUTHORITY = ("hukou", "social_insurance", "property_title", "housing_contract", "rental",
                  "individual_business", "enterprise")
# The employment kinds that are a registered business (the other kind is social insurance).
BUSINESS_KINDS = ("individual_business", "enterprise")
INSURANCE_KIND = "social_insurance"
# The kinds of property holding, and the source each comes from.
TITLE_KIND, CONTRACT_KIND = "title", "contract"
PROPERTY_SOURCE = {TITLE_KIND: "property_title", CONTRACT_KIND: "housing_contract"}

HUKOU_ACTIVE = "正常"
HEAD_OF_HOUSEHOLD = "户主"
SPOUSE_OF_HEAD = "配偶"
CHILD_OF_HEAD = ("子", "女")
CHILD_STATUSES = ("正常", "迁出", "死亡")  # 注销 is not a child (policy readings)
DECEASED = "死亡"
PERSON_OWNER = "person"
UNPLACED_ADDRESS = ("ambiguous", "unmatched")
