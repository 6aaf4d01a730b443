"""Slump-alert stage micro-benchmark: ticks/s of the pure stage with 0, 100 and 1,000 rules over 500 symbols.

Run: .venv/bin/python -m benchmarks.alerts [--ticks N] [--tapes synthetic,simulated,lobster].
Prints figures, asserts nothing. The pure stage
is timed as the worker runs it: `evaluate` plus the alerts' entries as JSON. For scale, it also times the
worker's core stages (indicators + bars) on the same trades. Then, end to end on an embedded Redis
(with redis-benchmark's XADD rate as the reference): the worker's ticks/s with 0, 100 and 1,000 rules
on each tape of `benchmarks.tapes` (synthetic, the simulator's default market, LOBSTER), with the extra
time split into the alert stage's own work and the rest (writing the alerts in the worker's transaction),
and the p50/p99 latency from a trade's XADD to its alert entry with a producer at 100k ticks/s of each tape.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import redis

from benchmarks import tapes
from benchmarks._common import Figure, redis_benchmark_xadd, row, synthetic_ticks, timed, worker_drain
from benchmarks.analytics import wait_for_lease, worker_process
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.analytics.stages.bars import Bars
from tickerdash.analytics.stages.indicators import Indicators
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import iter_chunks
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat

BATCH_ROWS = 10_000  # the producer's default batch entry size
ROUNDS = 3  # rounds of the three rule counts in the worker benchmark
WARMUP_S = 2.0  # probes left out of the latency: connections, first reads, the first rule refresh
DRAIN_WAIT_S = 10.0  # after the producer stops, how long the latency run waits for a lagging worker's alerts
WINDOWS_S = (30.0, 60.0, 300.0, 900.0)
DROPS = (1.0, 2.0, 5.0, 10.0)  # typical user thresholds; smaller ones make alert storms on this data


def make_rules(count: int, symbols: tuple[str, ...], seed: int = 3) -> list[Rule]:
    """`count` rules: 90% on one symbol, 10% on every symbol (`*`), a few windows and drops."""
    rng = np.random.default_rng(seed)
    return [
        Rule(
            id=f"b{i:05d}",
            symbol="*" if rng.random() < 0.1 else str(rng.choice(symbols)),
            drop_pct=float(rng.choice(DROPS)),
            window_s=float(rng.choice(WINDOWS_S)),
        )
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


def parser() -> argparse.ArgumentParser:
    """The command line (also read by `python -m benchmarks` for its smaller sizes)."""
    out = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--ticks", type=int, default=1_000_000, help="trades through the pure stage")
    out.add_argument("--symbols", type=int, default=500)
    out.add_argument("--tapes", type=tapes.tape_names, default=list(tapes.TAPES), help="comma-separated")
    out.add_argument("--worker-ticks", type=int, default=1_000_000, help="trades per worker drain (LOBSTER: copies)")
    out.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds of 0, 100, 1,000 rules")
    out.add_argument("--latency-seconds", type=float, default=10.0, help="per tape and stage set; 0: skip")
    return out


def run(args: argparse.Namespace) -> list[Figure]:
    """Measure and print every figure; return those of the summary table."""
    if args.ticks:
        pure_stage(args.ticks, args.symbols)
    return end_to_end(args)


def main() -> None:
    """Print the figures."""
    run(parser().parse_args())


def pure_stage(n: int, symbols: int) -> None:
    """The pure alert stage with 0, 100 and 1,000 rules, beside the core stages on the same trades."""
    calm = synthetic_ticks(n, symbols)
    for label, ticks in (("synthetic random walk", calm), ("volatile (returns x40)", volatile(calm))):
        batches = list(iter_chunks(ticks, BATCH_ROWS))
        print(f"{label}: {len(ticks):,} trades, {symbols} symbols, batches of {BATCH_ROWS:,}")
        core, _ = rate(core_stages(), batches)
        row("worker core stages (indicators + bars), for scale", core)
        for count in (0, 100, 1_000):
            stage = SlumpAlerts(make_rules(count, ticks.symbols))
            ticks_per_s, fired = rate(lambda batch, stage=stage: stage.evaluate(batch).to_entries_json(), batches)
            row(f"SlumpAlerts, {count:>5,} rules ({fired:,} alerts)", ticks_per_s)
            combined = 1 / (1 / core + 1 / ticks_per_s)
            print(f"  {'':<58} core + alerts: {combined:,.0f} ticks/s ({100 * (1 - combined / core):.1f}% slower)")


class TimedAlertStage(SlumpAlertStage):
    """The worker's alert stage, adding up the time of its own work (the rest of the rules' cost is writing alerts)."""

    seconds: ClassVar[float] = 0.0

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """The stage's process, timed."""
        start = time.perf_counter()
        super().process(batch, effects)
        TimedAlertStage.seconds += time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class WorkerRun:
    """One worker draining the pre-filled stream."""

    ticks_per_s: float
    seconds: float
    alert_stage_s: float  # the alert stage's own work, on the helper thread beside the bars and indicators
    transactions_s: float  # sending the batches' transactions and waiting for their replies (the alerts' XADDs)
    alerts: int


