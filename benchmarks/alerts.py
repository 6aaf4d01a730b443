"""Slump-alert stage micro-benchmark: ticks/s of the pure stage with 0, 100 and 1,000 rules over 500 symbols.

Run: .venv/bin/python -m benchmarks.alerts [--ticks N]. Prints figures, asserts nothing. For scale,
it also times the worker's core stages (indicators + bars) on the same trades. The end-to-end
figures (worker ticks/s through Redis, XADD-to-alert latency) need the worker loop and come later.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import numpy as np

from analytics.alerts import SlumpAlerts
from analytics.bars import Bars
from analytics.indicators import Indicators
from analytics.rules import Rule
from benchmarks._common import row, synthetic_ticks, timed
from ingest.codecs import iter_chunks
from ingest.ticks import TickBatch

BATCH_ROWS = 10_000  # the producer's default batch entry size
WINDOWS_S = (30.0, 60.0, 300.0, 900.0)
DROPS = (1.0, 2.0, 5.0, 10.0)  # typical user thresholds; smaller ones make alert storms on this data


def make_rules(count: int, symbols: tuple[str, ...], seed: int = 3) -> list[Rule]:
    """`count` rules: 90% on one symbol, 10% on every symbol (`*`), a few windows and drops."""
    rng = np.random.default_rng(seed)
    return [
        Rule(id=f"b{i:05d}", symbol="*" if rng.random() < 0.1 else str(rng.choice(symbols)),
             drop_pct=float(rng.choice(DROPS)), window_s=float(rng.choice(WINDOWS_S)))
        for i in range(count)
    ]


def volatile(ticks: TickBatch, scale: float = 40.0) -> TickBatch:
    """The same trades with each symbol's log returns scaled up, so slumps (and alerts) do happen."""
    out = np.empty_like(ticks.price)
    for s in range(len(ticks.symbols)):
        rows = np.flatnonzero(ticks.symbol_idx == s)
        if len(rows):
            logp = np.log(ticks.price[rows])
            out[rows] = np.exp(logp[0] + scale * (logp - logp[0]))
    return dataclasses.replace(ticks, price=np.round(out, 4))


def core_stages() -> Callable[[TickBatch], object]:
    """The worker's own stages (indicators and bars) as one call per batch, for scale."""
    indicators, bars = Indicators(), Bars()
    return lambda batch: (indicators.process(batch), bars.process(batch))


def rate(stage_process: Callable[[TickBatch], object], batches: list[TickBatch]) -> tuple[float, int]:
    """Ticks/s of calling `stage_process` on every batch, and how many alerts it returned."""
    fired = 0
    with timed() as t:
        for batch in batches:
            out = stage_process(batch)
            fired += len(out) if isinstance(out, list) else 0
    return sum(len(b) for b in batches) / t[0], fired


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=500)
    args = parser.parse_args()
    calm = synthetic_ticks(args.ticks, args.symbols)
    for label, ticks in (("synthetic random walk", calm), ("volatile (returns x40)", volatile(calm))):
        batches = list(iter_chunks(ticks, BATCH_ROWS))
        print(f"{label}: {len(ticks):,} trades, {args.symbols} symbols, batches of {BATCH_ROWS:,}")
        core, _ = rate(core_stages(), batches)
        row("worker core stages (indicators + bars), for scale", core)
        for count in (0, 100, 1_000):
            stage = SlumpAlerts(make_rules(count, ticks.symbols))
            ticks_per_s, fired = rate(stage.process, batches)
            row(f"SlumpAlerts, {count:>5,} rules ({fired:,} alerts)", ticks_per_s)
            combined = 1 / (1 / core + 1 / ticks_per_s)
            print(f"  {'':<58} core + alerts: {combined:,.0f} ticks/s ({100 * (1 - combined / core):.1f}% slower)")


if __name__ == "__main__":
    main()
