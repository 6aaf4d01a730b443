"""Anomaly scoring throughput: feature extraction, scoring, and the worker with scoring on beside off.

Prints figures, asserts nothing. Targets on the 2-core dev machine: scoring (rules, tail, forest and
fusion, from features) >= 500k trades/s; the worker with the anomaly stage >= 50% of its speed without,
on each tape of `benchmarks.tapes` (synthetic, the simulator's default market, LOBSTER), with
redis-benchmark's XADD rate of the same server printed beside.

    .venv/bin/python -m benchmarks.anomaly [--ticks N] [--worker-ticks N] [--tapes synthetic,simulated,lobster]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import numpy as np
import redis

from benchmarks import tapes
from benchmarks._common import Figure, redis_benchmark_xadd, row, timed, worker_drain
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.stage import AnomalyDetector, AnomalyStage
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.config import preset_config
from tickerdash.simulator.market import generate

CHUNK = 10_000


def market(n: int, symbols: int, seed: int = 3) -> TickBatch:
    """n simulated trades (with accounts) over `symbols` tickers."""
    config = preset_config("evaluation", seed).model_copy(update={"universe": symbols})
    chunks, total = [], 0
    for ticks, _ in generate(config, "evaluation"):
        chunks.append(ticks)
        total += len(ticks)
        if total >= n:
            break
    from tickerdash.ingest.ticks import concat

    return concat(chunks)


def core(ticks: TickBatch) -> None:
    """Feature extraction and scoring, timed separately, in chunks of CHUNK trades (forest in use)."""
    detector = AnomalyDetector(scorer=ScorerConfig(refit_every=32_768, swap_after=4_096))
    pieces = [ticks.take(np.arange(i, min(i + CHUNK, len(ticks)))) for i in range(0, len(ticks), CHUNK)]
    warm = 6  # past the first refit and swap, so the forest is scoring
    for piece in pieces[:warm]:
        detector.process(piece)
    features_s = scoring_s = 0.0
    n = 0
    for piece in pieces[warm:]:
        with timed() as t:
            frame = detector.features.process(piece)
        features_s += t[0]
        with timed() as t:
            detector.scorer.process(frame)
        scoring_s += t[0]
        n += len(piece)
    assert detector.scorer.forest is not None
    row("feature extraction (20 symbols, accounts)", n / features_s, "trades/s")
    row("scoring: rules + tail + forest + fusion", n / scoring_s, "trades/s")
    row("features + scoring", n / (features_s + scoring_s), "trades/s")


def worker_rate(server: EmbeddedRedis, ticks: TickBatch, stages: tuple, prefix: str) -> float:  # type: ignore[type-arg]
    """Ticks/s of one inline worker draining the published ticks (batch entries, nothing trimmed)."""
    client = redis.Redis(port=server.port)
    settings = Settings(
        redis_url=server.url,
        prefix=prefix,
        consumer="bench",
        block_ms=20,
        stream_maxlen=0,
        data_dir=Path(tempfile.mkdtemp()),
    )
    client.flushall()  # each run starts from an empty server, as the first one does
    gc.collect()  # and without the previous run's worker state still to collect
    Producer(client, settings).publish(ticks)
    worker = AnalyticsWorker(client, settings, None, WorkerConfig(checkpoint_every_s=5.0, stages=stages))
    drain_s, _ = worker_drain(worker)  # shutdown not counted
    processed = worker.runner.stats.ticks
    client.close()
    return processed / drain_s


def parser() -> argparse.ArgumentParser:
    """The command line (also read by `python -m benchmarks` for its smaller sizes)."""
    out = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    out.add_argument("--ticks", type=int, default=200_000, help="trades for feature extraction and scoring; 0: skip")
    out.add_argument("--worker-ticks", type=int, default=1_000_000, help="trades per worker drain (LOBSTER: copies)")
    out.add_argument("--tapes", type=tapes.tape_names, default=list(tapes.TAPES), help="comma-separated")
    out.add_argument("--pairs", type=int, default=3, help="back-to-back pairs of scoring off and on, per tape")
    return out


def run(args: argparse.Namespace) -> list[Figure]:
    """Measure and print every figure; return those of the summary table."""
    print("anomaly scoring")
    if args.ticks:
        core(market(args.ticks, 20))
    figures = []
    with EmbeddedRedis(Path(tempfile.mkdtemp()), appendonly=False) as server:
        ref = redis_benchmark_xadd(server)
        row("reference: redis-benchmark XADD, pipeline 256", ref, "req/s")
        for name in tapes.available(args.tapes):
            ticks = tapes.tape(name, args.worker_ticks)
            print(" ", tapes.describe(name, ticks), "as batch entries")
            pairs = []
            for k in range(args.pairs):  # back to back: this host is shared and a single run is noisy
                off = worker_rate(server, ticks, (), f"off{k}")
                on = worker_rate(server, ticks, (AnomalyStage,), f"on{k}")
                pairs.append((off, on))
            off, on = max(p[0] for p in pairs), max(p[1] for p in pairs)
            row(f"worker, {name} tape, scoring off (best of {args.pairs})", off, ref=ref)
            row(f"worker, {name} tape, scoring on (best of {args.pairs})", on, ref=ref)
            # the target is a ratio to the scoring-off run of this same process, not to redis-benchmark
            print(f"  {'worker, scoring on / scoring off (target >= 0.50)':<58} {on / off:>14.2f}x", flush=True)
            each = "; ".join(f"{a:,.0f} / {b:,.0f} = {b / a:.2f}x" for a, b in pairs)
            print(f"  each pair back to back, off / on ticks/s: {each}")
            label = f"worker with anomaly scoring, {name} tape, best of {args.pairs}"
            figures.append(Figure(label, on, "ticks/s", off, "scoring off", ">= 0.5x scoring off", on / off >= 0.5))
    return figures


def main() -> None:
    """Print the figures."""
    run(parser().parse_args())


if __name__ == "__main__":
    main()
