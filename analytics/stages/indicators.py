"""Per-symbol streaming indicators, updated on every trade by one compiled pass over a batch.

For each trade, in each symbol's arrival order: last price, SMA over the last N trades, EMA
(alpha = 2/(N+1), the value before the first trade taken as the first price), VWAP over rolling
event-time windows (t - W, t], session VWAP since the stage started, trade count and volume.

How it stays O(1) per trade: each symbol carries lifetime running sums (price, size, price*size)
added strictly in trade order. A window sum is the difference of two running sums, so the stage
only keeps, per symbol, the price sums of its last max(N) trades (a ring indexed by trade count)
and, for the time windows, the size and price*size sums at its last trade of every distinct ms
inside its longest window (see `window_history.py`). The per-trade loop is `indicator_kernel.py`
(numba); this module keeps the state and the rings' memory. Because additions happen in the same order however
the trades were batched, results are bit-for-bit independent of batch boundaries and of
checkpoint/restore.

Event time per symbol is the largest `ts` seen so far: an out-of-order trade counts in the time
windows as if it happened at that time (windows need a clock that never goes back).

Precision: a window sum is a difference of lifetime sums, so its relative error grows like
eps * (lifetime sum / window sum): about 1e-12 after a million trades of a symbol in a 20-trade
window. A worker that runs for weeks should start a new stage per trading session.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tickerdash.analytics.engine.segments import (
    NO_TIME,
    TS_BITS,
    Grouping,
    SymbolSlots,
    grow,
    pack_state,
    unpack_state,
)
from tickerdash.analytics.stages.window_history import WindowHistory
from tickerdash.ingest.contract.batch_entries import both_forms
from tickerdash.ingest.ticks import TickBatch


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


def preload() -> None:
    """Load the compiled loop now (from numba's cache, or compiled once), so a worker's first batch does not pay:
    for batches built in memory and for batches decoded from an entry (read-only columns, another signature)."""
    stage = Indicators(IndicatorConfig(sma_periods=(1,), ema_periods=(1,), vwap_windows_ms=(1,)))
    for sample in both_forms(TickBatch.from_columns(["PRELOAD"], [1.0], [1.0], [0])):
        stage.process(sample)


@functools.lru_cache(maxsize=256)
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
        self.sums = np.zeros((0, 3), np.float64)  # lifetime running sums of price, size, price*size per slot
        self.trades = np.zeros(0, np.int64)
        self.clock = np.zeros(0, np.int64)  # largest ts seen per slot
        self.last_price = np.zeros(0, np.float64)
        self.ema = np.zeros((0, len(self.config.ema_periods)), np.float64)
        # running price sum after trade c of slot s, at [s, c % keep_trades], for the last keep_trades
        # trades; [s, 0] starts as the sum before any trade (zero)
        self.recent_price_sums = np.zeros((0, self.keep_trades), np.float64)
        self.history = WindowHistory(len(self.config.vwap_windows_ms))
        # the config as the compiled loop takes it
        self._sma_periods = np.asarray(self.config.sma_periods, np.int64)
        self._alphas = 2.0 / (np.asarray(self.config.ema_periods, np.float64) + 1)
        self._windows_ms = np.asarray(self.config.vwap_windows_ms, np.int64)

    @property
    def keep_trades(self) -> int:
        """How many running price sums each symbol keeps for its SMAs."""
        return max(self.config.sma_periods, default=1)

    def _add_slots(self, n: int) -> None:
        self.sums = grow(self.sums, n, 0.0)
        self.trades = grow(self.trades, n, 0)
        self.clock = grow(self.clock, n, NO_TIME)
        self.last_price = grow(self.last_price, n, np.nan)
        self.ema = grow(self.ema, n, np.nan)
        self.recent_price_sums = grow(self.recent_price_sums, n, 0.0)
        self.history.add_slots(n)

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
        touched = slot_of_local[group.local_symbol]  # the batch's slots, one per symbol
        slot = slot_of_local[batch.symbol_idx]
        # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
        from tickerdash.analytics.stages import indicator_kernel as kernel

        history = self.history
        if config.vwap_windows_ms:
            tails = kernel.window_tails(
                slot, batch.ts, touched, self.clock, history.ts, history.base, history.capacity, history.tail
            )
            history.reserve(touched, tails - history.head[touched])
        sma, ema, vwap, session_vwap, trades, volume = kernel.update(
            slot,
            batch.price,
            batch.size,
            batch.ts,
            self._sma_periods,
            self._alphas,
            1.0 - self._alphas,
            self._windows_ms,
            self.sums,
            self.trades,
            self.clock,
            self.last_price,
            self.ema,
            self.recent_price_sums,
            history.ts,
            history.volume,
            history.notional,
            history.base,
            history.capacity,
            history.tail,
            history.window_start,
        )
        if config.vwap_windows_ms:
            history.evict(touched, int(np.argmax(config.vwap_windows_ms)))
        columns: dict[str, np.ndarray] = {"price": batch.price.copy()}
        columns |= {f"sma_{period}": sma[k] for k, period in enumerate(config.sma_periods)}
        columns |= {f"ema_{period}": ema[k] for k, period in enumerate(config.ema_periods)}
        columns |= {f"vwap_{window_name(w)}": vwap[k] for k, w in enumerate(config.vwap_windows_ms)}
        columns |= {"session_vwap": session_vwap, "trades": trades, "volume": volume}
        symbols = tuple(batch.symbols[i] for i in group.local_symbol.tolist())
        return IndicatorFrame(columns, symbols, group.order[group.starts + group.lengths - 1])

    def kept_points(self) -> int:
        """How many window-history points the stage keeps over all symbols (for memory figures)."""
        return self.history.live_points()

    def to_bytes(self) -> bytes:
        """The whole stage (config and state) as one checkpoint byte string."""
        meta = {
            "kind": "indicators",
            "layout": LAYOUT,
            "sma_periods": list(self.config.sma_periods),
            "ema_periods": list(self.config.ema_periods),
            "vwap_windows_ms": list(self.config.vwap_windows_ms),
            "symbols": self.slots.names,
        }
        arrays = {name: getattr(self, name) for name in self._STATE} | self.history.to_arrays()
        return pack_state(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Indicators:
        """A stage restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "indicators":
            raise ValueError("checkpoint is not an indicator stage")
        if meta.get("layout") != LAYOUT:
            raise ValueError("indicator checkpoint from an older state layout; replay instead of restoring")
        config = IndicatorConfig(tuple(meta["sma_periods"]), tuple(meta["ema_periods"]), tuple(meta["vwap_windows_ms"]))
        stage = cls(config)
        stage.slots = SymbolSlots(tuple(meta["symbols"]))
        for name in cls._STATE:
            setattr(stage, name, arrays[name])
        stage.history = WindowHistory.from_arrays(arrays)
        return stage

    _STATE = ("sums", "trades", "clock", "last_price", "ema", "recent_price_sums")


LAYOUT = "ms-points-v2"  # checkpoints keep one window-history point per distinct ms (not per trade)
