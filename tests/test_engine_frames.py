"""The engine's Arrow-backed frame helpers give exactly what the pandas spelling they replace
gives: sorts (stable, missing last, either order), first-of-run, membership, JSON literals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.engine.decide import _evidence, _iso, json_strings
from pipelines.engine.frames import member, run_starts, sort_rows


def _rows(text_dtype: str) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 400
    words = np.array(["b", "a", "户主", "Ab", "a b", "", "z"], dtype=object)
    text = pd.Series(words[rng.integers(0, len(words), n)], dtype=object)
    text[rng.random(n) < 0.1] = None
    days = pd.Series(pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 5, n), unit="D"))
    days[rng.random(n) < 0.1] = pd.NaT
    return pd.DataFrame(
        {
            "text": text.astype(text_dtype),
            "day": days.astype("datetime64[ns]"),
            "count": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 3, n)), dtype="Int64"),
            "flag": rng.random(n) < 0.5,
            "other": pd.Series(words[rng.integers(0, len(words), n)], dtype=text_dtype),
        },
        index=rng.permutation(n),
    )


@pytest.mark.parametrize("text_dtype", ["object", "str"])
@pytest.mark.parametrize(
    ("keys", "ascending"),
    [
        (["text"], True),
        (["text", "day"], [True, False]),
        (["day", "text", "other"], [False, True, False]),
        (["count", "flag", "text"], True),
        (["flag", "count"], [False, False]),
    ],
)
def test_sort_rows_is_a_stable_pandas_sort(text_dtype, keys, ascending):
    rows = _rows(text_dtype)
    expected = rows.sort_values(keys, ascending=ascending, kind="stable")
    assert sort_rows(rows, keys, ascending).index.equals(expected.index)
    for n in range(1, len(keys) + 1):
        firsts = sort_rows(rows, keys, ascending, first_of=n)
        assert firsts.index.equals(expected.drop_duplicates(keys[:n]).index)


def test_sort_rows_of_no_rows():
    empty = _rows("str").iloc[:0]
    assert sort_rows(empty, ["text", "day"], first_of=1).empty


@pytest.mark.parametrize("text_dtype", ["object", "str"])
def test_run_starts_match_a_shift_comparison(text_dtype):
    rows = sort_rows(_rows(text_dtype), ["text", "day"]).reset_index(drop=True)
    keys = rows[["text", "day"]]
    expected = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy())
    assert run_starts(rows, ["text", "day"]).tolist() == expected.tolist()


def test_member_never_counts_missing_values():
    values = pd.Series(["a", None, "b", "c", np.nan], dtype=object)
    pool = pd.Series(["b", None, "a"], dtype="str")
    assert member(values, pool).tolist() == [True, False, True, False, False]
    assert member(values.astype("str"), pd.Index([], dtype=object)).tolist() == [False] * 5


def test_json_strings_spell_as_json_dumps():
    texts = pd.Series(["plain", 'quote " inside', "back\\slash", "中文", None, "tab\there"], dtype=object)
    spelled = json_strings(texts).to_pylist()
    assert spelled == [json.dumps(t, ensure_ascii=False) for t in texts]


def test_iso_dates_and_evidence_lists():
    days = pd.Series(pd.to_datetime(["2027-03-01", None, "1999-12-31"]))
    assert _iso(days).tolist() == ["2027-03-01", None, "1999-12-31"]
    facts = pd.DataFrame(
        {
            "child_id": ["c2", "c1", "c1", "c1"],
            "source": ["rental", "title", "title", "contract"],
            "record_key": ["r", 'k"1', 'k"1', "k2"],
            "date": pd.to_datetime(["2026-01-02", "2025-05-05", "2024-04-04", None]),
        }
    )
    evidence = _evidence(facts, ["child_id"])
    assert evidence["child_id"].tolist() == ["c1", "c2"]
    assert [json.loads(e) for e in evidence["evidence"]] == [
        [
            {"date": None, "record_key": "k2", "source": "contract"},
            {"date": "2024-04-04", "record_key": 'k"1', "source": "title"},
        ],
        [{"date": "2026-01-02", "record_key": "r", "source": "rental"}],
    ]
    item = {"date": "2026-01-02", "record_key": "r", "source": "rental"}
    assert evidence["evidence"].iloc[1] == json.dumps([item], sort_keys=True, ensure_ascii=False)
