"""Replay pacing: publish recorded trades at N x the pace of their own timestamps.

The timing is pure arithmetic on event times and an injected clock, so tests run it without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

DEFAULT_RESOLUTION_S = 0.01  # trades due within the same 10 ms of wall time go out together


class ReplayPacer:
    """Spaces out trades so they go out at `speed` x the pace of their event times (None: no waiting).

    The first trade anchors event time to wall time; every later trade is due at
    `anchor_wall + (ts - anchor_ts) / 1000 / speed`. Event time never runs backwards (a trade
    stamped earlier than one before it is due at once), and a replay that falls behind catches up
    without waiting rather than re-anchoring.
    """

    __slots__ = ("_anchor_ts", "_anchor_wall", "_latest_ts", "clock", "resolution_s", "sleep", "speed")

    def __init__(
        self,
        speed: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        resolution_s: float = DEFAULT_RESOLUTION_S,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self.resolution_s = resolution_s
        self._anchor_ts: int | None = None
        self._anchor_wall = 0.0
        self._latest_ts = 0

    def plan(self, ts_ms: np.ndarray) -> list[tuple[int, int, float]]:
        """Cut trades (in file order) into runs due together: `(start, stop, due wall time)` each."""
        n = int(ts_ms.shape[0])
        if n == 0:
            return []
        if self.speed is None:
            return [(0, n, float("-inf"))]
        if self._anchor_ts is None:
            self._anchor_ts, self._latest_ts = int(ts_ms[0]), int(ts_ms[0])
            self._anchor_wall = self.clock()
        event_clock = np.maximum.accumulate(np.maximum(ts_ms.astype(np.int64), self._latest_ts))
        self._latest_ts = int(event_clock[-1])
        due = self._anchor_wall + (event_clock - self._anchor_ts) / 1000.0 / self.speed
        slot = np.floor((due - self._anchor_wall) / self.resolution_s)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(slot)) + 1))
        stops = np.append(starts[1:], n)
        return [(int(a), int(b), float(due[a])) for a, b in zip(starts, stops, strict=True)]

    def pace(self, ts_ms: np.ndarray) -> Iterator[slice]:
        """Yield runs of trades as slices, each once its due time has come."""
        for start, stop, due in self.plan(ts_ms):
            wait = due - self.clock()
            if wait > 0:
                self.sleep(wait)
            yield slice(start, stop)
