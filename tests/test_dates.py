"""Dates in every delivered form; impossible or unknown forms are flagged, not guessed."""

import pandas as pd
import pytest

from pipelines.dates import parse_dates


@pytest.mark.parametrize(
    "text",
    [
        "2019-07-31",
        "2019/7/31",
        "20190731",
        "2019年7月31日",
        "2019-07-31 08:15:00",
        "43677",
        " 2019-07-31 ",
        "２０１９-０７-３１",
        "43677.0",
    ],
)
def test_every_seen_form_reads_as_31_july_2019(text):
    parsed, invalid = parse_dates(pd.Series([text]))
    assert parsed.iloc[0] == pd.Timestamp("2019-07-31")
    assert not invalid.iloc[0]


@pytest.mark.parametrize("text", ["2019-02-30", "2019-13-01", "20191332", "31/07/2019", "July", "2019-07"])
def test_impossible_or_unknown_dates_are_invalid(text):
    parsed, invalid = parse_dates(pd.Series([text]))
    assert pd.isna(parsed.iloc[0])
    assert invalid.iloc[0]


def test_blank_is_missing_not_invalid():
    parsed, invalid = parse_dates(pd.Series(["", None, "  "]))
    assert parsed.isna().all()
    assert not invalid.any()


def test_time_kept_only_when_asked_and_dtype_is_ns():
    values = pd.Series(["2019-07-31 08:15:00", "2020/2/29", "43677.5"], index=[4, 5, 6])
    dates, _ = parse_dates(values)
    stamps, _ = parse_dates(values, keep_time=True)
    assert str(dates.dtype) == "datetime64[ns]" and list(dates.index) == [4, 5, 6]
    assert dates.iloc[0] == pd.Timestamp("2019-07-31")
    assert stamps.iloc[0] == pd.Timestamp("2019-07-31 08:15:00")
    assert stamps.iloc[2] == pd.Timestamp("2019-07-31 12:00:00")
    assert dates.iloc[1] == pd.Timestamp("2020-02-29")


def test_excel_epoch_is_1899_12_30():
    parsed, _ = parse_dates(pd.Series(["1", "60", "61"]))
    assert parsed.tolist() == [pd.Timestamp("1899-12-31"), pd.Timestamp("1900-02-28"), pd.Timestamp("1900-03-01")]
