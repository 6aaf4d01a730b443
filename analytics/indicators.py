"""Per-symbol streaming indicators, updated on every trade and vectorised over a whole batch.

For each trade, in each symbol's arrival order: last price, SMA over the last N trades, EMA
(alpha = 2/(N+1), the value before the first trade taken as the first price), VWAP over rolling
event-time windows (t - W, t], session VWAP since the stage started, trade count and volume.

How it stays O(1) per trade: each symbol carries lifetime running sums (price, size, price*size)
added strictly in trade order. A window sum is the difference of two running sums, so the stage
only keeps, per symbol, the running sums of its last max(N) trades and of the trades inside its
longest time window. Because additions happen in the same order however the trades were batched,
results are bit-for-bit independent of batch boundaries and of checkpoint/restore.

Known cost: the kept running sums live in one array laid out by symbol, rebuilt (copied) on every
batch, so a batch costs O(batch + kept history). With a 5-minute window at a high event-time rate
the history dwarfs the batch and dominates (see benchmarks/analytics_core.py); the fix is to search
the kept sums in place and append to them in pages instead of rebuilding the array.

Event time per symbol is the largest `ts` seen so far: an out-of-order trade counts in the time
windows as if it happened at that time (windows need a clock that never goes back).

Precision: a window sum is a difference of lifetime sums, so its relative error grows like
eps * (lifetime sum / window sum): about 1e-12 after a million trades of a symbol in a 20-trade
window. A worker that runs for weeks should start a new stage per trading session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.segments import (
    TS_BITS,
    Grouping,
    RaggedScan,
    SymbolSlots,
    exclusive_cumsum,
    grow,
    pack_state,
    ragged_arange,
    segmented_cummax,
    unpack_state,
)
from ingest.ticks import TickBatch

NO_TIME = -1  # the clock of a symbol before its first trade (every real ts is >= 0)
PRICE, VOLUME, NOTIONAL = 0, 1, 2  # columns of the running-sum arrays


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    """Which indicators to compute: trade counts for SMA and EMA, window lengths in ms for VWAP."""

    sma_periods: tuple[int, ...] = (20, 50)
    ema_periods: tuple[int, ...] = (12, 26)
    vwap_windows_ms: tuple[int, ...] = (60_000, 300_000)

    def __post_init__(self) -> None:
        for n in (*self.sma_periods, *self.ema_periods):
            if n < 1:
                raise ValueError(f"indicator periods must be >= 1 trade, got {n}")
        for w in self.vwap_windows_ms:
            if w < 1:
                raise ValueError(f"VWAP windows must be >= 1 ms, got {w}")

    def columns(self) -> tuple[str, ...]:
        """Names of the per-row indicator columns, in output order."""
        return (
            "price",
            *(f"sma_{n}" for n in self.sma_periods),
            *(f"ema_{n}" for n in self.ema_periods),
            *(f"vwap_{window_name(w)}" for w in self.vwap_windows_ms),
            "session_vwap",
            "trades",
            "volume",
        )


def window_name(ms: int) -> str:
    """A window or interval length as it appears in names: 60000 -> '1m', 1500 -> '1500ms'."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True, slots=True)
class IndicatorFrame:
    """Indicator values for every row of one batch, plus where each symbol's latest row is.

    `columns[name][i]` belongs to batch row i (NaN for an SMA with fewer than N trades so far);
    `latest_rows[k]` is the batch row of the last trade of `latest_symbols[k]` in this batch.
    """

    columns: dict[str, np.ndarray]
    latest_symbols: tuple[str, ...]
    latest_rows: np.ndarray

    def latest(self) -> dict[str, dict[str, float]]:
        """Symbol -> its indicator values after this batch (for the live snapshot; not a hot path)."""
        return {
            symbol: {name: float(values[row]) for name, values in self.columns.items()}
            for symbol, row in zip(self.latest_symbols, self.latest_rows.tolist(), strict=True)
        }


