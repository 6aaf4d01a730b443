"""A rolling VWAP of bars: sum(vwap x volume) / sum(volume) over the series' last n closed bars.

Each bar's `vwap x volume` is its traded notional, so this is the volume-weighted price of every
trade in the last n bars (fewer while the series has fewer). Rolling rather than cumulative, so the
line means the same whatever bar the worker, or a chart's back-fill, happens to start from.
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.overlays.base import OverlayLine, SeriesRun


class RollingVwap:
    """The VWAP of the last `bars` closed bars (of all of them while there are fewer)."""

    def __init__(self, bars: int = 20, colour: str = "#607d8b") -> None:
        self.bars = bars
        self.name, self.label = f"vwap{bars}", f"VWAP {bars}"
        self.lines = (OverlayLine(f"vwap{bars}", f"VWAP {bars} bars", colour, dash="dot"),)

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """The last `bars` notionals and volumes of each series (0 before they exist), oldest first."""
        return {"notional": np.zeros((series, self.bars)), "volume": np.zeros((series, self.bars))}

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """Each bar's last `bars` notionals over their volumes (NaN while no volume)."""
        notional = run.window(state["notional"], run.vwap * run.volume).sum(axis=1)
        volume = run.window(state["volume"], run.volume).sum(axis=1)
        vwap = np.full(len(run), np.nan)
        np.divide(notional, volume, out=vwap, where=volume > 0)
        return (vwap,)
