"""``zerocert lookup`` against a published PostgreSQL warehouse with hostile input: every answer is
a clean "not found" or a one-line usage error, and the warehouse is untouched."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from access_warehouse import PASSWORDS, audit_rows, publish
from access_world import C1, C2, ELIGIBILITY, G5, KEY, UNKNOWN

from pipelines.cli import main
from pipelines.errors import NotFound, UsageError
from pipelines.lookup import lookup

pytestmark = pytest.mark.postgres

HOSTILE = [
    "' OR '1'='1",
    f"{C1}' OR '1'='1",
    f"{C1}'; DROP TABLE zerocert.eligibility; --",
    "1; SELECT pg_sleep(5)",
    "371102%",
    "37110220200101___",
    "\\x00371102",
    '"; DELETE FROM zerocert.prefill; "',
    "$1",
    "371102202001010019" * 600,  # ~10 kB of digits
    "x" * 10240,
    "３７１１０２２０２００１０１９９９",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def warehouse(pg_url, tmp_path_factory):
    from pipelines.access import create_roles

    publish(pg_url, tmp_path_factory.mktemp("lookup"), f"r-{uuid.uuid4().hex[:6]}")
    create_roles(pg_url, hmac_key=KEY, district_passwords=PASSWORDS)
    return pg_url


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM zerocert.{t}").fetchone()[0] for t in ("eligibility", "prefill")
        )


@pytest.mark.parametrize("typed", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_not_found_or_a_usage_error(warehouse, typed, capsys):
    before = counts(warehouse)
    status = main(["lookup", typed, "--warehouse", warehouse])
    out, err = capsys.readouterr()
    assert status in (NotFound.exit_status, UsageError.exit_status)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zerocert: ") and "Traceback" not in err
    assert "not found" in lines[0] or "not a resident ID" in lines[0]
    leaked = C1 in err
    assert not leaked and len(err) < 300
    assert counts(warehouse) == before


def test_nul_character_is_a_usage_error(warehouse):
    with pytest.raises(UsageError):
        lookup(warehouse, C1[:10] + "\x00" + C1[10:])


def test_valid_unknown_id_is_not_found_and_masked(warehouse, capsys):
    unknown = UNKNOWN
    assert main(["lookup", unknown, "--warehouse", warehouse]) == NotFound.exit_status
    err = capsys.readouterr().err
    leaked = unknown in err
    assert "not found" in err and not leaked and unknown[-4:] in err


def test_repairable_forms_are_found(warehouse):
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in C1)  # ０-９ and Ｘ
    document = lookup(warehouse, f"  {full_width} ")
    assert {row["school_code"] for row in document["as_child"]["eligibility"]} == set(
        ELIGIBILITY.loc[ELIGIBILITY["child_id"] == C1, "school_code"]
    )
    assert "as_guardian" in lookup(warehouse, G5)


def test_district_login_answers_only_for_its_district_and_is_audited(warehouse):
    database = warehouse.rsplit("/", 1)[1]
    district = f"postgresql+psycopg://enrollment_371102:{PASSWORDS['371102']}@127.0.0.1:5432/{database}"
    before = len(audit_rows(warehouse))
    assert lookup(district, C1)["as_child"]["eligibility"]
    with pytest.raises(NotFound):
        lookup(district, C2)  # a child of the other district
    # each lookup asked both functions, and the rows were committed
    rows = audit_rows(warehouse)[before:]
    assert [(r[3], r[6]) for r in rows] == [
        ("prefill_of", False),
        ("eligibility_of", True),
        ("prefill_of", False),
        ("eligibility_of", False),
    ]
