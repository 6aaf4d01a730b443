"""Shared benchmark helpers: a private Redis, the redis-benchmark reference, synthetic trades, timing."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from tickerdash.analytics.engine.worker import AnalyticsWorker
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import RunnerStats
from tickerdash.ingest.ticks import TickBatch


def redis_benchmark_xadd(
    server: EmbeddedRedis, requests: int = 300_000, pipeline: int = 256, *, cluster: bool = False
) -> float:
    """The reference: redis-benchmark's XADD rate (requests/s) against the same server, pipelined (`cluster`:
    against the whole cluster the server is a node of, a stream per primary)."""
    binary = shutil.which("redis-benchmark") or str(Path(server.binary).with_name("redis-benchmark"))
    out = subprocess.run(
        [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-n",
            str(requests),
            "-P",
            str(pipeline),
            "-q",
            *(["--cluster"] if cluster else []),
            "XADD",
            "bench:{tag}:ref" if cluster else "bench:ref",
            "*",
            "symbol",
            "AAPL",
            "price",
            "187.2",
            "size",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    rates = re.findall(r"([\d.]+) requests per second", out)
    if not rates:
        raise RuntimeError(f"redis-benchmark printed no rate: {out!r}")
    import redis

    if not cluster:  # (a cluster's streams are on every primary: the cluster benchmark flushes them all)
        redis.Redis(port=server.port).delete("bench:ref")
    return float(rates[-1])


def synthetic_ticks(n: int, symbols: int = 500, seed: int = 1, start_ms: int = 1_767_225_600_000) -> TickBatch:
    """n trades over `symbols` tickers with a random walk per symbol, one trade per ms."""
    rng = np.random.default_rng(seed)
    names = tuple(f"SYM{i:04d}" for i in range(symbols))
    idx = rng.integers(0, symbols, n).astype(np.int32)
    base = rng.uniform(10, 500, symbols)
    price = np.round(base[idx] * np.exp(rng.normal(0, 1e-3, n).cumsum() / 50), 2)
    return TickBatch(
        symbols=names,
        symbol_idx=idx,
        price=np.maximum(price, 0.01),
        size=rng.integers(1, 20, n) * 100.0,
        ts=start_ms + np.arange(n, dtype=np.int64),
        side=rng.choice(np.array([-1, 1], np.int8), n),
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_process_peak_rss_mib(server: EmbeddedRedis, stream: str = "tickerdash:ticks") -> float:
    """Peak RSS (VmHWM, MiB) of a `tickerdash analytics` child process once its group has drained `stream`."""
    client = redis.Redis(port=server.port)
    env = {**os.environ, "TICKERDASH_REDIS_URL": server.url, "TICKERDASH_BLOCK_MS": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerdash", "analytics", "--consumer", "rss"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            groups = client.xinfo_groups(stream) if client.exists(stream) else []
            if groups and groups[0]["pending"] == 0 and groups[0].get("lag") == 0:
                break
            time.sleep(0.2)
        with open(f"/proc/{proc.pid}/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM"))
        return int(hwm.split()[1]) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        client.close()


@contextmanager
def timed() -> Iterator[list[float]]:
    """Measure wall time of a block: `with timed() as t: ...; t[0]` is seconds."""
    box = [0.0]
    start = time.perf_counter()
    yield box
    box[0] = time.perf_counter() - start


def timed_drain(run: Callable[[], object], stats: RunnerStats) -> tuple[float, float]:
    """Run a consumer over a pre-filled stream: seconds from the start to its last batch's commit (the drain
    itself, which rates are computed from), and to its return (with the final idle read and a worker's
    shutdown checkpoint, which depend on the state's size rather than on the rate)."""
    start = time.monotonic()
    run()
    end = time.monotonic()
    return stats.last_batch_at - start, end - start


def worker_drain(worker: AnalyticsWorker) -> tuple[float, float]:
    """`timed_drain` of an analytics worker over a pre-filled stream, started before the clock starts
    (partitions taken, state restored), so that only the reading and processing are timed."""
    worker.acquire()
    return timed_drain(lambda: worker.run(max_idle_reads=1), worker.runner.stats)


def row(label: str, value: float, unit: str = "ticks/s", ref: float | None = None) -> None:
    """Print one figure, with its ratio to the reference when given."""
    ratio = f"  ({value / ref:5.2f}x reference)" if ref else ""
    print(f"  {label:<58} {value:>14,.0f} {unit}{ratio}", flush=True)


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure for the summary table: its value, the same-run reference it is judged against, its target.

    `reference` is the redis-benchmark XADD rate of the figure's run, or for a ratio target the rate it is
    a ratio of (named in `reference_label`); `met` is None where the figure has no target.
    """

    label: str
    value: float
    unit: str
    reference: float | None = None
    reference_label: str = "redis-benchmark XADD"
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """value / reference, where both are rates."""
        return self.value / self.reference if self.reference else None
