"""A delivery on the landing directory: which folder, that it lies inside, its bytes, decoded.

Folders and files are reached only inside the landing directory and never through a symbolic
link, so a hostile delivery cannot make the pipeline read (and quote) a file it must not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
BLOCK_BYTES = 1 << 24  # a delivery is read 16 MiB of whole lines at a time, never whole


def _utf8_error(block: bytes) -> int | None:
    """Offset of the first byte of ``block`` that is not UTF-8, else None."""
    try:
        pa.array([block], type=pa.large_binary()).cast(pa.large_string())  # validates in C, fast
        return None
    except pa.ArrowInvalid:
        pass
    try:
        block.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        return exc.start


def _first_invalid(blocks: Iterable[bytes], encoding: str, spill: Path | None) -> int | None:
    """Offset in the whole text of its first byte not in ``encoding``, else None; with a
    ``spill``, the text is written there decoded to UTF-8 (removed if it is not all valid).

    Blocks end at a newline, and a newline byte is never part of a UTF-8 or GB18030 character,
    so a character never straddles two blocks.
    """
    offset = 0
    with open(spill, "wb") if spill is not None else contextlib.nullcontext() as out:
        for block in blocks:
            if encoding == "utf-8":
                error = _utf8_error(block)
            else:
                try:
                    decoded, error = block.decode(encoding), None
                except UnicodeDecodeError as exc:
                    error = exc.start
                if error is None and out is not None:
                    out.write(decoded.encode("utf-8"))
            if error is not None:
                if spill is not None:
                    spill.unlink(missing_ok=True)
                return offset + error
            offset += len(block)
    return None


@dataclass(frozen=True)
class DeliveryText:
    """A scanned delivery file as UTF-8: where its UTF-8 lies (the file itself, or the spill a
    GB18030 file was decoded into), its encoding, checksum and whether it holds any text."""

    path: Path
    what: str
    encoding: str
    checksum: str
    has_text: bool
    spilled: bool
    block_bytes: int | None = None

    def text_blocks(self) -> Iterator[bytes]:
        """The text in UTF-8 blocks of whole lines (a UTF-8 byte-order mark dropped)."""
        for i, block in enumerate(DeliveryFile(self.path, self.what, self.block_bytes).blocks()):
            yield block[len(UTF8_BOM) :] if i == 0 and block.startswith(UTF8_BOM) else block

    def remove_spill(self) -> None:
        if self.spilled:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class DeliveryFile:
    """A delivered text file, read in blocks of whole lines.

    ``scan`` reads it once: its checksum, and the encoding it is in — the schema's ``declared``
    one first, then the other of strict UTF-8 (BOM dropped) and GB18030, since a department may
    send the other one. ``utf-8-sig`` reads as UTF-8. A UTF-8 byte-order mark is the file
    declaring itself, so such a file is tried as UTF-8 first whatever the schema says. Anything
    neither — binary content, a file cut inside a multi-byte character — rejects the whole
    delivery naming the byte offsets. Only a block is ever held, so the memory a delivery takes
    does not grow with it; a GB18030 file is decoded once, into a UTF-8 spill file that the
    passes over its records then read.
    """

    path: Path
    what: str  # how errors name it
    block_bytes: int | None = None  # BLOCK_BYTES

    def blocks(self) -> Iterator[bytes]:
        """The file's bytes in blocks ending at a newline (the last may not)."""
        size = self.block_bytes or BLOCK_BYTES
        with open_regular_file(self.path, self.what) as handle:
            buffer = bytearray()
            while chunk := handle.read(size):
                buffer += chunk
                end = buffer.rfind(b"\n", len(buffer) - len(chunk)) + 1
                if end:  # else a line longer than a block: read on until it ends
                    yield bytes(buffer[:end])
                    del buffer[:end]
            if buffer:
                yield bytes(buffer)

    def scan(self, declared: str, spill: Path) -> DeliveryText:
        """Checksum, encoding and whether there is any text; a GB18030 file decoded into ``spill``."""
        digest = hashlib.sha256()
        expected, other = ("gb18030", "utf-8") if declared == "gb18030" else ("utf-8", "gb18030")
        order, has_text = (expected, other), False

        def checked(blocks: Iterator[bytes]) -> Iterator[bytes]:
            nonlocal order, has_text
            at = 0
            for i, block in enumerate(blocks):
                if i == 0:
                    if block.startswith(b"\x89PNG"):
                        raise DeliveryRejected(f"{self.what}: a PNG image, not a text table")
                    if block.startswith(UTF8_BOM):
                        order = ("utf-8", "gb18030")
                if (nul := block.find(b"\x00")) >= 0:
                    raise DeliveryRejected(f"{self.what}: NUL byte at offset {at + nul}, not a text table")
                digest.update(block)
                has_text = has_text or bool(block.strip())
                at += len(block)
                yield block

        errors: dict[str, int] = {}
        blocks = checked(self.blocks())
        blocks = itertools.chain([next(blocks, b"")], blocks)  # the first block may be a BOM, deciding the order
        for attempt in range(2):
            encoding = order[attempt]
            error = _first_invalid(blocks, encoding, spill if encoding == "gb18030" else None)
            if attempt == 0:
                for _ in blocks:  # the first pass reads on to the end: checksum, NUL bytes
                    pass
            if error is None:
                return DeliveryText(
                    spill if encoding == "gb18030" else self.path,
                    self.what,
                    encoding,
                    digest.hexdigest(),
                    has_text,
                    spilled=encoding == "gb18030",
                    block_bytes=self.block_bytes,
                )
            errors[encoding] = error
            blocks = iter(self.blocks())
        raise DeliveryRejected(
            f"{self.what}: neither {ENCODING_NAMES[expected]} as its schema declares (invalid byte at offset "
            f"{errors[expected]}) nor {ENCODING_NAMES[other]} (invalid byte at offset {errors[other]})"
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


@contextmanager
def open_regular_file(path: Path, what: str) -> Iterator[BinaryIO]:
    """A regular file opened for reading, never through a symbolic link (``O_NOFOLLOW``, then fstat)."""
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
        yield handle