def worker_rate(client: redis.Redis, settings: Settings, ticks: TickBatch, rules: list[Rule]) -> WorkerRun:
    """Pre-fill the stream and the rules, then time one worker (all stages) draining it."""
    client.flushall()
    store = RuleStore(client, Keys(settings.prefix))
    for rule in rules:
        store.add(rule)
    Producer(client, settings).publish(ticks)
    worker = AnalyticsWorker(client, settings, None, WorkerConfig(stages=(TimedAlertStage,)))
    TimedAlertStage.seconds = 0.0
    drain_s, _ = worker_drain(worker)  # shutdown not counted
    stats = worker.runner.stats
    return WorkerRun(
        stats.ticks / drain_s,
        drain_s,
        TimedAlertStage.seconds,
        stats.transactions_s,
        client.xlen(Keys(settings.prefix).alerts()),
    )


def alert_latency(
    client: redis.Redis, settings: Settings, tape: TickBatch, seconds: float, stages: str, rate: int = 100_000
) -> tuple[float, float, int, int]:
    """p50/p99 ms from the XADD of a slumping trade to its alert entry, with `rate` ticks/s of `tape` beside it;
    how many alerts were timed and how many never came (counted as infinitely late).

    The worker runs as `tickerdash analytics --stages <stages>` in its own process, as deployed (a thread
    here would fight the producer for the GIL); the first WARMUP_S of probes are left out (start-up).
    The tape is fed in its own event time (cycled), so its bars close as often per trade as in the tape.
    """
    client.flushall()
    keys = Keys(settings.prefix)
    # the probe swings 10% on every trade, which the bad-print filter rejects (it still runs on every trade):
    # the rule counts bad prints, so that each swing fires and its latency is measured
    RuleStore(client, keys).add(
        Rule(id="probe", symbol="PROBE", drop_pct=5, window_s=1, cooldown_s=0, include_bad_prints=True)
    )
    worker = worker_process(settings, "alert-latency", stages)
    wait_for_lease(client, settings, "alert-latency", worker)
    feed = tapes.Cycled(tape)
    per_batch = rate // 100
    sent: dict[int, float] = {}
    producer = Producer(redis.Redis(port=client.connection_pool.connection_kwargs["port"]), settings)
    start_ms = int(time.time() * 1000)
    next_at = time.perf_counter()
    seq = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        seq += 1
        now_ms = start_ms + seq * 10
        chunk = feed.take(per_batch - 2, start_ms)
        # PROBE recovers to 100 and then drops 10%: each 10 ms batch fires the rule once.
        probe = TickBatch.from_columns(["PROBE", "PROBE"], [100.0, 90.0], [1.0, 1.0], [now_ms, now_ms])
        if seq * 0.01 >= WARMUP_S:
            sent[now_ms] = time.perf_counter()
        # the feed's event clock runs ahead of the wall clock: declared (see `benchmarks.analytics.latency`)
        producer.publish(concat([chunk, probe]), clock_ms=int(max(chunk.ts.max(), now_ms)))
        next_at += 0.01
        time.sleep(max(0.0, next_at - time.perf_counter()))
    seen: dict[int, float] = {}
    last = "0-0"
    # until every timed probe's alert is in (the warm-up's alerts are read too, so counting them cannot tell)
    while not sent.keys() <= seen.keys() and time.perf_counter() < deadline + DRAIN_WAIT_S:
        for _, entries in client.xread({keys.alerts(): last}, block=100) or []:
            for entry_id, fields in entries:
                last = entry_id
                seen.setdefault(int(fields[b"ts"]), _entry_time(entry_id))
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)
    offset = time.time() - time.perf_counter()  # alert times are wall clock (entry IDs); sends are perf_counter
    delays = np.array([(seen[ts] - (sent[ts] + offset)) * 1000 if ts in seen else np.inf for ts in sent])
    missing = int(np.isinf(delays).sum())
    p50, p99 = (float(np.percentile(delays, q, method="higher")) for q in (50, 99))
    return p50, p99, len(delays) - missing, missing


