"""Empirical tail surprise: how rare a value is against a decayed histogram of recent values.

Every statistical scorer reads its evidence this way: the per-feature tails, the forest's anomaly score
and the fused threshold each keep a `Calibrator`; the tail scorer reads all its histograms at once, row by
row, in a compiled loop (`tail_kernel`).
"""

from __future__ import annotations

import numpy as np

MINUS_LOG10_E = -1.0 / float(np.log(10.0))


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
        """Age the histograms by len(u) trades, then add the values (u is (m,) or (m, histograms))."""
        bins = self.counts.shape[1]
        self.counts *= self.decay_per_trade ** len(u)
        at = self.bin_of(u.reshape(len(u), len(self.counts)))
        if len(self.counts) > 1:
            at += np.arange(len(self.counts)) * bins
        self.counts += np.bincount(at.reshape(-1), minlength=self.counts.size).reshape(self.counts.shape)

    def bin_of(self, u: np.ndarray) -> np.ndarray:
        """Each value's bin, clipped to the histogram."""
        return self._bin_of_scaled(u / self.width)

    def _bin_of_scaled(self, scaled: np.ndarray) -> np.ndarray:
        at = scaled.astype(np.int64)
        np.maximum(at, 0, out=at)  # two ufuncs: np.clip's Python wrapper costs more than both on a block
        return np.minimum(at, self.counts.shape[1] - 1, out=at)

    def surprise(self, u: np.ndarray) -> np.ndarray:
        """-log10 of the share of learnt values at or above each u (first histogram; 0 before any learning)."""
        at, inside = self.locate(u)
        return table_surprise(self.counts[:1], at, inside, u, self.width)

    def locate(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each value's bin (clipped to the histogram) and its place inside it, in [0, 1]."""
        scaled = u / self.width
        at = self._bin_of_scaled(scaled)
        inside = np.subtract(scaled, at, out=scaled)
        np.maximum(inside, 0.0, out=inside)
        return at, np.minimum(inside, 1.0, out=inside)

    def quantile(self, q: float) -> float:
        """The value below which a share q of the learnt values lies (first histogram, bin resolution)."""
        total = self.total
        if total <= 0:
            return float("inf")
        below = np.cumsum(self.counts[0])
        return float((np.searchsorted(below, q * total) + 1) * self.width)


NEAR_UPPER_EDGE = 1e-3  # of a bin's width: a value this close to its bin's upper edge may lie past it


def table_surprise(tables: np.ndarray, at: np.ndarray, inside: np.ndarray, u: np.ndarray, width: float) -> np.ndarray:
    """-log10 of the share of a histogram's weight at or above each value (see `Calibrator`).

    `tables` holds histograms as rows; `at` is each value's place in them, flat (its table's row times
    the bins plus its bin), `inside` its place within the bin; every value here uses the first table (the
    tail scorer reads several tables a value in its compiled loop, `tail_kernel`, the same way). The
    weight at or above a value is linear inside its bin; half a value is added on top and below (a
    floor), so an unseen value has a finite surprise; past the highest bin in use it goes on rising one
    decade per unit of u; a table with nothing learnt gives 0 (no evidence either way).
    """
    bins = tables.shape[1]
    above = np.empty_like(tables)  # the weight of the strictly higher bins
    above[:, -1] = 0.0
    if len(tables) == 1:  # a 1-D cumsum: the per-block call is mostly call overhead
        np.cumsum(tables[0, :0:-1], out=above[0, -2::-1])
    else:
        np.cumsum(tables[:, :0:-1], axis=1, out=above[:, -2::-1])
    total = tables.sum(axis=1)
    floor = 0.5
    tail = tables.take(at)
    empty_bin = tail == 0.0
    tail *= np.subtract(1.0, inside, out=inside)
    above_at = above.take(at)
    tail += above_at
    tail += floor
    value_total = float(total[0]) + 1.0
    tail /= value_total
    surprise = np.log(tail, out=tail)  # numpy vectorises log, not log10: -log10 is -log times 1/ln(10)
    surprise *= MINUS_LOG10_E
    # past the highest bin in use (rare): one more decade per unit of u. Such a u has no weight above
    # its bin, and either none in it (the highest bin in use is lower) or it is at its bin's upper edge
    # (the last bin's values beyond the histogram; a rounding of u / width): only those are checked. A
    # column of zeros (the account share on a public tape) then costs nothing here.
    np.logical_or(empty_bin, inside < NEAR_UPPER_EDGE, out=empty_bin)  # `inside` holds 1 - the place now
    maybe = np.flatnonzero(np.logical_and(above_at == 0.0, empty_bin, out=empty_bin))
    if len(maybe):
        maybe_table = at.take(maybe) // bins
        # the upper edge of the highest bin in use: of each checked value's table when they are fewer
        # than the tables, else of every table, then looked up
        per_value = len(maybe) < len(tables)
        checked = tables.take(maybe_table, axis=0) if per_value else tables
        top = (bins - np.argmax(checked[:, ::-1] != 0, axis=1)) * width
        top_of_maybe = top if per_value else top.take(maybe_table)
        flat_u = u.reshape(-1)
        beyond_in_maybe = flat_u.take(maybe) > top_of_maybe
        beyond = maybe[beyond_in_maybe]
        if len(beyond):
            beyond_top = top_of_maybe[beyond_in_maybe]
            surprise.reshape(-1)[beyond] = np.log10(value_total / floor) + (flat_u.take(beyond) - beyond_top)
    np.maximum(surprise, 0.0, out=surprise)
    if float(total.min()) <= 0:
        empty = total <= 0
        surprise[empty.take(at // bins)] = 0.0
    return surprise
