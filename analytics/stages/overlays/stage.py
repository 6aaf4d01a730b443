"""The overlay stage: every registered overlay, advanced on every closed bar of every bar series.

A series is one (interval, symbol) pair. Closed bars arrive in batches (a `BarTable` from the bar
stage, many series mixed); within one series they close in start order, so the stage sorts a batch's
bars by series then start into a `SeriesRun` and each overlay advances every series over all its bars
in a few numpy calls (whether a batch closes one bar of each of 5,000 series or 5,000 bars of one).
The state of a series depends only on its own bars in order, so the values are the same bits whatever
the batch split, and across `to_bytes` / `load`.

The stage also keeps each series' latest closed bar (start, how many bars of the series have closed,
overlay values) for the live view, which tells the page when to extend its overlay lines, and (by
the count) when it missed a bar and must fetch it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tickerdash.analytics.engine.segments import pack_state, unpack_state
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.overlays.base import Overlay, SeriesRun
from tickerdash.analytics.stages.overlays.registry import OVERLAYS, overlay_lines
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.ticks import TickBatch

if TYPE_CHECKING:
    from tickerdash.analytics.engine.stage import Effects
    from tickerdash.ingest.contract.keys import Keys


class OverlayStage:
    """Overlay values for closed bars, with O(1) state per (interval, symbol) series."""

    name = "overlays"
    outputs: tuple[str, ...] = ()  # its values ride in the bar entries and the live view

    def __init__(self, overlays: tuple[Overlay, ...] = OVERLAYS) -> None:
        self.overlays = overlays
        self.fields = tuple(line.field for line in overlay_lines(overlays))
        self.series_of: dict[tuple[int, str], int] = {}  # (interval ms, symbol) -> series index
        self.states = [overlay.new_state(0) for overlay in overlays]
        self.last_start = np.zeros(0, np.int64)  # start of each series' latest closed bar
        self.closed_count = np.zeros(0, np.int64)  # bars of each series closed so far
        self.last_values = np.zeros((0, len(self.fields)))  # its overlay values, columns as `fields`

    def __len__(self) -> int:
        return len(self.series_of)

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Attach every overlay field, one value per closed bar, to the bars the batch closed."""
        closed = effects.products.get("bars")
        if closed is not None and len(closed):
            closed.extra.update(self.update(closed.table))

    def refresh(self, client: AnyRedis, keys: Keys) -> None:
        """Nothing outside the stream changes the overlays."""

    def update(self, bars: BarTable) -> dict[str, np.ndarray]:
        """Advance each series over its closed bars in `bars`; every field's value per bar (NaN: undefined)."""
        out = {name: np.full(len(bars), np.nan) for name in self.fields}
        if not len(bars):
            return out
        series = self._series(bars)
        rows = np.lexsort((bars.start_ms, series))  # series by series, each in start order
        ordered = series[rows]
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        run = SeriesRun(
            ordered[first],
            np.diff(np.r_[first, len(ordered)]),
            open=bars.open[rows],
            high=bars.high[rows],
            low=bars.low[rows],
            close=bars.close[rows],
            volume=bars.volume[rows],
            vwap=bars.vwap[rows],
        )
        values = [
            value
            for overlay, state in zip(self.overlays, self.states, strict=True)
            for value in overlay.update(state, run)
        ]
        for name, value in zip(self.fields, values, strict=True):
            out[name][rows] = value
        last = run.last_rows()
        self.last_start[run.series] = bars.start_ms[rows[last]]
        self.closed_count[run.series] += run.lengths
        if values:
            self.last_values[run.series] = np.column_stack([value[last] for value in values])
        return out

    def _series(self, bars: BarTable) -> np.ndarray:
        """The series index of every bar, adding series not seen before."""
        intervals, interval_code = np.unique(bars.interval_ms, return_inverse=True)
        pair = bars.symbol_idx * len(intervals) + interval_code
        pairs, pair_of_bar = np.unique(pair, return_inverse=True)
        width, interval_list, symbols = len(intervals), intervals.tolist(), bars.symbols
        keys = [(interval_list[code % width], symbols[code // width]) for code in pairs.tolist()]
        index = np.fromiter((self.series_of.get(key, -1) for key in keys), np.int64, len(keys))
        for k in np.flatnonzero(index < 0).tolist():  # series seen for the first time
            index[k] = self.series_of[keys[k]] = len(self.series_of)
        self._grow(len(self.series_of))
        return index[pair_of_bar]

    def _grow(self, n: int) -> None:
        extra = n - len(self.last_start)
        if extra <= 0:
            return
        for k, overlay in enumerate(self.overlays):
            fresh = overlay.new_state(extra)
            self.states[k] = {key: np.concatenate([self.states[k][key], fresh[key]]) for key in fresh}
        self.last_start = np.concatenate([self.last_start, np.full(extra, -1, np.int64)])
        self.closed_count = np.concatenate([self.closed_count, np.zeros(extra, np.int64)])
        self.last_values = np.concatenate([self.last_values, np.full((extra, len(self.fields)), np.nan)])

    def latest(self, interval_ms: int, symbols: list[str]) -> np.ndarray:
        """Each symbol's latest closed bar at the interval: (n, 2 + fields) rows of its start, the count of
        the series' closed bars, and the overlay values. All NaN for a symbol with no closed bar there yet.
        """
        out = np.full((len(symbols), 2 + len(self.fields)), np.nan)
        found = [(k, self.series_of.get((interval_ms, symbol), -1)) for k, symbol in enumerate(symbols)]
        rows = np.array([k for k, s in found if s >= 0], np.int64)
        series = np.array([s for _, s in found if s >= 0], np.int64)
        if len(rows):
            out[rows, 0] = self.last_start[series]
            out[rows, 1] = self.closed_count[series]
            out[rows, 2:] = self.last_values[series]
        return out

    def to_bytes(self) -> bytes:
        """The whole stage state as one checkpoint byte string."""
        meta = {
            "kind": "overlays",
            "series": [[ms, symbol] for (ms, symbol) in self.series_of],
            "overlays": [overlay.name for overlay in self.overlays],
            "fields": list(self.fields),
        }
        arrays = {"last_start": self.last_start, "closed_count": self.closed_count, "last_values": self.last_values}
        for overlay, state in zip(self.overlays, self.states, strict=True):
            arrays.update({f"{overlay.name}:{key}": values for key, values in state.items()})
        return pack_state(meta, arrays)

    def load(self, data: bytes) -> None:
        """Replace the state with one from `to_bytes`.

        An overlay registered since the checkpoint starts afresh on every series (its values are
        undefined until it has seen enough bars again); one no longer registered is dropped.
        """
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "overlays":
            raise ValueError("checkpoint is not an overlay stage")
        self.series_of = {(int(ms), str(symbol)): k for k, (ms, symbol) in enumerate(meta["series"])}
        n = len(self.series_of)
        self.last_start = arrays["last_start"]
        self.closed_count = arrays["closed_count"]
        self.last_values = np.full((n, len(self.fields)), np.nan)
        stored = {name: k for k, name in enumerate(meta["fields"])}
        for column, name in enumerate(self.fields):
            if name in stored:
                self.last_values[:, column] = arrays["last_values"][:, stored[name]]
        for k, overlay in enumerate(self.overlays):
            fresh = overlay.new_state(n)
            self.states[k] = {key: arrays.get(f"{overlay.name}:{key}", default) for key, default in fresh.items()}
