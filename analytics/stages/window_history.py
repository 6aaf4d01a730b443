"""Per-symbol running sums at one point per distinct ms: what the VWAP windows look back into.

Every symbol's points live in a ring inside one shared pool (see `WindowHistory`), so the memory a
symbol holds follows its rate: rings grow when full, shrink when a burst has passed, and the pool
compacts the holes that moved rings leave.
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.engine.segments import NO_TIME, exclusive_cumsum, ragged_arange, segment_of_row

MIN_RING = 16  # points in a new symbol's window ring: quiet symbols stay small, busy ones grow
# a full ring moves to one this much larger than it needs (amortised O(1) moves): twice as large while it
# is small, so a symbol filling its 5-minute windows moves ~10 times rather than ~25 on its way to a few
# thousand points; 1.25x above, where the room a doubling leaves empty would be real memory
RING_GROWTH = 1.25
SMALL_RING_GROWTH = 2.0
SMALL_RING = 4096  # points (96 kB): rings needing fewer grow by SMALL_RING_GROWTH
POOL_GROWTH = 1.25  # the ring pool grows by this factor when full and holes are under HOLES_TO_COMPACT
COMPACT_BLOCK = 1 << 20  # pool positions slid per step of a compaction (bounds its temporaries)
# share of the pool left as holes by moved rings that makes a full pool compact (rather than grow). A
# compaction copies the whole pool in one go: at 1/8, a worker filling 5-minute windows at 100k trades/s
# compacted 46 times in 15 s, 10-48 ms each (the latency's worst stalls); at 1/2, 10 times.
HOLES_TO_COMPACT = 1 / 2
# a ring left holding under 1/RING_SHRINK of its capacity (a burst that has passed) moves to a smaller one,
# so a quiet symbol gives its memory back; far from the growth factors, so a steady symbol never moves back and forth
RING_SHRINK = 8


def ring_capacity(points: np.ndarray) -> np.ndarray:
    """The capacity of a ring that must hold these many points, with room to grow."""
    growth = np.where(points < SMALL_RING, SMALL_RING_GROWTH, RING_GROWTH)
    return np.maximum(np.ceil(points * growth).astype(np.int64), MIN_RING)


class WindowHistory:
    """Per-symbol running size and price*size sums for the VWAP windows, one point per distinct ms.

    A point (ts, volume, notional) holds the running sums at the symbol's last trade of that ms.
    The window (t - W, t] starts right after the last trade with ts <= t - W, and the running sums
    there are those of the last trade of the latest ms <= t - W, so one point per ms answers every
    query exactly: a symbol keeps at most one point per ms of its longest window, whatever its rate.

    Each symbol (slot) keeps its points in a ring inside one shared pool: logical point i (numbered
    from 0, never reused) sits at pool[base + i % capacity]. Live points are head <= i < tail and
    their times strictly increase. The head point is the floor, the last point at or before the
    longest window's start as of the symbol's clock: every later query lands on it or after it.
    `window_start[s, k]` is where window k's last query landed, so the next batch only searches
    from there. A ring that overflows moves to the end of the pool, larger, keeping its logical
    numbers; the holes that moves leave are squeezed out when the pool is full.

    The indicator stage's compiled loop (`indicator_kernel.update`) adds the points and moves the window
    starts, trade by trade; this class keeps the rings: room before a batch, eviction after it.
    """

    def __init__(self, n_windows: int) -> None:
        self.ts = np.zeros(0, np.int64)
        self.volume = np.zeros(0, np.float64)
        self.notional = np.zeros(0, np.float64)
        self.used = 0  # pool positions handed out to rings (holes included)
        self.holes = 0  # pool positions of rings that have moved away
        self.base = np.zeros(0, np.int64)
        self.capacity = np.zeros(0, np.int64)
        self.head = np.zeros(0, np.int64)
        self.tail = np.zeros(0, np.int64)
        self.window_start = np.zeros((0, n_windows), np.int64)

    def __len__(self) -> int:
        return len(self.base)

    def live_points(self) -> int:
        """How many points all symbols keep (what a checkpoint holds)."""
        return int((self.tail - self.head).sum())

    def add_slots(self, n: int) -> None:
        """Give slots up to n a ring holding just the floor: zero sums, before any time."""
        fresh = n - len(self)
        if fresh <= 0:
            return
        capacity = np.full(fresh, MIN_RING, np.int64)
        base = self._allocate(capacity)
        self.ts[base], self.volume[base], self.notional[base] = NO_TIME, 0.0, 0.0
        self.base = np.concatenate([self.base, base])
        self.capacity = np.concatenate([self.capacity, capacity])
        self.head = np.concatenate([self.head, np.zeros(fresh, np.int64)])
        self.tail = np.concatenate([self.tail, np.ones(fresh, np.int64)])
        self.window_start = np.concatenate([self.window_start, np.zeros((fresh, self.window_start.shape[1]), np.int64)])

    def _where(self, slot: np.ndarray, logical: np.ndarray) -> np.ndarray:
        """Pool position of logical point numbers of these slots."""
        return self.base[slot] + logical % self.capacity[slot]

    def _allocate(self, capacity: np.ndarray) -> np.ndarray:
        """Bases of new rings of these capacities at the end of the pool (compacting or growing it)."""
        needed = int(capacity.sum())
        if self.used + needed > len(self.ts) and self.holes >= self.used * HOLES_TO_COMPACT:
            self._compact()
        if self.used + needed > len(self.ts):
            size = max(self.used + needed, int(len(self.ts) * POOL_GROWTH) + 4 * MIN_RING)
            for array in (self.ts, self.volume, self.notional):
                # in place (realloc, which remaps large blocks rather than copying them), so growing
                # never holds the old and new pool at once; no views of the pool are ever kept
                array.resize(size, refcheck=False)
        base = self.used + exclusive_cumsum(capacity)
        self.used += needed
        return base

    def _compact(self) -> None:
        """Close the holes: slide every ring, in pool order, down to the start of the pool."""
        by_base = np.argsort(self.base, kind="stable")
        capacity = self.capacity[by_base]
        old_base = self.base[by_base]
        new_base = exclusive_cumsum(capacity)
        total = int(capacity.sum())
        # rings keep their capacity, so a ring copied whole keeps every point at base + i % capacity.
        # Copy in blocks of target positions, lowest first: a ring only ever slides down, so a block
        # reads nothing an earlier block wrote, and the index temporaries stay small.
        for first in range(0, total, COMPACT_BLOCK):
            target = np.arange(first, min(first + COMPACT_BLOCK, total), dtype=np.int64)
            ring = np.searchsorted(new_base, target, side="right") - 1
            source = old_base[ring] + (target - new_base[ring])
            for array in (self.ts, self.volume, self.notional):
                array[target[0] : target[-1] + 1] = array[source]
        self.base[by_base] = new_base
        self.used, self.holes = total, 0

    def reserve(self, slot: np.ndarray, needed: np.ndarray) -> None:
        """Move the rings of slots that need more than their capacity to larger ones, points kept."""
        short = needed > self.capacity[slot]
        if short.any():
            self._move(slot[short], ring_capacity(needed[short]))

    def _shrink(self, slot: np.ndarray) -> None:
        """Move mostly empty rings of these slots to smaller ones; once the pool is half holes, close them
        and give the pool's unused end back."""
        live = self.tail[slot] - self.head[slot]
        capacity = self.capacity[slot]
        roomy = (live * RING_SHRINK < capacity) & (capacity >= RING_SHRINK * MIN_RING)
        if not roomy.any():
            return
        self._move(slot[roomy], ring_capacity(live[roomy]))
        if self.holes >= self.used * HOLES_TO_COMPACT:
            self._compact()
            size = int(self.used * POOL_GROWTH) + 4 * MIN_RING
            if size < len(self.ts):
                for array in (self.ts, self.volume, self.notional):
                    array.resize(size, refcheck=False)  # realloc: the end of a large block goes back to the OS

    def _move(self, moving: np.ndarray, capacity: np.ndarray) -> None:
        """Move the rings of these slots to new ones of these capacities (each above its live points)."""
        base = self._allocate(capacity)  # may compact first, which moves the old rings
        live = self.tail[moving] - self.head[moving]
        logical = ragged_arange(self.head[moving], live)
        owner = np.repeat(np.arange(len(moving)), live)
        source = self._where(moving[owner], logical)
        target = base[owner] + logical % capacity[owner]
        for array in (self.ts, self.volume, self.notional):
            array[target] = array[source]
        self.holes += int(self.capacity[moving].sum())
        self.base[moving], self.capacity[moving] = base, capacity

    def evict(self, slot: np.ndarray, k_longest: int) -> None:
        """Drop points before the longest window's start (its floor): no later query reaches them."""
        self.head[slot] = self.window_start[slot, k_longest]
        self._shrink(slot)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The live points only, laid out per slot, with window starts relative to each head."""
        live = self.tail - self.head
        owner = segment_of_row(live)
        at = self._where(owner, ragged_arange(self.head, live))
        offsets = np.zeros(len(live) + 1, np.int64)
        np.cumsum(live, out=offsets[1:])
        return {
            "history_offsets": offsets,
            "history_ts": self.ts[at],
            "history_volume": self.volume[at],
            "history_notional": self.notional[at],
            "history_window_start": self.window_start - self.head[:, None],
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WindowHistory:
        """A history restored from `to_arrays`, each ring sized for its points plus room to grow."""
        window_start = arrays["history_window_start"]
        history = cls(window_start.shape[1])
        live = np.diff(arrays["history_offsets"])
        capacity = ring_capacity(live)
        history.base = history._allocate(capacity)
        history.capacity = capacity
        history.head = np.zeros(len(live), np.int64)
        history.tail = live.astype(np.int64)
        history.window_start = window_start.astype(np.int64)
        at = history._where(segment_of_row(live), ragged_arange(history.head, live))
        history.ts[at] = arrays["history_ts"]
        history.volume[at] = arrays["history_volume"]
        history.notional[at] = arrays["history_notional"]
        return history
