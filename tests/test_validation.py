"""GX guards on staged frames: what passes, what rejects a delivery, what is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from resident_ids import resident_id
from validation_frames import AS_OF, hukou_frame

from pipelines.errors import UsageError, ValidationFailed
from pipelines.registry import source_keys
from pipelines.validation import (
    DEFAULT_EXPECTATIONS_DIR,
    TableChecks,
    load_expectation_suites,
    row_count_bounds,
    valid_resident_ids,
    validate_staged,
)


def wrong_check(valid: str) -> str:
    return valid[:17] + ("1" if valid[17] != "1" else "2")


@pytest.fixture(scope="module")
def suites():
    return load_expectation_suites(DEFAULT_EXPECTATIONS_DIR)


def run(frame, tmp_path, suites, *, source="hukou", previous_rows=None, **kwargs):
    return validate_staged(
        source, frame, as_of=AS_OF, previous_rows=previous_rows, results_dir=tmp_path, suites=suites, **kwargs
    )


def test_every_source_has_a_checked_suite(suites):
    assert set(suites) == set(source_keys())
    for spec in suites.values():
        assert spec.table.min_rows >= 1
        assert any(check.kind == "unique" for check in spec.row_checks)


def test_good_frame_passes_and_keeps_results_and_data_docs(tmp_path, suites):
    frame = hukou_frame()
    before = frame.copy()
    report = run(frame, tmp_path, suites, previous_rows=5)
    assert report["success"] is True
    assert report["failed_expectations"] == []
    assert report["rows"] == 5
    kept = json.loads(Path(report["results_path"]).read_text(encoding="utf-8"))
    assert kept["success"] is True
    assert Path(report["results_path"]) == tmp_path / "hukou" / "validation.json"
    checked = {r["expectation_config"]["meta"]["check"] for r in kept["results"]}
    assert {
        "row_count",
        "resident_id(citizen_id)",
        "in_set(sex)",
        "unique(citizen_id)",
        "date_range(birth_date)",
    } <= checked
    docs = Path(report["docs_path"])
    assert docs == tmp_path / "data_docs" / "index.html"
    assert "hukou" in docs.read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize(
    "column, bad_value, check",
    [
        ("sex", "男性", "in_set(sex)"),
        ("citizen_id", "wrong_check", "resident_id(citizen_id)"),
        ("guardian1_id", "wrong_check", "resident_id(guardian1_id)"),
        ("birth_date", pd.Timestamp("2027-03-02"), "date_range(birth_date)"),
        ("settled_date", pd.Timestamp("1899-12-31"), "date_range(settled_date)"),
        ("household_no", "12345678", "pattern(household_no)"),
    ],
)
def test_a_bad_row_fails_the_named_row_check(tmp_path, suites, column, bad_value, check):
    frame = hukou_frame()
    row = 2
    if bad_value == "wrong_check":
        bad_value = wrong_check(frame.loc[row, column])
    frame.loc[row, column] = bad_value
    with pytest.raises(ValidationFailed) as caught:
        run(frame, tmp_path, suites)
    message = str(caught.value)
    assert caught.value.exit_status == 3
    assert f"row check {check} failed: 1 of " in message
    assert "\n" not in message
    assert caught.value.report["failed_expectations"] == [check]
    kept = json.loads((tmp_path / "hukou" / "validation.json").read_text(encoding="utf-8"))
    assert kept["success"] is False


def test_missing_required_value_fails_not_null(tmp_path, suites):
    frame = hukou_frame()
    frame.loc[0, "birth_date"] = pd.NaT
    with pytest.raises(ValidationFailed, match=r"not_null\(birth_date\)"):
        run(frame, tmp_path, suites)


def test_an_empty_frame_fails_the_table_check(tmp_path, suites):
    with pytest.raises(ValidationFailed) as caught:
        run(hukou_frame().iloc[:0], tmp_path, suites)
    assert "table check row_count failed: 0 rows" in str(caught.value)
    assert (tmp_path / "data_docs" / "index.html").exists()


def test_row_count_far_below_previous_snapshot_is_rejected(tmp_path, suites):
    with pytest.raises(ValidationFailed) as caught:
        run(hukou_frame(30), tmp_path, suites, previous_rows=100)
    message = str(caught.value)
    assert "row_count" in message and "30 rows" in message and "previous snapshot 100" in message


def test_row_count_within_the_change_fraction_passes(tmp_path, suites):
    fraction = suites["hukou"].table.max_change_fraction
    low, high = row_count_bounds(suites["hukou"].table, 200)
    assert (low, high) == (round(200 * (1 - fraction)), round(200 * (1 + fraction)))
    assert run(hukou_frame(low), tmp_path, suites, previous_rows=200)["success"] is True
    with pytest.raises(ValidationFailed, match="row_count_change"):
        run(hukou_frame(low - 1), tmp_path, suites, previous_rows=200)


def test_each_source_allows_its_own_change(suites):
    fractions = {source: spec.table.max_change_fraction for source, spec in suites.items()}
    assert all(f is not None and 0 < f <= 0.5 for f in fractions.values())
    assert fractions["hukou"] < 0.1 < fractions["rental"]  # a hukou losing a tenth is no normal day


def test_change_counts_delivered_records_not_staged_rows(tmp_path, suites):
    """A contract with two buyers is staged as two rows but delivered as one record."""
    frame = hukou_frame(100)
    frame["record_ref"] = [f"hukou.csv:{i // 2 + 2}" for i in range(100)]  # 50 records, 2 rows each
    assert run(frame, tmp_path, suites, previous_rows=50)["success"] is True
    with pytest.raises(ValidationFailed, match=r"100 rows accepted .*previous snapshot 50"):
        run(hukou_frame(100), tmp_path, suites, previous_rows=50)


def test_an_accepted_change_publishes_and_reports_its_figures(tmp_path, suites):
    with pytest.raises(ValidationFailed, match=r"--accept-change hukou --reason"):
        run(hukou_frame(50), tmp_path, suites, previous_rows=100)
    report = run(
        hukou_frame(50),
        tmp_path,
        suites,
        previous_rows=100,
        accept_change_reason="district merged into the city, checked with the bureau",
    )
    assert report["accepted_change"] == {
        "source": "hukou",
        "reason": "district merged into the city, checked with the bureau",
        "rows": 50,
        "previous_rows": 100,
        "allowed": [95, 105],
        "max_change_fraction": 0.05,
    }


def test_an_accepted_change_does_not_waive_other_failures(tmp_path, suites):
    frame = hukou_frame(50)
    frame.loc[0, "sex"] = "未知"
    with pytest.raises(ValidationFailed, match=r"in_set\(sex\)"):
        run(frame, tmp_path, suites, previous_rows=100, accept_change_reason="checked")
    with pytest.raises(ValidationFailed, match=r"row_count failed: 0 rows"):
        run(hukou_frame().iloc[:0], tmp_path, suites, previous_rows=100, accept_change_reason="checked")


def test_within_bounds_an_acceptance_records_nothing(tmp_path, suites):
    report = run(hukou_frame(100), tmp_path, suites, previous_rows=100, accept_change_reason="checked")
    assert report["accepted_change"] is None


def test_row_count_bounds():
    assert row_count_bounds(TableChecks(min_rows=1, max_change_fraction=0.5), 100) == (50, 150)
    assert row_count_bounds(TableChecks(min_rows=1, max_change_fraction=0.5), None) == (1, None)
    assert row_count_bounds(TableChecks(min_rows=1, max_change_fraction=0.2), 0) == (1, 0)


def test_table_failure_is_named_before_row_failures(tmp_path, suites):
    frame = hukou_frame(30)
    frame.loc[0, "sex"] = "未知"
    with pytest.raises(ValidationFailed, match=r"table check row_count_change failed.*and 1 more"):
        run(frame, tmp_path, suites, previous_rows=100)


def test_duplicate_ids_fail_without_showing_them(tmp_path, suites):
    frame = hukou_frame()
    frame.loc[4, "citizen_id"] = frame.loc[3, "citizen_id"]
    whole_id = frame.loc[3, "citizen_id"]
    with pytest.raises(ValidationFailed, match=r"unique\(citizen_id\)") as caught:
        run(frame, tmp_path, suites)
    assert whole_id not in str(caught.value)
    for path in tmp_path.rglob("*"):
        if path.suffix in (".json", ".html"):
            assert whole_id not in path.read_text(encoding="utf-8"), path.name
    kept = (tmp_path / "hukou" / "validation.json").read_text(encoding="utf-8")
    assert whole_id[:6] + "********" + whole_id[-4:] in kept


def test_every_run_stays_in_the_data_docs_index(tmp_path, suites):
    run(hukou_frame(), tmp_path, suites)
    with pytest.raises(ValidationFailed):
        run(hukou_frame().iloc[:0], tmp_path, suites)
    pages = list((tmp_path / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 2
    index = (tmp_path / "data_docs" / "index.html").read_text(encoding="utf-8")
    assert index.count("hukou-as-of-2027-03-01/") >= 2


def test_property_owner_ids_are_checked_by_owner_kind(tmp_path, suites):
    person = resident_id("37110219850101123")
    frame = pd.DataFrame(
        {
            "certificate_no": pd.array(
                ["鲁(2019)某市不动产权第0000001号"] * 2 + ["鲁(2020)某市不动产权第0000002号"], dtype="str"
            ),
            "owner_id": pd.array([person, "91371100MA3C0000X1", resident_id("37110219900202456")], dtype="str"),
            "owner_kind": pd.array(["person", "organization", "person"], dtype="str"),
            "co_ownership": pd.array(["按份共有", "按份共有", "单独所有"], dtype="str"),
            "share": [0.5, 0.5, float("nan")],
            "use": pd.array(["住宅", "住宅", "商业"], dtype="str"),
            "floor_area": [89.5, 89.5, 120.0],
            "registered_date": pd.to_datetime(["2019-06-01", "2019-06-01", "2020-01-02"]).astype("datetime64[ns]"),
            "title_status": pd.array(["现势", "现势", "历史"], dtype="str"),
        }
    )
    assert run(frame, tmp_path, suites, source="property_title")["success"] is True
    frame.loc[1, "owner_kind"] = "person"
    with pytest.raises(ValidationFailed, match=r"resident_id\(owner_id\)\[owner_kind=person\]"):
        run(frame, tmp_path, suites, source="property_title")


def test_code_lists_come_from_the_staging_schema(tmp_path, suites):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    real = (Path(__file__).resolve().parent.parent / "schemas" / "hukou.yaml").read_text(encoding="utf-8")
    narrowed = real.replace("codes: [正常, 迁出, 死亡, 注销]", "codes: [正常, 迁出]")
    assert narrowed != real
    (schemas / "hukou.yaml").write_text(narrowed, encoding="utf-8")
    frame = hukou_frame()
    frame.loc[0, "status"] = "死亡"
    with pytest.raises(ValidationFailed, match=r"in_set\(status\)"):
        run(frame, tmp_path / "out", suites, schemas_dir=schemas)


def test_a_warning_check_is_reported_not_raised(tmp_path):
    folder = tmp_path / "expectations"
    folder.mkdir()
    (folder / "hukou.yaml").write_text(
        "source: hukou\nrow_checks:\n  - {check: in_set, column: sex, values: [男, 女], severity: warn}\n",
        encoding="utf-8",
    )
    frame = hukou_frame()
    frame.loc[0, "sex"] = "未知"
    report = run(frame, tmp_path / "out", load_expectation_suites(folder))
    assert report["success"] is False
    assert report["failed_expectations"] == ["in_set(sex)"]


@pytest.mark.parametrize(
    "text, named",
    [
        ("source: hukou\nrow_checks:\n  - {check: exists, column: sex}\n", "check"),
        ("source: hukou\nrow_checks:\n  - {check: not_null, column: sex, mostly: 1.5}\n", "mostly"),
        ("source: hukou\nrow_checks:\n  - {check: in_set, column: sex}\n", "values"),
        ("source: hukou\nrow_checks:\n  - {check: date_range, column: birth_date, max: tomorrow}\n", "max"),
        ("source: hukou\nrow_checks:\n  - {check: pattern, column: household_no, regex: '(\\d'}\n", "regex"),
        ("source: hukou\ntable_checks: {max_change_fraction: -1}\n", "max_change_fraction"),
        ("source: hukuo\n", "source"),
        ("source: hukou\nrow_checks: [\n", "YAML"),
    ],
)
def test_a_broken_expectation_file_is_a_usage_error(tmp_path, text, named):
    (tmp_path / "hukou.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        load_expectation_suites(tmp_path)
    message = str(caught.value)
    assert "hukou.yaml" in message and named in message
    assert caught.value.exit_status == 2 and "\n" not in message


def test_valid_resident_ids_verifies_the_check_character():
    good = resident_id("37110219800101123")
    values = pd.Series([good, wrong_check(good), good.lower()[:17] + "x", "371102800101123", None], dtype="str")
    verdict = valid_resident_ids(values)
    assert verdict.iloc[:4].tolist() == [True, False, False, False]
    assert pd.isna(verdict.iloc[4])


def test_a_frame_missing_a_checked_column_fails_the_table_check(tmp_path, suites):
    with pytest.raises(ValidationFailed, match=r"columns_present failed: .*'status'"):
        run(hukou_frame().drop(columns=["status"]), tmp_path, suites)


def test_dates_delivered_as_text_fail_the_date_check_instead_of_crashing(tmp_path, suites):
    frame = hukou_frame()
    frame["birth_date"] = frame["birth_date"].dt.strftime("%Y-%m-%d")
    with pytest.raises(ValidationFailed, match=r"date_range\(birth_date\) failed: could not be "):
        run(frame, tmp_path, suites)


def test_valid_resident_ids_agrees_across_string_storages():
    good = [resident_id(f"3711021980010{i}12{i}") for i in range(4)]
    values = good + [wrong_check(good[0]), None]
    expected = [True] * 4 + [False]
    for dtype in ("str", object, "string[python]"):
        verdict = valid_resident_ids(pd.Series(values, dtype=dtype))
        assert verdict.iloc[:5].tolist() == expected, dtype
        assert pd.isna(verdict.iloc[5])


def test_kept_results_show_the_unexpected_code_to_engineers(tmp_path, suites):
    frame = hukou_frame()
    frame.loc[3, "relation_to_head"] = "干亲"
    with pytest.raises(ValidationFailed):
        run(frame, tmp_path, suites)
    kept = json.loads((tmp_path / "hukou" / "validation.json").read_text(encoding="utf-8"))
    failed = [r for r in kept["results"] if not r["success"]]
    checks = [r["expectation_config"]["meta"]["check"] for r in failed]
    assert checks == ["in_set(relation_to_head)"]
    assert failed[0]["result"]["partial_unexpected_list"] == ["干亲"]
    page = next((tmp_path / "data_docs" / "validations").rglob("*.html"))
    assert "干亲" in page.read_text(encoding="utf-8")


def test_repeated_index_labels_are_validated_by_position(tmp_path, suites):
    frame = pd.concat([hukou_frame(3), hukou_frame(5).iloc[3:]])
    frame.index = [0, 1, 2, 0, 1]
    assert run(frame, tmp_path, suites)["rows"] == 5
    frame.iloc[4, frame.columns.get_loc("sex")] = "男性"
    with pytest.raises(ValidationFailed, match=r"in_set\(sex\) failed: 1 of 5"):
        run(frame, tmp_path, suites)


def insurance_frame() -> pd.DataFrame:
    person = resident_id("37110219850101123")
    return pd.DataFrame(
        {
            "citizen_id": pd.array([person, person, resident_id("37110219900202456")], dtype="str"),
            "scheme": pd.array(["企业职工基本养老保险", "城镇职工基本医疗保险", "城乡居民基本养老保险"], dtype="str"),
            "insurance_status": pd.array(["参保缴费", "参保缴费", "暂停缴费"], dtype="str"),
            "employer_code": pd.array(["91371100MA3C0000X1", "91371100MA3C0000X1", None], dtype="str"),
            "first_insured_date": pd.to_datetime(["2012-07-01", "2012-07-01", pd.NaT]).astype("datetime64[ns]"),
            "local_months": pd.array([130, 130, None], dtype="Int64"),
            "last_paid_month": pd.array(["202702", "202702", None], dtype="str"),
        }
    )


def test_social_insurance_suite_passes_good_rows(tmp_path, suites):
    assert run(insurance_frame(), tmp_path, suites, source="social_insurance")["success"] is True


def test_social_insurance_suite_names_each_broken_check(tmp_path, suites):
    frame = pd.concat([insurance_frame()] * 2, ignore_index=True)
    frame["citizen_id"] = pd.array([resident_id(f"3711021985010112{i}") for i in range(6)], dtype="str")
    frame.loc[0, "local_months"] = -3
    frame.loc[1, "last_paid_month"] = "202713"
    frame.loc[2, "employer_code"] = "91371100MA3C0000I1"  # I is not in the GB 32100 alphabet
    frame.loc[4, ["citizen_id", "scheme"]] = frame.loc[3, ["citizen_id", "scheme"]].tolist()
    with pytest.raises(ValidationFailed) as caught:
        run(frame, tmp_path, suites, source="social_insurance")
    assert sorted(caught.value.report["failed_expectations"]) == sorted(
        ["between(local_months)", "pattern(last_paid_month)", "credit_code(employer_code)", "unique(citizen_id,scheme)"]
    )


def test_validation_reads_only_the_columns_its_suite_checks_and_judges_alike(tmp_path, suites):
    """Names and address texts, the widest staged columns, are checked by no row check: the
    rows are read without them, and the verdict on a bad row is the one on the whole frame."""
    from pipelines.validation import read_checked_rows

    frame = hukou_frame(6)
    frame.loc[2, "citizen_id"] = wrong_check(frame.loc[2, "citizen_id"])
    path = tmp_path / "accepted.parquet"
    frame.to_parquet(path, index=False)
    read = read_checked_rows(suites["hukou"], path)
    assert {"name", "hukou_address"} <= set(frame.columns)
    assert len(read) == 6 and {"name", "hukou_address"}.isdisjoint(read.columns)
    assert set(read.columns) < set(frame.columns)
    verdicts = []
    for i, rows in enumerate((frame, read)):
        with pytest.raises(ValidationFailed) as failed:
            run(rows, tmp_path / str(i), suites)
        verdicts.append((str(failed.value).split("; see ")[0], failed.value.report["failed_expectations"]))
    assert verdicts[0] == verdicts[1] and "resident_id(citizen_id)" in verdicts[0][1]
    frame.drop(columns=["status"]).to_parquet(tmp_path / "narrow.parquet", index=False)
    with pytest.raises(ValidationFailed, match=r"columns_present failed: .*'status'"):
        run(read_checked_rows(suites["hukou"], tmp_path / "narrow.parquet"), tmp_path / "2", suites)
