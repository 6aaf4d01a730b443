"""Copying runs of a byte buffer back to back, compiled: the inner loop of `text_tables.join_rows`."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gather_runs(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """`out` is data[starts[0]:starts[0] + lengths[0]], then the next run, and so on (it holds their total)."""
    at = 0
    for k in range(len(starts)):
        length = lengths[k]
        start = starts[k]
        out[at : at + length] = data[start : start + length]
        at += length
