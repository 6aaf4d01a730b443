"""EMA(n) of bar closes: alpha = 2 / (n + 1), seeded with the series' first close."""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.overlays.base import OverlayLine, SeriesRun


class ExponentialMovingAverage:
    """ema = alpha * close + (1 - alpha) * previous ema, from the first close (as the previous of the first bar)."""

    def __init__(self, period: int = 20, colour: str = "#9c27b0") -> None:
        self.alpha = 2.0 / (period + 1)
        self.name, self.label = f"ema{period}", f"EMA {period}"
        self.lines = (OverlayLine(f"ema{period}", f"EMA {period}", colour),)

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """The latest EMA of each series (NaN: no bar yet)."""
        return {"ema": np.full(series, np.nan)}

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """Blend each close into its series' EMA, bar after bar."""
        previous = state["ema"][run.series]
        previous = np.where(np.isnan(previous), run.close[run.starts], previous)  # a new series: its first close
        ema, state["ema"][run.series] = run.scan.ema(run.close, self.alpha, previous)
        return (ema,)
