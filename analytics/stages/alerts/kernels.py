"""The array kernels of the slump scan: range maxima, running maxima per symbol, rank searches.

Each works on whole batches in a few numpy passes and is exact (maxima and comparisons only), so the
stage's alerts do not depend on how the stream was batched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tickerdash.analytics.engine.segments import ragged_arange

INF_BITS = 0x7FF0_0000_0000_0000  # bits of +inf: positive finite doubles are the int64s in (0, this)


class RangeMax:
    """Highest value of any row range [lo, hi] in O(1), after an O(n log n) sparse-table build.

    Level l of the table holds the maximum of rows [i, i + 2**l) (clipped at the end), so a range is
    covered by two overlapping power-of-two blocks; max is exact, so results are exact.
    """

    __slots__ = ("table",)

    def __init__(self, values: np.ndarray) -> None:
        n = len(values)
        levels = max(1, int(n).bit_length())
        self.table = np.empty((levels, n), np.float64)
        self.table[0] = values
        for level in range(1, levels):
            half = 1 << (level - 1)
            prev, cur = self.table[level - 1], self.table[level]
            cur[:] = prev
            np.maximum(prev[: n - half], prev[half:], out=cur[: n - half])

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """max(values[lo[i] : hi[i] + 1]) for every i (needs lo <= hi)."""
        level = np.frexp((hi - lo + 1).astype(np.float64))[1] - 1
        return np.maximum(self.table[level, lo], self.table[level, hi - (1 << level) + 1])


def prefix_counts(
    ref: np.ndarray, price: np.ndarray, factors: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """For each row, how many leading rules of factors[lo:hi] (loosest first) the price is below.

    `price <= ref * f` holds for a prefix of a descending list because rounding is monotonic,
    so a vectorised binary search finds its length with the exact comparison the rules use.
    """
    first = lo.copy()
    lo, hi = lo.copy(), hi.copy()  # invariant: rules before lo are below, rules from hi on are not
    if len(factors) == 0:
        return np.zeros(len(lo), np.int64)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo - first
        mid = np.minimum((lo + hi) // 2, len(factors) - 1)
        below = price <= ref * factors[mid]
        lo = np.where(open_ & below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)


def pad(values: np.ndarray, index: np.ndarray, fill: float | int | bool) -> np.ndarray:
    """values[index] where index is in range, else `fill` (for slots added after a lookup table)."""
    out = np.full(len(index), fill, dtype=values.dtype)
    inside = index < len(values)
    out[inside] = values[index[inside]]
    return out


def objects(items: Iterable[str]) -> np.ndarray:
    """Strings as a 1-D object array (fancy indexing gathers them without a Python loop)."""
    values = list(items)
    out = np.empty(len(values), object)
    out[:] = values
    return out


def first_of_ranks(seg: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each rank is first reached: rows grouped by segment, row i below the first count[i] rules of a list.

    Returns (row index, rank) pairs: for every rank q some row of a segment reaches (count > q), the
    first such row of that segment. A running maximum per segment does it: the ranks a row adds are
    those between the segment's maximum before it and its own count.
    """
    if len(count) == 0:
        return count, count
    width = int(count.max()) + 1
    offset = seg * width  # segments ascend, so the running maximum never leaks into the next one
    before = np.zeros(len(count), np.int64)
    before[1:] = np.maximum.accumulate(offset + count)[:-1] - offset[1:]
    before = np.maximum(before, 0)  # a segment's first row: nothing before it
    new = np.maximum(count - before, 0)
    at = np.flatnonzero(new)
    return np.repeat(at, new[at]), ragged_arange(before[at], new[at])


