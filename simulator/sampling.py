"""Fast draws by inverse-CDF table lookup, and the scipy pieces the model builds on first use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

T_DF = 4.0  # Student-t degrees of freedom of per-trade innovations


class Categorical:
    """Draws category indices by inverse-CDF table lookup: one random integer and one gather per draw.

    The table has at least 16 entries per category (2**16 at least), so the weights are honoured to
    within 1/len(table); a category lighter than that is drawn rarely or never, which is fine here.
    """

    __slots__ = ("bits", "table")

    def __init__(self, weights: np.ndarray) -> None:
        self.bits = int(np.clip(np.ceil(np.log2(len(weights) * 16)), 16, 24))
        cdf = np.cumsum(weights / weights.sum())
        quantiles = (np.arange(2**self.bits) + 0.5) / 2**self.bits
        self.table = np.minimum(np.searchsorted(cdf, quantiles, side="right"), len(weights) - 1).astype(np.int32)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` category indices (int32)."""
        return self.table[rng.integers(0, 2**self.bits, n, dtype=np.uint32)]


class QuantileTable:
    """Draws a continuous distribution by inverse-CDF table lookup (2**16 cells, midpoint quantiles)."""

    __slots__ = ("table",)

    def __init__(self, quantiles: np.ndarray) -> None:
        self.table = quantiles

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` draws (float64)."""
        return self.table[rng.integers(0, len(self.table), n, dtype=np.uint32)]


@functools.cache
def student_t_table(df: float, cells: int = 2**16) -> QuantileTable:
    """Unit-variance Student-t quantiles: its tails reach the 1/(2 cells) quantile (about 30 sd at df 4)."""
    from scipy.stats import t as student_t

    quantiles = student_t.ppf((np.arange(cells) + 0.5) / cells, df) * np.sqrt((df - 2) / df)
    return QuantileTable(quantiles.astype(np.float64))


@functools.cache
def scipy_lfilter() -> Callable[..., Any]:
    """scipy's `lfilter`, imported on first use: scipy.signal and scipy.stats cost 1-2 s to import."""
    from scipy.signal import lfilter

    return lfilter


def preload() -> None:
    """Import scipy and build the Student-t table now, so a simulator pays for them before it generates."""
    scipy_lfilter()
    student_t_table(T_DF)
