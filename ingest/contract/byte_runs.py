"""RESP commands written from text columns by one compiled loop: the inner loop of the engine's XADD writer.

A realistic tape closes a bar every few trades, and every bar is one XADD of a dozen fields. Joined from
Python strings, or gathered from per-text byte runs laid out by numpy first, the commands cost more
than the bars' arithmetic; written here row by row, each column's texts are read in order (their
buffers sequentially) and the `$<length>` headers are written as digits on the way.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _digits(value: int) -> int:
    """How many decimal digits `value` (>= 0) has."""
    count = 1
    while value >= 10:
        value //= 10
        count += 1
    return count


@njit(cache=True, nogil=True)
def _put_number(out: np.ndarray, at: int, value: int) -> int:
    """Write `value` (>= 0) in decimal at `at`; the position after it."""
    end = at + _digits(value)
    k = end
    while True:
        k -= 1
        out[k] = 48 + value % 10
        value //= 10
        if value == 0:
            break
    return end


@njit(cache=True, nogil=True)
def _put_run(out: np.ndarray, at: int, data: np.ndarray, start: int, length: int) -> int:
    """Copy data[start:start + length] to `at`, byte by byte (runs are a few bytes: a slice copy costs more to
    set up); the position after it."""
    for i in range(length):
        out[at + i] = data[start + i]
    return at + length


@njit(cache=True, nogil=True)
def _put_header(out: np.ndarray, at: int, mark: int, value: int) -> int:
    """Write `<mark><value>\\r\\n` (RESP's `*<count>` or `$<length>` line); the position after it."""
    out[at] = mark
    at = _put_number(out, at + 1, value)
    out[at] = 13
    out[at + 1] = 10
    return at + 2


@njit(cache=True, nogil=True)
def xadd_rows(
    fixed_arguments: int,
    heads: np.ndarray,
    head_starts: np.ndarray,
    head_lengths: np.ndarray,
    head_of_row: np.ndarray,
    ids: np.ndarray,
    id_starts: np.ndarray,
    id_lengths: np.ndarray,
    names: np.ndarray,
    name_starts: np.ndarray,
    name_lengths: np.ndarray,
    values: np.ndarray,
    value_starts: np.ndarray,
    value_lengths: np.ndarray,
    present: np.ndarray,
) -> np.ndarray:
    """Row k as RESP: `*<fixed_arguments + 2 * fields present>`, head `head_of_row[k]` (the command's
    arguments before the ID, packed), the ID as a bulk string, then for every present field j `names` run j
    (CRLF ending the text before, then the name as a bulk string) and the value as a bulk string; rows back
    to back, as uint8. Texts are runs of their buffers (`*_starts`, `*_lengths`); values are (rows, fields).
    """
    rows, fields = value_starts.shape
    size = 0
    for k in range(rows):
        count = 0
        size += head_lengths[head_of_row[k]] + id_lengths[k] + _digits(id_lengths[k]) + 3 + 2
        for j in range(fields):
            if present[k, j]:
                count += 1
                length = value_lengths[k, j]
                size += name_lengths[j] + length + _digits(length) + 3
        size += _digits(fixed_arguments + 2 * count) + 3
    out = np.empty(size, np.uint8)
    at = 0
    for k in range(rows):
        count = 0
        for j in range(fields):
            if present[k, j]:
                count += 1
        at = _put_header(out, at, 42, fixed_arguments + 2 * count)  # '*'
        head = head_of_row[k]
        at = _put_run(out, at, heads, head_starts[head], head_lengths[head])
        at = _put_header(out, at, 36, id_lengths[k])  # '$'
        at = _put_run(out, at, ids, id_starts[k], id_lengths[k])
        for j in range(fields):
            if present[k, j]:
                at = _put_run(out, at, names, name_starts[j], name_lengths[j])
                at = _put_header(out, at, 36, value_lengths[k, j])
                at = _put_run(out, at, values, value_starts[k, j], value_lengths[k, j])
        out[at] = 13
        out[at + 1] = 10
        at += 2
    return out