class Indicators:
    """The indicator stage: `process(batch)` updates per-symbol state and returns an IndicatorFrame."""

    def __init__(self, config: IndicatorConfig | None = None) -> None:
        self.config = config or IndicatorConfig()
        self.slots = SymbolSlots()
        self.sums = np.zeros((0, 3), np.float64)  # lifetime running sums per slot
        self.trades = np.zeros(0, np.int64)
        self.clock = np.zeros(0, np.int64)  # largest ts seen per slot
        self.last_price = np.zeros(0, np.float64)
        self.ema = np.zeros((0, len(self.config.ema_periods)), np.float64)
        # Recent running sums per slot, laid end to end (slot s owns history[offsets[s]:offsets[s+1]]).
        # Each slot's history starts with a "floor": the sums before its oldest kept trade.
        self.history_offsets = np.zeros(1, np.int64)
        self.history_ts = np.zeros(0, np.int64)
        self.history_sums = np.zeros((0, 3), np.float64)

    @property
    def keep_trades(self) -> int:
        """How many running sums each symbol keeps for its SMAs (the floor counts as one)."""
        return max(self.config.sma_periods, default=1)

    def _add_slots(self, n: int) -> None:
        old = len(self.trades)
        self.sums = grow(self.sums, n, 0.0)
        self.trades = grow(self.trades, n, 0)
        self.clock = grow(self.clock, n, NO_TIME)
        self.last_price = grow(self.last_price, n, np.nan)
        self.ema = grow(self.ema, n, np.nan)
        # a new symbol's history is just its floor: zero sums, before any time
        fresh = n - old
        self.history_offsets = np.concatenate([self.history_offsets,
                                               self.history_offsets[-1] + np.arange(1, fresh + 1)])  # fmt: skip
        self.history_ts = np.concatenate([self.history_ts, np.full(fresh, NO_TIME, np.int64)])
        self.history_sums = np.concatenate([self.history_sums, np.zeros((fresh, 3))])

    def process(self, batch: TickBatch) -> IndicatorFrame:
        """Update every symbol with the batch's trades (in row order) and return per-row values."""
        config = self.config
        n = len(batch)
        if n == 0:
            empty = {name: np.zeros(0, np.int64 if name == "trades" else np.float64) for name in config.columns()}
            return IndicatorFrame(empty, (), np.zeros(0, np.int64))
        if int(batch.ts.max()) >= 2**TS_BITS or int(batch.ts.min()) < 0:
            raise ValueError("ts must be epoch milliseconds in [0, 2**42)")
        slot_of_local = self.slots.slots_for(batch.symbols)
        if len(self.slots) > len(self.trades):
            self._add_slots(len(self.slots))
        group = Grouping.of(batch.symbol_idx, len(batch.symbols))
        slot = slot_of_local[group.local_symbol]  # slot of each segment
        price = batch.price[group.order]
        size = batch.size[group.order]
        clock = segmented_cummax(batch.ts[group.order], group.lengths, self.clock[slot])

        scan = RaggedScan(group.lengths)
        sums = np.empty((n, 3))
        sums[:, PRICE], self.sums[slot, PRICE] = scan.cumsum(price, self.sums[slot, PRICE])
        sums[:, VOLUME], self.sums[slot, VOLUME] = scan.cumsum(size, self.sums[slot, VOLUME])
        sums[:, NOTIONAL], self.sums[slot, NOTIONAL] = scan.cumsum(price * size, self.sums[slot, NOTIONAL])
        position_in_segment = np.arange(n) - group.starts[group.segment]
        trades = self.trades[slot][group.segment] + position_in_segment + 1

        # extended view per segment: [kept history of the symbol, this batch's trades]
        hist_start = self.history_offsets[slot]
        hist_len = self.history_offsets[slot + 1] - hist_start
        ext_len = hist_len + group.lengths
        ext_start = exclusive_cumsum(ext_len)
        hist_rows = ragged_arange(hist_start, hist_len)
        new_at = ext_start[group.segment] + hist_len[group.segment] + position_in_segment
        is_new = np.zeros(int(ext_len.sum()), bool)
        is_new[new_at] = True
        ext_ts = np.empty(len(is_new), np.int64)
        ext_ts[~is_new] = self.history_ts[hist_rows]
        ext_ts[new_at] = clock
        ext_sums = np.empty((len(is_new), 3))
        ext_sums[~is_new] = self.history_sums[hist_rows]
        ext_sums[new_at] = sums

        columns: dict[str, np.ndarray] = {"price": price}
        for period in config.sma_periods:
            enough = trades >= period
            back = np.where(enough, new_at - period, new_at)
            columns[f"sma_{period}"] = np.where(
                enough, (ext_sums[new_at, PRICE] - ext_sums[back, PRICE]) / period, np.nan
            )
        decay_prev = np.where(np.isnan(self.ema[slot]), price[group.starts][:, None], self.ema[slot])
        for k, period in enumerate(config.ema_periods):
            columns[f"ema_{period}"], self.ema[slot, k] = scan.ema(price, 2.0 / (period + 1), decay_prev[:, k])

        # window starts by binary search in one int64 key that is sorted across all segments
        ext_segment = np.repeat(np.arange(len(slot)), ext_len)
        base = NO_TIME - 1
        span = int(ext_ts.max()) - base + 1
        key = ext_segment * span + (ext_ts - base)
        for window in config.vwap_windows_ms:
            query = group.segment * span + (np.maximum(clock - window, NO_TIME) - base)
            before = np.searchsorted(key, query, side="right") - 1
            notional = ext_sums[new_at, NOTIONAL] - ext_sums[before, NOTIONAL]
            volume = ext_sums[new_at, VOLUME] - ext_sums[before, VOLUME]
            columns[f"vwap_{window_name(window)}"] = notional / volume
        columns["session_vwap"] = sums[:, NOTIONAL] / sums[:, VOLUME]
        columns["trades"] = trades
        columns["volume"] = sums[:, VOLUME]

        last = group.starts + group.lengths - 1
        self.trades[slot] = trades[last]
        self.clock[slot] = clock[last]
        self.last_price[slot] = price[last]
        self._keep_history(slot, ext_start, ext_len, ext_ts, ext_sums, key, span, base)

        unsorted = {name: np.empty_like(values) for name, values in columns.items()}
        for name, values in columns.items():
            unsorted[name][group.order] = values
        symbols = tuple(batch.symbols[i] for i in group.local_symbol.tolist())
        return IndicatorFrame(unsorted, symbols, group.order[last])

    def _keep_history(self, slot: np.ndarray, ext_start: np.ndarray, ext_len: np.ndarray,
                      ext_ts: np.ndarray, ext_sums: np.ndarray, key: np.ndarray, span: int,
                      base: int) -> None:  # fmt: skip
        """Keep per touched symbol the floor plus the trades its SMAs and windows can still reach."""
        segments = np.arange(len(slot))
        longest = max(self.config.vwap_windows_ms, default=0)
        horizon = np.maximum(self.clock[slot] - longest, NO_TIME)
        floor_at = np.searchsorted(key, segments * span + (horizon - base), side="right") - 1
        ext_end = ext_start + ext_len
        keep_from = np.maximum(np.minimum(floor_at, ext_end - self.keep_trades), ext_start)
        lengths = np.diff(self.history_offsets)
        old_start = self.history_offsets[:-1].copy()
        new_lengths = lengths.copy()
        new_lengths[slot] = ext_end - keep_from
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(new_lengths, out=offsets[1:])
        untouched = np.ones(len(lengths), bool)
        untouched[slot] = False
        untouched_slots = np.flatnonzero(untouched)
        dest_old = ragged_arange(offsets[untouched_slots], lengths[untouched_slots])
        src_old = ragged_arange(old_start[untouched_slots], lengths[untouched_slots])
        dest_new = ragged_arange(offsets[slot], new_lengths[slot])
        src_new = ragged_arange(keep_from, new_lengths[slot])
        history_ts = np.empty(int(offsets[-1]), np.int64)
        history_sums = np.empty((int(offsets[-1]), 3))
        history_ts[dest_old] = self.history_ts[src_old]
        history_sums[dest_old] = self.history_sums[src_old]
        history_ts[dest_new] = ext_ts[src_new]
        history_sums[dest_new] = ext_sums[src_new]
        self.history_offsets, self.history_ts, self.history_sums = offsets, history_ts, history_sums

    def to_bytes(self) -> bytes:
        """The whole stage (config and state) as one checkpoint byte string."""
        meta = {
            "kind": "indicators",
            "sma_periods": list(self.config.sma_periods),
            "ema_periods": list(self.config.ema_periods),
            "vwap_windows_ms": list(self.config.vwap_windows_ms),
            "symbols": self.slots.names,
        }
        arrays = {name: getattr(self, name) for name in self._STATE}
        return pack_state(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Indicators:
        """A stage restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "indicators":
            raise ValueError("checkpoint is not an indicator stage")
        config = IndicatorConfig(tuple(meta["sma_periods"]), tuple(meta["ema_periods"]), tuple(meta["vwap_windows_ms"]))
        stage = cls(config)
        stage.slots = SymbolSlots(tuple(meta["symbols"]))
        for name in cls._STATE:
            setattr(stage, name, arrays[name])
        return stage

    _STATE = ("sums", "trades", "clock", "last_price", "ema", "history_offsets", "history_ts", "history_sums")
