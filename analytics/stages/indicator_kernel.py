"""The indicator stage's per-trade loop, compiled: one pass over a batch in arrival order.

`Indicators.process` calls these with its plain state arrays. Each trade costs a few arithmetic steps per
indicator, whatever the batch's size, so a live worker's small batches cost what their trades cost rather
than the dozens of numpy calls a vectorised pass needs per batch.

The arithmetic is the stage's contract (see `indicators.py`): running sums added one trade at a time in
arrival order, an SMA or a window sum as the difference of two running sums, the EMA as
`alpha * price + decay * previous`. No fast-math: the compiler may not reorder or fuse these operations,
so the bits are those of the plain Python reference in the tests, however the trades were batched.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tickerdash.analytics.engine.segments import NO_TIME


@njit(cache=True, nogil=True, error_model="numpy")
def window_tails(
    slot: np.ndarray,
    ts: np.ndarray,
    touched: np.ndarray,
    clock: np.ndarray,
    history_ts: np.ndarray,
    base: np.ndarray,
    capacity: np.ndarray,
    tail: np.ndarray,
) -> np.ndarray:
    """Each touched slot's window-history tail after this batch: one more point per new distinct ms of its
    clock (the ring must have room for them before `update` writes them)."""
    running = np.empty(len(clock), np.int64)
    point_ts = np.empty(len(clock), np.int64)
    count = np.empty(len(clock), np.int64)
    for s in touched:
        running[s] = clock[s]
        point_ts[s] = history_ts[base[s] + (tail[s] - 1) % capacity[s]]
        count[s] = tail[s]
    for row in range(len(slot)):
        s = slot[row]
        now = max(running[s], ts[row])
        running[s] = now
        if now != point_ts[s]:
            point_ts[s] = now
            count[s] += 1
    out = np.empty(len(touched), np.int64)
    for k in range(len(touched)):
        out[k] = count[touched[k]]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def update(
    slot: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    ts: np.ndarray,
    sma_periods: np.ndarray,
    alphas: np.ndarray,
    decays: np.ndarray,
    windows_ms: np.ndarray,
    sums: np.ndarray,
    trades: np.ndarray,
    clock: np.ndarray,
    last_price: np.ndarray,
    ema: np.ndarray,
    recent_price_sums: np.ndarray,
    history_ts: np.ndarray,
    history_volume: np.ndarray,
    history_notional: np.ndarray,
    base: np.ndarray,
    capacity: np.ndarray,
    tail: np.ndarray,
    window_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply every trade to its slot's state, in row order; per row: SMAs, EMAs and window VWAPs (one row of
    each 2-D array per period or window), session VWAP, trade count and volume.

    A point of the window history holds the running sums at the slot's last trade of a ms of its clock: a
    trade in the ms of the newest point updates it in place, a later one appends a point (the ring has room:
    `window_tails`). A window query (t - W) never reaches the point being updated, since W >= 1 ms.
    """
    n = len(slot)
    keep = recent_price_sums.shape[1]
    sma = np.empty((len(sma_periods), n), np.float64)
    smoothed = np.empty((len(alphas), n), np.float64)
    vwap = np.empty((len(windows_ms), n), np.float64)
    session = np.empty(n, np.float64)
    counts = np.empty(n, np.int64)
    volume = np.empty(n, np.float64)
    for row in range(n):
        s = slot[row]
        p = price[row]
        v = size[row]
        price_sum = sums[s, 0] + p
        volume_sum = sums[s, 1] + v
        notional_sum = sums[s, 2] + p * v
        sums[s, 0] = price_sum
        sums[s, 1] = volume_sum
        sums[s, 2] = notional_sum
        c = trades[s] + 1
        trades[s] = c
        for k in range(len(sma_periods)):
            period = sma_periods[k]
            back = c - period
            if back >= 0:
                sma[k, row] = (price_sum - recent_price_sums[s, back % keep]) / period
            else:
                sma[k, row] = np.nan
        recent_price_sums[s, c % keep] = price_sum  # after the reads: with period == keep it is the same cell
        for k in range(len(alphas)):
            previous = ema[s, k]
            if np.isnan(previous):
                previous = p
            value = alphas[k] * p + decays[k] * previous
            ema[s, k] = value
            smoothed[k, row] = value
        now = max(clock[s], ts[row])
        clock[s] = now
        last_price[s] = p
        session[row] = notional_sum / volume_sum
        counts[row] = c
        volume[row] = volume_sum
        if len(windows_ms) == 0:
            continue  # no window looks back: the history keeps no points

        ring, room = base[s], capacity[s]
        newest = tail[s] - 1
        if history_ts[ring + newest % room] != now:
            newest += 1
            tail[s] = newest + 1
        at = ring + newest % room
        history_ts[at] = now
        history_volume[at] = volume_sum
        history_notional[at] = notional_sum
        for k in range(len(windows_ms)):
            query = max(now - windows_ms[k], NO_TIME)
            floor = window_start[s, k]
            while floor + 1 <= newest and history_ts[ring + (floor + 1) % room] <= query:
                floor += 1
            window_start[s, k] = floor
            at = ring + floor % room
            vwap[k, row] = (notional_sum - history_notional[at]) / (volume_sum - history_volume[at])
    return sma, smoothed, vwap, session, counts, volume
