"""What an export asks for, checked before any data is read: the request, its errors, time parsing."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from tickerdash.analytics.engine.segments import TS_BITS

INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
# Where each interval's rows come from, best first: stored bars of that interval, else finer ones.
# Daily rows come from 1m bars (or 1s): the volatility and drawdown need intraday closes.
SOURCES = {"1s": ("1s",), "1m": ("1m", "1s"), "1h": ("1h", "1m", "1s"), "1d": ("1m", "1s")}
INCLUDES = ("alerts", "anomalies", "trades")
FORMATS = ("parquet", "csv")
DAY_MS = 86_400_000
NO_END_MS = 2**TS_BITS
Format = Literal["parquet", "csv"]


class ExportError(ValueError):
    """The request cannot be served as asked; the message says what to fix."""


class NoDataError(ExportError):
    """The request is valid but no bar lies in its range: nothing is written."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: symbols (None: all), interval, [start_ms, end_ms) in epoch ms, time zone, format."""

    symbols: tuple[str, ...] | None = None
    interval: str = "1m"
    start_ms: int | None = None
    end_ms: int | None = None
    tz: str = "UTC"
    format: Format = "parquet"
    include: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The query as plain data (for the file's metadata)."""
        out = asdict(self)
        out["symbols"] = list(self.symbols) if self.symbols is not None else "all"
        out["include"] = list(self.include)
        return out


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote: the table's path, its rows, the bars it was built from, and any extra files."""

    path: Path
    rows: int
    source_interval: str
    symbols: tuple[str, ...]
    extra: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: plan, read (and build), write, sync


ProgressFn = Callable[[int, int, int], None]  # (chunks done, chunks in all, rows written)


class Stopwatch:
    """Seconds spent per phase: `lap(phase)` adds the time since the previous lap to that phase."""

    __slots__ = ("_last", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the last lap (or the start) to `phase`."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


# --- parsing and validation ----------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The time zone called `name`, or ExportError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"--tz: unknown time zone {name!r} (use an IANA name like UTC or America/New_York)") from None


def parse_time(text: str, tz: str = "UTC", *, end: bool = False) -> int:
    """Epoch ms of a date (YYYY-MM-DD; as --end, the end of that day), an ISO timestamp, or epoch ms."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        stamp = pd.Timestamp(raw)
    except ValueError:
        raise ExportError(
            f"{'--end' if end else '--start'}: {text!r} is not a date (2026-11-26), "
            "a timestamp (2026-11-26T14:30, offsets allowed) or epoch ms"
        ) from None
    if stamp is pd.NaT:
        raise ExportError(f"{'--end' if end else '--start'}: {text!r} is empty")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(zone(tz))
    is_date = len(raw) == 10 and raw[4] == "-" and raw[7] == "-"
    if end and is_date:  # a date as the end means "through that day"
        stamp = (stamp.tz_localize(None) + pd.Timedelta(days=1)).tz_localize(zone(tz))
    return int(stamp.as_unit("ns").value // 1_000_000)


def check_output(path: Path) -> None:
    """Raise ExportError unless `path` can be created or replaced."""
    if path.is_dir():
        raise ExportError(f"--out: {path} is a directory; give a file name, e.g. {path / 'bars.parquet'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"--out: directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"--out: {path} is not writable; choose a path you can write to")


def validate(request: ExportRequest) -> None:
    """Raise ExportError for a request that cannot be right whatever the data."""
    if request.interval not in INTERVAL_MS:
        raise ExportError(f"--interval: {request.interval!r} is not one of {', '.join(INTERVAL_MS)}")
    if request.format not in FORMATS:
        raise ExportError(f"--format: {request.format!r} is not one of {', '.join(FORMATS)}")
    unknown = sorted(set(request.include) - set(INCLUDES))
    if unknown:
        raise ExportError(f"--include: {', '.join(unknown)} unknown; choose from {', '.join(INCLUDES)}")
    zone(request.tz)
    if request.start_ms is not None and request.end_ms is not None and request.start_ms >= request.end_ms:
        raise ExportError(f"--start ({iso_ms(request.start_ms)}) must be before --end ({iso_ms(request.end_ms)})")
    if request.symbols is not None and not request.symbols:
        raise ExportError("--symbols is empty: name at least one ticker, or use --all")


def iso_ms(ms: int) -> str:
    """Epoch ms as an ISO 8601 UTC timestamp."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span_text(lo_ms: int, hi_ms: int) -> str:
    """A time range as [ISO, ISO) for messages ('end' when it has none)."""
    return f"[{iso_ms(lo_ms)}, {iso_ms(hi_ms) if hi_ms < NO_END_MS else 'end'})"
