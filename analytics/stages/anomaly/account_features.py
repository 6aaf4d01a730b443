"""Account features of a batch: each trade against its symbol's ring of last trades (meanings in `features`).

The float sums (recent volume, the aggressor's and the passive account's share of it) add each row's k
ring entries as numpy sums one contiguous (rows, k) row at a time, so they are the same bits however
the rows are split into blocks. The pair counts are integers: they are counted from the few ring
entries whose buyer and seller match, so the wash window and the sizes are read only there.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tickerdash.analytics.engine.segments import Grouping
from tickerdash.analytics.stages.anomaly.accounts import NO_ACCOUNT
from tickerdash.ingest.field_rules import SIDE_SELL

ACCOUNT_FEATURES = ("aggressor_share", "passive_share", "round_trips", "same_pair")
# Rows compared with their rings at a time: a block's (rows, ring) temporaries stay in the CPU cache and
# below malloc's mmap threshold, where whole-batch ones would fault in fresh pages for every temporary.
BLOCK_ROWS = 1024


class Ring(NamedTuple):
    """Each symbol's last trades, oldest first: one (symbols, ring) array per column."""

    buyer: np.ndarray
    seller: np.ndarray
    aggressor: np.ndarray
    size: np.ndarray
    ts: np.ndarray


class Trades(NamedTuple):
    """A batch's trades sorted by symbol, with account codes (NO_ACCOUNT where missing)."""

    side: np.ndarray
    buyer: np.ndarray
    seller: np.ndarray
    size: np.ndarray
    ts: np.ndarray


def account_features(
    ring: Ring, trades: Trades, slot: np.ndarray, group: Grouping, wash_window_ms: int
) -> tuple[np.ndarray, Ring]:
    """(n, len(ACCOUNT_FEATURES)) features of the sorted trades, and the rings of the batch's slots after it."""
    k, n, n_seg = ring.size.shape[1], len(trades.size), len(slot)
    sells = trades.side == SIDE_SELL
    aggressor = np.where(sells, trades.seller, trades.buyer)
    passive = np.where(sells, trades.buyer, trades.seller)
    # lay each symbol's ring in front of its rows, [ring of segment 0 | rows of 0 | ring of 1 | ...],
    # stored newest first: the k trades before a row are then the k entries just after it, one
    # contiguous window per row (a row copy), where an (n, k) index matrix would gather element by element
    total = n + n_seg * k
    ring_at = total - 1 - ((np.arange(n_seg) * k + group.starts)[:, None] + np.arange(k)[None, :])
    row_at = total - 1 - (k * (group.segment + 1) + np.arange(n))

    def extended(ring_column: np.ndarray, column: np.ndarray) -> np.ndarray:
        ext = np.empty(total, column.dtype)
        ext[ring_at] = ring_column[slot]
        ext[row_at] = column
        return ext

    columns = (trades.buyer, trades.seller, aggressor, trades.size, trades.ts)  # in Ring's order
    ext = Ring(*(extended(before, column) for before, column in zip(ring, columns, strict=True)))
    out = np.zeros((n, len(ACCOUNT_FEATURES)), np.float64)
    round_trip_rows, same_pair_rows = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    # a row without accounts has all four at zero, whatever its ring holds
    rows_with_accounts = np.flatnonzero((trades.buyer != NO_ACCOUNT) | (trades.seller != NO_ACCOUNT))
    for start in range(0, len(rows_with_accounts), BLOCK_ROWS):
        rows = rows_with_accounts[start : start + BLOCK_ROWS]
        block = _Block(ext, rows, row_at[rows] + 1, k)
        out[rows, :2] = block.shares(aggressor[rows], passive[rows])
        round_trips, same_pair = block.pair_matches(trades, wash_window_ms)
        round_trip_rows.append(round_trips)
        same_pair_rows.append(same_pair)
    out[:, 2] = np.bincount(np.concatenate(round_trip_rows), minlength=n)
    out[:, 3] = np.bincount(np.concatenate(same_pair_rows), minlength=n)
    # the new ring of each symbol, oldest first: the last k entries of its stretch of the extended columns
    tail = (
        total
        - 1
        - ((group.starts + group.lengths + np.arange(1, n_seg + 1) * k)[:, None] - np.arange(k, 0, -1)[None, :])
    )
    return out, Ring(*(column[tail] for column in ext))


class _Block:
    """Some rows of the batch beside the k extended entries before each (their windows, newest first)."""

    def __init__(self, ext: Ring, rows: np.ndarray, window_start: np.ndarray, k: int) -> None:
        self.ext, self.rows, self.window_start = ext, rows, window_start
        self.size = self.window(ext.size, k)
        self.buyer = self.window(ext.buyer, k)
        self.seller = self.window(ext.seller, k)
        self.aggressor = self.window(ext.aggressor, k)

    def window(self, column: np.ndarray, k: int) -> np.ndarray:
        """(rows, k): the extended column at the k trades before each row, newest first."""
        return sliding_window_view(column, k)[self.window_start]

    def shares(self, aggressor: np.ndarray, passive: np.ndarray) -> np.ndarray:
        """(rows, 2): the aggressor's and the passive account's shares of the ring's volume."""
        recent_volume = self.size.sum(axis=1)
        own = np.where(self.aggressor == aggressor[:, None], self.size, 0.0).sum(axis=1)
        took_part = (self.buyer == passive[:, None]) | (self.seller == passive[:, None])
        theirs = np.where(took_part, self.size, 0.0).sum(axis=1)
        out = np.zeros((len(self.rows), 2), np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(own, recent_volume, out=out[:, 0], where=aggressor != NO_ACCOUNT)
            np.divide(theirs, recent_volume, out=out[:, 1], where=passive != NO_ACCOUNT)
        return out

    def pair_matches(self, trades: Trades, wash_window_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """The row of each ring entry within the wash window that is a round trip, and of each of the same pair."""
        buyer, seller = trades.buyer[self.rows][:, None], trades.seller[self.rows][:, None]
        reversed_legs = (self.buyer == seller) & (self.seller == buyer)
        same_pair = reversed_legs | ((self.buyer == buyer) & (self.seller == seller))
        if not same_pair.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        row_in_block, lag = np.nonzero(same_pair)
        row = self.rows[row_in_block]
        entry = self.window_start[row_in_block] + lag
        known = (trades.buyer[row] != NO_ACCOUNT) & (trades.seller[row] != NO_ACCOUNT)
        counted = known & (trades.ts[row] - self.ext.ts[entry] <= wash_window_ms)
        round_trip = counted & reversed_legs[row_in_block, lag] & (self.ext.size[entry] == trades.size[row])
        return row[round_trip], row[counted]
