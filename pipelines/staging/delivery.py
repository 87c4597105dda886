"""A delivery on the landing directory: which folder, that it lies inside, its bytes, decoded.

Folders and files are reached only inside the landing directory and never through a symbolic
link, so a hostile delivery cannot make the pipeline read (and quote) a file it must not.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import DeliveryRejected

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"


def _inside_landing(path: Path, landing: Path, what: str) -> None:
    """Deliveries are regular folders and files inside the landing directory: a symbolic link, or
    anything resolving elsewhere, could make the pipeline read (and quote) a file it must not."""
    if path.is_symlink() or not path.resolve().is_relative_to(landing.resolve()):
        raise DeliveryRejected(
            f"{what} is a symbolic link or lies outside the landing directory "
            f"{landing}; deliveries must be regular files inside it"
        )


def choose_delivery(landing: Path, source: str, as_of: dt.date) -> Path:
    """The newest complete delivery folder dated on or before ``as_of``.

    A folder without ``_SUCCESS`` is still being written by the exchange: skipped, with a warning.
    The chosen folder must be a real folder inside ``landing`` (no symbolic link).
    """
    base = landing / source
    if base.exists():
        _inside_landing(base, landing, f"{source}: the source folder {source}/")
    candidates: list[tuple[dt.date, Path]] = []
    for folder in base.iterdir() if base.is_dir() else ():
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue
        if folder.is_dir() and day <= as_of:
            candidates.append((day, folder))
    for _day, folder in sorted(candidates, reverse=True):
        if (folder / SUCCESS_MARKER).exists():
            _inside_landing(folder, landing, f"{source}: delivery folder {source}/{folder.name}")
            return folder
        log.warning("%s: delivery %s has no %s yet, skipped", source, folder.name, SUCCESS_MARKER)
    raise DeliveryRejected(f"{source}: no complete delivery on or before {as_of} under {base}")


UTF8_BOM = b"\xef\xbb\xbf"
ENCODING_NAMES = {"utf-8": "UTF-8", "gb18030": "GB18030"}


def _as_utf8(data: bytes) -> bytes | int:
    """The UTF-8 body (BOM dropped), or the offset of the first byte that is not UTF-8."""
    bom = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    body = data[bom:]
    try:
        pa.array([body], type=pa.large_binary()).cast(pa.large_string())  # validates in C, fast
        return body
    except pa.ArrowInvalid:
        pass
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError as exc:
        return exc.start + bom


def _from_gb18030(data: bytes) -> bytes | int:
    """The GB18030 text re-encoded as UTF-8, or the offset of the first byte that is not GB18030."""
    try:
        return data.decode("gb18030").encode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start


def decode_delivery(data: bytes, label: str, declared: str) -> bytes:
    """The delivery as UTF-8 bytes: the schema's ``declared`` encoding first, then the other of
    strict UTF-8 (BOM dropped) and GB18030, since a department may send the other one.

    ``utf-8-sig`` reads as UTF-8. A UTF-8 byte-order mark is the file declaring itself, so such
    a file is tried as UTF-8 first whatever the schema says. Anything neither — binary content,
    a file cut inside a multi-byte character — rejects the whole delivery naming the byte offsets.
    """
    if data.startswith(b"\x89PNG"):
        raise DeliveryRejected(f"{label}: a PNG image, not a text table")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DeliveryRejected(f"{label}: NUL byte at offset {nul}, not a text table")
    expected, other = ("gb18030", "utf-8") if declared == "gb18030" else ("utf-8", "gb18030")
    order = ("utf-8", "gb18030") if data.startswith(UTF8_BOM) else (expected, other)
    decoders = {"utf-8": _as_utf8, "gb18030": _from_gb18030}
    offsets: dict[str, int] = {}
    for encoding in order:
        decoded = decoders[encoding](data)
        if isinstance(decoded, bytes):
            return decoded
        offsets[encoding] = decoded
    raise DeliveryRejected(
        f"{label}: neither {ENCODING_NAMES[expected]} as its schema declares (invalid byte at offset "
        f"{offsets[expected]}) nor {ENCODING_NAMES[other]} (invalid byte at offset {offsets[other]})"
    )


def split_lines(text: bytes) -> pa.Array:
    """Physical lines of UTF-8 bytes as an Arrow string array (``\\r\\n`` tolerated).

    The newlines are found in the bytes at once and each line is cut from the text behind its
    offset (``\\n`` never occurs inside a UTF-8 character, and the text is UTF-8 already).
    """
    if not text:
        return pa.array([], type=pa.large_string())
    crlf = b"\r" in text
    if not text.endswith(b"\n"):
        text += b"\n"
    data = pa.py_buffer(text)
    del text
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), ends + 1])
    with_newline = pa.Array.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), data])
    lines = pc.binary_slice(with_newline, 0, -1).view(pa.large_string())
    return pc.utf8_rtrim(lines, characters="\r") if crlf else lines


def read_regular_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file, never through a symbolic link (``O_NOFOLLOW``, then fstat)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise DeliveryRejected(f"{what}: file missing from the delivery") from None
    except OSError:
        raise DeliveryRejected(
            f"{what}: a symbolic link or unreadable; deliveries must be regular files inside the landing directory"
        ) from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise DeliveryRejected(f"{what}: not a regular file")
        return handle.read()