def _entry_time(entry_id: bytes) -> float:
    return int(entry_id.split(b"-")[0]) / 1000


def end_to_end(args: argparse.Namespace) -> list[Figure]:
    """The worker figures on an embedded Redis, tape by tape."""
    figures: list[Figure] = []
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        settings = Settings(redis_url=server.url, stream_maxlen=0, block_ms=20, consumer="bench")
        print(f"end to end: one worker (core stages + slump alerts) on {server.binary} (appendonly no)")
        ref = redis_benchmark_xadd(server)
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        names = tapes.available(args.tapes)
        for name in names:
            trades = tapes.tape(name, args.worker_ticks)
            print(" ", tapes.describe(name, trades), "as batch entries")
            worker_rate(client, settings, trades.take(np.arange(50_000)), [])  # warm-up
            figures.append(rules_cost(client, settings, trades, args.rounds, name, ref))
        for name in names if args.latency_seconds else ():
            trades = tapes.tape(name, 500_000)
            for stages in ("alerts", "alerts,anomaly"):
                p50, p99, samples, missing = alert_latency(client, settings, trades, args.latency_seconds, stages)
                print(
                    f"  XADD -> alert entry at 100k ticks/s, {name} tape, --stages {stages} (worker process, after "
                    f"{WARMUP_S:.0f} s of start-up): p50 {p50:.1f} ms, p99 {p99:.1f} ms ({samples} alerts, "
                    f"{missing} not written within {DRAIN_WAIT_S:.0f} s of the producer's end)"
                )
                realistic = name != "synthetic"
                figures.append(
                    Figure(
                        f"XADD -> alert p99 at 100k ticks/s, --stages {stages}, {name} tape",
                        p99,
                        "ms",
                        ref,
                        target="<= 50 ms" if realistic else "",
                        met=p99 <= 50 if realistic else None,
                    )
                )
    return figures


def rules_cost(
    client: redis.Redis, settings: Settings, trades: TickBatch, rounds: int, name: str, ref: float
) -> Figure:
    """Rounds of 0, 100 and 1,000 rules on one tape, back to back, best of each; the cost of 1,000 rules.

    Rounds interleave because this host drifts by 20% within a minute: runs of one count in a row would
    compare different moments of the machine.
    """
    counts = (0, 100, 1_000)
    rules = {count: make_rules(count, trades.symbols) for count in counts}
    runs: dict[int, list[WorkerRun]] = {count: [] for count in counts}
    for _ in range(rounds):
        for count in counts:
            runs[count].append(worker_rate(client, settings, trades, rules[count]))
    base = max(runs[0], key=lambda run: run.ticks_per_s)
    for count in counts:
        run = max(runs[count], key=lambda run: run.ticks_per_s)
        row(
            f"worker, {name} tape, {count:>5,} rules ({run.alerts:,} alerts), best of {rounds}",
            run.ticks_per_s,
            ref=ref,
        )
        extra = run.seconds - base.seconds
        # the stage runs on the helper thread beside the bars and indicators, so its time is not all extra
        waited = run.transactions_s - base.transactions_s
        split = (
            f": {extra:+.2f} s, of which sending the transactions and waiting for their replies "
            f"{waited:+.2f} s (Redis applies the alerts' XADDs while the next batch is computed); "
            f"the alert stage ran {run.alert_stage_s:.2f} s on the helper thread"
            if count
            else ""
        )
        print(f"  {'':<58} {100 * (1 - run.ticks_per_s / base.ticks_per_s):.1f}% slower than with no rules{split}")
    each = "; ".join(
        " / ".join(f"{runs[count][k].ticks_per_s / 1000:,.0f}k" for count in counts) for k in range(rounds)
    )
    print(f"  each round, 0 / 100 / 1,000 rules: {each}")
    storm = max(runs[1_000], key=lambda run: run.ticks_per_s)
    cost = 1 - storm.ticks_per_s / base.ticks_per_s
    return Figure(
        f"cost of 1,000 rules ({storm.alerts:,} alerts), {name} tape, best of {rounds}",
        100 * cost,
        "%",
        base.ticks_per_s,
        "0 rules",
        "<= 20%",
        cost <= 0.20,
    )


if __name__ == "__main__":
    main()
