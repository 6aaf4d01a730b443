"""Chaos: Redis killed (-9) and restarted on its append-only file while the simulator, an analytics worker
and the dashboard run, as separate processes of the real CLI. Afterwards every tick is on the stream
exactly once, the bars equal those of an uninterrupted run, and every process is still up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import redis
from restart_tools import kill_and_restart, stream_ticks
from websockets.sync.client import connect

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, limited

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[1]
SEED, COUNT, RATE, PARTITIONS = 11, 36_000, 1_800.0, 2  # ~20 s of publishing, paced by count
MARKET_RATE = 100.0  # trades per event-time second: ~70 s of event time (the open is busy), ~700 closed 1s bars
START = "2024-03-01T14:30:00Z"
START_MS = 1_709_303_400_000
DOWN_S = 1.5  # how long Redis stays dead each time
REF_PREFIX = "reference"
ENTRIES = PARTITIONS * COUNT / int(RATE / 20)  # about: the simulator writes 20 slices a second, one entry per partition


def expected_tape() -> TickBatch:
    """The trades `simulate --seed SEED --count COUNT --start START --market-rate MARKET_RATE` publishes."""
    config = MarketConfig(seed=SEED, start_ms=START_MS, trades_per_s=MARKET_RATE)
    return concat([ticks for ticks, _ in limited(generate(config), Limits(count=COUNT), START_MS)])


def trade_keys(ticks: TickBatch) -> list[tuple[str, int, float, float, str]]:
    """One sortable key per trade: (trade id, ts, price, size, symbol)."""
    assert ticks.trade_id is not None
    symbols = np.array(ticks.symbols, dtype=object)[ticks.symbol_idx]
    return sorted(
        zip(
            ticks.trade_id.to_pylist(),
            ticks.ts.tolist(),
            ticks.price.tolist(),
            ticks.size.tolist(),
            symbols.tolist(),
            strict=True,
        )
    )


def bars(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every bar stream under a prefix, by its key without the prefix."""
    return {
        key.decode().removeprefix(prefix): client.xrange(key)
        for key in sorted(client.scan_iter(match=f"{prefix}:bars:*", count=1000))
    }


def entries(client: redis.Redis, keys: Keys) -> int:
    """Entries on the tick streams so far."""
    return sum(int(client.xlen(stream)) for stream in keys.tick_streams)


def caught_up(client: redis.Redis, keys: Keys, group: str = "analytics") -> bool:
    """The worker group has read and acknowledged every entry of every tick stream."""
    for stream in keys.tick_streams:
        if not client.exists(stream):
            return False
        info = [g for g in client.xinfo_groups(stream) if g["name"] == group.encode()]
        if not info or info[0]["pending"] or info[0]["lag"] != 0:
            return False
    return True


class Procs:
    """The test's child processes, their output in files, stopped by SIGTERM (by PID) at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start `tickerdash ARGS` with the test's environment (plus `env`), output to NAME.log."""
        self.logs[name] = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickerdash", *args],
            env={**self.env, **env},
            stdout=self.logs[name],
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        """Everything the process printed so far."""
        self.logs[name].flush()
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def assert_running(self, *, simulator: bool = False) -> None:
        """Every long-running child (and, with `simulator`, the simulator too) is still up."""
        for name, proc in self.procs.items():
            if simulator or name != "simulate":
                assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.output(name)[-3000:]}"

    def stop(self, name: str) -> int:
        """SIGTERM one child by its PID and wait for it; its exit code."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        """Stop whatever still runs and close the log files."""
        for name in self.procs:
            self.stop(name)
        for log in self.logs.values():
            log.close()


def wait_until(what: str, check: Any, procs: Procs, timeout: float, *, simulator: bool = False) -> None:
    """Poll `check()` until it is true, failing early if a long-running child (or `simulator`) ended."""
    deadline = time.monotonic() + timeout
    while not check():
        procs.assert_running(simulator=simulator)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_redis_killed_twice_mid_stream_loses_and_repeats_no_tick_and_no_process_dies(
    aof_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """The simulator, a worker and the dashboard ride out two kill -9 restarts of Redis on the same AOF."""
    client = redis.Redis(port=aof_redis.port)
    keys, ref_keys = Keys("tickerdash", PARTITIONS), Keys(REF_PREFIX, PARTITIONS)
    # the uninterrupted run: the same tape, published in-process under another prefix, for its own worker
    ref_settings = Settings(redis_url=aof_redis.url, prefix=REF_PREFIX, partitions=PARTITIONS)
    with Producer(client, ref_settings) as producer:
        producer.publish(expected := expected_tape())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TICKERDASH_REDIS_URL": aof_redis.url,
        "TICKERDASH_DATA_DIR": str(tmp_path / "data"),
        "TICKERDASH_PARTITIONS": str(PARTITIONS),
    }
    procs = Procs(tmp_path, env)
    ws_port = free_port()
    try:
        procs.start("worker", "analytics", "--consumer", "chaos")
        procs.start("reference", "analytics", "--consumer", "reference", TICKERDASH_PREFIX=REF_PREFIX)
        procs.start("dashboard", "dashboard", "--port", str(free_port()), "--ws-port", str(ws_port))
        simulate = procs.start(
            "simulate",
            "simulate",
            "--seed",
            str(SEED),
            "--count",
            str(COUNT),
            "--start",
            START,
            "--rate",
            str(RATE),
            "--market-rate",
            str(MARKET_RATE),
            "-q",
        )
        for fraction in (0.25, 0.6):  # two restarts while ticks flow
            wait_until(
                f"{fraction:.0%} of the ticks",
                lambda f=fraction: entries(client, keys) >= f * ENTRIES,
                procs,
                timeout=120,
                simulator=True,
            )
            kill_and_restart(aof_redis, DOWN_S)  # (the test's own client reconnects by itself)
        assert simulate.wait(timeout=180) == 0, procs.output("simulate")[-3000:]
        simulated = procs.output("simulate")
        assert "Traceback" not in simulated
        assert simulated.count("redis unavailable") == 2 and simulated.count("redis back after") == 2, simulated

        on_stream = stream_ticks(client, keys)
        assert len(on_stream) == COUNT
        assert trade_keys(on_stream) == trade_keys(expected)  # every tick exactly once

        wait_until(
            "both workers to catch up",
            lambda: caught_up(client, keys) and caught_up(client, ref_keys),
            procs,
            timeout=180,
        )
        chaos_bars, ref_bars = bars(client, "tickerdash"), bars(client, REF_PREFIX)
        assert ref_bars and sum(map(len, ref_bars.values())) > 100
        assert chaos_bars == ref_bars

        procs.assert_running()
        assert "redis back after" in procs.output("worker")
        with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as page:  # the gateway serves after it all
            hello = json.loads(page.recv(timeout=10))
        assert hello["type"] == "hello" and hello["health"].get("redis") == "ok", hello.get("health")
        assert {u["symbol"] for u in hello["snapshot"]} == set(expected.symbols)
        for name in ("worker", "reference", "dashboard"):
            assert procs.stop(name) == 0, procs.output(name)[-3000:]
    finally:
        procs.stop_all()
