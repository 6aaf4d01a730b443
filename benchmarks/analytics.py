"""Analytics worker throughput and latency on three tapes, beside redis-benchmark's XADD rate on the same server.

    python -m benchmarks.analytics [--tapes synthetic,simulated,lobster] [--batch-ticks N] [--per-tick-ticks N]
                                   [--latency-seconds S] [--rss-ticks N] [--batch-sizes 250,1000,4000,16000]

The tapes are `benchmarks.tapes`: the synthetic random walk (a closed 1s bar per ~100 trades), the
simulator's default market of 500 symbols (one per ~7 trades) and the LOBSTER NASDAQ trades (one per ~4).

1. ticks/s through one worker draining a pre-filled stream (timed to its last batch's commit, as every
   drain rate in these benchmarks is: the shutdown checkpoint after it is printed apart), with the core
   stages only (bars, overlays, indicators) and with `tickerdash analytics`'s default stages as well
   (slump alerts, anomaly scores): from batch entries (synthetic and simulated tapes), and from per-tick
   entries (every tape), beside a bare runner (decode and XACK only) on the same per-tick entries;
2. p50/p99 latency from a trade's XADD to the snapshot showing it, with a producer at 100k ticks/s of
   each tape (the worker runs as `tickerdash analytics` in its own process), core and default stages;
3. the worker's peak RSS (a separate process) after trades of 10,000 symbols;
4. with `--batch-sizes`, the time a batch takes when every batch is one entry of that many trades of the
   simulator's tape: the cost per batch at the sizes a worker reads live (1,000 trades per 10 ms at 100k/s).
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

from benchmarks import tapes
from benchmarks._common import (
    Figure,
    redis_benchmark_xadd,
    row,
    timed_drain,
    worker_drain,
    worker_process_peak_rss_mib,
)
from tickerdash.analytics.engine.stage import StageFactory
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.stages.registry import default_stages
from tickerdash.ingest.cluster import AnyRedis, primary_clients
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.contract.live import decode_updates
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis, client_for
from tickerdash.ingest.runner import StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat

WARMUP_PROBES = 200  # the first 2 s (a probe every 10 ms): connections, first forest fit, first checkpoint
CORE = "core"  # bars, overlays, indicators: what every worker runs
DEFAULT = "default"  # as `tickerdash analytics` runs without --stages: the core ones, slump alerts, anomaly scores
STAGE_SETS: dict[str, tuple[StageFactory, ...]] = {CORE: (), DEFAULT: default_stages()}
STAGE_OPTION = {CORE: "none", DEFAULT: "alerts,anomaly"}
LATENCY_RATE = 100_000
DRAIN_WAIT_S = 10.0  # after the producer stops, how long the latency run waits for a lagging worker's last probes


def drain_rate(
    client: redis.Redis, settings: Settings, ticks: TickBatch, per_tick: bool, stages: tuple[StageFactory, ...] = ()
) -> tuple[float, float]:
    """Pre-fill the stream, then time one worker draining it: ticks/s up to the last batch's commit, and the
    seconds its shutdown (final idle read, checkpoint, lease release) took after that."""
    client.flushall()
    Producer(client, settings).publish(ticks, per_tick=per_tick)
    worker = AnalyticsWorker(client, settings, None, WorkerConfig(checkpoint_every_s=5.0, stages=stages))
    drain_s, total_s = worker_drain(worker)
    processed = worker.runner.stats.ticks
    assert processed == len(ticks), (processed, len(ticks))
    return processed / drain_s, total_s - drain_s


def batch_cost(
    client: redis.Redis, settings: Settings, ticks: TickBatch, rows: int, stages: tuple[StageFactory, ...]
) -> float:
    """Seconds a worker takes per batch when every batch is one entry of `rows` trades (one entry a read): what
    a batch costs at the sizes a live worker reads at 100k ticks/s, where a fixed cost per batch weighs most."""
    one_entry_per_read = settings.model_copy(update={"batch_rows": rows, "read_count": 1})
    client.flushall()
    Producer(client, one_entry_per_read).publish(ticks)
    worker = AnalyticsWorker(client, one_entry_per_read, None, WorkerConfig(checkpoint_every_s=5.0, stages=stages))
    drain_s, _ = worker_drain(worker)
    assert worker.runner.stats.ticks == len(ticks), (worker.runner.stats.ticks, len(ticks))
    return drain_s / -(-len(ticks) // rows)


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


def worker_process(settings: Settings, consumer: str, stages: str) -> subprocess.Popen[bytes]:
    """`tickerdash analytics` in its own process, as deployed (threads here would fight it for the GIL)."""
    env = {
        **os.environ,
        "TICKERDASH_REDIS_URL": settings.redis_url or "",
        "TICKERDASH_BLOCK_MS": "5",
        "TICKERDASH_PREFIX": settings.prefix,
        "TICKERDASH_PARTITIONS": str(settings.partitions),
    }
    command = [sys.executable, "-m", "tickerdash", "analytics", "--consumer", consumer, "--no-webhooks"]
    return subprocess.Popen(
        [*command, "--stages", stages], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_lease(client: AnyRedis, settings: Settings, consumer: str, worker: subprocess.Popen[bytes]) -> None:
    """Until the worker process holds every partition (it is reading); raises if it exits first."""
    keys = Keys(settings.prefix, settings.partitions)
    for partition in range(settings.partitions):
        while client.get(keys.lease(ANALYTICS_GROUP, partition)) != consumer.encode():
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}) before it held partition {partition}")
            time.sleep(0.05)


def latency(
    client: AnyRedis, settings: Settings, tape: TickBatch, seconds: float, stages: str, rate: int = LATENCY_RATE
) -> np.ndarray:
    """Milliseconds from XADD to the snapshot showing the trade, one per 10 ms probe, with `rate` ticks/s of `tape`.

    The tape is fed in its own event time (cycled), so its bars close as often per trade as in the tape.
    `settings.redis_url` may name a standalone server or any node of a cluster.
    """
    for primary in primary_clients(client):
        primary.flushall()
    stop, watching = threading.Event(), threading.Event()
    worker = worker_process(settings, "latency", stages)
    wait_for_lease(client, settings, "latency", worker)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    feed = tapes.Cycled(tape)
    keys = Keys(settings.prefix, settings.partitions)
    key = keys.snapshot(keys.partition_of("PROBE"))
    url = settings.redis_url or ""

    def produce() -> None:
        producer = Producer(client_for(url, cluster=True), settings)
        per_batch = rate // 100
        seq = 0
        start_ms = int(time.time() * 1000)
        next_at = time.perf_counter()
        while not stop.is_set():
            seq += 1
            chunk = feed.take(per_batch - 1, start_ms)
            probe = TickBatch.from_columns(["PROBE"], [1000.0 + seq], [1.0], [start_ms + seq * 10])
            sent[seq] = time.perf_counter()
            # the feed's event clock runs ahead of the wall clock (the tape is replayed faster than it traded):
            # declared, as the simulator declares its own, so the trades are not refused as from the future
            producer.publish(concat([chunk, probe]), clock_ms=int(max(chunk.ts.max(), probe.ts[0])))
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def watch() -> None:
        watcher = client_for(url, cluster=True)
        while not watching.is_set():
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
    threads[0].join()
    deadline = time.perf_counter() + DRAIN_WAIT_S  # a saturated worker shows its last probes late: wait for them
    while max(seen, default=0) < max(sent, default=0) and time.perf_counter() < deadline:
        time.sleep(0.01)
    watching.set()
    threads[1].join()
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)
    # A probe that was overtaken before the watcher saw it shows up via a later seq: charge it that time.
    # A probe never seen (the worker still behind after DRAIN_WAIT_S) counts as infinitely late.
    delays = []
    first_seen_after = sorted(seen.items())
    for seq, t_sent in sorted(sent.items()):
        later = [t for s, t in first_seen_after if s >= seq]
        delays.append((min(later) - t_sent) * 1000 if later else np.inf)
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
    Producer(client, settings).publish(tapes.synthetic(n, 10_000, seed=5))
    return worker_process_peak_rss_mib(server, settings.prefix + ":ticks")


def parser() -> argparse.ArgumentParser:
    """The command line (also read by `python -m benchmarks` for its smaller sizes)."""
    out = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--tapes", type=tapes.tape_names, default=list(tapes.TAPES), help="comma-separated")
    out.add_argument("--batch-ticks", type=int, default=2_000_000, help="trades drained from batch entries; 0: skip")
    out.add_argument(
        "--per-tick-ticks",
        type=int,
        default=200_000,
        help="trades drained from per-tick entries (LOBSTER: whole copies)",
    )
    out.add_argument(
        "--per-tick-rounds",
        type=int,
        default=3,
        help="rounds of the default worker, the core worker and the bare runner, per tape",
    )
    out.add_argument("--latency-seconds", type=float, default=20.0, help="per tape and stage set; 0: skip")
    out.add_argument("--rss-ticks", type=int, default=1_000_000, help="0: skip the 10,000-symbol RSS run")
    out.add_argument(
        "--batch-sizes",
        type=lambda text: [int(size) for size in text.split(",") if size],
        default=[],
        help="comma-separated trades per batch (e.g. 250,1000,4000,16000): time per batch, simulated tape",
    )
    return out


def run(args: argparse.Namespace) -> list[Figure]:
    """Measure and print every figure; return those of the summary table."""
    figures: list[Figure] = []
    names = tapes.available(args.tapes)
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        settings = Settings(redis_url=server.url, stream_maxlen=0, block_ms=20, consumer="bench")
        ref = redis_benchmark_xadd(server)
        print(f"Redis {server.binary} (appendonly no); indicators SMA 20,50 EMA 12,26 VWAP 1m,5m; bars 1s,1m; overlays")
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        for name in names if args.batch_ticks > 0 else ():
            if name == "lobster":
                continue  # a per-tick tape: below
            tape = tapes.tape(name, args.batch_ticks)
            print(" ", tapes.describe(name, tape))
            for stages in (CORE, DEFAULT):
                rate, shutdown_s = drain_rate(client, settings, tape, per_tick=False, stages=STAGE_SETS[stages])
                label = f"worker, {stages} stages, {name} tape, batch entries"
                row(label, rate, ref=ref)
                print(f"  {'':<58} (to the last batch's commit; the shutdown took {shutdown_s:.2f} s more)")
                figures.append(batch_figure(label, rate, ref, name, stages))
        for name in names if args.per_tick_ticks > 0 else ():
            tape = tapes.tape(name, args.per_tick_ticks)
            print(" ", tapes.describe(name, tape), "as per-tick entries")
            rounds = []
            for _ in range(args.per_tick_rounds):  # back to back: the target is a ratio of two noisy figures
                worker_rate, _ = drain_rate(client, settings, tape, per_tick=True, stages=STAGE_SETS[DEFAULT])
                core_rate, _ = drain_rate(client, settings, tape, per_tick=True, stages=STAGE_SETS[CORE])
                rounds.append((worker_rate, core_rate, runner_rate(client, settings, tape)))
            # best of each, as the least disturbed run of each (this host is shared: single runs swing 2x)
            worker_rate, core_rate, bare_rate = (max(column) for column in zip(*rounds, strict=True))
            row(f"worker, default stages, {name} tape, per-tick entries, best of {len(rounds)}", worker_rate, ref=ref)
            row(f"worker, core stages, {name} tape, per-tick entries, best of {len(rounds)}", core_rate, ref=ref)
            row(f"bare runner on the same entries (decode + XACK), best of {len(rounds)}", bare_rate, ref=ref)
            print(
                f"  {'worker (default, core) / bare runner, best of each':<58} {worker_rate / bare_rate:.2f}, "
                f"{core_rate / bare_rate:.2f}; each round: "
                + "; ".join(f"{w / b:.2f}, {c / b:.2f}" for w, c, b in rounds)
            )
            label = f"worker, default stages, {name} tape, per-tick entries, best of {len(rounds)}"
            target = "" if name != "lobster" else ">= 0.5x the bare runner"
            met = None if not target else worker_rate / bare_rate >= 0.5
            figures.append(Figure(label, worker_rate, "ticks/s", bare_rate, "bare runner, best of each", target, met))
        if args.latency_seconds:
            for name in names:
                tape = tapes.tape(name, 500_000)
                for stages in (CORE, DEFAULT):
                    delays = latency(client, settings, tape, args.latency_seconds, STAGE_OPTION[stages])
                    part = delays[WARMUP_PROBES:]
                    p50, p99 = (np.percentile(part, q, method="higher") for q in (50, 99))
                    unseen, p99_all = int(np.isinf(part).sum()), np.percentile(delays, 99, method="higher")
                    print(
                        f"  XADD -> snapshot at 100k ticks/s, {name} tape, {stages} stages, after "
                        f"{WARMUP_PROBES // 100} s of start-up: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                        f"max {part.max():.1f} ms ({len(part)} probes, {unseen} not shown within "
                        f"{DRAIN_WAIT_S:.0f} s of the producer's end; all probes: p99 {p99_all:.1f} ms)"
                    )
                    realistic = name != "synthetic"
                    figures.append(
                        Figure(
                            f"XADD -> snapshot p99 at 100k ticks/s, {stages} stages, {name} tape",
                            float(p99),
                            "ms",
                            ref,
                            target="<= 50 ms" if realistic else "",
                            met=bool(p99 <= 50) if realistic else None,
                        )
                    )
        if args.batch_sizes:
            tape = tapes.tape("simulated", 200_000)
            print(" ", tapes.describe("simulated", tape), "in batches of one entry each")
            for stages in (CORE, DEFAULT):
                for rows in args.batch_sizes:
                    seconds = batch_cost(client, settings, tape, rows, STAGE_SETS[stages])
                    label = f"worker, {stages} stages, {rows:,} trades a batch"
                    row(label, rows / seconds, ref=ref)
                    print(f"  {'':<58} ({seconds * 1000:.2f} ms a batch)")
        if args.rss_ticks:
            rss = peak_rss_10k_symbols(server, settings, args.rss_ticks)
            print(f"  worker peak RSS after {args.rss_ticks:,} ticks of 10,000 symbols: {rss:,.0f} MiB")
            figures.append(
                Figure(
                    f"worker peak RSS, {args.rss_ticks:,} ticks of 10,000 symbols",
                    rss,
                    "MiB",
                    None,
                    "",
                    "<= 1 GiB",
                    rss <= 1024,
                )
            )
    return figures


def batch_figure(label: str, rate: float, ref: float, tape: str, stages: str) -> Figure:
    """A batch-entry drain rate with the issue's target where it has one (simulated tape)."""
    if tape != "simulated":
        return Figure(label, rate, "ticks/s", ref)
    floor = 1.0 if stages == DEFAULT else 2.0
    return Figure(
        label, rate, "ticks/s", ref, target=f">= {floor:.0f}M ticks/s, >= {floor:.1f}x ref", met=rate / ref >= floor
    )


def main() -> None:
    """Print the figures."""
    run(parser().parse_args())


if __name__ == "__main__":
    main()
