"""Access tables as pure transforms: district scope, pseudonyms, aggregates, key configuration."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
from access_world import C1, C2, CITIZEN, ELIGIBILITY, GUARDIANSHIP, INELIGIBILITY, KEY, LABEL, SCHOOLS
from resident_ids import resident_id

from pipelines.access import (
    CITIZEN_QUASI_IDENTIFIERS,
    MIN_GROUP,
    analyst_citizen,
    analyst_eligibility,
    build_access_frames,
    build_access_tables,
    demand_by_school,
    derived_key,
    district_passwords_from_config,
    district_scope,
    first_sufficient_level,
    hmac_key_from_config,
    pseudonymize,
)
from pipelines.errors import UsageError


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
    frames = build_access_frames(
        {"eligibility": ELIGIBILITY, "guardianship": GUARDIANSHIP, "ineligibility": INELIGIBILITY, "citizen": CITIZEN},
        SCHOOLS,
        KEY,
    )
    every_id = set(CITIZEN["citizen_id"])
    for name in ("analyst_citizen", "analyst_eligibility", "demand_by_school"):
        text = [str(v) for v in frames[name].to_numpy().ravel()]
        assert not any(i in cell for cell in text for i in every_id), name
    assert len(frames["analyst_citizen"]) == len(CITIZEN)
    # seven people: no combination is shared by five, so nothing identifying is left
    assert frames["analyst_citizen"][list(CITIZEN_QUASI_IDENTIFIERS)].isna().all().all()
    assert frames["analyst_eligibility"].empty and frames["demand_by_school"].empty
    assert set(analyst_citizen(CITIZEN, KEY, k=1)["birth_year"]) == {2020, 1985}


def test_first_sufficient_level_counts_only_units_left_at_that_level():
    fine = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    coarse = pd.Series(["x"] * 5 + ["y"] * 4 + ["z"])
    levels = first_sufficient_level([fine, coarse, pd.Series([0] * 10)], k=5)
    # the b's and c's share "y" with four others overall, but only four of them are left there
    assert levels.tolist() == [0] * 5 + [2] * 5


def city_citizens(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    births = pd.to_datetime("1950-01-01") + pd.to_timedelta(rng.integers(0, 3650, n), unit="D")
    return pd.DataFrame(
        {
            "citizen_id": [resident_id(f"371102{b:%Y%m%d}{i:03d}") for i, b in enumerate(births)],
            "sex": rng.choice(["男", "女"], n),
            "birth_date": births,
            "hukou_status": rng.choice(["正常", "正常", "正常", "迁出"], n),
            "hukou_region_code": rng.choice(["371102", "371103", "371122"], n),
            "urban_hukou": rng.random(n) < 0.7,
        }
    )


def shared_by_fewer_than(frame: pd.DataFrame, columns: list[str], unit: str, k: int) -> int:
    """Published combinations (NULLs are values too) describing fewer than k distinct units,
    the all-NULL one excepted (it describes nobody)."""
    shown = frame[columns].astype("string").fillna("∅")
    informative = (shown != "∅").any(axis=1)
    sizes = frame[informative].groupby([shown[c][informative] for c in columns])[unit].nunique()
    return int((sizes < k).sum())


def test_analyst_citizen_every_combination_describes_five_people():
    citizens = city_citizens()
    table = analyst_citizen(citizens, KEY)
    assert len(table) == len(citizens) and table["citizen_key"].is_unique
    assert shared_by_fewer_than(table, list(CITIZEN_QUASI_IDENTIFIERS), "citizen_key", MIN_GROUP) == 0
    kept = table[list(CITIZEN_QUASI_IDENTIFIERS)].notna()
    assert kept.all(axis=1).any() and kept["birth_year"].any()  # generalized, not blanked
    crowd = pd.concat([citizens.iloc[[0]]] * 6, ignore_index=True).assign(
        citizen_id=[resident_id(f"37110219800101{i:03d}") for i in range(6)]
    )
    assert analyst_citizen(crowd, KEY)[list(CITIZEN_QUASI_IDENTIFIERS)].notna().all().all()


def city_eligibility(children: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [resident_id(f"37110220200101{i:03d}") for i in range(children)]
    second = rng.random(children) < 0.2
    rows = pd.DataFrame(
        {
            "child_id": ids + [i for i, s in zip(ids, second) if s],
            "school_code": [f"P{k}" for k in rng.integers(0, 3, children)] + ["P9"] * int(second.sum()),
        }
    )
    rows["level"] = "primary"
    rows["category"] = rng.choice(["A1", "A2", "B"], len(rows))
    rows["priority_date"] = pd.to_datetime("2018-01-01") + pd.to_timedelta(rng.integers(0, 900, len(rows)), unit="D")
    return rows


def test_analyst_eligibility_coarse_dates_and_five_children_per_combination_of_rows():
    eligibility = city_eligibility()
    table = analyst_eligibility(eligibility, KEY)
    periods = table["priority_period"].dropna()
    assert periods.str.fullmatch(r"\d{4}(-\d{2}|-Q[1-4])?").all()
    assert periods.str.fullmatch(r"\d{4}-\d{2}").any()  # months survive where the crowd allows
    # a child's rows travel together under its key: the set of its rows is its quasi-identifier
    shown = table.astype("string").fillna("∅")
    signature = (
        (shown["level"] + "|" + shown["school_code"] + "|" + shown["category"] + "|" + shown["priority_period"])
        .groupby(table["child_key"])
        .agg(lambda s: "\n".join(sorted(s)))
    )
    assert signature.value_counts().min() >= MIN_GROUP
    # a child is published with all its rows or not at all
    keys = pseudonymize(eligibility["child_id"], derived_key(KEY, "analyst_eligibility"))
    rows_of = keys.value_counts()
    published = table["child_key"].value_counts()
    assert (published == rows_of[published.index]).all()
    assert 0 < len(published) < len(rows_of)


def test_analyst_eligibility_keys_do_not_join_the_citizen_table():
    eligibility = city_eligibility(60)
    children = CITIZEN.iloc[[0]].merge(eligibility[["child_id"]].drop_duplicates(), how="cross")
    children = children.drop(columns="citizen_id").rename(columns={"child_id": "citizen_id"})
    citizen_keys = set(analyst_citizen(children, KEY)["citizen_key"])
    eligibility_keys = set(
        analyst_eligibility(
            eligibility.assign(school_code="P1", category="B", priority_date=pd.Timestamp("2019-05-02")), KEY
        )["child_key"]
    )
    assert eligibility_keys and not eligibility_keys & citizen_keys


def test_a_child_no_four_others_resemble_is_left_out():
    crowd = pd.DataFrame(
        {
            "child_id": [resident_id(f"37110220200101{i:03d}") for i in range(5)],
            "level": "primary",
            "school_code": "P1",
            "category": "A1",
            "priority_date": pd.to_datetime(["2019-05-02", "2019-05-20", "2019-06-01", "2019-04-30", "2019-05-31"]),
        }
    )
    loner = pd.DataFrame(
        {
            "child_id": [resident_id("37110220200101099")],
            "level": "primary",
            "school_code": "P7",
            "category": "A1",
            "priority_date": pd.to_datetime(["2019-05-02"]),
        }
    )
    table = analyst_eligibility(pd.concat([crowd, loner], ignore_index=True), KEY)
    assert len(table) == 5 and set(table["school_code"]) == {"P1"}
    assert set(table["priority_period"]) == {"2019-Q2"}  # three in May only: the quarter holds all five


def test_without_key_no_pseudonymized_tables_and_a_warning(caplog):
    frames = build_access_frames({"eligibility": ELIGIBILITY, "guardianship": GUARDIANSHIP}, SCHOOLS, None)
    assert set(frames) == {"school", "district_scope", "demand_by_school"}
    assert "no HMAC key" in caplog.text


def test_demand_counts_distinct_children_per_school_and_category():
    doubled = pd.concat([ELIGIBILITY, ELIGIBILITY.iloc[[0]]])
    demand = demand_by_school(doubled, k=1)
    counts = {(r.school_code, r.category): r.children for r in demand.itertuples()}
    assert counts == {("PA", "A1"): 1, ("PA", "C"): 1, ("PB", "B"): 1, ("PB", "C"): 1}


def test_demand_under_five_children_is_suppressed():
    five = pd.DataFrame(
        {"child_id": [f"c{i}" for i in range(5)], "school_code": "PA", "level": "primary", "category": "A1"}
    )
    four = five.iloc[:4].assign(category="B")
    demand = demand_by_school(pd.concat([five, four]))
    assert demand[["school_code", "category", "children"]].values.tolist() == [["PA", "A1", 5]]


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
    for name, frame in (
        ("eligibility", ELIGIBILITY),
        ("guardianship", GUARDIANSHIP),
        ("ineligibility", INELIGIBILITY),
        ("citizen", CITIZEN),
    ):
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
        create_roles(url, hmac_key=KEY)
    with pytest.raises(UsageError, match="PostgreSQL"):
        run_lookup_bench(url, clients=1, seconds=1)


def test_district_passwords_from_file_and_environment(tmp_path):
    secret_file = tmp_path / "passwords"
    secret_file.write_text("# district = password\n371102 = s3cret one\n\n371103=two\n", encoding="utf-8")
    secret_file.chmod(0o600)
    found = district_passwords_from_config(secret_file, {"ZEROCERT_DISTRICT_PASSWORD_371103": "three"})
    assert found == {"371102": "s3cret one", "371103": "three"}
    assert district_passwords_from_config(None, {"ZEROCERT_DISTRICT_PASSWORDS_FILE": str(secret_file)}) == {
        "371102": "s3cret one",
        "371103": "two",
    }
    assert district_passwords_from_config(None, {}) == {}


def test_district_password_file_errors_quote_no_password(tmp_path):
    secret_file = tmp_path / "passwords"
    secret_file.write_text("371102 = fine\nhunter2-no-district\n", encoding="utf-8")
    secret_file.chmod(0o600)
    with pytest.raises(UsageError, match="line 2") as bad_line:
        district_passwords_from_config(secret_file, {})
    assert "hunter2" not in str(bad_line.value)
    secret_file.write_text("371102 = fine\n", encoding="utf-8")
    secret_file.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        district_passwords_from_config(secret_file, {})
    with pytest.raises(UsageError, match="six-digit"):
        district_passwords_from_config(None, {"ZEROCERT_DISTRICT_PASSWORD_CITY": "x"})
