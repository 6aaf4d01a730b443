"""The bars stage: the pure `Bars` as a stage of the engine, and the closed bars' wire format.

Late trades (their finest bar closed more than the grace period ago) are refused at admission, so no
stage sees them; they go to the dead-letter stream. The bars that a batch closes are handed on as
the product "bars" (a `ClosedBars`, to which later stages may attach per-bar float columns) and
written, once every stage has run, to `tickerdash:bars:<interval>:<SYMBOL>` (entry ID = bar start)
and, as one Arrow IPC entry per batch, to the closed-bars feed that archivers read.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickerdash.analytics.engine.stage import AppendOne, AppendWithIds, Effects, IdEntries
from tickerdash.analytics.stages.bars import BarConfig, Bars, BarTable
from tickerdash.analytics.stages.indicators import window_name
from tickerdash.ingest.contract.bars import (
    BAR_FIELDS,
    BAR_FLOAT_FIELDS,
    bar_entry_ids,
    bar_feed_fields,
    encode_bar,
    encode_bar_columns,
    encode_bar_feed,
)
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.ticks import TickBatch, row_fields

BARS_FEED_MAXLEN = 100_000
DEFAULT_BAR_RETENTION = {"1s": 21_600, "1m": 10_080, "1h": 8_760, "1d": 3_650}  # 6 h, 7 d, 1 y, 10 y
OTHER_INTERVALS_RETENTION = 10_000
LATE_REASON = "late: its bar closed more than the grace period ago"


@dataclass(slots=True)
class ClosedBars:
    """The bars one batch closed, and the per-bar float columns later stages attached to them.

    `extra` is ordered: its columns are written after the seven contract fields of each bar entry
    (`name`, `repr(float(value))`), and added to the closed-bars feed's Arrow table, in this order.
    """

    table: BarTable
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)


def bar_fields(bars: BarTable, k: int, extra: Mapping[str, np.ndarray] | None = None) -> list[Any]:
    """The stream fields of bar k, as XADD arguments (the contract's `encode_bar`)."""
    values = {name: float(column[k]) for name, column in (extra or {}).items()}
    open_, high, low, close, volume, vwap = (float(getattr(bars, name)[k]) for name in BAR_FLOAT_FIELDS)
    return encode_bar(open_, high, low, close, volume, vwap, int(bars.trades[k]), values)


def bar_entries(closed: ClosedBars, keys: Keys, retention: Mapping[str, int]) -> IdEntries:
    """Each closed bar as an entry of its symbol's stream of its interval, ID = bar start."""
    bars = closed.table
    columns = {name: getattr(bars, name) for name in BAR_FIELDS} | closed.extra
    intervals, interval_at = np.unique(bars.interval_ms, return_inverse=True)
    # one stream per (interval, symbol) of the batch: named once each, not once per bar
    streams, stream_at = np.unique(interval_at * max(1, len(bars.symbols)) + bars.symbol_idx, return_inverse=True)
    names, maxlens = [], []
    for combined in streams.tolist():
        interval = window_name(int(intervals[combined // max(1, len(bars.symbols))]))
        names.append(keys.bars(interval, bars.symbols[combined % max(1, len(bars.symbols))]))
        maxlens.append(retention.get(interval, OTHER_INTERVALS_RETENTION))
    return IdEntries(
        names,
        maxlens,
        stream_at.reshape(-1),
        bar_entry_ids(bars.start_ms),
        *encode_bar_columns(columns, tuple(closed.extra)),
    )


def encode_bar_table(bars: BarTable, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Closed bars as the closed-bars feed's Arrow IPC payload (the contract's `encode_bar_feed`)."""
    return encode_bar_feed(bars.to_dict() | dict(extra or {}))


def _feed_entry(closed: ClosedBars) -> dict[str, Any]:
    return bar_feed_fields(closed.table.to_dict() | closed.extra)


class BarsStage:
    """Stage `bars`: OHLCV bars per symbol and interval; refuses late trades before any stage sees them."""

    name = "bars"
    outputs = ("bars", "closed_bars")

    def __init__(self, config: BarConfig | None = None, retention: Mapping[str, int] | None = None) -> None:
        self.bars = Bars(config)
        self.retention = dict(DEFAULT_BAR_RETENTION if retention is None else retention)
        self._arrived: Any = None  # the admitted batch, grouped, until `process` folds it

    def admit(self, batch: TickBatch, effects: Effects) -> TickBatch:
        """The batch without its late trades (dead-lettered); folded in `process` (here if none is left)."""
        self._arrived = arrived = self.bars.arrive(batch)
        late = arrived.late_rows
        if len(late):
            has_origin = len(batch.entry_ids) > 0
            effects.rejected.extend(
                Rejected(batch.tick_id(row) if has_origin else "?", dict(row_fields(batch, row)), LATE_REASON)
                for row in late.tolist()
            )
            keep = np.ones(len(batch), bool)
            keep[late] = False
            batch = batch.take(keep)
        if not len(batch):
            self.process(batch, effects)
        return batch

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Fold the admitted trades into the open bars; hand on and write the bars that closed."""
        arrived, self._arrived = self._arrived, None
        if arrived is None:
            raise RuntimeError("the bars stage folds only what its `admit` let through")
        closed = ClosedBars(self.bars.fold(arrived))
        effects.products["bars"] = closed
        effects.products["open_bars"] = self.bars.open_view
        if len(closed):
            effects.outputs.append(
                AppendWithIds("bars", functools.partial(bar_entries, closed, retention=self.retention))
            )
            effects.outputs.append(
                AppendOne("closed_bars", Keys.closed_bars, functools.partial(_feed_entry, closed), BARS_FEED_MAXLEN)
            )

    def to_bytes(self) -> bytes:
        """The bars' checkpoint (config, watermarks, open bars)."""
        return self.bars.to_bytes()

    def load(self, data: bytes) -> None:
        """Restore a checkpoint."""
        self.bars = Bars.from_bytes(data)

    def refresh(self, client: object, keys: Keys) -> None:
        """Nothing outside the stream changes the bars."""
