"""Event-bus throughput: per-tick and batch entries, written by the producer and read back through the
consumer-group runner, beside redis-benchmark's XADD rate on the same server in the same run.

    python benchmarks/ingest.py [--per-tick N] [--batch N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import redis

from benchmarks._common import redis_benchmark_xadd, row, synthetic_ticks, timed
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch


def redis_read_cost_us(client: redis.Redis, entries: int) -> dict[str, float]:
    """Redis's own time per entry (microseconds) in each read-side command since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return {
        name: stats[f"cmdstat_{name}"]["usec"] / entries
        for name in ("xreadgroup", "xack")
        if f"cmdstat_{name}" in stats
    }


def write_then_read(client: redis.Redis, settings: Settings, ticks: TickBatch, per_tick: bool) -> tuple[float, float]:
    """Publish `ticks`, then drain them through a runner; returns (write s, read s).

    Redis's command statistics are reset before the read, so `redis_read_cost_us` then gives the
    server's own share of it.
    """
    client.flushall()
    warmup = ticks.take(np.arange(min(len(ticks), 20_000)))
    Producer(client, settings.model_copy(update={"prefix": "warmup"})).publish(warmup, per_tick=per_tick)
    client.flushall()  # the first publish pays one-off costs (imports, Redis growing its memory)
    with timed() as write:
        Producer(client, settings).publish(ticks, per_tick=per_tick)
    seen = 0

    def count(stream: str, batch: TickBatch, pipe: redis.client.Pipeline) -> None:
        nonlocal seen
        seen += len(batch)

    runner = StreamRunner(client, settings, [f"{settings.prefix}:ticks"], count)
    client.config_resetstat()
    with timed() as read:
        runner.run(max_idle_reads=1)
    assert seen == len(ticks), (seen, len(ticks))
    return write[0], read[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-tick", type=int, default=300_000, help="ticks for the per-tick run")
    parser.add_argument("--batch", type=int, default=5_000_000, help="ticks for the batch run")
    args = parser.parse_args()
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        settings = Settings(redis_url=server.url, stream_maxlen=0, block_ms=10, read_count=5_000)
        ref = redis_benchmark_xadd(server)
        print(f"Redis {server.binary} on port {server.port} (appendonly no); 500 symbols")
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        ticks = synthetic_ticks(args.per_tick)
        w, r = write_then_read(client, settings, ticks, per_tick=True)
        row(f"per-tick entries: producer write ({len(ticks):,} ticks)", len(ticks) / w, ref=ref)
        row("per-tick entries: read through the runner (decode+ack)", len(ticks) / r, ref=ref)
        row("per-tick entries: end to end", len(ticks) / (w + r), ref=ref)
        cost = redis_read_cost_us(client, len(ticks))
        server_us = sum(cost.values())
        print(
            "  Redis's own time per per-tick entry read: "
            + ", ".join(f"{name.upper()} {us:.2f} us" for name, us in cost.items())
            + f"; so no consumer that reads and acknowledges can exceed {1e6 / server_us:,.0f} entries/s"
            f" ({1e6 / server_us / ref:.2f}x reference) on this server, in any language"
        )
        ticks = synthetic_ticks(args.batch)
        w, r = write_then_read(client, settings, ticks, per_tick=False)
        row(
            f"batch entries ({settings.batch_rows} rows): producer write ({len(ticks):,} ticks)",
            len(ticks) / w,
            ref=ref,
        )
        row("batch entries: read through the runner (decode+ack)", len(ticks) / r, ref=ref)
        row("batch entries: end to end", len(ticks) / (w + r), ref=ref)


if __name__ == "__main__":
    main()
