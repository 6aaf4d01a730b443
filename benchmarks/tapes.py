"""The trade tapes every worker benchmark runs on, built in one place.

- `synthetic`: a random walk at 50,000 trades per second of event time over 500 symbols (a closed 1s bar
  per ~100 trades): the tape the first figures were measured on, and the easiest for the bars.
- `simulated`: the simulator's default market (`tickerdash simulate --fast --universe 500`: default
  scenario, accounts, trade ids), a closed 1s bar per ~7 trades. Generated once per size and seed and
  cached as Parquet (`TICKERDASH_BENCH_CACHE`, default a folder in the system's temp dir).
- `lobster`: the NASDAQ executions of ../shared/data (3 symbols, a closed 1s bar per ~4 trades), read
  by the importers as `tickerdash ingest` reads them, `repeat` times one after the other (each copy a day
  later) for a longer run. It is published as per-tick entries, one entry per trade, as a live feed would.

`cycled` hands out any tape as an endless, time-ordered feed (the latency benchmarks' background).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import synthetic_ticks
from tickerdash.ingest.importers.reader import read_trades
from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.cli import DEFAULT_RATE_MARKET
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate

START_MS = 1_767_225_600_000  # 2026-01-01: a fixed start, so every run makes the same tapes
SYNTHETIC_EVENT_RATE = 50_000  # trades per second of event time: a busy market, so bars are far fewer than trades
DAY_MS = 86_400_000
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TICKERDASH_SHARED_DATA", REPO.parent / "shared" / "data"))
LOBSTER_FILE = SHARED_DATA / "lobster" / "lobster_trades_2012-06-21.csv"
LOBSTER_TRADES = 58_087  # trades in LOBSTER_FILE


def synthetic(n: int, symbols: int = 500, seed: int = 3, start_ms: int = START_MS) -> TickBatch:
    """Synthetic random-walk trades at SYNTHETIC_EVENT_RATE per event-time second."""
    ticks = synthetic_ticks(n, symbols=symbols, seed=seed, start_ms=start_ms)
    ts = start_ms + (np.arange(n, dtype=np.int64) * 1000) // SYNTHETIC_EVENT_RATE
    return replace(ticks, ts=ts)


def cache_dir() -> Path:
    """Where generated tapes are kept between runs."""
    path = Path(os.environ.get("TICKERDASH_BENCH_CACHE", Path(tempfile.gettempdir()) / "tickerdash-bench-tapes"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def simulated(n: int, universe: int = 500, seed: int = 0) -> TickBatch:
    """The first n trades of the simulator's default market (default scenario, accounts), cached as Parquet."""
    path = cache_dir() / f"simulated-{universe}-{seed}-{n}.parquet"
    if path.exists():
        return TickBatch.from_arrow(pq.read_table(path))
    config = MarketConfig(universe=universe, seed=seed, start_ms=START_MS, trades_per_s=DEFAULT_RATE_MARKET)
    chunks, total = [], 0
    for ticks, _ in generate(config, None):
        chunks.append(ticks)
        total += len(ticks)
        if total >= n:
            break
    tape = concat(chunks).slice(0, n)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_batches([tape.to_arrow()]), partial)
    partial.replace(path)  # whole or absent, also when two benchmarks make it at once
    return tape


def lobster_available() -> bool:
    """Whether the LOBSTER file is beside the repo (it is not shipped with it)."""
    return LOBSTER_FILE.is_file()


def lobster(repeat: int = 1) -> TickBatch:
    """The LOBSTER trades as `tickerdash ingest` reads them, `repeat` copies, each one day after the last."""
    once = concat([ticks for ticks, _ in read_trades(LOBSTER_FILE)])
    return concat([replace(once, ts=once.ts + k * DAY_MS) for k in range(repeat)])


def closed_bars(tape: TickBatch, interval_ms: int = 1000) -> int:
    """How many bars of `interval_ms` the tape closes (symbol x interval pairs with trades)."""
    keys = tape.symbol_idx.astype(np.int64) * (1 << 40) + tape.ts // interval_ms
    return int(np.unique(keys).size)


def describe(name: str, tape: TickBatch) -> str:
    """One line about a tape: trades, symbols, event-time span, trades per closed 1s bar."""
    span_s = (int(tape.ts[-1]) - int(tape.ts[0])) / 1000
    bars = closed_bars(tape)
    return (
        f"{name}: {len(tape):,} trades, {len(tape.symbols)} symbols, {span_s:,.0f} s of event time, "
        f"{bars:,} 1s bars (one per {len(tape) / bars:.1f} trades)"
    )


class Cycled:
    """A tape handed out as an endless feed: each pass shifted after the last, so event time never goes back."""

    def __init__(self, tape: TickBatch) -> None:
        self.tape = tape
        self.span_ms = int(tape.ts[-1]) - int(tape.ts[0]) + 1000
        self.next_row = 0
        self.passes = 0

    def take(self, count: int, start_ms: int) -> TickBatch:
        """The next `count` trades, their times moved so that the feed starts at `start_ms`."""
        rows = np.arange(self.next_row, self.next_row + count)
        passes = rows // len(self.tape)
        rows %= len(self.tape)
        self.next_row += count
        chunk = self.tape.take(rows)
        ts = start_ms + (chunk.ts - int(self.tape.ts[0])) + passes * self.span_ms
        return replace(chunk, ts=ts)


TAPES = ("synthetic", "simulated", "lobster")


def tape(name: str, n: int) -> TickBatch:
    """A tape by name, of about n trades (LOBSTER: whole copies of the file, at least one)."""
    if name == "synthetic":
        return synthetic(n)
    if name == "simulated":
        return simulated(n)
    if name == "lobster":
        return lobster(max(1, -(-n // LOBSTER_TRADES)))
    raise ValueError(f"unknown tape {name!r}: one of {', '.join(TAPES)}")


def available(names: Sequence[str]) -> list[str]:
    """The tapes of `names` that can be made here (LOBSTER needs ../shared/data), saying which are skipped."""
    if "lobster" in names and not lobster_available():
        print(f"  (LOBSTER skipped: {LOBSTER_FILE} is absent)")
        return [name for name in names if name != "lobster"]
    return list(names)


def tape_names(text: str) -> list[str]:
    """`--tapes` as a list (argparse type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TAPES]
    if unknown:
        raise ValueError(f"unknown tapes {unknown}: choose from {', '.join(TAPES)}")
    return names
