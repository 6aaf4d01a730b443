"""The block reader: a byte stream cut into blocks of whole lines, numbered, and the rows a block gives.

Text formats are read a block at a time; every line keeps its number in the file, so a rejected line is
reported where a person can find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from tickerdash.ingest.contract.tick_entries import Rejected

MIN_BLOCK_BYTES = 64 * 1024
MAX_REJECTED_TEXT = 1_000  # a malformed line is kept in the dead-letter stream up to this many characters


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Source columns of some rows, where each row came from, and rows rejected before conversion."""

    table: pa.Table
    origin: np.ndarray  # line (text formats) or row (Parquet) number of each row, 1-based
    rejected: list[Rejected]


class LineStream:
    """A binary stream read in whole lines, with a peek for sniffing, counting the bytes it consumed."""

    __slots__ = ("bytes_read", "eof", "pending", "raw")

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pending = b""
        self.bytes_read = 0
        self.eof = False

    def _fill(self, want: int) -> bool:
        if self.eof:
            return False
        read1 = getattr(self.raw, "read1", None)
        data = read1(want) if read1 is not None else self.raw.read(want)
        if not data:
            self.eof = True
            return False
        self.bytes_read += len(data)
        self.pending += data
        return True

    def peek_line(self) -> bytes:
        """The first line (with its newline) without consuming it."""
        while b"\n" not in self.pending and self._fill(MIN_BLOCK_BYTES):
            pass
        end = self.pending.find(b"\n")
        return self.pending if end < 0 else self.pending[: end + 1]

    def peek(self, size: int) -> bytes:
        """The first `size` bytes (fewer at the end) without consuming them."""
        while len(self.pending) < size and self._fill(size - len(self.pending)):
            pass
        return self.pending[:size]

    def skip(self, size: int) -> None:
        """Consume `size` bytes that were peeked."""
        self.pending = self.pending[size:]

    def read_lines(self, size: int) -> bytes:
        """About `size` bytes of whole lines (the last line may lack its newline at the end of input)."""
        while len(self.pending) < size and self._fill(size - len(self.pending)):
            pass
        cut = self.pending.rfind(b"\n")
        while cut < 0 and self._fill(MIN_BLOCK_BYTES):
            cut = self.pending.rfind(b"\n")
        if cut < 0 or (self.eof and len(self.pending) <= size):
            block, self.pending = self.pending, b""
        else:
            block, self.pending = self.pending[: cut + 1], self.pending[cut + 1 :]
        return block

    def read_all(self) -> bytes:
        """Everything left."""
        while self._fill(1 << 22):
            pass
        block, self.pending = self.pending, b""
        return block


def line_bounds(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before the newline) of each line of a block's bytes."""
    ends = np.flatnonzero(data == ord("\n"))
    if not len(data) or data[-1] != ord("\n"):
        ends = np.append(ends, len(data))
    return np.concatenate(([0], ends[:-1] + 1)), ends


def line_numbers(block: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray]:
    """Line number of each line of `block`, and which lines are blank."""
    data = np.frombuffer(block, np.uint8)
    starts, ends = line_bounds(data)
    lengths = ends - starts
    carriage = (lengths == 1) & (data[np.minimum(starts, max(len(data) - 1, 0))] == ord("\r"))
    blank = (lengths == 0) | carriage
    return np.arange(first_line, first_line + len(ends)), blank


def blank_lines(block: bytes, count: int) -> np.ndarray:
    """Which of the `count` lines of `block` are blank."""
    return line_numbers(block, 0)[1][:count] if block else np.zeros(0, bool)


def partition_lines(block: bytes, lines: np.ndarray, apart: np.ndarray) -> tuple[bytes, np.ndarray, bytes, np.ndarray]:
    """The lines of `block` not marked in `apart` (their bytes and numbers), then the marked ones."""
    if not apart.any():
        return block, lines, b"", lines[:0]
    data = np.frombuffer(block, np.uint8)
    starts, _ = line_bounds(data)
    marked = np.repeat(apart, np.diff(np.append(starts, len(data))))  # each line with its newline
    return data[~marked].tobytes(), lines[~apart], data[marked].tobytes(), lines[apart]


def reject_lines(block: bytes, lines: np.ndarray, reason: str) -> list[Rejected]:
    """Each line of `block` rejected for `reason`, under its number."""
    texts = (text.rstrip(b"\r")[:MAX_REJECTED_TEXT].decode("utf-8", "replace") for text in block.split(b"\n"))
    return [
        Rejected(f"line:{number}", {"line": text}, reason) for number, text in zip(lines.tolist(), texts, strict=False)
    ]
