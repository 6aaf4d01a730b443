"""Account features of a batch: each trade against its symbol's ring of last trades (meanings in `features`).

The float sums (recent volume, the aggressor's and the passive account's part of it) add each row's k
ring entries as numpy sums over one contiguous (rows, k) row each, so they are the same bits however the
rows are split into blocks. The pair counts are integers, counted from the few ring entries whose buyer
and seller match, so the wash window and the sizes are read only there.

Both accounts of a trade are its aggressor and its passive side, so four comparisons of the ring's
buyers and sellers with the row's aggressor and passive account give the passive share and both pair
patterns; the aggressor share compares the ring's aggressors.
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
    windows = Ring(*(sliding_window_view(column, k) for column in ext))
    out = np.zeros((n, len(ACCOUNT_FEATURES)), np.float64)
    round_trip_rows, same_pair_rows = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    # a row without accounts has all four at zero, whatever its ring holds
    rows_with_accounts = np.flatnonzero((trades.buyer != NO_ACCOUNT) | (trades.seller != NO_ACCOUNT))
    for start in range(0, len(rows_with_accounts), BLOCK_ROWS):
        rows = rows_with_accounts[start : start + BLOCK_ROWS]
        block = _Block(windows, rows, row_at[rows] + 1, aggressor[rows], passive[rows])
        out[rows, :2] = block.shares()
        matched_row, entry, reversed_legs = block.pair_matches(sells[rows])
        known = (trades.buyer[matched_row] != NO_ACCOUNT) & (trades.seller[matched_row] != NO_ACCOUNT)
        counted = known & (trades.ts[matched_row] - ext.ts[entry] <= wash_window_ms)
        round_trip = counted & reversed_legs & (ext.size[entry] == trades.size[matched_row])
        round_trip_rows.append(matched_row[round_trip])
        same_pair_rows.append(matched_row[counted])
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
    """Some rows of the batch beside the k ring entries before each (newest first): (rows, k) comparisons."""

    def __init__(
        self, windows: Ring, rows: np.ndarray, window_start: np.ndarray, aggressor: np.ndarray, passive: np.ndarray
    ) -> None:
        self.rows, self.window_start = rows, window_start
        self.size = windows.size[window_start]
        buyer, seller = windows.buyer[window_start], windows.seller[window_start]
        k = self.size.shape[1]
        # against full (rows, k) matrices: a comparison with a broadcast column runs k elements per inner
        # loop, several times slower than one long loop, even counting the repeat
        row_aggressor = np.repeat(aggressor, k).reshape(-1, k)
        row_passive = np.repeat(passive, k).reshape(-1, k)
        self.aggressor_known = aggressor != NO_ACCOUNT
        self.passive_known = passive != NO_ACCOUNT
        self.own = windows.aggressor[window_start] == row_aggressor
        self.buyer_passive = buyer == row_passive
        self.seller_passive = seller == row_passive
        self.buyer_aggressor = buyer == row_aggressor
        self.seller_aggressor = seller == row_aggressor

    def shares(self) -> np.ndarray:
        """(rows, 2): the aggressor's and the passive account's shares of the ring's volume."""
        recent_volume = self.size.sum(axis=1)
        masked = np.zeros_like(self.size)
        np.copyto(masked, self.size, where=self.own)
        own_volume = masked.sum(axis=1)
        masked.fill(0.0)
        np.copyto(masked, self.size, where=self.buyer_passive | self.seller_passive)
        their_volume = masked.sum(axis=1)
        out = np.zeros((len(self.rows), 2), np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(own_volume, recent_volume, out=out[:, 0], where=self.aggressor_known)
            np.divide(their_volume, recent_volume, out=out[:, 1], where=self.passive_known)
        return out

    def pair_matches(self, sells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each ring entry of the rows' own pair: its row, its extended position, and whether the legs are reversed."""
        # a buy's aggressor is its buyer: its reversed legs have the ring buyer = passive and seller = aggressor
        passive_buys = (self.buyer_passive & self.seller_aggressor).ravel()
        aggressor_buys = (self.buyer_aggressor & self.seller_passive).ravel()
        flat = np.flatnonzero(passive_buys | aggressor_buys)
        row_in_block, lag = np.divmod(flat, self.size.shape[1])
        reversed_legs = np.where(sells[row_in_block], aggressor_buys[flat], passive_buys[flat])
        return self.rows[row_in_block], self.window_start[row_in_block] + lag, reversed_legs
