"""Resident IDs (GB 11643-1999): check character and masking.

The check character is ISO 7064 MOD 11-2 over the first 17 digits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
# The shape of an 18-character resident ID (check character not checked), and of a 15-digit one.
RESIDENT_ID_PATTERN = r"[0-9]{17}[0-9X]"
LEGACY_ID_PATTERN = r"[0-9]{15}"
# GB 32100 unified social credit code: 18 characters of its alphabet (no I, O, S, V, Z), the
# 3rd to 8th being the registering authority's administrative division code (digits).
CREDIT_CODE_PATTERN = r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}"
# Years a delivered date may carry, an ID's birth date included; an event after the extract
# date is checked apart (staging). Wide enough for a lease that runs far ahead (sources.md).
EARLIEST_YEAR = 1850
LATEST_YEAR = 2200


def check_character(first17: str) -> str:
    """The check character for 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, WEIGHTS))
    return CHECK_CHARS[total % 11]


def id_bytes(values: pd.Series, width: int) -> np.ndarray:
    """ASCII strings of exactly ``width`` characters as an (n, width) byte matrix, no per-row objects."""
    block = pa.array(values)
    if isinstance(block, pa.ChunkedArray):
        block = block.combine_chunks()
    block = block.cast(pa.binary()).cast(pa.binary(width))
    flat = np.frombuffer(block.buffers()[1], dtype=np.uint8)
    return flat[block.offset * width : (block.offset + len(block)) * width].reshape(-1, width)


def check_character_bytes(first17: np.ndarray) -> np.ndarray:
    """The check character (as an ASCII byte) of each row of an (n, 17) matrix of digit bytes.

    The weighted sum runs in float32 (BLAS, several times faster than integer ``@``), which is
    exact: any byte times any weight, summed over 17 columns, stays far below 2**24.
    """
    weighted = (first17 - ord("0")).astype(np.float32) @ np.array(WEIGHTS, dtype=np.float32)
    remainders = weighted.astype(np.int64) % 11
    return np.frombuffer(CHECK_CHARS.encode("ascii"), dtype=np.uint8)[remainders]


def check_characters(first17: pd.Series) -> pd.Series:
    """Vectorized ``check_character`` over a Series of 17-digit strings (all digits)."""
    checks = check_character_bytes(id_bytes(first17, 17))
    return pd.Series(checks.view("S1").astype(str), index=first17.index, dtype=object)


def mask_id(value: object) -> str:
    """``371102********1234``: the region and the last four, nothing that identifies a person."""
    text = "" if value is None else str(value)
    if len(text) <= 8:
        return "*" * len(text)
    return text[:6] + "*" * (len(text) - 10) + text[-4:]


def mask_name(value: object) -> str:
    """Keep the family name's first character only: 张** ."""
    text = "" if value is None else str(value)
    return text[:1] + "*" * (len(text) - 1) if text else ""


# --- staging: repair of delivered IDs -------------------------------------------------------

INVALID_ID_FORMAT = "INVALID_ID_FORMAT"
INVALID_ID_CHECKSUM = "INVALID_ID_CHECKSUM"

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space fold to their ASCII forms.
FULLWIDTH_TO_ASCII = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def fold_fullwidth(values: pd.Series) -> pd.Series:
    """Full-width digits and letters to ASCII; only the non-ASCII rows pay for ``translate``."""
    text = values.astype("str")
    wide = ~text.str.isascii().fillna(True).astype(bool)
    if wide.any():
        text = text.copy()
        text[wide] = text[wide].str.translate(FULLWIDTH_TO_ASCII)
    return text


def clean_id_text(values: pd.Series) -> pd.Series:
    """Undo the certain damage of spreadsheets and typing: spaces, full-width, ``'``, ``.0``, ``x``.

    Missing values become ``""``. Nothing that would need a guess is touched.
    """
    text = fold_fullwidth(values.fillna("").astype("str")).str.strip()
    text = text.str.removeprefix("'").str.strip()
    text = text.str.replace(r"^([0-9]{15}|[0-9]{17}[0-9Xx])\.0+$", r"\1", regex=True)
    return text.str.replace(r"^([0-9]{17})x$", r"\1X", regex=True)


def _valid_birth(first17: pd.Series) -> pd.Series:
    """The YYYYMMDD inside each ID is a real calendar date (checked once per distinct date)."""
    codes, births = pd.factorize(first17.str.slice(6, 14))
    parsed = pd.to_datetime(pd.Series(np.asarray(births, dtype=object), dtype="str"), format="%Y%m%d", errors="coerce")
    valid = (parsed.notna() & parsed.dt.year.between(EARLIEST_YEAR, LATEST_YEAR)).to_numpy()
    return pd.Series(valid[codes] if len(valid) else np.zeros(len(codes), dtype=bool), index=first17.index)


def _with_check_characters(first17: pd.Series) -> pd.Series:
    """Each 17-digit string completed by its check character (vectorized ``check_character``)."""
    digits = id_bytes(first17, 17)
    full = np.ascontiguousarray(np.column_stack([digits, check_character_bytes(digits)]))
    ids = pa.FixedSizeBinaryArray.from_buffers(pa.binary(18), len(full), [None, pa.py_buffer(full)])
    ids = ids.cast(pa.binary()).cast(pa.large_string())
    return pa.table({"id": ids}).to_pandas()["id"].astype("str").set_axis(first17.index)


