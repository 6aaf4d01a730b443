"""The bar fold's per-record loop, compiled: one pass folds sorted records into bars.

`Bars._fold` sorts one interval's records (the open partial bars it merges, then the new trades) by
(symbol slot, bar start), keeping arrival order within a bar; this reduces each run of equal keys to one
bar. Volume and price*volume are added one record at a time in that order, from 0.0, so a bar's sums are
the same bits however its trades were batched. No fast-math: the compiler may not reorder the additions.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def fold_runs(
    order: np.ndarray,
    first: np.ndarray,
    n_partial: int,
    partial_trades: np.ndarray,
    partial_open: np.ndarray,
    partial_high: np.ndarray,
    partial_low: np.ndarray,
    partial_close: np.ndarray,
    partial_volume: np.ndarray,
    partial_notional: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per run of sorted records (`first[k]` to `first[k + 1]`): trades, open, high, low, close, volume and
    notional. Record r is partial bar r when r < n_partial, else trade r - n_partial."""
    runs = len(first)
    trades = np.empty(runs, np.int64)
    opens = np.empty(runs, np.float64)
    highs = np.empty(runs, np.float64)
    lows = np.empty(runs, np.float64)
    closes = np.empty(runs, np.float64)
    volumes = np.empty(runs, np.float64)
    notionals = np.empty(runs, np.float64)
    for k in range(runs):
        end = first[k + 1] if k + 1 < runs else len(order)
        count, volume, notional = 0, 0.0, 0.0
        high, low, close = -np.inf, np.inf, np.nan
        for j in range(first[k], end):
            r = order[j]
            if r < n_partial:
                count += partial_trades[r]
                record_open, record_high, record_low = partial_open[r], partial_high[r], partial_low[r]
                close = partial_close[r]
                volume += partial_volume[r]
                notional += partial_notional[r]
            else:
                t = r - n_partial
                p = price[t]
                count += 1
                record_open, record_high, record_low, close = p, p, p, p
                volume += size[t]
                notional += p * size[t]
            if j == first[k]:
                opens[k] = record_open
            high = max(high, record_high)
            low = min(low, record_low)
        trades[k], highs[k], lows[k], closes[k] = count, high, low, close
        volumes[k], notionals[k] = volume, notional
    return trades, opens, highs, lows, closes, volumes, notionals
