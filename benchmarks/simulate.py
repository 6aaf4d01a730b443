"""Simulator throughput and memory: generation alone, generation into Redis (batch and per-tick entries),
beside redis-benchmark's XADD rate on the same server in the same run; peak memory for 10M ticks of
500 symbols. Prints figures; asserts nothing about timings.

    python benchmarks/simulate.py [--generate N] [--batch N] [--per-tick N] [--memory N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from benchmarks._common import peak_rss_mib, redis_benchmark_xadd, row, timed
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.labels import LabelBatch
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, RedisSink, run

START = 1_700_000_000_000


class NullSink:
    """Counts and drops: measures the simulator without any output."""

    def write(self, ticks: TickBatch, labels: LabelBatch) -> None:
        """Drop the piece."""

    def close(self) -> None:
        """Nothing to release."""


def market(symbols: int = 500) -> MarketConfig:
    """The benchmark market: `symbols` generated tickers, seed 1."""
    return MarketConfig(universe=symbols, seed=1, start_ms=START)


def generation_rate(count: int, scenario: str | None) -> float:
    """Ticks/s of the market model alone (no output), over `count` trades."""
    summary = run(generate(market(), scenario), NullSink(), start_ms=START, limits=Limits(count=count))
    return summary.ticks / summary.elapsed_s


def redis_rate(server: EmbeddedRedis, count: int, per_tick: bool, scenario: str | None) -> float:
    """Ticks/s of generation plus publishing (and labels) into the given server."""
    client = redis.Redis(port=server.port)
    client.flushall()
    settings = Settings(redis_url=server.url, stream_maxlen=0)
    with timed() as took:
        run(
            generate(market(), scenario),
            RedisSink(client, settings, per_tick=per_tick),
            start_ms=START,
            limits=Limits(count=count),
        )
    client.flushall()
    return count / took[0]


def memory_child(count: int) -> None:
    """Run in a fresh process: generate `count` trades of 500 symbols, print peak RSS (MiB) before and after."""
    config = market(500)
    chunks = generate(config, "evaluation")
    next(chunks)
    warm = peak_rss_mib()
    run(chunks, NullSink(), start_ms=START, limits=Limits(count=count))
    print(f"{warm:.1f} {peak_rss_mib():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generate", type=int, default=10_000_000, help="ticks for generation alone")
    parser.add_argument("--batch", type=int, default=5_000_000, help="ticks into Redis as batch entries")
    parser.add_argument("--per-tick", type=int, default=200_000, help="ticks into Redis one entry each")
    parser.add_argument("--memory", type=int, default=10_000_000, help="ticks for the peak-memory run")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    print(f"Simulator, 500 symbols, seed 1 ({args.generate:,} ticks for generation alone)")
    row("generation alone, background market", generation_rate(args.generate, None))
    row("generation alone, evaluation scenario (labels, hard negatives)", generation_rate(args.generate, "evaluation"))
    with EmbeddedRedis(appendonly=False) as server:
        ref = redis_benchmark_xadd(server)
        print(f"Redis {server.binary} on port {server.port} (appendonly no)")
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        row(f"into Redis, batch entries ({args.batch:,} ticks)", redis_rate(server, args.batch, False, None), ref=ref)
        row(
            "into Redis, batch entries, evaluation scenario",
            redis_rate(server, args.batch, False, "evaluation"),
            ref=ref,
        )
        row(
            f"into Redis, per-tick entries ({args.per_tick:,} ticks)",
            redis_rate(server, args.per_tick, True, None),
            ref=ref,
        )
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(args.memory)], capture_output=True, text=True, check=True
    )
    warm, peak = (float(x) for x in child.stdout.split())
    row("peak RSS after the first chunk (fresh process, 500 symbols)", warm, "MiB")
    row(f"peak RSS after {args.memory:,} ticks (limit 1024 MiB)", peak, "MiB")


if __name__ == "__main__":
    main()
