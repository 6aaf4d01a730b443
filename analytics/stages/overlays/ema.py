"""EMA(n) of bar closes: alpha = 2 / (n + 1), seeded with the series' first close."""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.overlays.base import ClosedStep, OverlayLine


class ExponentialMovingAverage:
    """ema = alpha * close + (1 - alpha) * previous ema; the first bar's ema is its close."""

    def __init__(self, period: int = 20, colour: str = "#9c27b0") -> None:
        self.alpha = 2.0 / (period + 1)
        self.name, self.label = f"ema{period}", f"EMA {period}"
        self.lines = (OverlayLine(f"ema{period}", f"EMA {period}", colour),)

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """The latest EMA of each series (NaN: no bar yet)."""
        return {"ema": np.full(series, np.nan)}

    def update(self, state: dict[str, np.ndarray], series: np.ndarray, step: ClosedStep) -> tuple[np.ndarray, ...]:
        """Blend each close into its series' EMA."""
        previous = state["ema"][series]
        ema = np.where(np.isnan(previous), step.close, self.alpha * step.close + (1 - self.alpha) * previous)
        state["ema"][series] = ema
        return (ema,)
