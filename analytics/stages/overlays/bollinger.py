"""Bollinger bands (n, k): SMA(n) of closes +- k population standard deviations of those n closes.

Two lines on the price panel, upper and lower (the middle band is the SMA overlay); undefined
before the series' n-th bar.
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.overlays.base import OverlayLine, SeriesRun


class BollingerBands:
    """Upper and lower bands around the mean of the last `period` closes, `width` deviations away."""

    def __init__(self, period: int = 20, width: float = 2.0, colour: str = "#8d6e63") -> None:
        self.period, self.width = period, width
        self.name, self.label = f"bb{period}", f"Bollinger {period}, {width:g}"
        self.lines = (
            OverlayLine(f"bb{period}_upper", f"Bollinger upper {period}, {width:g}", colour, dash="dash"),
            OverlayLine(f"bb{period}_lower", f"Bollinger lower {period}, {width:g}", colour, dash="dash"),
        )

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """The last `period` closes (NaN before they exist), oldest first."""
        return {"closes": np.full((series, self.period), np.nan)}

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """Mean +- width x population deviation of each bar's last `period` closes (NaN before there are so many)."""
        window = run.window(state["closes"], run.close)
        mean, deviation = window.mean(axis=1), window.std(axis=1)
        return mean + self.width * deviation, mean - self.width * deviation
