"""Micro-benchmark of the pure analytics core: ticks/s through indicators and bars, no Redis.

Synthetic market: 500 symbols with Zipf-like activity, 20k-tick batches, event time advancing at
an assumed market rate (ticks per second of event time), all default indicators and 1s/1m/1h bars.
Prints ticks/s per stage and together, and a checkpoint's size and round-trip time.

A fresh stage only ever holds a short history, which flatters it. `--steady` first replays more event
time than the longest VWAP window (in large batches, untimed), so the window history is full, then
times many batches; it prints ticks/s, the kept history and the process's peak RSS, and reruns
itself with 10,000 symbols for the RSS figure the worker must meet.

    .venv/bin/python -m benchmarks.analytics_core [--symbols 500] [--batch 20000] [--batches 100]
    .venv/bin/python -m benchmarks.analytics_core --steady [--batches 200] [--rss-symbols 10000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

from tickerdash.analytics.stages.bars import BarConfig, Bars
from tickerdash.analytics.stages.indicators import IndicatorConfig, Indicators
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.ticks import TickBatch


def synthetic_batches(
    n_symbols: int,
    batch_size: int,
    n_batches: int,
    event_rate: float,
    seed: int = 7,
    start_ms: float = 1_700_000_000_000.0,
) -> list[TickBatch]:
    """Batches of random-walk trades; symbol activity falls off like 1/rank."""
    rng = np.random.default_rng(seed)
    names = tuple(f"S{i:05d}" for i in range(n_symbols))
    weights = 1.0 / np.arange(1, n_symbols + 1)
    weights /= weights.sum()
    level = rng.uniform(10, 500, n_symbols)
    batches, now_ms = [], start_ms
    for _ in range(n_batches):
        idx = rng.choice(n_symbols, batch_size, p=weights).astype(np.int32)
        ts = (now_ms + np.cumsum(rng.exponential(1000.0 / event_rate, batch_size))).astype(np.int64)
        now_ms = float(ts[-1])
        price = level[idx] * np.exp(rng.normal(0, 1e-4, batch_size))
        level[idx] = price  # last write per symbol wins: enough of a random walk for timing
        size = rng.integers(1, 500, batch_size).astype(np.float64)
        batches.append(TickBatch(names, idx, price, size, ts, np.zeros(batch_size, np.int8)))
    return batches


def synthetic_stream(n_symbols: int, batch_size: int, event_rate: float, seed: int = 7) -> Iterator[TickBatch]:
    """Endless batches like `synthetic_batches`, made one at a time so a long run holds only one."""
    now_ms = 1_700_000_000_000.0
    while True:
        (batch,) = synthetic_batches(n_symbols, batch_size, 1, event_rate, seed, now_ms)
        yield batch
        now_ms = float(batch.ts[-1])
        seed += 1


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady(args: argparse.Namespace, config: IndicatorConfig) -> None:
    """Time batches once the longest window's history is full; print ticks/s and memory."""
    longest_ms = max(config.vwap_windows_ms, default=0)
    warm_ticks = int(args.event_rate * (longest_ms / 1000 + 30))  # a full window plus 30 s of event time
    warm_batch = max(args.batch, 200_000)  # results do not depend on batching, so warm up in big steps
    indicators, bars = Indicators(config), Bars(BarConfig(intervals_ms=(1_000, 60_000, 3_600_000)))
    start = time.perf_counter()
    warm_stream = synthetic_stream(args.symbols, warm_batch, args.event_rate)
    for _ in range(-(-warm_ticks // warm_batch)):
        batch = next(warm_stream)
        indicators.process(batch)
        bars.process(batch)
    warm_seconds = time.perf_counter() - start
    # go on in event time where the warm-up stopped, in the batch size being measured
    shift = int(batch.ts[-1]) - 1_700_000_000_000 + 1
    stream = synthetic_stream(args.symbols, args.batch, args.event_rate, seed=1_000)
    indicator_seconds = bar_seconds = 0.0
    for _ in range(args.batches):
        raw = next(stream)
        batch = TickBatch(raw.symbols, raw.symbol_idx, raw.price, raw.size, raw.ts + shift, raw.side)
        start = time.perf_counter()
        indicators.process(batch)
        middle = time.perf_counter()
        bars.process(batch)
        bar_seconds += time.perf_counter() - middle
        indicator_seconds += middle - start
    ticks = args.batch * args.batches
    print(
        f"steady state: {args.symbols} symbols, warmed with {warm_ticks:,} ticks ({warm_seconds:.1f} s), then "
        f"{args.batches} batches x {args.batch} ticks, event rate {args.event_rate:,.0f}/s, "
        f"VWAP windows {config.vwap_windows_ms} ms"
    )
    for which, seconds in (
        ("indicators", indicator_seconds),
        ("bars", bar_seconds),
        ("both", indicator_seconds + bar_seconds),
    ):
        print(f"  {which:<11} {ticks / seconds:>14,.0f} ticks/s  ({seconds * 1e3 / args.batches:.2f} ms/batch)")
    print(f"  kept window history: {kept_history(indicators):,} points")
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB")


def kept_history(indicators: Indicators) -> int:
    """How many window-history points the indicator stage keeps (as a checkpoint holds them)."""
    return indicators.kept_points()


def run(batches: list[TickBatch], which: str, config: IndicatorConfig) -> float:
    """Seconds to push every batch through the chosen stages (fresh state); "bars+overlays" runs the chart
    overlays on the bars that close, as the worker does."""
    indicators, bars = Indicators(config), Bars(BarConfig(intervals_ms=(1_000, 60_000, 3_600_000)))
    overlays = OverlayStage()
    start = time.perf_counter()
    for batch in batches:
        if which in ("indicators", "both"):
            indicators.process(batch)
        if which in ("bars", "both", "bars+overlays"):
            closed = bars.process(batch).closed
            if which == "bars+overlays":
                overlays.update(closed)
    return time.perf_counter() - start


def main() -> None:
    """Print ticks/s of each stage and of both, then checkpoint figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--event-rate", type=float, default=50_000.0, help="ticks per second of event time")
    parser.add_argument("--windows", default="60000,300000", help="VWAP windows in ms ('' for none)")
    parser.add_argument("--steady", action="store_true", help="time batches after a full window of warm-up")
    parser.add_argument(
        "--rss-symbols",
        type=int,
        default=10_000,
        help="with --steady, rerun with this many symbols for a peak-RSS figure (0: skip)",
    )
    args = parser.parse_args()
    config = IndicatorConfig(vwap_windows_ms=tuple(int(w) for w in args.windows.split(",") if w))
    if args.steady:
        steady(args, config)
        if args.rss_symbols:
            # a separate process, so its peak RSS is that of a 10,000-symbol stage alone
            command = [
                sys.executable,
                "-m",
                "benchmarks.analytics_core",
                "--steady",
                "--rss-symbols",
                "0",
                "--symbols",
                str(args.rss_symbols),
                "--batch",
                str(args.batch),
                "--batches",
                "20",
                "--event-rate",
                str(args.event_rate),
                "--windows",
                args.windows,
            ]
            subprocess.run(command, check=True)
        return
    batches = synthetic_batches(args.symbols, args.batch, args.batches, args.event_rate)
    ticks = args.batch * args.batches
    run(batches[:3], "both", config)  # warm caches and imports
    print(
        f"{args.symbols} symbols, {args.batches} batches x {args.batch} ticks, event rate {args.event_rate:,.0f}/s, "
        f"VWAP windows {config.vwap_windows_ms} ms"
    )
    for which in ("indicators", "bars", "bars+overlays", "both"):
        seconds = min(run(batches, which, config) for _ in range(2))
        print(f"  {which:<11} {ticks / seconds:>14,.0f} ticks/s  ({seconds * 1e3 / args.batches:.2f} ms/batch)")
    indicators, bars = Indicators(config), Bars()
    for batch in batches:
        indicators.process(batch)
        bars.process(batch)
    start = time.perf_counter()
    state = indicators.to_bytes() + bars.to_bytes()
    Indicators.from_bytes(indicators.to_bytes())
    Bars.from_bytes(bars.to_bytes())
    elapsed = time.perf_counter() - start
    print(f"  kept history after the run: {kept_history(indicators):,} points")
    print(f"  checkpoint  {len(state) / 1e6:.1f} MB, save+restore {elapsed * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
