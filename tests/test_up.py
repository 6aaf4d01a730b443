"""`tickerdash up`: the whole system on one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.up import plan


def test_plan_runs_workers_that_share_the_partitions() -> None:
    """With 2 workers, two `tickerdash analytics` of their own consumer names that share the partitions (no fixed
    list: a worker that joins or dies has them reassigned, as for workers started by hand)."""
    services = plan(
        rate=100,
        symbols="A,B",
        workers=2,
        port=1,
        ws_port=2,
        simulator=True,
        dashboard=False,
        slump_after_s=60,
    )
    workers = [s.args for s in services if s.name.startswith("analytics")]
    assert [args[args.index("--consumer") + 1] for args in workers] == ["up-analytics-0", "up-analytics-1"]
    assert all("--partitions" not in args for args in workers)
    simulator = next(s for s in services if s.name == "simulator")
    assert "--slump" in simulator.args and "A:60:8:60:300" in simulator.args


@pytest.mark.slow
def test_up_runs_the_pipeline_and_stops_on_ctrl_c(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Ticks flow from the simulator through analytics into bars, the dashboard serves its page, and SIGINT
    stops every child with exit code 0."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_DATA_DIR": str(tmp_path)}
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "tickerdash",
        "up",
        "--rate",
        "500",
        "--symbols",
        "AAA,BBB",
        "--port",
        str(port),
        "--ws-port",
        str(free_port()),
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120  # a bound for a loaded machine, not a measure of speed
        while not list(client.scan_iter(match="tickerdash:bars:1s:*")):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no bars within 120 s"
            time.sleep(0.2)
        while True:  # the dashboard imports more than the worker does: it may listen after the first bars
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
                    assert page.status == 200 and b"Tickerdash" in page.read()
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.communicate()[0][-3000:]
                assert time.monotonic() < deadline, "no dashboard page within 120 s"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "Tickerdash is up" in out and "stopped." in out
    assert client.hexists("tickerdash:rules", "demo-slump")  # a first run has a rule the scripted slump fires
    assert client.xlen("tickerdash:ticks") > 0
    groups = client.xinfo_groups("tickerdash:ticks")
    assert groups[0]["consumers"] >= 1


@pytest.mark.slow
def test_up_with_two_workers_shares_the_partitions_between_them(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """`up --workers 2` on 4 partitions: both workers join the group's shared members (no fixed lists, so a
    worker that joins or dies has partitions reassigned) and each comes to hold two."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    env = {
        **os.environ,
        "TICKERDASH_REDIS_URL": redis_server.url,
        "TICKERDASH_DATA_DIR": str(tmp_path),
        "TICKERDASH_PARTITIONS": "4",
    }
    args = [sys.executable, "-m", "tickerdash", "up", "--workers", "2", "--no-simulator", "--no-dashboard"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    keys = Keys(partitions=4)
    owners: list[bytes | None] = []
    try:
        deadline = time.monotonic() + 90  # a bound for a loaded machine, not a measure of speed
        while sorted(owners, key=str) != [b"up-analytics-0"] * 2 + [b"up-analytics-1"] * 2:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, f"partitions not shared within 90 s: {owners}"
            time.sleep(0.2)
            owners = [client.get(keys.lease(ANALYTICS_GROUP, p)) for p in range(4)]  # type: ignore[misc]
        members = {m.decode() for m in client.zrange(keys.members(ANALYTICS_GROUP), 0, -1)}  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert members == {"up-analytics-0", "up-analytics-1"}
