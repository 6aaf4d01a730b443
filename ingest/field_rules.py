"""The field rules of docs/design.md: what each trade field may hold, and the checks that enforce them.

`normalise_symbol` checks one symbol as typed by a person or read from a file; `check_rows` checks every
row of a `TickBatch` at once, with vectorised comparisons, and names the rule each rejected row breaks.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads with the first rows checked: `normalise_symbol` is all a command line needs
    import numpy as np

    from tickerdash.ingest.ticks import TickBatch

SYMBOL_RE = re.compile(r"^[A-Z0-9./_-]{1,16}$")
MAX_ID_LEN = 64
MAX_TS_MS = 2**42  # epoch ms before the year 2109: the analytics stages pack ts into 42 bits
EARLIEST_TS_MS = 31_536_000_000  # 1971-01-01 00:00 UTC: an earlier ts is a unit mistake (seconds, say), not a trade
DAY_MS = 86_400_000
# Prices and sizes lie in [MIN_QUANTITY, MAX_QUANTITY]: then every sum, product, square and ratio the analytics
# form of them (volumes over years of trades, variances of notionals, change % between two prices) is finite.
MIN_QUANTITY = 1e-12
MAX_QUANTITY = 1e15

SIDE_BUY, SIDE_SELL = 1, -1
SIDE_CODES = {b"B": SIDE_BUY, b"S": SIDE_SELL}
SIDE_NAMES = {SIDE_BUY: "B", SIDE_SELL: "S"}

OPTIONAL_TEXT_FIELDS = ("trade_id", "buyer", "seller")


class TickError(ValueError):
    """A tick (or a whole entry) breaks the field rules; the message names the field."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The event times a tick may carry, relative to the time its entry was written (its clock).

    A `ts` before `earliest_ms`, or more than `max_behind_ms` (None: no limit) before the clock, is refused
    as `past`; more than `max_ahead_ms` after the clock, as `future`.
    """

    earliest_ms: int = EARLIEST_TS_MS
    max_ahead_ms: int = DAY_MS
    max_behind_ms: int | None = None


def normalise_symbol(raw: str) -> str:
    """Return the upper-cased symbol, or raise TickError saying what is wrong with it."""
    symbol = raw.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise TickError(f"symbol: {raw[:40]!r} must be 1-16 chars of A-Z 0-9 . - / _")
    return symbol


@functools.lru_cache(maxsize=65_536)
def symbol_problem(name: str) -> str | None:
    """Why a symbol in the columnar form is invalid (it must already be normalised), or None; cached."""
    try:
        if normalise_symbol(name) != name:
            return f"symbol: {name[:40]!r} must be upper case"
    except TickError as exc:
        return str(exc)
    return None


def check_rows(
    batch: TickBatch,
    reason: np.ndarray | None = None,
    clock_ms: np.ndarray | None = None,
    window: TimeWindow | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Validate every row at once: returns a keep mask and, for each rejected row in order, its reason.

    `reason` may carry reasons found earlier (while parsing, an object array, "" where none); the first
    reason of a row wins. With `clock_ms` (each row's entry time, epoch ms) and a `window`, event times
    outside the window are refused as `past` or `future`. Reasons are only materialised when a row
    fails: valid batches (the hot path) cost a few vectorised comparisons.
    """
    import numpy as np

    n = len(batch)
    rejected = np.zeros(n, bool) if reason is None else reason != ""
    found: list[tuple[np.ndarray, str]] = []

    def flag(bad: np.ndarray, why: str) -> None:
        fresh = bad & ~rejected
        if fresh.any():
            found.append((fresh, why))
            rejected[fresh] = True

    for i, name in enumerate(batch.symbols):
        problem = symbol_problem(name)
        if problem:
            flag(batch.symbol_idx == i, problem)
    if n:
        # `0 < x < inf` is False for NaN and for both infinities: one test instead of isfinite and > 0
        flag(~((batch.price > 0) & (batch.price < np.inf)), "price: must be a finite number > 0")
        flag(~((batch.size > 0) & (batch.size < np.inf)), "size: must be a finite number > 0")
        for name in ("price", "size"):
            values = getattr(batch, name)
            flag(values < MIN_QUANTITY, f"{name}: must be at least {MIN_QUANTITY:g}")
            flag(values > MAX_QUANTITY, f"{name}: must be at most {MAX_QUANTITY:g}")
        flag((batch.ts < 0) | (batch.ts >= MAX_TS_MS), "ts: must be epoch milliseconds in [0, 2^42)")
        if window is not None:
            _check_times(batch.ts, clock_ms, window, flag)
        flag((batch.side < SIDE_SELL) | (batch.side > SIDE_BUY), "side: must be B or S")
        for name in OPTIONAL_TEXT_FIELDS:
            column = getattr(batch, name)
            if column is not None:
                # here, not at the top: `normalise_symbol` is all that command lines and scenarios need
                import pyarrow.compute as pc

                lengths = pc.utf8_length(column).fill_null(0).to_numpy(zero_copy_only=False)
                flag(lengths > MAX_ID_LEN, f"{name}: longer than {MAX_ID_LEN} characters")
    if not found:
        return ~rejected, [] if reason is None else [str(r) for r in reason[rejected]]
    reasons = np.full(n, "", dtype=object) if reason is None else reason
    for fresh, why in found:
        reasons[fresh] = why
    return ~rejected, [str(r) for r in reasons[rejected]]


def _check_times(
    ts: np.ndarray, clock_ms: np.ndarray | None, window: TimeWindow, flag: Callable[[np.ndarray, str], None]
) -> None:
    """Flag event times outside `window` around each row's clock as `past` or `future`."""
    flag(
        ts < window.earliest_ms,
        f"past: ts is before {_utc(window.earliest_ms)}, the earliest accepted (TICKERDASH_TICK_TS_EARLIEST_MS)",
    )
    if clock_ms is None:
        return
    if window.max_behind_ms is not None:
        flag(
            ts < clock_ms - window.max_behind_ms,
            f"past: ts is more than {window.max_behind_ms / 1000:g} s before the entry was written "
            "(TICKERDASH_TICK_TS_MAX_BEHIND_S)",
        )
    flag(
        ts > clock_ms + window.max_ahead_ms,
        f"future: ts is more than {window.max_ahead_ms / 1000:g} s after the entry was written "
        "(its stream ID's time, or the event clock it declares; TICKERDASH_TICK_TS_MAX_AHEAD_S)",
    )


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
