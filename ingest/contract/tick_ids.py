"""Tick ids: how an output names the trade it came from.

A trade of a per-tick entry is named by the entry's stream ID (`1700000000000-0`); a trade of a batch
entry by the entry's ID, `#` and its row in the entry (`1700000000000-0#17`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SEPARATOR = "#"
PER_TICK = -1  # the row of a trade that is its entry's only one (a per-tick entry)


def tick_id(entry_id: str, row: int = PER_TICK) -> str:
    """The id of the trade at `row` of the entry (`row` PER_TICK: the entry is the trade)."""
    return entry_id if row < 0 else f"{entry_id}{SEPARATOR}{row}"


def tick_ids(entry_ids: Sequence[str], entry_of: np.ndarray, row_in_entry: np.ndarray) -> np.ndarray:
    """The ids of many trades at once (an object array): trade i is row `row_in_entry[i]` of entry
    `entry_ids[entry_of[i]]`."""
    entry = np.asarray(entry_ids, dtype=object)[entry_of]
    if not len(entry):
        return np.zeros(0, object)
    suffix = (SEPARATOR + np.asarray(row_in_entry).astype(str).astype(object)).astype(object)
    return np.where(np.asarray(row_in_entry) < 0, entry, entry + suffix)


def parse_tick_id(text: str) -> tuple[str, int]:
    """(entry id, row in the entry) of a tick id; the row is PER_TICK for a per-tick entry's trade."""
    entry, separator, row = text.partition(SEPARATOR)
    if not separator:
        return entry, PER_TICK
    if not row.isdigit():
        raise ValueError(f"tick id {text[:60]!r}: the row after {SEPARATOR!r} must be a whole number")
    return entry, int(row)


def entry_of_tick(text: str) -> str:
    """The stream entry ID that holds the trade with this tick id."""
    return text.partition(SEPARATOR)[0]
