"""Tables of short ASCII texts (numbers, entry IDs) as one byte buffer with offsets, and rows joined from them.

A closed bar is about a dozen numbers written as text; on a realistic tape a batch closes a bar every few
trades. Formatting each number as a Python str and joining them costs more than the bar's arithmetic, so
numbers are formatted a whole table at a time into bytes (orjson writes a float64 array in one call),
and rows (e.g. the RESP of one XADD per bar) are written from such tables by one compiled loop
(`byte_runs.xadd_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

COMMA = ord(",")


def exclusive_cumsum(lengths: np.ndarray) -> np.ndarray:
    """Start offset of each run when runs of these lengths are laid end to end."""
    out = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out


@dataclass(frozen=True, slots=True)
class TextTable:
    """n rows of m texts; text (k, j) is `data[starts[k, j]:][:lengths[k, j]]`, empty where `present[k, j]` is False."""

    data: np.ndarray  # uint8
    starts: np.ndarray  # int64 (n, m)
    lengths: np.ndarray  # int64 (n, m)
    present: np.ndarray  # bool (n, m)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def width(self) -> int:
        """Texts per row."""
        return int(self.starts.shape[1])

    def column(self, j: int) -> list[str | None]:
        """Every row's text j (None where absent)."""
        data = self.data.tobytes()
        return [
            data[start : start + length].decode() if present else None
            for start, length, present in zip(
                self.starts[:, j].tolist(), self.lengths[:, j].tolist(), self.present[:, j].tolist(), strict=True
            )
        ]

    def flat_rows(self, names: Sequence[str]) -> list[list[str]]:
        """Each row as `[name, text, ...]` for its present texts, column j named `names[j]` (one entry's fields)."""
        named = list(zip(names, (self.column(j) for j in range(self.width)), strict=True))
        return [
            [part for name, column in named if (text := column[k]) is not None for part in (name, text)]
            for k in range(len(self))
        ]

    def take_columns(self, order: Sequence[int]) -> TextTable:
        """The columns in this order."""
        return TextTable(self.data, self.starts[:, order], self.lengths[:, order], self.present[:, order])

    def without(self, absent: np.ndarray) -> TextTable:
        """The same texts with those where `absent` is True left out."""
        return TextTable(self.data, self.starts, np.where(absent, 0, self.lengths), self.present & ~absent)

    @classmethod
    def of(cls, texts: Sequence[str | None] | Sequence[bytes]) -> TextTable:
        """A one-column table of these texts (None: absent)."""
        encoded = [t.encode() if isinstance(t, str) else t or b"" for t in texts]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        present = np.fromiter((t is not None for t in texts), bool, len(encoded))
        data = np.frombuffer(b"".join(encoded), np.uint8)
        return cls(data, exclusive_cumsum(lengths)[:, None], lengths[:, None], present[:, None])

    @classmethod
    def from_joined(cls, joined: bytes, rows: int) -> TextTable:
        """The comma-separated texts of `joined` (none holds a comma), column by column, as `rows` rows."""
        data = np.frombuffer(joined, np.uint8)
        commas = np.flatnonzero(data == COMMA)
        starts = np.empty(len(commas) + 1, np.int64)
        starts[0] = 0
        starts[1:] = commas + 1
        lengths = np.empty_like(starts)
        lengths[:-1] = commas - starts[:-1]
        lengths[-1] = len(data) - starts[-1]
        columns = len(starts) // rows
        return cls(
            data, starts.reshape(columns, rows).T, lengths.reshape(columns, rows).T, np.ones((rows, columns), bool)
        )

    @classmethod
    def empty(cls, width: int = 1) -> TextTable:
        """No rows."""
        return cls(
            np.zeros(0, np.uint8),
            np.zeros((0, width), np.int64),
            np.zeros((0, width), np.int64),
            np.zeros((0, width), bool),
        )


def hstack(tables: Sequence[TextTable]) -> TextTable:
    """The tables' columns side by side (equal row counts)."""
    bases = exclusive_cumsum(np.array([len(t.data) for t in tables], np.int64))
    return TextTable(
        np.concatenate([t.data for t in tables]),
        np.concatenate([t.starts + base for t, base in zip(tables, bases, strict=True)], axis=1),
        np.concatenate([t.lengths for t in tables], axis=1),
        np.concatenate([t.present for t in tables], axis=1),
    )


def int_texts(values: np.ndarray | Sequence[int], suffix: bytes = b"") -> TextTable:
    """`str(int(v))` of every value, then `suffix` (no comma in it), as a one-column table, formatted in one
    pass in C."""
    ints = np.ascontiguousarray(values, np.int64)
    if not len(ints):
        return TextTable.empty()
    joined = orjson.dumps(ints, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    if suffix:
        joined = joined.replace(b",", suffix + b",") + suffix
    return TextTable.from_joined(joined, len(ints))
