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

from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.ingest.settings import Settings
from tickerdash.up import plan


def test_plan_splits_partitions_between_workers() -> None:
    """With 4 partitions and 2 workers, each worker owns two partitions and all four are covered."""
    services = plan(
        Settings(partitions=4),
        rate=100,
        symbols="A,B",
        workers=2,
        port=1,
        ws_port=2,
        simulator=True,
        dashboard=False,
        slump_after_s=60,
    )
    owned = [s.args[s.args.index("--partitions") + 1] for s in services if s.name.startswith("analytics")]
    assert owned == ["0,2", "1,3"]
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
