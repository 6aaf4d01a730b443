"""What an overlay is: a per-series state that one closed bar advances, and the lines it draws.

An overlay keeps O(1) state per (interval, symbol) series in arrays whose first axis is the series,
and advances many series at once, each by one closed bar (`update`), so the stage never loops over
bars in Python. A value that is not defined yet (an SMA before its 20th bar) is NaN: the bar entry
then leaves its field out.

Each line carries what the chart needs to draw it (label, colour, panel), so the page's legend comes
from here; a panel other than `price` is a chart row of its own below the prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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


@dataclass(frozen=True, slots=True)
class ClosedStep:
    """One closed bar of each of several distinct series (row k belongs to the k-th series updated)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray


class Overlay(Protocol):
    """A per-bar overlay: its checkpoint name, its checkbox label, its lines, its state and its update."""

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

    def update(self, state: dict[str, np.ndarray], series: np.ndarray, step: ClosedStep) -> tuple[np.ndarray, ...]:
        """Advance the state of `series` (distinct indices) by one closed bar each; each line's value after it."""


def shift_in(window: np.ndarray, series: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Append one value to each series' window (oldest dropped, oldest first); the updated rows."""
    rows = np.empty((len(series), window.shape[1]))
    rows[:, :-1] = window[series, 1:]
    rows[:, -1] = values
    window[series] = rows
    return rows
