"""The export's plan: chunks of one day and a group of symbols, and bucket-aligned time ranges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from tickerdash.analytics.history.export.request import (
    DAY_MS,
    INTERVAL_MS,
    NO_END_MS,
    ExportRequest,
    zone,
)

CHUNK_ROWS = 1_000_000  # source bars per chunk: about 100 MB of columns, whatever the range


@dataclass(frozen=True, slots=True)
class Chunk:
    """One unit of work: source bars of `symbols` with start in [lo_ms, hi_ms)."""

    lo_ms: int
    hi_ms: int
    symbols: tuple[str, ...]


def day_starts(lo_ms: int, hi_ms: int, tz: str) -> list[int]:
    """Epoch ms of every midnight in `tz` from the day holding lo_ms through the day holding hi_ms - 1."""
    z = zone(tz)
    first = pd.Timestamp(lo_ms, unit="ms", tz="UTC").tz_convert(z).normalize()
    last = pd.Timestamp(hi_ms - 1, unit="ms", tz="UTC").tz_convert(z).normalize()
    days = pd.date_range(first.tz_localize(None), last.tz_localize(None), freq="D").tz_localize(z)
    return [int(v) for v in days.as_unit("ms").asi8]


def plan(lo_ms: int, hi_ms: int, symbols: Sequence[str], source: str, tz: str) -> list[Chunk]:
    """Chunks covering [lo_ms, hi_ms) day by day, each with as many symbols as CHUNK_ROWS allows."""
    per_symbol_day = DAY_MS // INTERVAL_MS[source]
    group = max(1, CHUNK_ROWS // per_symbol_day)
    starts = day_starts(lo_ms, hi_ms, tz)
    bounds = [*starts[1:], hi_ms]
    names = sorted(symbols)
    return [
        Chunk(max(day, lo_ms), min(end, hi_ms), tuple(names[i : i + group]))
        for day, end in zip(starts, bounds, strict=True)
        if min(end, hi_ms) > max(day, lo_ms)
        for i in range(0, len(names), group)
    ]


def floor_bucket(ms: int, interval: str, tz: str) -> int:
    """Start of the output bar holding `ms` (a midnight in `tz` for 1d; UTC-aligned otherwise)."""
    if interval != "1d":
        return ms - ms % INTERVAL_MS[interval]
    return day_starts(ms, ms + 1, tz)[0]


def ceil_bucket(ms: int, interval: str, tz: str) -> int:
    """`ms` if an output bar starts there, else the start of the next output bar."""
    floor = floor_bucket(ms, interval, tz)
    if floor == ms:
        return ms
    if interval != "1d":
        return floor + INTERVAL_MS[interval]
    z = zone(tz)
    midnight = pd.Timestamp(floor, unit="ms", tz="UTC").tz_convert(z).tz_localize(None)
    return int((midnight + pd.Timedelta(days=1)).tz_localize(z).as_unit("ns").value // 1_000_000)


def aligned_range(request: ExportRequest) -> tuple[int, int]:
    """[lo, hi) in ms holding whole output bars only: both ends rounded up to a bar start."""
    lo = request.start_ms if request.start_ms is not None else 0
    hi = request.end_ms if request.end_ms is not None else NO_END_MS
    lo = ceil_bucket(lo, request.interval, request.tz)
    hi = ceil_bucket(hi, request.interval, request.tz) if hi < NO_END_MS else hi
    return lo, hi
