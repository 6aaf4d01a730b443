"""SMA(n) of bar closes: the mean of the series' last n closes (undefined before its n-th bar)."""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.overlays.base import OverlayLine, SeriesRun


class SimpleMovingAverage:
    """The simple moving average of the last `period` closes."""

    def __init__(self, period: int = 20, colour: str = "#ff9800") -> None:
        self.period = period
        self.name, self.label = f"sma{period}", f"SMA {period}"
        self.lines = (OverlayLine(f"sma{period}", f"SMA {period}", colour),)

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """The last `period` closes (NaN before they exist), oldest first."""
        return {"closes": np.full((series, self.period), np.nan)}

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """The mean of each bar's last `period` closes (NaN while any is missing)."""
        return (run.window(state["closes"], run.close).sum(axis=1) / self.period,)
