"""Repair of delivered resident IDs: certain repairs made, uncertain ones named, never guessed."""

import pandas as pd
import pytest

from pipelines.resident_id import (
    check_character,
    mask_id,
    normalize_party_ids,
    normalize_resident_ids,
)

GOOD = "11010519491231002X"


def normalize_one(text):
    ids, reasons = normalize_resident_ids(pd.Series([text]))
    return ids.iloc[0], reasons.iloc[0]


def test_check_character_of_the_standard_example():
    assert check_character(GOOD[:17]) == "X"


@pytest.mark.parametrize(
    "delivered",
    [
        GOOD,
        "110105491231002",  # 15-digit legacy: born 19YY, check character computed
        " 11010519491231002x ",  # spaces and lower-case x
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width
        "１１０１０５１９４９１２３１００２ｘ",
        "'11010519491231002X",  # spreadsheet text prefix
        "11010519491231002X.0",  # spreadsheet float rendering
        "\u300011010519491231002X",  # ideographic space
    ],
)
def test_certain_repairs_give_the_18_character_id(delivered):
    assert normalize_one(delivered) == (GOOD, pd.NA)


@pytest.mark.parametrize(
    "delivered, reason",
    [
        ("3.71102E+17", "INVALID_ID_FORMAT"),  # scientific notation lost digits
        ("110105194912310021", "INVALID_ID_CHECKSUM"),  # wrong check character
        ("110105194913310020", "INVALID_ID_FORMAT"),  # month 13 inside the ID
        ("110105194902300027", "INVALID_ID_FORMAT"),  # 30 February inside the ID
        ("1101051949123A002X", "INVALID_ID_FORMAT"),  # a letter inside
        ("11010519491231002", "INVALID_ID_FORMAT"),  # 17 digits
        ("110105491331002", "INVALID_ID_FORMAT"),  # 15-digit with an impossible date
    ],
)
def test_uncertain_ids_are_named_not_guessed(delivered, reason):
    ids, reasons = normalize_resident_ids(pd.Series([delivered]))
    assert reasons.iloc[0] == reason
    assert ids.iloc[0] != GOOD


def test_blank_is_missing_not_invalid_and_index_is_kept():
    values = pd.Series(["", None, "  ", GOOD], index=[7, 7, 9, 3])
    ids, reasons = normalize_resident_ids(values)
    assert list(ids.index) == [7, 7, 9, 3]
    assert ids.isna().tolist() == [True, True, True, False]
    assert reasons.isna().all()


def test_party_ids_tell_persons_from_organizations():
    ids, kinds, reasons = normalize_party_ids(
        pd.Series(["91370100ma3c12346c", "110105491231002", "110105194912310021", "not an id", ""])
    )
    assert ids.iloc[0] == "91370100MA3C12346C" and kinds.iloc[0] == "organization"
    assert ids.iloc[1] == GOOD and kinds.iloc[1] == "person"
    assert reasons.tolist()[:4] == [pd.NA, pd.NA, "INVALID_ID_CHECKSUM", "INVALID_ID_FORMAT"]
    assert pd.isna(kinds.iloc[4]) and pd.isna(reasons.iloc[4])


def test_all_digit_credit_code_is_an_organization_and_a_bad_code_is_not():
    ids, kinds, reasons = normalize_party_ids(pd.Series(["913711227034610307", "913711227034610308"]))
    assert kinds.iloc[0] == "organization" and pd.isna(reasons.iloc[0])
    assert reasons.iloc[1] == "INVALID_ID_FORMAT"


@pytest.mark.parametrize("damaged", ["3711A1198103150596", "371103195713271591"])
def test_damaged_ids_passing_the_credit_mod31_by_chance_stay_invalid(damaged):
    _, kinds, reasons = normalize_party_ids(pd.Series([damaged]))
    assert reasons.iloc[0] == "INVALID_ID_FORMAT"


def test_masking_keeps_region_and_last_four():
    assert mask_id(GOOD) == "110105********002X"


def test_fullwidth_digits_are_not_mistaken_for_a_clean_id():
    ids, reasons = normalize_resident_ids(pd.Series(["１１０１０５１９４９１２３１００２Ｘ", GOOD]))
    assert ids.tolist() == [GOOD, GOOD]
    assert reasons.isna().all()


def test_person_id_with_wrong_check_stays_a_person_even_if_it_passes_as_credit_code():
    ids, kinds, reasons = normalize_party_ids(pd.Series(["371102198707301395"]))
    assert kinds.iloc[0] == "person" and reasons.iloc[0] == "INVALID_ID_CHECKSUM"


@pytest.mark.parametrize("damaged", ["371171195108180050", "3711A2197811180784"])
def test_damaged_ids_passing_both_credit_checks_stay_persons(damaged):
    _, kinds, reasons = normalize_party_ids(pd.Series([damaged]))
    assert kinds.iloc[0] == "person" and pd.notna(reasons.iloc[0])
