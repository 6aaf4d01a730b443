"""RSI(n) of bar closes with Wilder's smoothing, on a 0-100 panel of its own.

The first n changes of close seed the average gain and loss with their plain means; after that
each average moves by Wilder's rule, an EMA with alpha = 1/n: avg = gain / n + avg * (n - 1) / n.
RSI = 100 - 100 / (1 + avg gain / avg loss): 100 when nothing was lost, 50 when nothing moved at all.
Defined from the series' (n + 1)-th bar (its n-th change) on.
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.engine.segments import RaggedScan
from tickerdash.analytics.stages.overlays.base import OSCILLATOR, OverlayLine, SeriesRun


class RelativeStrengthIndex:
    """Wilder's RSI over `period` changes of close."""

    def __init__(self, period: int = 14, colour: str = "#3f51b5") -> None:
        self.period = period
        self.name, self.label = f"rsi{period}", f"RSI {period}"
        self.lines = (OverlayLine(f"rsi{period}", f"RSI {period}", colour, OSCILLATOR),)

    def new_state(self, series: int) -> dict[str, np.ndarray]:
        """Previous close, changes seen, and the gain and loss sums (while seeding) or averages (after)."""
        return {
            "previous": np.full(series, np.nan),
            "changes": np.zeros(series, np.int64),
            "gain": np.zeros(series),
            "loss": np.zeros(series),
        }

    def update(self, state: dict[str, np.ndarray], run: SeriesRun) -> tuple[np.ndarray, ...]:
        """Each bar's change of close, seeded sums, then Wilder averages; the RSI once `period` changes are in."""
        n, series, last = self.period, run.series, run.last_rows()
        previous = np.empty(len(run))
        previous[1:] = run.close[:-1]
        previous[run.starts] = state["previous"][series]  # a segment's first bar follows the series' last close
        is_new = np.isnan(previous[run.starts])  # a new series' first bar has no change
        change = run.close - np.where(np.isnan(previous), run.close, previous)
        moves = {"gain": np.maximum(change, 0.0), "loss": np.maximum(-change, 0.0)}
        position = np.arange(len(run), dtype=np.int64) - run.starts[run.segment]
        changes = (state["changes"][series] - is_new)[run.segment] + position + 1  # changes seen after each bar
        seeding = state["changes"][series] < n  # series still summing their first n changes
        smoothing = changes > n  # a suffix of each segment: the bars after the seed
        smoothed = np.bincount(run.segment[smoothing], minlength=len(series))
        after_seed = (last - smoothed)[seeding & (smoothed > 0)]  # the seed bar, in this run, of such a series
        wilder = RaggedScan(smoothed)
        averages = {}
        for key, values in moves.items():
            sums = run.scan.cumsum(values, np.where(seeding, state[key][series], 0.0))[0]
            average = np.where(changes == n, sums / n, np.nan)
            before = state[key][series].copy()  # the average a series' first smoothed bar moves on from
            before[run.segment[after_seed]] = average[after_seed]
            average[smoothing] = wilder.ema(values[smoothing], 1.0 / n, before)[0]
            state[key][series] = np.where(changes[last] >= n, average[last], sums[last])
            averages[key] = average
        state["previous"][series] = run.close[last]
        state["changes"][series] = changes[last]
        gain, loss = averages["gain"], averages["loss"]
        ratio = np.divide(gain, loss, out=np.zeros(len(run)), where=loss > 0)
        rsi = np.where(loss > 0, 100 - 100 / (1 + ratio), np.where(gain > 0, 100.0, 50.0))
        return (np.where(changes >= n, rsi, np.nan),)
