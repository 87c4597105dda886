"""No resident ID or name reaches the validation JSON or the Data Docs, whatever column a
department put it in (issue 13: 20 whole IDs reached Data Docs from IDs in ``household_no``)."""

from __future__ import annotations

import unicodedata

import pytest
from id_leaks import ID_FORM
from resident_ids import resident_id
from validation_frames import AS_OF, hukou_frame

from pipelines.errors import ValidationFailed
from pipelines.validation import DEFAULT_EXPECTATIONS_DIR, load_expectation_suites, validate_staged

PLANTED = [resident_id(f"3711021979{m:02d}15{k:03d}") for m, k in ((3, 17), (7, 231), (11, 905))]
LEGACY = "371102790315017"  # the 15-digit form
WHOLE_FORMS = [*PLANTED, LEGACY, PLANTED[0][:17]]


def reports(results_dir) -> dict[str, str]:
    """Every JSON and HTML file written, as text folded like a reader would search it."""
    found = {}
    for path in results_dir.rglob("*"):
        if path.suffix in (".json", ".html"):
            found[str(path.relative_to(results_dir))] = unicodedata.normalize(
                "NFKC", path.read_text(encoding="utf-8")
            ).upper()
    assert any(name.endswith(".html") for name in found) and any(name.endswith(".json") for name in found)
    return found


def planted_frame():
    frame = hukou_frame(200)
    frame.loc[0, "household_no"] = PLANTED[0]
    frame.loc[1, "household_no"] = PLANTED[1].lower()
    frame.loc[2, "household_no"] = LEGACY
    frame.loc[3, "household_no"] = "".join(chr(ord(c) + 0xFEE0) for c in PLANTED[2])  # full-width
    frame.loc[4, "household_no"] = f"户号{PLANTED[0]}号"
    frame.loc[5, "hukou_region_code"] = PLANTED[1]
    frame.loc[6, "relation_to_head"] = f"见{PLANTED[2]}"
    return frame


def test_ids_planted_in_non_personal_columns_never_reach_json_or_data_docs(tmp_path):
    with pytest.raises(ValidationFailed) as failed:
        validate_staged(
            "hukou",
            planted_frame(),
            as_of=AS_OF,
            previous_rows=None,
            results_dir=tmp_path,
            suites=load_expectation_suites(DEFAULT_EXPECTATIONS_DIR),
        )
    in_error = sum(form in str(failed.value) for form in WHOLE_FORMS)  # counts: no ID in test output
    assert in_error == 0
    for name, text in reports(tmp_path).items():
        whole, shaped = sum(form in text for form in WHOLE_FORMS), len(ID_FORM.findall(text))
        assert whole == 0 and shaped == 0, name
    # the values did reach the reports, masked: engineers still see which rows were odd
    kept = reports(tmp_path)["hukou/validation.json"]
    masked = PLANTED[0][:6] + "********" + PLANTED[0][-4:] in kept
    assert masked
    assert "户号" in kept  # the rest of a value stays readable


def test_names_in_a_person_name_column_are_masked(tmp_path):
    folder = tmp_path / "expectations"
    folder.mkdir()
    (folder / "hukou.yaml").write_text(
        "source: hukou\npersonal_columns: [citizen_id]\nrow_checks:\n"
        "  - {check: pattern, column: name, regex: '^[一-龥·]{2,20}$', severity: warn}\n",
        encoding="utf-8",
    )
    frame = hukou_frame(20)
    names = ["欧阳Wei", "Zhang三丰", "李 四娘"]
    frame.loc[[0, 1, 2], "name"] = names
    report = validate_staged(
        "hukou",
        frame,
        as_of=AS_OF,
        previous_rows=None,
        results_dir=tmp_path / "out",
        suites=load_expectation_suites(folder),
    )
    assert report["failed_expectations"] == ["pattern(name)"]
    texts = reports(tmp_path / "out")
    for name, text in texts.items():
        whole = sum(n.upper() in text for n in names)
        assert whole == 0, name
    masked = "欧****" in texts["hukou/validation.json"]  # mask_name keeps the first character
    assert masked
