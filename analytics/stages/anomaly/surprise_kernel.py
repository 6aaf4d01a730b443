"""Empirical tail surprise, compiled: how rare a value is against a decayed histogram (see
`calibration.Calibrator`), value by value, for every calibrator; and the tail scorer's pass over a batch.

`lookup` reads values against histograms as they are (the forest's and the fused calibrations, a few
values a block) and `learn` adds values to them. `tail_surprises` is the tail scorer's step: one pass in
stream order over a batch, each row against the histograms before its block, learning every block the
batch completes, where a vectorised form stacked a copy of the histograms per block and made a dozen
numpy calls per block. The loops release the GIL, so the anomaly stage runs beside the worker's own loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MINUS_LOG10_E = -1.0 / math.log(10.0)
NEAR_UPPER_EDGE = 1e-3  # of a bin's width: a value this close to its bin's upper edge may lie past it
FLOOR = 0.5  # half a value on top and below: an unseen value has a finite surprise


@njit(cache=True, nogil=True, error_model="numpy")
def _tables(counts: np.ndarray, width: float, above: np.ndarray, totals: np.ndarray, tops: np.ndarray) -> None:
    """Per histogram: the weight strictly above each bin, the total, and the upper edge of the highest bin in
    use (the top edge when none is)."""
    histograms, bins = counts.shape
    for h in range(histograms):
        running = 0.0
        highest = -1
        for b in range(bins - 1, -1, -1):
            above[h, b] = running
            running += counts[h, b]
            if highest < 0 and counts[h, b] != 0.0:
                highest = b
        totals[h] = running
        tops[h] = (highest + 1 if highest >= 0 else bins) * width


@njit(cache=True, nogil=True, error_model="numpy")
def _bin(u: float, width: float, bins: int) -> tuple[int, float]:
    """The value's bin (clipped to the histogram) and its place inside it, in [0, 1] (NaN for NaN).

    A value whose bin number does not fit an int64 (NaN, infinite, 2**63 bins away or more) gets bin 0, as
    numpy's cast to int64 gives it.
    """
    scaled = u / width
    at = int(scaled) if abs(scaled) < 2.0**63 else 0
    at = min(max(at, 0), bins - 1)
    place = scaled - at
    if place != place:
        return at, place
    return at, min(max(place, 0.0), 1.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _score_rows(
    u: np.ndarray,
    lo: int,
    hi: int,
    counts: np.ndarray,
    above: np.ndarray,
    totals: np.ndarray,
    tops: np.ndarray,
    width: float,
    out: np.ndarray,
) -> None:
    """out[r, h] = -log10 of the share of histogram h's weight at or above u[r, h], for rows lo:hi.

    The weight at or above a value is linear inside its bin; half a value is added on top and below (a
    floor), so an unseen value has a finite surprise; past the highest bin in use it goes on rising one
    decade per unit of u; a histogram with nothing learnt gives 0 (no evidence either way).
    """
    bins = counts.shape[1]
    for r in range(lo, hi):
        for h in range(u.shape[1]):
            total = totals[h]
            if total <= 0.0:
                out[r, h] = 0.0
                continue
            value = u[r, h]
            at, inside = _bin(value, width, bins)
            in_bin = counts[h, at]
            rest = 1.0 - inside
            tail = in_bin * rest + above[h, at] + FLOOR
            value_total = total + 1.0
            surprise = math.log(tail / value_total) * MINUS_LOG10_E
            # past the highest bin in use: no weight above the value's bin, and none in it (the highest bin
            # in use is lower) or the value at its upper edge (a rounding of u / width)
            if above[h, at] == 0.0 and (in_bin == 0.0 or rest < NEAR_UPPER_EDGE) and value > tops[h]:
                surprise = math.log10(value_total / FLOOR) + (value - tops[h])
            out[r, h] = surprise if not surprise < 0.0 else 0.0  # (NaN stays NaN)


@njit(cache=True, nogil=True, error_model="numpy")
def lookup(u: np.ndarray, counts: np.ndarray, width: float) -> np.ndarray:
    """Each value's surprise against the histograms as they are: u is (values, histograms)."""
    histograms = counts.shape[0]
    above = np.empty_like(counts)
    totals = np.empty(histograms)
    tops = np.empty(histograms)
    _tables(counts, width, above, totals, tops)
    out = np.empty(u.shape)
    _score_rows(u, 0, u.shape[0], counts, above, totals, tops, width, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def tail_surprises(
    tail_u: np.ndarray,
    learnt: np.ndarray,
    bounds: np.ndarray,
    seen: int,
    block: int,
    counts: np.ndarray,
    decay_per_trade: float,
    width: float,
    earlier: np.ndarray,
) -> np.ndarray:
    """Each row's tail surprise per histogram against `counts` as they were before its block.

    Rows bounds[k]:bounds[k + 1] are the batch's part of one block and `seen` the trades taken before the
    batch. When a part completes its block, the block's learnt rows (with `earlier`, the first block's
    learnt rows from earlier batches) are learnt into `counts` in place: aged by their number, then counted.
    """
    rows, histograms = tail_u.shape
    bins = counts.shape[1]
    out = np.zeros((rows, histograms))
    above = np.empty_like(counts)
    totals = np.empty(histograms)
    tops = np.empty(histograms)
    added = np.zeros((histograms, bins), np.int64)
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        _tables(counts, width, above, totals, tops)
        _score_rows(tail_u, lo, hi, counts, above, totals, tops, width, out)
        seen += hi - lo
        if seen % block == 0:
            learnt_count = 0
            added[:] = 0
            if k == 0:
                for r in range(len(earlier)):
                    learnt_count += 1
                    _count_row(added, earlier, r, width)
            for r in range(lo, hi):
                if learnt[r]:
                    learnt_count += 1
                    _count_row(added, tail_u, r, width)
            _age_and_add(counts, added, learnt_count, decay_per_trade)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def learn(counts: np.ndarray, u: np.ndarray, decay_per_trade: float, width: float) -> None:
    """Learn values into the histograms in place: age them by the number of rows of u (values, histograms),
    then count each row's value of each histogram in its bin (`Calibrator.learn`)."""
    added = np.zeros(counts.shape, np.int64)
    for r in range(len(u)):
        _count_row(added, u, r, width)
    _age_and_add(counts, added, len(u), decay_per_trade)


@njit(cache=True, nogil=True, error_model="numpy")
def _count_row(added: np.ndarray, u: np.ndarray, r: int, width: float) -> None:
    """Count row r's value of each histogram in its bin."""
    bins = added.shape[1]
    for h in range(added.shape[0]):
        added[h, _bin(u[r, h], width, bins)[0]] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _age_and_add(counts: np.ndarray, added: np.ndarray, learnt: int, decay_per_trade: float) -> None:
    """Age the histograms by `learnt` values (each weighs decay_per_trade of the one after it), then add the
    counts of those values."""
    decay = math.pow(decay_per_trade, float(learnt))  # C's pow of two floats, as Python's float ** int
    for h in range(counts.shape[0]):
        for b in range(counts.shape[1]):
            counts[h, b] = counts[h, b] * decay + added[h, b]
