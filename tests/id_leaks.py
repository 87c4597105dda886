"""Finding whole resident IDs where none may be: in delivered files, logs and reports, read the
way a person searching them would (any encoding, full-width folded, upper case)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from resident_ids import resident_id

# an 18-character or legacy 15-character ID not glued to other digits
ID_FORM = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9X]|[0-9]{15})(?![0-9])")


def decoded(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return unicodedata.normalize("NFKC", data.decode(encoding)).upper()
        except UnicodeDecodeError:
            continue
    return unicodedata.normalize("NFKC", data.decode("latin-1")).upper()


def as18(legacy15: str) -> str:
    return resident_id(legacy15[:6] + "19" + legacy15[6:])


def delivered_ids(landing: Path) -> set[str]:
    """Every ID-shaped value in the landing files, in its 18- and (legacy) 15-character forms."""
    found: set[str] = set()
    for path in landing.rglob("*"):
        if path.is_file() and path.name != "_SUCCESS":
            found.update(ID_FORM.findall(decoded(path)))
    return found | {as18(i) for i in found if len(i) == 15}


def windows(text: str) -> set[str]:
    """Every 15- and 18-character window of every digit run in the text (IDs glued to digits too)."""
    out: set[str] = set()
    for run in re.findall(r"[0-9X]{15,}", text.upper()):
        for width in (15, 18):
            out.update(run[i : i + width] for i in range(len(run) - width + 1))
    return out
