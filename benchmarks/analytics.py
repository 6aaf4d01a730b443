"""Analytics worker throughput and latency, beside redis-benchmark's XADD rate on the same server.

    python -m benchmarks.analytics [--batch-ticks N] [--per-tick-ticks N] [--latency-seconds S]

1. ticks/s through one worker (all indicators and 1s/1m bars, 500 symbols) from batch entries and
   from per-tick entries (the worker drains a pre-filled stream; timed to its last batch's commit, as
   every drain rate in these benchmarks is: the shutdown checkpoint after it is printed apart);
2. p50/p99 latency from a trade's XADD to the snapshot showing it, with a producer at 100k ticks/s
   (the worker runs as `tickerdash analytics` in its own process): with indicators and bars only (this
   issue's worker), then with its default plug-in stages (slump alerts and anomaly scores) as well;
3. the worker's peak RSS (a separate process) after trades of 10,000 symbols.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import redis

from benchmarks._common import (
    redis_benchmark_xadd,
    row,
    synthetic_ticks,
    timed_drain,
    worker_drain,
    worker_process_peak_rss_mib,
)
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.contract.live import decode_updates, snapshot_key
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat

WARMUP_PROBES = 200  # the first 2 s (a probe every 10 ms): connections, first forest fit, first checkpoint
EVENT_RATE = 50_000  # trades per second of event time: a busy market, so bars are far fewer than trades


def market(n: int, symbols: int, seed: int = 3, start_ms: int = 1_767_225_600_000) -> TickBatch:
    """Synthetic trades at EVENT_RATE per event-time second."""
    ticks = synthetic_ticks(n, symbols=symbols, seed=seed, start_ms=start_ms)
    ts = start_ms + (np.arange(n, dtype=np.int64) * 1000) // EVENT_RATE
    return TickBatch(ticks.symbols, ticks.symbol_idx, ticks.price, ticks.size, ts, ticks.side)


def drain_rate(client: redis.Redis, settings: Settings, ticks: TickBatch, per_tick: bool) -> tuple[float, float]:
    """Pre-fill the stream, then time one worker draining it: ticks/s up to the last batch's commit, and the
    seconds its shutdown (final idle read, checkpoint, lease release) took after that."""
    client.flushall()
    Producer(client, settings).publish(ticks, per_tick=per_tick)
    worker = AnalyticsWorker(client, settings, None, WorkerConfig(checkpoint_every_s=5.0))
    drain_s, total_s = worker_drain(worker)
    processed = worker.runner.stats.ticks
    assert processed == len(ticks), (processed, len(ticks))
    return processed / drain_s, total_s - drain_s


def runner_rate(client: redis.Redis, settings: Settings, ticks: TickBatch) -> float:
    """Pre-fill the same per-tick stream, then time the bare consumer runner (decode + XACK only); ticks/s.

    The runner commits as the worker's does (`defer_commit`): the reference gains from it as much as the worker.
    """
    client.flushall()
    Producer(client, settings).publish(ticks, per_tick=True)
    runner = StreamRunner(
        client,
        settings,
        [Keys(settings.prefix).ticks()],
        lambda stream, batch, pipe: None,
        defer_commit=WorkerConfig().defer_commit,
    )
    drain_s, _ = timed_drain(lambda: runner.run(max_idle_reads=1), runner.stats)
    assert runner.stats.ticks == len(ticks), (runner.stats.ticks, len(ticks))
    return runner.stats.ticks / drain_s


def latency(
    client: redis.Redis, settings: Settings, seconds: float, rate: int = 100_000, stages: str = "alerts,anomaly"
) -> np.ndarray:
    """Milliseconds from XADD to the snapshot showing the trade, one per 10 ms probe, at `rate` ticks/s."""
    client.flushall()
    stop = threading.Event()
    # the worker in its own process, as deployed: threads here would fight it for the GIL
    env = {
        **os.environ,
        "TICKERDASH_REDIS_URL": settings.redis_url or "",
        "TICKERDASH_BLOCK_MS": "5",
        "TICKERDASH_PREFIX": settings.prefix,
    }
    command = [
        sys.executable,
        "-m",
        "tickerdash",
        "analytics",
        "--consumer",
        "latency",
        "--no-webhooks",
        "--stages",
        stages,
    ]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lease = Keys(settings.prefix).lease(ANALYTICS_GROUP, 0)
    while client.get(lease) != b"latency":
        time.sleep(0.05)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    background = market(rate, 500, seed=9)
    key = snapshot_key(Keys(settings.prefix))

    def produce() -> None:
        producer = Producer(redis.Redis(port=client.connection_pool.connection_kwargs["port"]), settings)
        per_batch = rate // 100
        seq = 0
        start_ms = int(time.time() * 1000)
        next_at = time.perf_counter()
        while not stop.is_set():
            seq += 1
            first = (seq * per_batch) % (len(background) - per_batch)
            chunk = background.take(np.arange(first, first + per_batch - 1))
            probe = TickBatch.from_columns(["PROBE"], [1000.0 + seq], [1.0], [start_ms + seq * 10])
            now_ms = start_ms + seq * 10
            chunk = TickBatch(
                chunk.symbols,
                chunk.symbol_idx,
                chunk.price,
                chunk.size,
                np.full(len(chunk), now_ms, np.int64),
                chunk.side,
            )
            sent[seq] = time.perf_counter()
            producer.publish(concat([chunk, probe]))
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def watch() -> None:
        watcher = redis.Redis(port=client.connection_pool.connection_kwargs["port"])
        while not stop.is_set():
            raw = watcher.hget(key, "PROBE")
            if raw:
                seq = round(decode_updates(raw)[0].price - 1000)
                seen.setdefault(seq, time.perf_counter())
            time.sleep(0.0005)

    threads = [threading.Thread(target=produce), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)
    # A probe that was overtaken before the watcher saw it shows up via a later seq: charge it that time.
    delays = []
    first_seen_after = sorted(seen.items())
    for seq, t_sent in sent.items():
        later = [t for s, t in first_seen_after if s >= seq]
        if later:
            delays.append((min(later) - t_sent) * 1000)
    arr = np.array(delays)
    if os.environ.get("TICKERDASH_BENCH_TRACE"):
        for second in range(int(seconds)):
            part = arr[second * 100 : (second + 1) * 100]
            if len(part):
                print(f"    second {second}: p50 {np.percentile(part, 50):.1f} ms, max {part.max():.1f} ms")
    return arr


def peak_rss_10k_symbols(server: EmbeddedRedis, settings: Settings, n: int) -> float:
    """Peak RSS (MiB) of a separate worker process after trades of 10,000 symbols."""
    client = redis.Redis(port=server.port)
    client.flushall()
    Producer(client, settings).publish(market(n, 10_000, seed=5))
    return worker_process_peak_rss_mib(server, settings.prefix + ":ticks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-ticks", type=int, default=2_000_000)
    parser.add_argument("--per-tick-ticks", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rss-ticks", type=int, default=1_000_000)
    args = parser.parse_args()
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        settings = Settings(redis_url=server.url, stream_maxlen=0, block_ms=20, consumer="bench")
        ref = redis_benchmark_xadd(server)
        print(f"Redis {server.binary} (appendonly no); indicators SMA 20,50 EMA 12,26 VWAP 1m,5m; bars 1s,1m")
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        rate, shutdown_s = drain_rate(client, settings, market(args.batch_ticks, 500), per_tick=False)
        row(f"worker, batch entries, 500 symbols ({args.batch_ticks:,} ticks)", rate, ref=ref)
        print(f"  {'':<58} (to the last batch's commit; the shutdown took {shutdown_s:.2f} s more)")
        per_tick = market(args.per_tick_ticks, 500)
        rates = []
        for _ in range(2):  # back to back, twice: the target is a ratio of two noisy figures
            worker_rate, _ = drain_rate(client, settings, per_tick, per_tick=True)
            rates.append((worker_rate, runner_rate(client, settings, per_tick)))
        worker_rate, bare_rate = max(rates)
        row(f"worker, per-tick entries, 500 symbols ({args.per_tick_ticks:,} ticks)", worker_rate, ref=ref)
        row("bare runner on the same per-tick entries (decode + XACK)", bare_rate, ref=ref)
        print(
            f"  {'worker / bare runner, per-tick (target: as fast, 1.0)':<58} "
            + " ".join(f"{w / b:.2f}" for w, b in rates)
            + " (each pair back to back)"
        )
        # the worker of this issue (indicators and bars), then as `tickerdash analytics` runs by default
        for stages, what in (("none", "indicators + bars"), ("alerts,anomaly", "+ alerts + anomaly scores")):
            delays = latency(client, settings, args.latency_seconds, stages=stages)
            for label, part in (
                ("all probes", delays),
                (f"after {WARMUP_PROBES // 100} s of start-up", delays[WARMUP_PROBES:]),
            ):
                print(
                    f"  XADD -> snapshot at 100k ticks/s ({what}), {label}: p50 {np.percentile(part, 50):.1f} ms, "
                    f"p99 {np.percentile(part, 99):.1f} ms, max {part.max():.1f} ms ({len(part)} probes)"
                )
        rss = peak_rss_10k_symbols(server, settings, args.rss_ticks)
        print(f"  worker peak RSS after {args.rss_ticks:,} ticks of 10,000 symbols: {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
