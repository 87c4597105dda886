"""Who may read what in the PostgreSQL warehouse: roles, lookup functions, the lookup audit and
the pseudonymized tables analysts read.

Roles (warehouse.md, "Who may read what"; warehouse/roles.md is the operator's guide):

* ``zerocert_etl`` owns the schema, every table and every function, and is the only writer.
* ``enrollment_reader`` is a group role. Each district's enrollment system logs in as its own
  member of it, ``enrollment_<district_code>``, with a password from configuration. The group
  holds no privilege on any table: only EXECUTE on three ``SECURITY DEFINER`` functions owned by
  ``zerocert_etl`` (``prefill_of``, ``eligibility_of``, ``school_applicants``). The functions
  take the district from ``reader_district`` keyed by ``session_user`` -- the login, which no
  ``SET``, ``set_config`` or ``SET ROLE`` changes -- and answer only for people and schools of
  that district, NULL (or no rows) otherwise. With no table privilege there is nothing to
  EXPLAIN or to probe through an index: every base table answers "permission denied".
* ``analyst`` reads aggregates and pseudonymized tables only, built so that no combination of
  their quasi-identifiers describes fewer than ``MIN_GROUP`` people (``analyst_citizen``,
  ``analyst_eligibility``, ``demand_by_school``).

Every lookup function call appends to ``lookup_audit`` (login, district, function, the person as
an HMAC, found or not) before it returns, and writes the same facts as a server log line. The
row shares the caller's transaction, so a caller that rolls back takes the row with it; the log
line and the gap it leaves in ``call_no`` (a sequence, which no rollback resets) remain, and
``zerocert audit-lookups --gaps`` counts them. PostgreSQL has no autonomous transactions; that
is the strongest guarantee it offers without an extension.

Key handling: the one configured key (``ZEROCERT_HMAC_KEY`` / ``ZEROCERT_HMAC_KEY_FILE``) never
enters the database. Each use gets its own key derived from it (``derived_key``): the analyst
tables' keys, and the audit key whose HMAC pads sit in the owner-only ``lookup_secret`` so the
functions can hash inside the database with the built-in ``sha256``. Whoever reads
``lookup_secret`` can hash IDs for the audit, nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UsageError

log = logging.getLogger(__name__)

ETL_ROLE, READER_ROLE, ANALYST_ROLE = "zerocert_etl", "enrollment_reader", "analyst"
LOGIN_PREFIX = "enrollment_"
MIN_KEY_BYTES = 16
MIN_GROUP = 5  # k: fewest people any published combination of quasi-identifiers may describe
DISTRICT_CODE = re.compile(r"\d{6}")
LOOKUP_FUNCTIONS = ("prefill_of(text)", "eligibility_of(text)", "school_applicants(text)")
AUDIT_PURPOSE = "lookup_audit"

# Tables holding one district's people or schools: row-level security stays on with no reader
# policy, so a privilege granted by mistake still shows no row.
DISTRICT_SCOPED_TABLES = (
    "citizen",
    "property_holding",
    "rental_holding",
    "employment",
    "guardianship",
    "ineligibility",
    "prefill",
    "eligibility",
    "guardian_eligibility",
    "school",
)
ANALYST_TABLES = (
    "analyst_citizen",
    "analyst_eligibility",
    "demand_by_school",
    "school",
    "source_snapshot",
    "address_catchment",
    "analyst_school_demand",
    "analyst_district_summary",
    "analyst_source_quality",
    "analyst_catchment_forecast",
)
# Persistent access tables (not published: they keep history across runs).
ACCESS_STATE_TABLES = ("reader_district", "lookup_secret", "lookup_audit")


def district_login(district: str) -> str:
    """``enrollment_371102``: the login role of one district's enrollment system."""
    if not DISTRICT_CODE.fullmatch(district or ""):
        raise UsageError(f"not a district code (six digits): {district!r}")
    return LOGIN_PREFIX + district


# --- pure transforms -------------------------------------------------------------------------


def school_table(schools: pd.DataFrame) -> pd.DataFrame:
    """``school`` rows from schools.csv: the school -> district map the functions read."""
    out = schools[["school_code", "level", "school_name", "district_code"]].astype("string")
    capacity = pd.to_numeric(schools["capacity"], errors="coerce").astype("Int64")
    return out.assign(capacity=capacity).drop_duplicates("school_code").reset_index(drop=True)


