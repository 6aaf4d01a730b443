"""OHLCV bars per symbol in event time, closed by each symbol's own watermark.

A bar of interval I covers [start, start + I) with start a multiple of I (epoch ms, UTC). Each
symbol has a watermark: the largest `ts` it has traded at. A bar closes once the watermark reaches
its end plus the grace period (`watermark >= end + grace`); a trade then still counts in its bar if
that bar is open. A trade whose finest-interval bar has already closed is late: it counts in no
bar at all (so a 1m bar is always exactly the sum of its 1s bars) and its row is returned for the
dead-letter stream. Watermarks are per symbol, not per partition, so a quiet symbol never makes a
busy one's trades late; a symbol that stops trading keeps its last bars open until
`close_all(up_to_ms)` (the worker can call it with a partition or wall-clock watermark) or `flush()`.

Volume and price*volume are added strictly in trade order, carried across batches, so bars are
bit-for-bit the same however the trades were batched or the stage checkpointed and restored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from tickerdash.analytics.engine.segments import (
    NO_TIME,
    TS_BITS,
    Grouping,
    SymbolSlots,
    grow,
    pack_state,
    segmented_cummax,
    unpack_state,
)
from tickerdash.analytics.stages.indicators import window_name
from tickerdash.ingest.contract.batch_entries import both_forms
from tickerdash.ingest.ticks import TickBatch

NEVER_AGAIN = 2**TS_BITS  # a watermark past every possible trade: flushed bars stay closed


@dataclass(frozen=True, slots=True)
class BarConfig:
    """Bar intervals in ms (any order; the finest decides lateness) and the grace period in ms."""

    intervals_ms: tuple[int, ...] = (1_000, 60_000)
    grace_ms: int = 2_000

    def __post_init__(self) -> None:
        if not self.intervals_ms or min(self.intervals_ms) < 1 or self.grace_ms < 0:
            raise ValueError("bars need at least one interval >= 1 ms and a grace >= 0 ms")
        if len(set(self.intervals_ms)) != len(self.intervals_ms):
            raise ValueError("bar intervals must differ")
        finest = min(self.intervals_ms)
        if any(i % finest for i in self.intervals_ms):
            # then every coarser bar is a union of finest bars, so "late for the finest" is "late"
            raise ValueError("every bar interval must be a multiple of the finest")


@dataclass(frozen=True, slots=True)
class BarTable:
    """Bars as columns; bar k is symbol `symbols[symbol_idx[k]]`, interval `interval_ms[k]`."""

    symbols: tuple[str, ...]
    symbol_idx: np.ndarray  # int64
    interval_ms: np.ndarray  # int64
    start_ms: np.ndarray  # int64
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    trades: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.start_ms.shape[0])

    @property
    def symbol(self) -> np.ndarray:
        """The ticker of every bar as an object array (materialises strings)."""
        return np.asarray(self.symbols, dtype=object)[self.symbol_idx] if len(self) else np.zeros(0, object)

    @property
    def interval(self) -> np.ndarray:
        """The interval of every bar as its stream-key name ('1s', '1m', '1h')."""
        return np.asarray([window_name(int(ms)) for ms in self.interval_ms], dtype=object)

    def take(self, rows: np.ndarray) -> BarTable:
        """The bars at these indices (or boolean mask), in that order."""
        return BarTable(self.symbols, *(getattr(self, f.name)[rows] for f in fields(self)[1:]))

    def sorted(self) -> BarTable:
        """The bars ordered by interval, symbol name and start (a canonical order for comparisons)."""
        name_rank = np.argsort(np.argsort(np.asarray(self.symbols, dtype=object))) if self.symbols else None
        if name_rank is None or len(self) == 0:
            return self
        return self.take(np.lexsort((self.start_ms, name_rank[self.symbol_idx], self.interval_ms)))

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns by name, with `symbol` materialised (for tests and exports)."""
        out = {"symbol": self.symbol}
        out.update({f.name: getattr(self, f.name) for f in fields(self)[2:]})
        return out


@dataclass(frozen=True, slots=True)
class BarsOutput:
    """What one batch did: the bars it closed and the batch rows that came too late for any bar."""

    closed: BarTable
    late_rows: np.ndarray  # int64 batch row indices, ascending


