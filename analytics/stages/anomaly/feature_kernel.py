"""The feature extractor's per-trade loop, compiled: one pass over a batch in arrival order.

Each trade reads its symbol's state (score before learn), then updates it: the averages, the clock, the
last price and, on a tape with accounts, the ring of its last trades. What each feature means is in
`features.py`; this is the arithmetic, once. Every value depends only on the symbol's own trades, added in
their order, so results are the same bits however the stream was batched. No fast-math: the compiler may
not reorder or fuse the operations.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# columns of the state's averages (`features.EMAS`, in that order) and of the output (`features.FEATURES`)
NOTIONAL, VOLUME, DEV_ABS, RET_ABS, MOMENTUM, SIZE_MEAN, SIZE_ABS, GAP_SHORT, GAP_LONG, MOVES = range(10)
PRICE_Z, JUMP_Z, MOMENTUM_Z, SIZE_Z, LOG_GAP, BURST = range(6)
AGGRESSOR_SHARE, PASSIVE_SHARE, ROUND_TRIPS, SAME_PAIR = range(6, 10)


@njit(cache=True, nogil=True, error_model="numpy")
def _bias(tables: np.ndarray, lengths: np.ndarray, decay: np.ndarray, k: int, count: int) -> float:
    """1 - decay**count of average k: from its table (its last entry is 1.0, as for every larger count), or
    computed where the table would be too long (`lengths[k] == 0`)."""
    if lengths[k] == 0:
        return 1.0 - decay[k] ** np.float64(count)
    return tables[k, min(count, lengths[k] - 1)]


@njit(cache=True, nogil=True, error_model="numpy")
def powers(decay: float, length: int) -> np.ndarray:
    """decay**c for c = 0 .. length - 1, by the pow `_bias` uses per row (C's): numpy's vectorised power may
    differ from it in the last bit (it does on AVX-512 hosts), and a bias table must hold the same bits."""
    out = np.empty(length)
    for c in range(length):
        out[c] = decay ** np.float64(c)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _maximum(a: float, b: float) -> float:
    """np.maximum of two floats: NaN if either is."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _finite_or_huge(x: float) -> float:
    """np.nan_to_num of one float: NaN to 0, infinities to the largest finite floats."""
    if x != x:
        return 0.0
    if x == np.inf:
        return 1.7976931348623157e308
    if x == -np.inf:
        return -1.7976931348623157e308
    return x


@njit(cache=True, nogil=True, error_model="numpy")
def extract(
    slot: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    ts: np.ndarray,
    side: np.ndarray,
    buyer: np.ndarray,
    seller: np.ndarray,
    has_accounts: bool,
    no_account: int,
    side_sell: int,
    decay: np.ndarray,
    bias_tables: np.ndarray,
    bias_lengths: np.ndarray,
    mad_to_sigma: float,
    tiny: float,
    min_scale: float,
    warmup: int,
    wash_window_ms: int,
    count: np.ndarray,
    last_log_price: np.ndarray,
    last_ts: np.ndarray,
    ema: np.ndarray,
    ring_buyer: np.ndarray,
    ring_seller: np.ndarray,
    ring_aggressor: np.ndarray,
    ring_size: np.ndarray,
    ring_ts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every trade's features (n, 10) and whether it is warming up, learning each trade after scoring it."""
    n = len(slot)
    values = np.zeros((n, 10), np.float64)
    warming = np.empty(n, np.bool_)
    alpha = 1.0 - decay
    alpha_m = alpha[MOMENTUM]
    momentum_unit = math.sqrt(alpha_m / (2.0 - alpha_m))
    k_ring = ring_size.shape[1]
    before = np.empty(10, np.float64)  # the symbol's averages before the trade
    bias = np.empty(10, np.float64)  # and their bias corrections: 1 - decay**(trades averaged)
    for row in range(n):
        s = slot[row]
        c = count[s]
        p, v, t = price[row], size[row], ts[row]
        log_price = math.log(p)
        log_size = math.log(v)
        seen = c > 0
        ret = log_price - last_log_price[s] if seen else 0.0
        gap = np.float64(max(t - last_ts[s], 0)) if seen else 0.0
        for k in range(10):
            before[k] = ema[s, k]
            bias[k] = _bias(bias_tables, bias_lengths, decay, k, c)

        # the averages that need no other one, then the two scales that need the first ones
        ema[s, NOTIONAL] = alpha[NOTIONAL] * (p * v) + decay[NOTIONAL] * before[NOTIONAL]
        ema[s, VOLUME] = alpha[VOLUME] * v + decay[VOLUME] * before[VOLUME]
        ema[s, RET_ABS] = alpha[RET_ABS] * abs(ret) + decay[RET_ABS] * before[RET_ABS]
        ema[s, MOVES] = alpha[MOVES] * (1.0 if ret != 0.0 else 0.0) + decay[MOVES] * before[MOVES]
        ema[s, MOMENTUM] = alpha[MOMENTUM] * ret + decay[MOMENTUM] * before[MOMENTUM]
        ema[s, SIZE_MEAN] = alpha[SIZE_MEAN] * log_size + decay[SIZE_MEAN] * before[SIZE_MEAN]
        ema[s, GAP_SHORT] = alpha[GAP_SHORT] * gap + decay[GAP_SHORT] * before[GAP_SHORT]
        ema[s, GAP_LONG] = alpha[GAP_LONG] * gap + decay[GAP_LONG] * before[GAP_LONG]
        vwap = (before[NOTIONAL] / bias[NOTIONAL]) / (before[VOLUME] / bias[VOLUME])
        deviation = log_price - math.log(vwap) if seen else 0.0
        size_dev = log_size - before[SIZE_MEAN] / bias[SIZE_MEAN] if seen else 0.0
        ema[s, DEV_ABS] = alpha[DEV_ABS] * abs(deviation) + decay[DEV_ABS] * before[DEV_ABS]
        ema[s, SIZE_ABS] = alpha[SIZE_ABS] * abs(size_dev) + decay[SIZE_ABS] * before[SIZE_ABS]
        dev_scale = before[DEV_ABS] / bias[DEV_ABS]
        size_scale = before[SIZE_ABS] / bias[SIZE_ABS]
        ret_scale = before[RET_ABS] / bias[RET_ABS]
        moves = before[MOVES] / bias[MOVES]
        after_one_more = c + 1  # momentum and the short gap include the trade itself
        momentum = ema[s, MOMENTUM] / _bias(bias_tables, bias_lengths, decay, MOMENTUM, after_one_more)
        gap_short = ema[s, GAP_SHORT] / _bias(bias_tables, bias_lengths, decay, GAP_SHORT, after_one_more)
        gap_long = before[GAP_LONG] / bias[GAP_LONG]

        # no scale below half the symbol's mean move (see `features.py`)
        floor = _maximum(0.5 * _finite_or_huge(ret_scale / _maximum(moves, tiny)), min_scale)
        out = values[row]
        out[PRICE_Z] = deviation / (mad_to_sigma * _maximum(dev_scale, floor) + tiny)
        ret_sigma = mad_to_sigma * _maximum(ret_scale, floor) + tiny
        out[JUMP_Z] = ret / ret_sigma
        out[MOMENTUM_Z] = momentum / (ret_sigma * momentum_unit)
        out[SIZE_Z] = size_dev / (mad_to_sigma * size_scale + tiny)
        out[LOG_GAP] = math.log1p(gap)
        out[BURST] = math.log((gap_long + 1.0) / (gap_short + 1.0))

        if has_accounts:
            b, sl = buyer[row], seller[row]
            sells = side[row] == side_sell
            aggressor = sl if sells else b
            passive = b if sells else sl
            if b != no_account or sl != no_account:
                recent = own = theirs = 0.0
                trips = pairs = 0
                both_known = b != no_account and sl != no_account
                for e in range(k_ring):
                    e_buyer, e_seller, e_size = ring_buyer[s, e], ring_seller[s, e], ring_size[s, e]
                    recent += e_size
                    if ring_aggressor[s, e] == aggressor:
                        own += e_size
                    if e_buyer == passive or e_seller == passive:
                        theirs += e_size
                    passive_buys = e_buyer == passive and e_seller == aggressor
                    aggressor_buys = e_buyer == aggressor and e_seller == passive
                    if (passive_buys or aggressor_buys) and both_known and t - ring_ts[s, e] <= wash_window_ms:
                        pairs += 1
                        if (aggressor_buys if sells else passive_buys) and e_size == v:
                            trips += 1
                if aggressor != no_account:
                    out[AGGRESSOR_SHARE] = own / recent
                if passive != no_account:
                    out[PASSIVE_SHARE] = theirs / recent
                out[ROUND_TRIPS] = trips
                out[SAME_PAIR] = pairs
            # the ring keeps the symbol's last trades, oldest first
            for e in range(k_ring - 1):
                ring_buyer[s, e] = ring_buyer[s, e + 1]
                ring_seller[s, e] = ring_seller[s, e + 1]
                ring_aggressor[s, e] = ring_aggressor[s, e + 1]
                ring_size[s, e] = ring_size[s, e + 1]
                ring_ts[s, e] = ring_ts[s, e + 1]
            last = k_ring - 1
            ring_buyer[s, last], ring_seller[s, last], ring_aggressor[s, last] = b, sl, aggressor
            ring_size[s, last], ring_ts[s, last] = v, t

        for j in range(10):
            if not math.isfinite(out[j]):
                out[j] = 0.0
        warming[row] = c < warmup
        if c < warmup:  # averages of too few trades say nothing yet
            for j in range(BURST + 1):
                out[j] = 0.0
        count[s] = c + 1
        last_log_price[s] = log_price
        last_ts[s] = max(last_ts[s], t)
    return values, warming