def district_scope(
    eligibility: pd.DataFrame,
    guardianship: pd.DataFrame,
    schools: pd.DataFrame,
    ineligibility: pd.DataFrame | None = None,
    citizen: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``(citizen_id, district_code)``: whom each district's enrollment system may look up.

    A child belongs to every district where it has an eligibility row (two districts: both), and
    a child with no school at all to the district of its hukou region (its district still has
    to answer the family); guardians belong wherever one of their children does.
    """
    districts = schools[["school_code", "district_code"]].astype("string").drop_duplicates("school_code")
    placed = eligibility[["child_id", "school_code"]].merge(districts, on="school_code", how="left")
    unknown = placed["district_code"].isna()
    if unknown.any():
        log.warning(
            "district scope: %d eligibility row(s) name a school missing from schools.csv; no district login sees them",
            int(unknown.sum()),
        )
    children = [placed.loc[~unknown, ["child_id", "district_code"]]]
    if ineligibility is not None and citizen is not None:
        homes = citizen[["citizen_id", "hukou_region_code"]].rename(
            columns={"citizen_id": "child_id", "hukou_region_code": "district_code"}
        )
        unplaced = ineligibility[["child_id"]].drop_duplicates().merge(homes, on="child_id")
        known = unplaced["district_code"].isin(districts["district_code"])
        children.append(unplaced.loc[known, ["child_id", "district_code"]])
    children_scope = pd.concat(children, ignore_index=True).astype("string").drop_duplicates()
    guardians = guardianship[["child_id", "guardian_id"]].astype("string").merge(children_scope, on="child_id")
    scope = pd.concat(
        [
            children_scope.rename(columns={"child_id": "citizen_id"}),
            guardians[["guardian_id", "district_code"]].rename(columns={"guardian_id": "citizen_id"}),
        ],
        ignore_index=True,
    )
    return scope.drop_duplicates().sort_values(["citizen_id", "district_code"]).reset_index(drop=True)


def derived_key(key: bytes, purpose: str) -> bytes:
    """A key of its own for one use of the configured key (HMAC-SHA256 of the purpose's name).

    Pseudonyms of different tables then do not join, and the audit key the database holds
    reveals nothing about the analysts' keys.
    """
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes")
    return hmac.new(key, f"zerocert:{purpose}".encode(), hashlib.sha256).digest()


def pseudonymize(ids: pd.Series, key: bytes) -> pd.Series:
    """Hex ``HMAC-SHA256(key, id)`` per ID, computed once per distinct ID; missing stays missing."""
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes")
    codes, distinct = pd.factorize(ids)
    digests = np.array(
        [hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest() for v in distinct] + [None], dtype=object
    )  # codes == -1 (missing) pick the trailing None
    return pd.Series(digests[codes], index=ids.index, dtype="string")


def person_hash(key: bytes, resident_id: str) -> str:
    """The audit's name for a person: hex HMAC-SHA256 under the audit key (what the functions store)."""
    return hmac.new(derived_key(key, AUDIT_PURPOSE), resident_id.encode(), hashlib.sha256).hexdigest()


def audit_key_id(key: bytes) -> str:
    """A short fingerprint of the audit key: tells which key hashed an audit row, reveals nothing."""
    return hmac.new(derived_key(key, AUDIT_PURPOSE), b"key id", hashlib.sha256).hexdigest()[:16]


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """RFC 2104 inner and outer pads of a 32-byte key: HMAC = sha256(outer || sha256(inner || m))."""
    block = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def first_sufficient_level(signatures: Sequence[pd.Series], k: int = MIN_GROUP) -> pd.Series:
    """Per unit, the first generalization level at which it shares its signature with at least
    ``k - 1`` other units published at that same level; NA when no level does (suppress it).

    ``signatures[i]`` holds each unit's quasi-identifiers at level ``i`` (finest first) as one
    hashable value, all on the same index. Groups are counted among the units not yet placed,
    so every combination a reader sees at any level describes at least ``k`` units.
    """
    placed = pd.Series(pd.NA, index=signatures[0].index, dtype="Int64")
    for depth, signature in enumerate(signatures):
        pending = signature[placed.isna().to_numpy()]
        if pending.empty:
            break
        shared = pending.map(pending.value_counts(dropna=False)).to_numpy()
        placed.loc[pending.index[shared >= k]] = depth
    return placed


def _row_signature(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    if not columns:
        return pd.Series(0, index=frame.index)
    return frame.groupby(list(columns), dropna=False, sort=False).ngroup()


def _set_signature(unit: np.ndarray, code: np.ndarray) -> pd.Series:
    """Per unit, one number naming the multiset of its rows' codes: equal sets, equal numbers."""
    rows = pd.DataFrame({"unit": unit, "code": code}).sort_values(["unit", "code"], kind="stable")
    rows["slot"] = rows.groupby("unit", sort=False).cumcount()
    wide = rows.pivot(index="unit", columns="slot", values="code")  # shorter sets padded with NaN
    return wide.groupby(list(wide.columns), dropna=False, sort=False).ngroup()


# Generalization of analyst_citizen's quasi-identifiers, finest first; the last keeps none.
CITIZEN_QUASI_IDENTIFIERS = ("sex", "birth_year", "hukou_status", "hukou_region_code", "urban_hukou")
CITIZEN_LEVELS: tuple[tuple[str, ...], ...] = (
    CITIZEN_QUASI_IDENTIFIERS,
    ("sex", "birth_year", "hukou_region_code"),
    ("birth_year",),
    (),
)


def analyst_citizen(citizen: pd.DataFrame, key: bytes, k: int = MIN_GROUP) -> pd.DataFrame:
    """Citizens without identity: no ID, name, household or address; birth year only.

    Each row keeps the finest level of ``CITIZEN_LEVELS`` at which at least ``k`` people share
    its values; the quasi-identifiers a level drops are NULL (rare statuses first, then sex and
    region, then the birth year).
    """
    birth = pd.to_datetime(citizen["birth_date"])
    out = pd.DataFrame(
        {
            "citizen_key": pseudonymize(citizen["citizen_id"], key),
            "sex": citizen["sex"].astype("string"),
            "birth_year": birth.dt.year.astype("Int64"),
            "hukou_status": citizen["hukou_status"].astype("string"),
            "hukou_region_code": citizen["hukou_region_code"].astype("string"),
            "urban_hukou": citizen["urban_hukou"].astype("boolean"),
        }
    )
    depth = first_sufficient_level([_row_signature(out, level) for level in CITIZEN_LEVELS], k)
    for column in CITIZEN_QUASI_IDENTIFIERS:
        kept_at = [i for i, level in enumerate(CITIZEN_LEVELS) if column in level]
        out.loc[~depth.isin(kept_at).to_numpy(), column] = pd.NA
    generalized = int((depth.fillna(len(CITIZEN_LEVELS)) > 0).sum())
    if generalized:
        log.info(
            "analyst_citizen: %d of %d rows generalized so that every combination describes at least %d people",
            generalized,
            len(out),
            k,
        )
    return out


def priority_periods(dates: pd.Series) -> list[pd.Series]:
    """A date at each generalization level: month, quarter, year, nothing ('2019-03', '2019-Q1',
    '2019', NA)."""
    day = pd.to_datetime(dates)
    year = day.dt.year.astype("Int64").astype("string")
    return [
        day.dt.strftime("%Y-%m").astype("string"),
        year + "-Q" + day.dt.quarter.astype("Int64").astype("string"),
        year,
        pd.Series(pd.NA, index=dates.index, dtype="string"),
    ]


def analyst_eligibility(eligibility: pd.DataFrame, key: bytes, k: int = MIN_GROUP) -> pd.DataFrame:
    """Eligibility rows by pseudonymous child, with the priority date as a period at most a month
    fine; no guardian ID, no evidence.

    The child key links a child's rows, so the quasi-identifier of a child is the set of all its
    rows (level, school, category, period): each child is published at the finest period (month,
    quarter, year, none) at which at least ``k`` children show exactly the same set; children for
    whom no level does are left out. The key is an HMAC under a key of this table's own, so these
    rows do not join ``analyst_citizen``'s (that would make both tables' attributes one
    combination).
    """
    rows = eligibility[["child_id", "level", "school_code", "category", "priority_date"]].reset_index(drop=True)
    child = rows["child_id"].astype("string").to_numpy()
    periods = priority_periods(rows["priority_date"])
    signatures = []
    for period in periods:
        code = _row_signature(
            rows[["level", "school_code", "category"]].assign(period=period),
            ["level", "school_code", "category", "period"],
        )
        signatures.append(_set_signature(child, code.to_numpy()))
    depth = first_sufficient_level(signatures, k)
    row_depth = pd.Series(child).map(depth)
    kept = row_depth.notna().to_numpy()
    period = pd.Series(pd.NA, index=rows.index, dtype="string")
    for level, values in enumerate(periods):
        at = (row_depth == level).fillna(False).to_numpy()
        period[at] = values[at]
    suppressed = int((~kept).sum())
    if suppressed:
        log.info(
            "analyst_eligibility: %d of %d rows left out (fewer than %d children share their schools and categories)",
            suppressed,
            len(rows),
            k,
        )
    out = rows.loc[kept]
    return pd.DataFrame(
        {
            "child_key": pseudonymize(out["child_id"], derived_key(key, "analyst_eligibility")),
            **{c: out[c].astype("string") for c in ("level", "school_code", "category")},
            "priority_period": period[kept],
        }
    ).reset_index(drop=True)


def demand_by_school(eligibility: pd.DataFrame, k: int = MIN_GROUP) -> pd.DataFrame:
    """Distinct children per school, level and category, what planners size classes by; counts
    under ``k`` are suppressed (left out)."""
    counts = (
        eligibility.groupby(["school_code", "level", "category"], observed=True)["child_id"]
        .nunique()
        .rename("children")
        .reset_index()
    )
    counts = counts.loc[counts["children"] >= k].reset_index(drop=True)
    return counts.astype({"school_code": "string", "level": "string", "category": "string", "children": "int64"})


def build_access_frames(
    tables: Mapping[str, pd.DataFrame], schools: pd.DataFrame, hmac_key: bytes | None
) -> dict[str, pd.DataFrame]:
    """Every access table of one run; the pseudonymized ones only when a key is configured."""
    out = {
        "school": school_table(schools),
        "district_scope": district_scope(
            tables["eligibility"], tables["guardianship"], schools, tables.get("ineligibility"), tables.get("citizen")
        ),
        "demand_by_school": demand_by_school(tables["eligibility"]),
    }
    if hmac_key is None:
        log.warning(
            "no HMAC key configured (ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE): "
            "the pseudonymized analyst tables are not produced"
        )
        return out
    out["analyst_citizen"] = analyst_citizen(tables["citizen"], hmac_key)
    out["analyst_eligibility"] = analyst_eligibility(tables["eligibility"], hmac_key)
    return out


# --- configuration and files -----------------------------------------------------------------


def hmac_key_from_config(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The configured HMAC key: ``ZEROCERT_HMAC_KEY`` (text) or ``ZEROCERT_HMAC_KEY_FILE`` (a file
    whose content, stripped of surrounding whitespace, is the key); None when neither is set."""
    environ = os.environ if environ is None else environ
    text, path = environ.get("ZEROCERT_HMAC_KEY"), environ.get("ZEROCERT_HMAC_KEY_FILE")
    if text and path:
        raise UsageError("set either ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE, not both")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the HMAC key file {path}: {exc.strerror}") from None
    elif text:
        key = text.strip().encode()
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes")
    return key


PASSWORD_ENV_PREFIX = "ZEROCERT_DISTRICT_PASSWORD_"
PASSWORDS_FILE_ENV = "ZEROCERT_DISTRICT_PASSWORDS_FILE"


def district_passwords_from_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """District code -> password of its login, from a file and from the environment.

    The file (``path``, else ``ZEROCERT_DISTRICT_PASSWORDS_FILE``) holds ``371102 = password``
    lines (``#`` comments, blank lines allowed) and must be readable by its owner only; a
    variable ``ZEROCERT_DISTRICT_PASSWORD_371102`` sets or overrides one district. Errors name
    the line, never its content.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(PASSWORDS_FILE_ENV)
    passwords: dict[str, str] = {}
    if path:
        path = Path(path)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the district password file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the district password file {path} is not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(
                f"the district password file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
            )
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            district, sep, password = (part.strip() for part in line.partition("="))
            if not sep or not DISTRICT_CODE.fullmatch(district) or not password:
                raise UsageError(f"{path}, line {number}: expected 'district_code = password'")
            passwords[district] = password
    for name, value in environ.items():
        if name.startswith(PASSWORD_ENV_PREFIX):
            district = name[len(PASSWORD_ENV_PREFIX) :]
            if not DISTRICT_CODE.fullmatch(district) or not value:
                raise UsageError(
                    f"{name}: expected {PASSWORD_ENV_PREFIX}<six-digit district> set to a non-empty password"
                )
            passwords[district] = value
    return passwords


_NEEDED = {
    "eligibility": ["child_id", "level", "school_code", "category", "priority_date"],
    "guardianship": ["child_id", "guardian_id"],
    "ineligibility": ["child_id"],
    "citizen": ["citizen_id", "sex", "birth_date", "hukou_status", "hukou_region_code", "urban_hukou"],
}


def build_access_tables(
    tables: Mapping[str, Path], schools_csv: Path, hmac_key: bytes | None, out_dir: Path
) -> dict[str, Path]:
    """Read the engine's Parquet outputs and schools.csv, write the access tables as Parquet.

    Returns table name -> Parquet path, to add to what ``publish_run`` publishes.
    """
    missing = [name for name in ("eligibility", "guardianship") if name not in tables]
    if missing:
        raise UsageError(f"access tables need the engine's {missing[0]} table")
    try:
        schools = pd.read_csv(schools_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UsageError(f"no schools list at {schools_csv}") from None
    frames = {
        name: pd.read_parquet(tables[name], columns=columns) for name, columns in _NEEDED.items() if name in tables
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in build_access_frames(frames, schools, hmac_key).items():
        written[name] = out_dir / f"{name}.parquet"
        frame.to_parquet(written[name], index=False)
    return written


# --- the database side: persistent tables, lookup functions, grants --------------------------

_STATE_DDL = """
CREATE TABLE IF NOT EXISTS zerocert.reader_district (
    login name PRIMARY KEY,
    district_code text NOT NULL CHECK (district_code ~ '^[0-9]{6}$'));
CREATE TABLE IF NOT EXISTS zerocert.lookup_secret (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key_id text NOT NULL, inner_pad bytea NOT NULL, outer_pad bytea NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now());
CREATE SEQUENCE IF NOT EXISTS zerocert.lookup_call_no;
CREATE TABLE IF NOT EXISTS zerocert.lookup_audit (
    call_no bigint NOT NULL,
    looked_at timestamptz NOT NULL,
    login name NOT NULL,
    district_code text,
    function text NOT NULL,
    person_hash text COLLATE "C",
    school_code text,
    found boolean NOT NULL,
    key_id text NOT NULL);
CREATE INDEX IF NOT EXISTS lookup_audit_person_hash_idx ON zerocert.lookup_audit (person_hash);
CREATE INDEX IF NOT EXISTS lookup_audit_call_no_idx ON zerocert.lookup_audit (call_no);
"""

# Every lookup function: SECURITY DEFINER, search_path pinned (pg_temp last), its server-log line
# kept from the caller (client_min_messages) and without the caller's statement text, which may
# quote an ID (log_min_error_statement: the owner needs SET on it, PostgreSQL 15). The steps all
# three share are rendered into each body from the pieces below (a call to a PL/pgSQL helper
# would cost a third of the lookup).
_DEFINER = (
    "LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning"
)
_QUIET_STATEMENT = " SET log_min_error_statement = panic"
_DECLARE = """
  audit_key record;
  login_district text;
  this_call bigint;
  person text;
  person_key text;"""
# Refuse a read-only transaction (the audit row could not be written), take a call number (a
# sequence: no rollback takes it back), the login's district and the audit key. No fsync wait
# per lookup (3 ms on a plain disk): a server crash may lose the last ~0.6 s of audit rows, never
# their server-log lines nor the call numbers they leave missing.
_BEGIN = """
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION 'zerocert lookups are audited: call them in a read-write transaction'
      USING ERRCODE = 'read_only_sql_transaction';
  END IF;
  SELECT k.key_id, k.inner_pad, k.outer_pad INTO audit_key FROM zerocert.lookup_secret k;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'zerocert lookup audit has no key: run zerocert roles'
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  this_call := nextval('zerocert.lookup_call_no');
  SELECT r.district_code INTO login_district FROM zerocert.reader_district r WHERE r.login = session_user;
  PERFORM set_config('synchronous_commit', 'off', true);"""


def _resident_id(typed: str) -> str:
    """The 18-character form of a typed ID (trimmed, upper-case x), NULL for anything else."""
    return (
        f"CASE WHEN length({typed}) > 64 THEN NULL WHEN upper(btrim({typed})) ~ '^[0-9]{{17}}[0-9X]$' "
        f"THEN upper(btrim({typed})) END"
    )


def _person_hash(resident: str, key: str = "audit_key") -> str:
    """HMAC-SHA256 under the audit key from its RFC 2104 pads, with the built-in sha256."""
    return f"encode(sha256({key}.outer_pad || sha256({key}.inner_pad || convert_to({resident}, 'UTF8'))), 'hex')"


def _in_scope(person: str) -> str:
    # the district comes first: a person of another district and nobody cost the same probe
    return (
        f"login_district IS NOT NULL AND {person} IS NOT NULL AND EXISTS (\n"
        f"      SELECT 1 FROM zerocert.district_scope s\n"
        f'      WHERE s.citizen_id = {person} COLLATE "C" AND s.district_code = login_district COLLATE "C")'
    )


_AUDIT_COLUMNS = "call_no, looked_at, login, district_code, function, person_hash, school_code, found, key_id"


def _record(function: str, person: str, school: str, found: str) -> str:
    return f"""
  person_key := {_person_hash(person)};
  INSERT INTO zerocert.lookup_audit ({_AUDIT_COLUMNS})
  VALUES (this_call, clock_timestamp(), session_user, login_district, '{function}', person_key, {school},
          {found}, audit_key.key_id);
  --LOG RAISE LOG 'zerocert lookup call %: login % district % function {function} person % school % found %',
  --LOG   this_call, session_user, coalesce(login_district, '-'), coalesce(person_key, '-'),
  --LOG   coalesce({school}, '-'), {found};"""


_FUNCTIONS_TEMPLATE = f"""
CREATE OR REPLACE FUNCTION zerocert.prefill_of(guardian_id text) RETURNS jsonb {_DEFINER} AS $$
DECLARE{_DECLARE}
  doc jsonb;
BEGIN{_BEGIN}
  person := {_resident_id("prefill_of.guardian_id")};
  IF {_in_scope("person")} THEN
    SELECT p.document INTO doc FROM zerocert.prefill p WHERE p.guardian_id = person COLLATE "C";
  END IF;{_record("prefill_of", "person", "NULL::text", "doc IS NOT NULL")}
  RETURN doc;
END $$;

CREATE OR REPLACE FUNCTION zerocert.eligibility_of(child_id text) RETURNS jsonb {_DEFINER} AS $$
DECLARE{_DECLARE}
  doc jsonb;
BEGIN{_BEGIN}
  person := {_resident_id("eligibility_of.child_id")};
  IF {_in_scope("person")} THEN
    SELECT jsonb_build_object(
      'eligibility', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                 'level', e.level, 'school_code', e.school_code, 'category', e.category,
                 'priority_date', e.priority_date, 'basis_guardian_id', e.basis_guardian_id,
                 'evidence', e.evidence, 'policy_id', e.policy_id, 'run_id', e.run_id)
               ORDER BY e.level, e.category, e.school_code)
        FROM zerocert.eligibility e JOIN zerocert.school sc ON sc.school_code = e.school_code
        WHERE e.child_id = person COLLATE "C" AND sc.district_code = login_district), '[]'::jsonb),
      'ineligibility', coalesce((
        SELECT jsonb_agg(jsonb_build_object('level', i.level, 'reasons', i.reasons,
                                            'policy_id', i.policy_id, 'run_id', i.run_id)
               ORDER BY i.level)
        FROM zerocert.ineligibility i WHERE i.child_id = person COLLATE "C"), '[]'::jsonb))
    INTO doc;
    IF doc -> 'eligibility' = '[]'::jsonb AND doc -> 'ineligibility' = '[]'::jsonb THEN
      doc := NULL;
    END IF;
  END IF;{_record("eligibility_of", "person", "NULL::text", "doc IS NOT NULL")}
  RETURN doc;
END $$;

CREATE OR REPLACE FUNCTION zerocert.school_applicants(school_code text)
RETURNS TABLE (child_id text, level text, category text, priority_date date,
               basis_guardian_id text, evidence jsonb, policy_id text, run_id text) {_DEFINER} AS $$
DECLARE{_DECLARE}
  wanted text := left(school_applicants.school_code, 64);
  applicants bigint := 0;
BEGIN{_BEGIN}
  IF login_district IS NOT NULL AND EXISTS (
      SELECT 1 FROM zerocert.school s
      WHERE s.school_code = wanted COLLATE "C" AND s.district_code = login_district COLLATE "C") THEN
    -- one statement: the rows returned and their audit rows (one per child) share one snapshot
    RETURN QUERY
      WITH applicant AS (
        SELECT e.child_id, e.level, e.category, e.priority_date, e.basis_guardian_id, e.evidence,
               e.policy_id, e.run_id
        FROM zerocert.eligibility e WHERE e.school_code = wanted COLLATE "C"),
      audited AS (
        INSERT INTO zerocert.lookup_audit ({_AUDIT_COLUMNS})
        SELECT this_call, clock_timestamp(), session_user, login_district, 'school_applicants',
               {_person_hash("c.child_id")}, wanted, true, audit_key.key_id
        FROM (SELECT DISTINCT a.child_id FROM applicant a) c
        RETURNING 1)
      SELECT a.child_id, a.level, a.category, a.priority_date, a.basis_guardian_id, a.evidence,
             a.policy_id, a.run_id
      FROM applicant a ORDER BY a.level, a.category, a.priority_date, a.child_id;
    GET DIAGNOSTICS applicants = ROW_COUNT;
  END IF;
  IF applicants = 0 THEN{_record("school_applicants", "NULL::text", "wanted", "false")}
  ELSE
    NULL;
    --LOG RAISE LOG 'zerocert lookup call %: login % district % function school_applicants school % rows %',
    --LOG   this_call, session_user, login_district, wanted, applicants;
  END IF;
END $$;
"""


def lookup_functions_sql(server_log: bool) -> str:
    """The three lookup functions; with ``server_log``, each call also writes its server-log line."""
    if not server_log:
        return "\n".join(line for line in _FUNCTIONS_TEMPLATE.splitlines() if "--LOG" not in line)
    return _FUNCTIONS_TEMPLATE.replace(_DEFINER, _DEFINER + _QUIET_STATEMENT).replace("--LOG ", "")


# Server-side large-object creators: PUBLIC may execute them by default (revoking needs a superuser).
_LARGE_OBJECT_CREATORS = (
    "lo_creat(integer)",
    "lo_create(oid)",
    "lo_from_bytea(oid, bytea)",
    "lo_import(text)",
    "lo_import(text, oid)",
)


def access_statements(database: str, tables: Iterable[str], *, server_log: bool = True) -> list[str]:
    """Ownership, revokes, the lookup functions, RLS and grants, in order; idempotent."""
    readers = f"{READER_ROLE}, {ANALYST_ROLE}"
    tables = list(tables)
    stmts = [
        f"GRANT CONNECT ON DATABASE {database} TO {ETL_ROLE}, {readers}",
        f"GRANT CREATE, TEMPORARY ON DATABASE {database} TO {ETL_ROLE}",
        f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"ALTER SCHEMA zerocert OWNER TO {ETL_ROLE}",
        "REVOKE ALL ON SCHEMA zerocert FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA zerocert TO {readers}",
        _STATE_DDL,
    ]
    every_table = [*tables, *ACCESS_STATE_TABLES]
    stmts += [f"ALTER TABLE zerocert.{t} OWNER TO {ETL_ROLE}" for t in every_table]
    stmts += [f"REVOKE ALL ON zerocert.{t} FROM PUBLIC, {readers}" for t in every_table]
    stmts += [
        f"ALTER SEQUENCE zerocert.lookup_call_no OWNER TO {ETL_ROLE}",
        f"REVOKE ALL ON SEQUENCE zerocert.lookup_call_no FROM PUBLIC, {readers}",
    ]
    # the session-setting design this replaces: its policies first, then their functions
    stmts += [f"DROP POLICY IF EXISTS district_reader ON zerocert.{t}" for t in DISTRICT_SCOPED_TABLES]
    stmts += [
        "DROP FUNCTION IF EXISTS zerocert.reader_sees_citizen(text)",
        "DROP FUNCTION IF EXISTS zerocert.reader_sees_school(text)",
    ]
    stmts.append(lookup_functions_sql(server_log))
    for fn in LOOKUP_FUNCTIONS:
        stmts += [
            f"ALTER FUNCTION zerocert.{fn} OWNER TO {ETL_ROLE}",
            f"REVOKE ALL ON FUNCTION zerocert.{fn} FROM PUBLIC",
        ]
    stmts += [f"GRANT EXECUTE ON FUNCTION zerocert.{fn} TO {READER_ROLE}" for fn in LOOKUP_FUNCTIONS]
    stmts += [f"ALTER TABLE zerocert.{t} ENABLE ROW LEVEL SECURITY" for t in DISTRICT_SCOPED_TABLES]
    for table in ANALYST_TABLES:
        stmts.append(f"GRANT SELECT ON zerocert.{table} TO {ANALYST_ROLE}")
        if table in DISTRICT_SCOPED_TABLES:  # RLS is on there: analysts see every row of it
            stmts += [
                f"DROP POLICY IF EXISTS analyst_all ON zerocert.{table}",
                f"CREATE POLICY analyst_all ON zerocert.{table} FOR SELECT TO {ANALYST_ROLE} USING (true)",
            ]
    stmts += [
        f"ALTER ROLE {READER_ROLE} IN DATABASE {database} RESET ALL",
        f"ALTER ROLE {ANALYST_ROLE} IN DATABASE {database} SET default_transaction_read_only = on",
        f"ALTER ROLE {ANALYST_ROLE} IN DATABASE {database} SET search_path = zerocert",
    ]
    return stmts


def login_statements(database: str, logins: Iterable[str]) -> list[str]:
    """Per district login in this database: only the defaults we set (a login may have stored
    its own with ``ALTER ROLE ... IN DATABASE``; PostgreSQL lets every role do that)."""
    stmts = []
    for login in logins:
        stmts += [
            f"ALTER ROLE {login} IN DATABASE {database} RESET ALL",
            f"ALTER ROLE {login} IN DATABASE {database} SET search_path = zerocert",
        ]
    return stmts


# --- cluster-wide roles ------------------------------------------------------------------------


def _on_shared_catalog(conn, statement, params=None) -> None:
    """One statement on the cluster-wide role catalogs, in its own transaction.

    Roles are shared by every database of the server, so other warehouses (and other test
    runs) may create or alter the same role at the same moment: "already exists" means done,
    "tuple concurrently updated" is retried.
    """
    import psycopg

    for attempt in range(10):
        try:
            with conn.transaction():
                conn.execute(statement, params)
            return
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            return
        except psycopg.errors.InternalError_ as exc:
            if "concurrently" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))


def _role(conn, role: str) -> dict | None:
    row = conn.execute(
        """SELECT rolcanlogin, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication
                                 OR rolbypassrls
                          FROM pg_roles WHERE rolname = %s""",
        (role,),
    ).fetchone()
    return None if row is None else {"login": row[0], "privileged": row[1]}


def _create_role(conn, role: str, attributes: str) -> None:
    _on_shared_catalog(conn, f"CREATE ROLE {role} {attributes}")


def _set_password(conn, role: str, password: str) -> None:
    """LOGIN with a password hashed by libpq (SCRAM): the clear text never reaches the server."""
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
    _on_shared_catalog(
        conn, sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
    )


def _ensure_district_login(conn, login: str, password: str | None) -> None:
    from psycopg import sql

    if _role(conn, login) is None:
        _create_role(conn, login, f"NOLOGIN IN ROLE {READER_ROLE}")  # LOGIN once a password is issued
    member = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (login, READER_ROLE)).fetchone()[0]
    if not member:
        _on_shared_catalog(conn, f"GRANT {READER_ROLE} TO {login}")
    if _role(conn, login)["privileged"]:
        _on_shared_catalog(conn, f"ALTER ROLE {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
    others = conn.execute(
        """SELECT count(*) FROM pg_auth_members m
                             JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
                             WHERE r.rolname = %s AND g.rolname <> %s""",
        (login, READER_ROLE),
    ).fetchone()[0]
    if others:
        log.warning(
            "%s is a member of %d role(s) besides %s: it may hold more than the lookup functions (check with \\du %s)",
            login,
            others,
            READER_ROLE,
            login,
        )
    members = [
        r[0]
        for r in conn.execute(
            """SELECT quote_ident(m.rolname) FROM pg_auth_members a
                                              JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
                                              WHERE g.rolname = %s""",
            (login,),
        )
    ]
    for member in members:  # nobody but the login itself should hold a district login's role
        log.warning("%s had been granted to %s: revoked (a district login is nobody's group)", login, member)
        _on_shared_catalog(conn, f"REVOKE {login} FROM {member}")
    stored = conn.execute(
        """SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                             WHERE r.rolname = %s AND s.setdatabase = 0""",
        (login,),
    ).fetchone()[0]
    if stored:  # defaults the login stored for itself in every database
        _on_shared_catalog(conn, sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(login)))
    if password is not None:
        _set_password(conn, login, password)


def create_roles(
    url: str,
    *,
    hmac_key: bytes | None,
    district_passwords: Mapping[str, str] | None = None,
    issue: Iterable[str] | None = None,
    analyst_password: str | None = None,
    etl_password: str | None = None,
) -> dict:
    """Create the roles and district logins and (re)apply every function, grant and policy.

    Districts are those with a configured password plus those of the published ``school``
    table; each gets its login ``enrollment_<code>`` (created without LOGIN) and its row in
    ``reader_district``. Passwords are issued (the login may log in) for the configured
    districts, or only those in ``issue``. Run it as a superuser or a role with CREATEROLE that
    owns the database; safe to repeat and to run concurrently. Needs the HMAC key: the lookup
    functions audit with a key derived from it.
    """
    from pipelines.warehouse import PUBLISH_LOCK, ensure_warehouse, postgresql_warehouse
    from pipelines.warehouse_schema import TABLES

    wh = postgresql_warehouse(url, "roles and lookup functions exist only in a PostgreSQL warehouse")
    if hmac_key is None:
        raise UsageError(
            "zerocert roles needs the HMAC key (ZEROCERT_HMAC_KEY or ZEROCERT_HMAC_KEY_FILE): "
            "lookups are audited under a key derived from it"
        )
    audit_key = derived_key(hmac_key, AUDIT_PURPOSE)
    passwords = dict(district_passwords or {})
    issue = set(passwords) if issue is None else set(issue)
    for district in issue:
        district_login(district)
        if district not in passwords:
            raise UsageError(
                f"no password configured for district {district} ({PASSWORD_ENV_PREFIX}{district} or the password file)"
            )
    ensure_warehouse(url)
    with wh.connect() as conn:
        conn.autocommit = True
        for role, attributes, password in (
            (ETL_ROLE, "LOGIN", etl_password),
            (ANALYST_ROLE, "LOGIN", analyst_password),
            (READER_ROLE, "NOLOGIN", None),
        ):
            if _role(conn, role) is None:
                _create_role(conn, role, attributes)
            if password is not None:
                _set_password(conn, role, password)
        server_log = _may_quiet_statements(conn)
        if _role(conn, READER_ROLE)["login"]:
            log.warning(
                "%s can log in (an earlier zerocert made it a login): it is a group role now "
                "and its sessions get nothing; ALTER ROLE %s NOLOGIN once no client uses it",
                READER_ROLE,
                READER_ROLE,
            )
        published = {r[0] for r in conn.execute("SELECT DISTINCT district_code FROM zerocert.school")}
        odd = sorted(d for d in published if not DISTRICT_CODE.fullmatch(d or ""))
        if odd:
            log.warning("school list: %d district code(s) that are not six digits get no login", len(odd))
        districts = sorted((published - set(odd)) | set(passwords))
        for district in districts:
            _ensure_district_login(conn, district_login(district), passwords[district] if district in issue else None)

        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT quote_ident(current_database())")
            database = cur.fetchone()[0]
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))  # not during a publish
            for statement in access_statements(
                database, [*TABLES, "run_audit", "schema_version"], server_log=server_log
            ):
                cur.execute(statement)
            cur.execute("SELECT key_id FROM zerocert.lookup_secret")
            previous = cur.fetchone()
            key_id = audit_key_id(hmac_key)
            if previous is not None and previous[0] != key_id:
                log.warning(
                    "the HMAC key changed: lookup_audit rows written before now answer only to the previous key"
                )
            inner, outer = _hmac_pads(audit_key)
            cur.execute(
                """INSERT INTO zerocert.lookup_secret (singleton, key_id, inner_pad, outer_pad)
                           VALUES (true, %s, %s, %s) ON CONFLICT (singleton) DO UPDATE
                           SET key_id = excluded.key_id, inner_pad = excluded.inner_pad,
                               outer_pad = excluded.outer_pad, set_at = now()
                           WHERE lookup_secret.key_id <> excluded.key_id""",
                (key_id, inner, outer),
            )
            for district in districts:
                cur.execute(
                    """INSERT INTO zerocert.reader_district (login, district_code) VALUES (%s, %s)
                               ON CONFLICT (login) DO UPDATE SET district_code = excluded.district_code""",
                    (district_login(district), district),
                )
            for statement in login_statements(database, [district_login(d) for d in districts]):
                cur.execute(statement)
            _revoke_large_objects(cur)
        conn.commit()
    log.info(
        "roles ready: %s with %d district login(s), %d issued now; lookup functions and audit in place",
        READER_ROLE,
        len(districts),
        len(issue),
    )
    return {"districts": districts, "issued": sorted(issue)}


def _may_quiet_statements(conn) -> bool:
    """Let the owner's functions keep the caller's statement out of their server-log line."""
    import psycopg

    try:
        _on_shared_catalog(conn, f"GRANT SET ON PARAMETER log_min_error_statement TO {ETL_ROLE}")
        return True
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.SyntaxError):
        log.warning(
            "lookups get no server-log line (it needs GRANT SET ON PARAMETER "
            "log_min_error_statement TO %s: a superuser, PostgreSQL 15 or later): a lookup "
            "whose transaction rolls back is counted as a missing call number, not named",
            ETL_ROLE,
        )
        return False


def _revoke_large_objects(cur) -> None:
    import psycopg

    cur.execute("SAVEPOINT large_objects")
    try:
        for fn in _LARGE_OBJECT_CREATORS:
            cur.execute(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{fn} FROM PUBLIC")
    except psycopg.errors.InsufficientPrivilege:
        cur.execute("ROLLBACK TO SAVEPOINT large_objects")
        log.warning(
            "only a superuser can stop readers creating large objects (REVOKE EXECUTE ON "
            "FUNCTION lo_creat, lo_create, lo_from_bytea FROM PUBLIC): run zerocert roles "
            "as one once"
        )


def revoke_districts(url: str, districts: Iterable[str]) -> dict[str, int]:
    """Withdraw districts' credentials: NOLOGIN, no password, their open sessions terminated.

    Roles are cluster-wide: the login is withdrawn from every database of the server. Returns
    district -> sessions terminated. Issue again with ``create_roles(..., issue=[district])``.
    """
    import psycopg

    from pipelines.warehouse import postgresql_warehouse

    wh = postgresql_warehouse(url, "roles and lookup functions exist only in a PostgreSQL warehouse")
    logins = {district: district_login(district) for district in districts}
    terminated: dict[str, int] = {}
    with wh.connect() as conn:
        conn.autocommit = True
        for district, login in logins.items():
            if _role(conn, login) is None:
                raise UsageError(f"no login for district {district}")
            _on_shared_catalog(conn, f"ALTER ROLE {login} NOLOGIN PASSWORD NULL")
            try:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (login,)
                ).fetchall()
            except psycopg.errors.InsufficientPrivilege:
                log.warning(
                    "%s may still have open sessions: terminating them needs a superuser or pg_signal_backend", login
                )
                rows = []
            terminated[district] = sum(1 for (done,) in rows if done)
            log.info("district %s: login %s revoked, %d session(s) terminated", district, login, terminated[district])
    return terminated