def max_after(values: np.ndarray, segment_end: np.ndarray) -> np.ndarray:
    """For each row, the highest value of the later rows of its contiguous segment (-inf for a last row).

    `segment_end[i]` is the end (exclusive) of row i's segment. Doubling: after the step with stride d
    each row covers the next min(2d, remaining) rows, so it takes log2(longest segment) vectorised steps.
    """
    n = len(values)
    later = np.full(n, -np.inf)
    later[:-1] = values[1:]
    remaining = segment_end - np.arange(n) - 1  # rows after this one in its segment
    later[remaining == 0] = -np.inf
    stride, longest = 1, int(remaining.max(initial=0))
    while stride < longest:
        np.maximum(later[:-stride], later[stride:], out=later[:-stride], where=remaining[:-stride] > stride)
        stride *= 2
    return later


@dataclass(frozen=True, slots=True)
class Segments:
    """The batch's watched trades grouped by symbol (arrival order kept), with each symbol's clock."""

    batch_row: np.ndarray  # batch row of each sorted row
    slot: np.ndarray  # per segment: symbol slot
    start: np.ndarray
    end: np.ndarray
    row_seg: np.ndarray  # per sorted row: its segment
    price: np.ndarray
    clock: np.ndarray

    @property
    def last_clock(self) -> np.ndarray:
        """Per segment: the symbol's clock after the batch."""
        return self.clock[self.end - 1]


@dataclass(frozen=True, slots=True)
class History:
    """The carried deques of a batch's symbols in segment order, and the batch's (segment, time) keys.

    A (segment, time) pair packed into one int64 key sorts across segments, so window starts are
    one binary search.
    """

    ts: np.ndarray
    price: np.ndarray
    seg: np.ndarray
    top: np.ndarray  # per segment: highest remembered price (-inf when none)
    base: int
    span: int
    row_key: np.ndarray
    key: np.ndarray


class Scans:
    """Running maxima of the batch's prices within each symbol's rows, exact and in a few array passes.

    The int64 bit pattern of a positive finite double orders like the double, so within a segment
    a price becomes a small integer (its bits minus the segment's lowest bits); lifting each segment
    above the next (or the previous) lets one `maximum.accumulate` scan all segments at once. When a
    symbol's prices in the batch span too wide a range for that (beyond a factor of ~4 with 500
    symbols), a sparse table and a doubling scan give the same results more slowly.
    """

    __slots__ = ("_prefix", "_table", "order", "segs")

    def __init__(self, segs: Segments) -> None:
        self.segs = segs
        self._prefix: np.ndarray | None = None
        self._table: RangeMax | None = None
        bits = segs.price.view(np.int64)
        low, high = np.minimum.reduceat(bits, segs.start), np.maximum.reduceat(bits, segs.start)
        width = int((high - low).max()) + 1
        fits = int(low.min()) > 0 and int(high.max()) < INF_BITS and width * (len(low) + 1) < 2**62
        low_of_row = low[segs.row_seg] if fits else bits
        # (rank within the segment, segment lift, lowest bits of the row's segment, rank width)
        self.order = (bits - low_of_row, segs.row_seg * width, low_of_row, width) if fits else None

    def later_lower(self) -> np.ndarray:
        """Per row: whether every later price of its segment is lower."""
        segs = self.segs
        if self.order is None:
            return segs.price > max_after(segs.price, segs.end[segs.row_seg])
        rank, lift, _, width = self.order
        key = (len(segs.start) - 1) * width - lift + rank  # later segments below earlier ones
        highest_from = np.maximum.accumulate(key[::-1])[::-1]
        return key > np.append(highest_from[1:], -1)

    def prefix(self) -> np.ndarray:
        """Per row: the highest price of its segment's rows up to it."""
        if self._prefix is None:
            if self.order is None:
                segs = self.segs
                self._prefix = self.table().query(segs.start[segs.row_seg], np.arange(len(segs.price)))
            else:
                rank, lift, low_of_row, _ = self.order
                self._prefix = (np.maximum.accumulate(lift + rank) - lift + low_of_row).view(np.float64)
        return self._prefix

    def table(self) -> RangeMax:
        """A sparse table over the batch's prices (for ranges that start inside a segment)."""
        if self._table is None:
            self._table = RangeMax(self.segs.price)
        return self._table
