"""Copying runs of a byte buffer back to back, compiled: the inner loop of `text_tables.join_rows`."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gather_runs(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """`out` is data[starts[0]:starts[0] + lengths[0]], then the next run, and so on (it holds their total)."""
    at = 0
    for k in range(len(starts)):
        start = starts[k]
        for i in range(lengths[k]):  # byte by byte: runs are a few bytes, where a slice copy costs more to set up
            out[at + i] = data[start + i]
        at += lengths[k]