@dataclass(frozen=True, slots=True)
class Arrived:
    """A batch's trades that are not late, grouped by symbol (arrival order within one), ready to fold."""

    trade_slot: np.ndarray  # slot of each trade
    ts: np.ndarray
    price: np.ndarray
    size: np.ndarray
    touched: np.ndarray  # slot of every symbol in the batch (late trades' ones too)
    late_rows: np.ndarray  # int64 batch row indices, ascending


def preload() -> None:
    """Load the compiled fold now (from numba's cache, or compiled once), so a worker's first batch does not pay:
    for batches built in memory and for batches decoded from an entry (read-only columns, another signature)."""
    for sample in both_forms(TickBatch.from_columns(["PRELOAD"], [1.0], [1.0], [0])):
        Bars(BarConfig((1,), 0)).process(sample)


# Open bars are kept as parallel arrays under these names.
_OPEN_INT = ("slot", "interval_at", "start", "trades")
_OPEN_FLOAT = ("open", "high", "low", "close", "volume", "notional")


class Bars:
    """The bar stage: `process(batch)` folds trades into open bars and returns those that closed."""

    def __init__(self, config: BarConfig | None = None) -> None:
        self.config = config or BarConfig()
        self.slots = SymbolSlots()
        self.watermark = np.zeros(0, np.int64)
        self.open_bars: dict[str, np.ndarray] = {name: np.zeros(0, np.int64) for name in _OPEN_INT}
        self.open_bars.update({name: np.zeros(0, np.float64) for name in _OPEN_FLOAT})

    def process(self, batch: TickBatch) -> BarsOutput:
        """Fold the batch's trades (in row order) into bars; return the bars closed and the late rows."""
        arrived = self.arrive(batch)
        return BarsOutput(self.fold(arrived), arrived.late_rows)

    def arrive(self, batch: TickBatch) -> Arrived:
        """Advance each symbol's watermark over the batch and find its late trades; `fold` does the rest.

        Split from the fold so that a caller can drop the late trades from the batch (and hand it to
        other stages) while the bars are folded.
        """
        n = len(batch)
        if n == 0:
            empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
            return Arrived(empty_i, empty_i, empty_f, empty_f, empty_i, empty_i)
        if int(batch.ts.max()) >= 2**TS_BITS or int(batch.ts.min()) < 0:
            raise ValueError("ts must be epoch milliseconds in [0, 2**42)")
        slot_of_local = self.slots.slots_for(batch.symbols)
        self.watermark = grow(self.watermark, len(self.slots), NO_TIME)
        group = Grouping.of(batch.symbol_idx, len(batch.symbols))
        slot = slot_of_local[group.local_symbol]
        ts = batch.ts[group.order]
        seen = segmented_cummax(ts, group.lengths, self.watermark[slot])
        watermark_before = np.empty(n, np.int64)  # the symbol's watermark when each trade arrived
        watermark_before[1:] = seen[:-1]
        watermark_before[group.starts] = self.watermark[slot]
        finest = min(self.config.intervals_ms)
        late = watermark_before >= ts - ts % finest + finest + self.config.grace_ms
        self.watermark[slot] = seen[group.starts + group.lengths - 1]
        keep = ~late
        return Arrived(
            slot[group.segment[keep]],
            ts[keep],
            batch.price[group.order[keep]],
            batch.size[group.order[keep]],
            slot,
            np.sort(group.order[late]),
        )

    def fold(self, arrived: Arrived) -> BarTable:
        """Fold `arrive`'s trades into the open bars; the bars that closed."""
        if not len(arrived.touched):
            return self._table({}, np.zeros(0, bool))
        closed = [
            self._fold(i, arrived.trade_slot, arrived.ts, arrived.price, arrived.size, arrived.touched)
            for i in range(len(self.config.intervals_ms))
        ]
        return self._concat_closed(closed)

    def _fold(
        self,
        interval_at: int,
        trade_slot: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        touched: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Merge one interval's open bars of the touched symbols with new trades; split off closed bars."""
        interval = self.config.intervals_ms[interval_at]
        bars = self.open_bars
        mine = bars["interval_at"] == interval_at
        is_touched = np.zeros(len(self.watermark), bool)
        is_touched[touched] = True
        merging = mine & is_touched[bars["slot"]]
        # records: the open partial bars first, then trades; a stable sort by (slot, start) keeps
        # each bar's partial ahead of its new trades, and trades in arrival order
        rec_slot = np.concatenate([bars["slot"][merging], trade_slot])
        rec_start = np.concatenate([bars["start"][merging], ts - ts % interval])
        key = (rec_slot << TS_BITS) | rec_start
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
        from tickerdash.analytics.stages.bar_kernel import fold_runs

        partial = {
            name: bars[name][merging] for name in ("trades", "open", "high", "low", "close", "volume", "notional")
        }
        trades, opens, highs, lows, closes, volumes, notionals = fold_runs(
            order,
            first,
            len(partial["trades"]),
            partial["trades"],
            partial["open"],
            partial["high"],
            partial["low"],
            partial["close"],
            partial["volume"],
            partial["notional"],
            price,
            size,
        )
        folded = {
            "slot": rec_slot[order][first],
            "interval_at": np.full(len(first), interval_at, np.int64),
            "start": rec_start[order][first],
            "trades": trades,
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volumes,
            "notional": notionals,
        }
        is_closed = folded["start"] + interval + self.config.grace_ms <= self.watermark[folded["slot"]]
        kept = ~merging
        self.open_bars = {name: np.concatenate([bars[name][kept], folded[name][~is_closed]]) for name in bars}
        return {name: values[is_closed] for name, values in folded.items()}

    def _concat_closed(self, parts: list[dict[str, np.ndarray]]) -> BarTable:
        merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return self._table(merged, np.ones(len(merged["start"]), bool))

    def _table(self, bars: dict[str, np.ndarray], rows: np.ndarray) -> BarTable:
        """BarTable of the selected bar records, with symbols re-encoded to the names they touch."""
        if not bars or not rows.any():
            empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
            return BarTable((), empty_i, empty_i, empty_i, *(empty_f,) * 6, empty_i)
        slots = bars["slot"][rows]
        used, symbol_idx = np.unique(slots, return_inverse=True)
        intervals = np.asarray(self.config.intervals_ms, np.int64)
        return BarTable(
            symbols=tuple(self.slots.names[s] for s in used.tolist()),
            symbol_idx=symbol_idx.astype(np.int64),
            interval_ms=intervals[bars["interval_at"][rows]],
            start_ms=bars["start"][rows],
            open=bars["open"][rows],
            high=bars["high"][rows],
            low=bars["low"][rows],
            close=bars["close"][rows],
            volume=bars["volume"][rows],
            vwap=bars["notional"][rows] / bars["volume"][rows],
            trades=bars["trades"][rows],
        )

    def open_view(self) -> BarTable:
        """Every bar still open (the live snapshot's current bars), in no particular order."""
        return self._table(self.open_bars, np.ones(len(self.open_bars["start"]), bool))

    def close_all(self, up_to_ms: int) -> BarTable:
        """Advance every symbol's watermark to at least `up_to_ms` and return the bars that closes."""
        self.watermark = np.maximum(self.watermark, min(up_to_ms, NEVER_AGAIN))
        bars = self.open_bars
        ends = bars["start"] + np.asarray(self.config.intervals_ms, np.int64)[bars["interval_at"]]
        is_closed = ends + self.config.grace_ms <= self.watermark[bars["slot"]]
        closed = self._table(bars, is_closed)
        self.open_bars = {name: values[~is_closed] for name, values in bars.items()}
        return closed

    def flush(self) -> BarTable:
        """Close every open bar (shutdown, tests); any later trade of a known symbol is late."""
        return self.close_all(NEVER_AGAIN)

    def to_bytes(self) -> bytes:
        """The whole stage (config and state) as one checkpoint byte string."""
        meta = {
            "kind": "bars",
            "intervals_ms": list(self.config.intervals_ms),
            "grace_ms": self.config.grace_ms,
            "symbols": self.slots.names,
        }
        arrays = {"watermark": self.watermark}
        arrays.update({f"open_{name}": values for name, values in self.open_bars.items()})
        return pack_state(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Bars:
        """A stage restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "bars":
            raise ValueError("checkpoint is not a bar stage")
        stage = cls(BarConfig(tuple(meta["intervals_ms"]), int(meta["grace_ms"])))
        stage.slots = SymbolSlots(tuple(meta["symbols"]))
        stage.watermark = arrays["watermark"]
        stage.open_bars = {name: arrays[f"open_{name}"] for name in (*_OPEN_INT, *_OPEN_FLOAT)}
        return stage