def normalize_resident_ids(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Repair resident IDs where the repair is certain, and say why where it is not.

    Returns ``(ids, reasons)`` aligned with ``values``: ``ids`` holds the 18-character ID
    (upper-case ``X``), or the cleaned text where it cannot be repaired, or NA when blank;
    ``reasons`` is NA, ``INVALID_ID_FORMAT`` (not an ID in a listed form, scientific notation,
    letters inside, impossible birth date) or ``INVALID_ID_CHECKSUM``. A 15-digit legacy ID
    (born 19YY) is widened and given its computed check character, which is certain.
    Clean 18-character values, nearly all of a delivery, skip the repair steps.
    """
    index = values.index
    text = values.reset_index(drop=True).fillna("").astype("str")
    is18 = text.str.fullmatch(RESIDENT_ID_PATTERN).to_numpy(dtype=bool).copy()
    dirty = ~is18 & (text != "").to_numpy(dtype=bool)
    is15 = np.zeros(len(text), dtype=bool)
    if dirty.any():
        cleaned = clean_id_text(text[dirty])
        text = text.where(~dirty, cleaned)
        is18[dirty] = cleaned.str.fullmatch(RESIDENT_ID_PATTERN).to_numpy(dtype=bool)
        is15[dirty] = cleaned.str.fullmatch(LEGACY_ID_PATTERN).to_numpy(dtype=bool)
    first17 = text.str.slice(0, 17)
    if is15.any():
        legacy = text[is15]
        first17 = first17.where(~is15, legacy.str.slice(0, 6) + "19" + legacy.str.slice(6, 15))
    shaped = is18 | is15
    shaped &= _valid_birth(first17.where(shaped, "0" * 17)).to_numpy(dtype=bool)
    blank = (text == "").to_numpy(dtype=bool)
    reasons = np.full(len(text), pd.NA, dtype=object)
    reasons[~shaped & ~blank] = INVALID_ID_FORMAT
    ids = text.where(~blank, pd.NA)
    if shaped.any():
        rebuilt = first17 if shaped.all() else first17[shaped]
        rebuilt = _with_check_characters(rebuilt)
        if not shaped.all():
            rebuilt = rebuilt.reindex(text.index)
        wrong = is18 & (text != rebuilt).fillna(True).to_numpy(dtype=bool) & shaped
        reasons[wrong] = INVALID_ID_CHECKSUM
        ids = ids.where(~(shaped & ~wrong), rebuilt)
    return ids.set_axis(index), pd.Series(reasons, index=index, dtype="object")


CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORGANIZATION_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organization code, characters 9..17
# GB 32100 registration authority + organization type pairs (characters 1..2).
CREDIT_PREFIXES = (
    "11",
    "12",
    "13",
    "19",
    "21",
    "29",
    "31",
    "32",
    "33",
    "34",
    "35",
    "39",
    "41",
    "49",
    "51",
    "52",
    "53",
    "59",
    "61",
    "62",
    "69",
    "71",
    "72",
    "79",
    "81",
    "89",
    "91",
    "92",
    "93",
    "A1",
    "A9",
    "N1",
    "N2",
    "N3",
    "N9",
    "Y1",
)


def credit_codes_valid(values: pd.Series) -> pd.Series:
    """18-character unified social credit codes whose two check characters both hold.

    GB 32100's final MOD 31 character and the embedded GB 11714 organization code's MOD 11
    character (characters 9..17), after a registration-authority/type prefix: a damaged
    resident ID passes both checks one time in 341, and never with a province prefix such as
    37 (Shandong) that is no authority/type pair.
    """
    shaped = values.fillna("").astype("str").str.fullmatch(CREDIT_CODE_PATTERN)
    valid = pd.Series(False, index=values.index)
    if shaped.any():
        chars = id_bytes(values[shaped].astype("str"), 18)
        table = np.zeros(256, dtype=np.int64)
        table[np.frombuffer(CREDIT_CHARS.encode("ascii"), dtype=np.uint8)] = np.arange(31)
        digits = table[chars]
        check = (31 - (digits[:, :17] @ np.array(CREDIT_WEIGHTS, dtype=np.int64)) % 31) % 31
        organization = np.where(chars[:, 8:16] <= ord("9"), chars[:, 8:16] - ord("0"), chars[:, 8:16] - ord("A") + 10)
        org_check = (11 - (organization.astype(np.int64) @ np.array(ORGANIZATION_WEIGHTS, dtype=np.int64)) % 11) % 11
        org_char = np.where(org_check == 10, ord("X"), org_check + ord("0"))
        prefix = values[shaped].astype("str").str.slice(0, 2).isin(CREDIT_PREFIXES).to_numpy(dtype=bool)
        valid[shaped] = prefix & (check == digits[:, 17]) & (org_char == chars[:, 16])
    return valid


def normalize_party_ids(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """IDs of a party that is a person or an organization (a title owner, a landlord).

    A valid resident ID is a person; otherwise a credit code whose two check characters hold is
    an organization (credit codes may be all digits, so shape alone cannot tell; see
    ``credit_codes_valid`` for how rarely a damaged ID passes); otherwise the resident-ID reason
    stands (``INVALID_ID_FORMAT`` for anything not ID-shaped).
    Returns ``(ids, kinds, reasons)``, kinds ``person`` / ``organization`` / NA.
    """
    index = values.index
    text = clean_id_text(values.reset_index(drop=True)).str.upper()
    ids, reasons = normalize_resident_ids(text)
    organization = reasons.notna().to_numpy(dtype=bool) & credit_codes_valid(text).to_numpy()
    ids = ids.where(~organization, text)
    reasons = reasons.where(~organization, pd.NA)
    kinds = pd.Series(np.where(organization, "organization", "person"), index=text.index, dtype="str")
    kinds[text == ""] = pd.NA
    return ids.set_axis(index), kinds.set_axis(index), reasons.set_axis(index)
