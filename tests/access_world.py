"""The small access world: two districts, four children and three guardians, their eligibility,
guardianship and citizen rows, and the HMAC key. The access tests and the PostgreSQL role,
lookup and benchmark tests all reason about these same people."""

from __future__ import annotations

import pandas as pd
from resident_ids import resident_id

KEY = b"test-key-0123456789abcdef"

C1, C2, C3, C4 = (resident_id(f"37110220200101{i:03d}") for i in (1, 2, 3, 4))
G1, G2, G5 = (resident_id(f"37110219850101{i:03d}") for i in (1, 2, 5))
UNKNOWN = resident_id("11010119900307123")  # valid, and nobody in this world

SCHOOLS = pd.DataFrame(
    {
        "school_code": ["PA", "PB"],
        "school_name": ["甲小学", "乙小学"],
        "level": ["primary", "primary"],
        "district_code": ["371102", "371103"],
        "address": ["x", "y"],
        "capacity": ["300", "200"],
        "lon": ["1", "2"],
        "lat": ["1", "2"],
    }
)
ELIGIBILITY = pd.DataFrame(
    {
        "child_id": [C1, C2, C3, C3],
        "level": "primary",
        "school_code": ["PA", "PB", "PA", "PB"],
        "category": ["A1", "B", "C", "C"],
        "priority_date": pd.to_datetime(["2020-01-01", "2021-01-01", "2019-01-01", "2019-01-01"]),
    }
)
GUARDIANSHIP = pd.DataFrame({"child_id": [C1, C2, C1, C4], "guardian_id": [G1, G2, G5, G5]})
INELIGIBILITY = pd.DataFrame({"child_id": [C4]})
CITIZEN = pd.DataFrame(
    {
        "citizen_id": [C1, C2, C3, C4, G1, G2, G5],
        "sex": "男",
        "birth_date": pd.to_datetime(["2020-01-01"] * 4 + ["1985-01-01"] * 3),
        "hukou_status": "正常",
        "hukou_region_code": ["371102"] * 3 + ["371103"] + ["371102"] * 3,
        "urban_hukou": True,
    }
)

# what assertions compare instead of IDs, so a failing test never prints a whole resident ID
LABEL = {C1: "C1", C2: "C2", C3: "C3", C4: "C4", G1: "G1", G2: "G2", G5: "G5"}
