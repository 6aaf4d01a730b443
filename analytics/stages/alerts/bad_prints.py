"""The bad-print filter: per symbol, which trades are off-market prints (docs/design.md, "Bad prints").

Per symbol, in arrival order, with band b (a fraction) and confirm c:
- the symbol's first trade is accepted;
- a trade whose price lies in `[g * (1 - b), g * (1 + b)]`, g the symbol's last accepted price, is accepted;
- any other trade is rejected (a bad print), unless it confirms a new level: it ends a run of at least c
  trades rejected since the last accepted one, and its last c prices lie within b of each other
  (`highest <= lowest * (1 + b)`). The confirming trade is accepted (its price becomes g); the run's
  earlier trades stay rejected.

So a lone off-market print, or a pair, is rejected, while a real gap or a fast move is accepted from its
c-th trade on. The filter is causal (a trade's fate depends on earlier trades only) and deterministic, and
its state per symbol is g and the last c - 1 prices of the current run of rejected trades: how a tape is
cut into batches, and where it is checkpointed, changes nothing.

How it stays vectorised: while trades are accepted, g is the previous trade's price, so a run's first
rejected trade is the first row outside the band of the row before it (a "jump"), found for all symbols
at once. A run's end depends on its g only: each round takes every symbol to its next jump, then
resolves that run with a galloping scan (1, 2, 4, ... rows). One round per run of rejected trades, so a
batch costs a few array passes plus a few short rounds per off-market print of its busiest symbol.
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.engine.segments import Grouping, SymbolSlots, exclusive_cumsum, grow, ragged_arange
from tickerdash.ingest.ticks import TickBatch

DEFAULT_BAND = 0.01  # 1%: a quote tick or two on most stocks, far less than an off-market print
DEFAULT_CONFIRM = 3  # trades that must agree before a new level is believed
MAX_CONFIRM = 100


class BadPrintFilter:
    """`accepted(batch)`: per row, whether the trade is a good print; the per-symbol state carries across batches."""

    __slots__ = ("band", "confirm", "good", "run_len", "run_prices", "slots")

    def __init__(self, band: float = DEFAULT_BAND, confirm: int = DEFAULT_CONFIRM) -> None:
        if isinstance(band, bool) or not isinstance(band, int | float) or not 0 < band < 1:
            raise ValueError(f"band: {band!r} must be a fraction > 0 and < 1, e.g. 0.01 for 1%")
        if isinstance(confirm, bool) or not isinstance(confirm, int) or not 1 <= confirm <= MAX_CONFIRM:
            raise ValueError(f"confirm: {confirm!r} must be a whole number of trades from 1 to {MAX_CONFIRM}, e.g. 3")
        self.band = float(band)
        self.confirm = confirm
        self.slots = SymbolSlots()
        self.good = np.zeros(0)  # per slot: the last accepted price (NaN: no trade yet)
        self.run_len = np.zeros(0, np.int64)  # per slot: rejected trades since it, at most confirm - 1 kept
        self.run_prices = np.zeros((0, confirm - 1))  # per slot: their prices, oldest first, zero-padded

    def accepted(self, batch: TickBatch) -> np.ndarray:
        """Per batch row: True for a good print, False for a bad one (rejected); moves the state past the batch."""
        if len(batch) == 0:
            return np.zeros(0, bool)
        slot_of_local = self.slots.slots_for(batch.symbols)
        self._grow(len(self.slots))
        group = Grouping.of(batch.symbol_idx, len(batch.symbols))
        accepted_sorted = self._scan(batch.price[group.order], group.lengths, slot_of_local[group.local_symbol])
        out = np.empty(len(batch), bool)
        out[group.order] = accepted_sorted
        return out

    def _grow(self, n: int) -> None:
        self.good = grow(self.good, n, np.nan)
        self.run_len = grow(self.run_len, n, 0)
        self.run_prices = grow(self.run_prices, n, 0.0)

    def _within(self, price: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Whether each price lies within the band of its good price (False when there is none)."""
        return (price >= good * (1.0 - self.band)) & (price <= good * (1.0 + self.band))

    def _scan(self, price: np.ndarray, lengths: np.ndarray, seg_slot: np.ndarray) -> np.ndarray:
        """Accepted flags of the rows of contiguous symbol segments (arrival order within each)."""
        c = self.confirm
        carried = self.run_len[seg_slot]
        # each segment's carried run of rejected prices goes in front of its rows, so windows are contiguous
        ext_len = lengths + carried
        ext_start = exclusive_cumsum(ext_len)
        ext_end = ext_start + ext_len
        first_real = ext_start + carried
        if carried.any():
            real_at = ragged_arange(first_real, lengths)
            x = np.empty(int(ext_end[-1]))
            x[real_at] = price
            has = np.flatnonzero(carried)
            x[ragged_arange(ext_start[has], carried[has])] = self.run_prices[
                np.repeat(seg_slot[has], carried[has]), ragged_arange(np.zeros(len(has), np.int64), carried[has])
            ]
        else:
            real_at, x = None, price
        start_good = self.good[seg_slot]
        previous = np.empty_like(x)
        previous[1:] = x[:-1]
        previous[first_real] = start_good
        jump = ~self._within(x, previous)
        jump[first_real[np.isnan(start_good)]] = False  # a symbol's first trade is accepted
        jumps = np.append(np.flatnonzero(jump), len(x))  # a sentinel: every search finds a stop

        n_seg = len(lengths)
        pos, good = first_real.copy(), start_good.copy()
        rejecting = carried > 0
        run_start = ext_start.copy()  # where the run being rejected began (valid while rejecting)
        active = np.ones(n_seg, bool)
        accept = np.zeros(len(x) + 1, np.int64)  # +1 where an accepted range starts, -1 where it ends
        while True:
            # accepted until the next jump: g follows the trades
            seg = np.flatnonzero(active & ~rejecting)
            if len(seg):
                stop = np.minimum(jumps[np.searchsorted(jumps, pos[seg])], ext_end[seg])
                np.add.at(accept, pos[seg], 1)
                np.add.at(accept, stop, -1)
                moved = stop > pos[seg]
                good[seg[moved]] = x[stop[moved] - 1]
                pos[seg] = stop
                ended = stop >= ext_end[seg]
                active[seg[ended]] = False
                rejecting[seg[~ended]] = True
                run_start[seg[~ended]] = stop[~ended]
            seg = np.flatnonzero(active & rejecting)
            if len(seg) == 0:
                break
            self._resolve_runs(seg, x, good, pos, run_start, ext_end, rejecting, active, accept)
        self.good[seg_slot] = good
        kept = np.where(rejecting, np.minimum(ext_end - run_start, c - 1), 0)
        self.run_len[seg_slot] = kept
        self.run_prices[seg_slot] = 0.0
        has = np.flatnonzero(kept)
        if len(has):
            self.run_prices[
                np.repeat(seg_slot[has], kept[has]), ragged_arange(np.zeros(len(has), np.int64), kept[has])
            ] = x[ragged_arange(ext_end[has] - kept[has], kept[has])]
        accepted = np.cumsum(accept[:-1]) > 0
        return accepted if real_at is None else accepted[real_at]

    def _confirms(self, x: np.ndarray, rows: np.ndarray, run_start: np.ndarray) -> np.ndarray:
        """Per row: the last `confirm` prices up to it all belong to its run and lie within the band of each other."""
        highest, lowest = x[rows], x[rows]
        for k in range(1, self.confirm):
            earlier = x[np.maximum(rows - k, 0)]
            highest, lowest = np.maximum(highest, earlier), np.minimum(lowest, earlier)
        return (rows - (self.confirm - 1) >= run_start) & (highest <= lowest * (1.0 + self.band))

    def _resolve_runs(
        self,
        seg: np.ndarray,
        x: np.ndarray,
        good: np.ndarray,
        pos: np.ndarray,
        run_start: np.ndarray,
        ext_end: np.ndarray,
        rejecting: np.ndarray,
        active: np.ndarray,
        accept: np.ndarray,
    ) -> None:
        """Find where each of these segments' runs of rejected trades ends (back in band, or confirmed), galloping."""
        chunk = 1
        while len(seg):
            count = np.minimum(chunk, ext_end[seg] - pos[seg])
            rows = ragged_arange(pos[seg], count)
            of = np.repeat(np.arange(len(seg)), count)
            ends = self._within(x[rows], good[seg][of]) | self._confirms(x, rows, run_start[seg][of])
            first_of, first_at = np.unique(of[ends], return_index=True)
            found = np.zeros(len(seg), bool)
            found[first_of] = True
            done, end = seg[found], rows[ends][first_at]
            accept[end] += 1
            accept[end + 1] -= 1
            good[done], pos[done], rejecting[done] = x[end], end + 1, False
            active[done[end + 1 >= ext_end[done]]] = False
            rest = seg[~found]
            pos[rest] += count[~found]
            out = pos[rest] >= ext_end[rest]
            active[rest[out]] = False  # the run goes on past the batch: carried
            seg = rest[~out]
            chunk *= 2

    # -- checkpoint --

    def state(self) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        """The filter as checkpoint metadata and arrays."""
        meta = {"band": self.band, "confirm": self.confirm, "symbols": self.slots.names}
        return meta, {"good": self.good, "run_len": self.run_len, "run_prices": self.run_prices}

    @classmethod
    def from_state(cls, meta: dict[str, object], arrays: dict[str, np.ndarray]) -> BadPrintFilter:
        """A filter restored from `state`, continuing exactly where the original stood."""
        band, confirm, names = meta["band"], meta["confirm"], meta["symbols"]
        assert isinstance(band, float) and isinstance(confirm, int) and isinstance(names, list)
        restored = cls(band, confirm)
        restored.slots = SymbolSlots(tuple(names))
        restored.good, restored.run_len, restored.run_prices = arrays["good"], arrays["run_len"], arrays["run_prices"]
        return restored
