"""Access tables as pure transforms: district scope, pseudonyms, aggregates, key configuration."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd
import pytest

from pipelines.access import (
    build_access_frames, build_access_tables, demand_by_school, district_scope, hmac_key_from_config,
    pseudonymize,
)
from pipelines.errors import UsageError
from pipelines.resident_id import check_character

KEY = b"test-key-0123456789abcdef"


def rid(first17: str) -> str:
    return first17 + check_character(first17)


C1, C2, C3, C4 = (rid(f"37110220200101{i:03d}") for i in (1, 2, 3, 4))
G1, G2, G5 = (rid(f"37110219850101{i:03d}") for i in (1, 2, 5))

SCHOOLS = pd.DataFrame({"school_code": ["PA", "PB"], "school_name": ["甲小学", "乙小学"],
                        "level": ["primary", "primary"], "district_code": ["371102", "371103"],
                        "address": ["x", "y"], "capacity": ["300", "200"], "lon": ["1", "2"],
                        "lat": ["1", "2"]})
ELIGIBILITY = pd.DataFrame({"child_id": [C1, C2, C3, C3], "level": "primary",
                            "school_code": ["PA", "PB", "PA", "PB"], "category": ["A1", "B", "C", "C"],
                            "priority_date": pd.to_datetime(["2020-01-01", "2021-01-01", "2019-01-01",
                                                             "2019-01-01"])})
GUARDIANSHIP = pd.DataFrame({"child_id": [C1, C2, C1, C4], "guardian_id": [G1, G2, G5, G5]})
INELIGIBILITY = pd.DataFrame({"child_id": [C4]})
CITIZEN = pd.DataFrame({"citizen_id": [C1, C2, C3, C4, G1, G2, G5], "sex": "男",
                        "birth_date": pd.to_datetime(["2020-01-01"] * 4 + ["1985-01-01"] * 3),
                        "hukou_status": "正常", "hukou_region_code": ["371102"] * 3 + ["371103"] + ["371102"] * 3,
                        "urban_hukou": True})


LABEL = {C1: "C1", C2: "C2", C3: "C3", C4: "C4", G1: "G1", G2: "G2", G5: "G5"}


def scope_of(scope: pd.DataFrame, district: str) -> set[str]:
    """Labels, not IDs: a failing test never prints a whole resident ID."""
    return {LABEL[i] for i in scope.loc[scope["district_code"] == district, "citizen_id"]}


def test_scope_children_by_school_district_and_guardians_follow():
    scope = district_scope(ELIGIBILITY, GUARDIANSHIP, SCHOOLS, INELIGIBILITY, CITIZEN)
    assert scope_of(scope, "371102") == {"C1", "C3", "G1", "G5"}
    # C3 is eligible in both districts; C4 has no school and belongs to its hukou district
    assert scope_of(scope, "371103") == {"C2", "C3", "C4", "G2", "G5"}
    assert not scope.duplicated().any()


def test_scope_ignores_schools_missing_from_the_list():
    unknown = ELIGIBILITY.assign(school_code=["PZ", "PB", "PZ", "PB"])
    scope = district_scope(unknown, GUARDIANSHIP, SCHOOLS)
    assert scope_of(scope, "371102") == set()
    assert scope_of(scope, "371103") == {"C2", "C3", "G2"}


def test_scope_does_not_mutate_inputs():
    before = ELIGIBILITY.copy()
    district_scope(ELIGIBILITY, GUARDIANSHIP, SCHOOLS, INELIGIBILITY, CITIZEN)
    pd.testing.assert_frame_equal(ELIGIBILITY, before)


def test_pseudonym_is_keyed_hmac_stable_and_keeps_missing():
    ids = pd.Series([C1, None, C1, C2])
    keys = pseudonymize(ids, KEY)
    assert keys[0] == hmac.new(KEY, C1.encode(), hashlib.sha256).hexdigest()
    assert keys[0] == keys[2] and keys[0] != keys[3] and pd.isna(keys[1])
    assert pseudonymize(ids, b"another-key-0123456789")[0] != keys[0]


def test_short_key_refused():
    with pytest.raises(UsageError, match="at least"):
        pseudonymize(pd.Series([C1]), b"short")


def test_analyst_frames_hold_no_resident_id():
    frames = build_access_frames({"eligibility": ELIGIBILITY, "guardianship": GUARDIANSHIP,
                                  "ineligibility": INELIGIBILITY, "citizen": CITIZEN}, SCHOOLS, KEY)
    every_id = set(CITIZEN["citizen_id"])
    for name in ("analyst_citizen", "analyst_eligibility", "demand_by_school"):
        text = frames[name].astype(str).to_numpy().ravel()
        assert not any(i in cell for cell in text for i in every_id), name
    assert len(frames["analyst_citizen"]) == len(CITIZEN)
    assert set(frames["analyst_citizen"]["birth_year"]) == {2020, 1985}


def test_without_key_no_pseudonymized_tables_and_a_warning(caplog):
    frames = build_access_frames({"eligibility": ELIGIBILITY, "guardianship": GUARDIANSHIP}, SCHOOLS, None)
    assert set(frames) == {"school", "district_scope", "demand_by_school"}
    assert "no HMAC key" in caplog.text


def test_demand_counts_distinct_children_per_school_and_category():
    doubled = pd.concat([ELIGIBILITY, ELIGIBILITY.iloc[[0]]])
    demand = demand_by_school(doubled)
    counts = {(r.school_code, r.category): r.children for r in demand.itertuples()}
    assert counts == {("PA", "A1"): 1, ("PA", "C"): 1, ("PB", "B"): 1, ("PB", "C"): 1}


def test_key_from_environment_or_file(tmp_path):
    assert hmac_key_from_config({}) is None
    assert hmac_key_from_config({"ZEROCERT_HMAC_KEY": " abcdefghijklmnopq \n"}) == b"abcdefghijklmnopq"
    key_file = tmp_path / "key"
    key_file.write_bytes(b"0123456789abcdefXYZ\n")
    assert hmac_key_from_config({"ZEROCERT_HMAC_KEY_FILE": str(key_file)}) == b"0123456789abcdefXYZ"
    with pytest.raises(UsageError, match="cannot read"):
        hmac_key_from_config({"ZEROCERT_HMAC_KEY_FILE": str(tmp_path / "none")})
    with pytest.raises(UsageError, match="not both"):
        hmac_key_from_config({"ZEROCERT_HMAC_KEY": "a" * 20, "ZEROCERT_HMAC_KEY_FILE": str(key_file)})
    with pytest.raises(UsageError, match="at least"):
        hmac_key_from_config({"ZEROCERT_HMAC_KEY": "short"})


def test_build_access_tables_writes_parquet(tmp_path):
    paths = {}
    for name, frame in (("eligibility", ELIGIBILITY), ("guardianship", GUARDIANSHIP),
                        ("ineligibility", INELIGIBILITY), ("citizen", CITIZEN)):
        paths[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(paths[name])
    SCHOOLS.to_csv(tmp_path / "schools.csv", index=False)
    out = build_access_tables(paths, tmp_path / "schools.csv", KEY, tmp_path / "access")
    assert set(out) == {"school", "district_scope", "demand_by_school", "analyst_citizen", "analyst_eligibility"}
    school = pd.read_parquet(out["school"])
    assert dict(zip(school["school_code"], school["capacity"])) == {"PA": 300, "PB": 200}
    with pytest.raises(UsageError, match="no schools list"):
        build_access_tables(paths, tmp_path / "missing.csv", KEY, tmp_path / "access")


def test_roles_and_lookup_bench_need_postgresql(tmp_path):
    from pipelines.access import create_roles
    from pipelines.lookup_bench import run_lookup_bench

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with pytest.raises(UsageError, match="PostgreSQL"):
        create_roles(url)
    with pytest.raises(UsageError, match="PostgreSQL"):
        run_lookup_bench(url, clients=1, seconds=1)
