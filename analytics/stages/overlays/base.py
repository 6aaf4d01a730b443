"""What an overlay is: a per-series state that one closed bar advances, and the lines it draws.

An overlay keeps O(1) state per (interval, symbol) series in arrays whose first axis is the series,
and advances every series of a batch over all its closed bars at once (`update` on a `SeriesRun`),
with numpy over the whole run: no Python loop over bars or series. A value that is not defined yet
(an SMA before its 20th bar) is NaN: the bar entry then leaves its field out.

Each line carries what the chart needs to draw it (label, colour, panel), so the page's legend comes
from here; a panel other than `price` is a chart row of its own below the prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tickerdash.analytics.engine.segments import RaggedScan, exclusive_cumsum, segment_of_row


@dataclass(frozen=True, slots=True)
class Panel:
    """A chart row overlay lines are drawn in; `y_range` fixes its axis (None: fit the data)."""

    name: str
    y_range: tuple[float, float] | None = None


PRICE = Panel("price")  # the candlesticks' own row
OSCILLATOR = Panel("oscillator", (0.0, 100.0))  # a 0-100 row below the prices


@dataclass(frozen=True, slots=True)
class OverlayLine:
    """One line of an overlay: the bar entry field that carries its value, and how the chart draws it."""

    field: str
    label: str
    colour: str
    panel: Panel = PRICE
    dash: str = "solid"

    def to_dict(self) -> dict[str, object]:
        """Plain data for the page (the chart's `layout.meta.overlays`)."""
        return {
            "field": self.field,
            "label": self.label,
            "colour": self.colour,
            "panel": self.panel.name,
            "y_range": list(self.panel.y_range) if self.panel.y_range else None,
            "dash": self.dash,
        }


class SeriesRun:
    """A batch's closed bars grouped by series: each segment is one series' bars in start order.

    Columns (`close`, `volume`, ...) hold one value per bar in that order; `series` is the series of
    each segment (distinct), `lengths` its number of bars. The helpers give each bar what an overlay
    needs from the bars before it, the series' earlier batches included, without a loop over bars.
    """

    __slots__ = ("close", "high", "lengths", "low", "open", "scan", "segment", "series", "starts", "volume", "vwap")

    def __init__(self, series: np.ndarray, lengths: np.ndarray, **columns: np.ndarray) -> None:
        self.series, self.lengths = series, lengths.astype(np.int64, copy=False)
        self.starts = exclusive_cumsum(self.lengths)
        self.segment = segment_of_row(self.lengths)
        self.scan = RaggedScan(self.lengths)  # sequential scans (running sums, EMAs) in a few numpy calls
        self.open, self.high, self.low = columns["open"], columns["high"], columns["low"]
        self.close, self.volume, self.vwap = columns["close"], columns["volume"], columns["vwap"]

    def __len__(self) -> int:
        return len(self.segment)

    def last_rows(self) -> np.ndarray:
        """The row of each segment's last bar."""
        return self.starts + self.lengths - 1

    def window(self, history: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Each bar's last n values (n = history's width, oldest first), the series' earlier ones included.

        `history` holds each series' last n values (a row per series, oldest first): it is moved on to
        what it holds after this run. Rows are copies, summed in the same order however bars were batched.
        """
        width = history.shape[1]
        runs = len(self.series)
        extended_starts = self.starts + width * np.arange(runs, dtype=np.int64)  # [history, values] per series
        extended = np.empty(len(values) + width * runs)
        extended[(extended_starts[:, None] + np.arange(width)).ravel()] = history[self.series].ravel()
        position = np.arange(len(values), dtype=np.int64) - self.starts[self.segment]  # within its series
        extended[extended_starts[self.segment] + width + position] = values
        first = extended_starts[self.segment] + position + 1
        rows = extended[first[:, None] + np.arange(width)]
        history[self.series] = rows[self.last_rows()]
        return rows


class Overlay(Protocol):
    """A per-bar overlay: its name, its checkbox label, its lines, its state and its update."""

    @property
    def name(self) -> str:
        """An identifier unique among the overlays: names its state in checkpoints and its chart checkbox."""

    @property
    def label(self) -> str:
        """What the chart's overlay checkbox says."""

    @property
    def lines(self) -> tuple[OverlayLine, ...]:
        """Its lines, in the order of its values."""

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """Fresh state arrays for this many series (first axis: the series)."""

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """Advance the state of `run.series` over their bars in the run; each line's value at every bar."""
