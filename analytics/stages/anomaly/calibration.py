"""Empirical tail surprise: how rare a value is against a decayed histogram of recent values.

Every statistical scorer reads its evidence this way: the per-feature tails, the forest's anomaly score
and the fused threshold each keep a `Calibrator`. Values are learnt and their surprise read by compiled
loops (`surprise_kernel`), value by value; the tail scorer reads all its histograms there at once, row by row.
"""

from __future__ import annotations

import numpy as np


class Calibrator:
    """Empirical tail surprise of a value against a decayed histogram of recent values.

    `surprise(u)` is -log10 P(U >= u) with linear interpolation inside a bin; past the largest value
    seen it goes on rising one decade per unit of u (the raw values are log-scaled, so this is a
    power-law tail), which keeps the most extreme trades ordered instead of tied at the floor.
    `counts` may hold several histograms of the same bins as rows (one per feature).
    """

    __slots__ = ("counts", "decay_per_trade", "high", "width")

    def __init__(self, bins: int, high: float, half_life: float, histograms: int = 1) -> None:
        self.counts = np.zeros((histograms, bins), np.float64)
        self.high = high
        self.width = high / bins
        self.decay_per_trade = 0.5 ** (1.0 / half_life)

    @property
    def total(self) -> float:
        """Decayed number of values learnt (by the first histogram)."""
        return float(self.counts[0].sum())

    def learn(self, u: np.ndarray) -> None:
        """Age the histograms by len(u) trades, then add the values (u is (m,) or (m, histograms)), each in its
        bin (clipped to the histogram)."""
        # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
        from tickerdash.analytics.stages.anomaly import surprise_kernel

        values = np.ascontiguousarray(u, np.float64).reshape(len(u), len(self.counts))
        surprise_kernel.learn(self.counts, values, self.decay_per_trade, self.width)

    def surprise(self, u: np.ndarray) -> np.ndarray:
        """-log10 of the share of learnt values at or above each u (first histogram; 0 before any learning)."""
        from tickerdash.analytics.stages.anomaly.surprise_kernel import lookup

        values = np.ascontiguousarray(u, np.float64).reshape(-1, 1)
        return lookup(values, self.counts[:1], self.width).reshape(np.shape(u))

    def quantile(self, q: float) -> float:
        """The value below which a share q of the learnt values lies (first histogram, bin resolution)."""
        total = self.total
        if total <= 0:
            return float("inf")
        below = np.cumsum(self.counts[0])
        return float((np.searchsorted(below, q * total) + 1) * self.width)
