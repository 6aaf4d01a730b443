"""`tickerdash alerts tail` as a user runs it: it rides out a Redis restart without repeating or skipping an
alert, waits for a Redis that is not up yet, and stops on Ctrl-C or SIGTERM without a traceback."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from restart_tools import kill_and_restart

from tickerdash.analytics.stages.alerts.alert import Alert
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.redis_server import EmbeddedRedis

KEYS = Keys()
WAIT_S = 30.0


class Tail:
    """A `tickerdash alerts tail --json` child process whose stdout lines are collected as they come."""

    def __init__(self, server: EmbeddedRedis, data_dir: Path, *args: str) -> None:
        env = {**os.environ, "TICKERDASH_REDIS_URL": server.url, "TICKERDASH_DATA_DIR": str(data_dir)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tickerdash", "alerts", "tail", "--json", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.printed: list[dict[str, Any]] = []
        self.errors: list[str] = []  # stderr, line by line as it comes
        threading.Thread(target=self._collect, daemon=True).start()
        self._errors_read = threading.Thread(target=self._collect_errors, daemon=True)
        self._errors_read.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def _collect_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line)

    def wait_for_error(self, text: str) -> None:
        """Until a stderr line contains `text` (fails after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while not any(text in line for line in self.errors):
            assert self.process.poll() is None, f"tail exited: {''.join(self.errors)[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} on stderr in {WAIT_S:.0f} s: {''.join(self.errors)}"
            time.sleep(0.05)

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Every alert printed so far, once there are `count` (fails after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while len(self.printed) < count:
            assert self.process.poll() is None, f"tail exited: {''.join(self.errors)[-3000:]}"
            try:
                self.printed.append(json.loads(self.lines.get(timeout=max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                pytest.fail(f"tail printed {len(self.printed)} alerts of {count} in {WAIT_S:.0f} s")
        return self.printed

    def stop(self, signum: int) -> tuple[int, str]:
        """Send the signal; the exit code and stderr."""
        self.process.send_signal(signum)
        self.process.wait(timeout=WAIT_S)
        self._errors_read.join(WAIT_S)
        return self.process.returncode, "".join(self.errors)

    def kill(self) -> None:
        """End the child if a failed test left it running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_tail(tmp_path: Path) -> Any:
    """Start `alerts tail --json` children (killed at the end if a test left one running)."""
    started: list[Tail] = []

    def start(server: EmbeddedRedis, *args: str) -> Tail:
        started.append(Tail(server, tmp_path / "data", *args))
        return started[-1]

    yield start
    for tail in started:
        tail.kill()


def add_alert(client: redis.Redis, n: int) -> str:
    """Fire alert number n onto the alerts stream; its message names n."""
    fields: Any = Alert(f"r{n}", "AAPL", 1_700_000_000_000 + n, 95.0, 100.0, 5.0, 60, f"alert {n}").to_fields()
    return client.xadd(KEYS.alerts(), fields).decode()


def retry(call: Callable[[], Any]) -> Any:
    """`call()` once Redis answers (a restarted server may still be loading its data)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.chaos
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"])
def test_tail_rides_out_a_restart_and_prints_every_alert_once(
    aof_redis: EmbeddedRedis, start_tail: Any, signum: int, code: int
) -> None:
    """Alerts added before and after a kill -9 restart of Redis are each printed exactly once, in order;
    the outage is told in one line naming the server and one when it is back; the signal ends the tail
    with the house's exit code (130 for Ctrl-C, 0 for SIGTERM) and no traceback."""
    client = redis.Redis(port=aof_redis.port)
    before = [add_alert(client, n) for n in (1, 2)]
    tail = start_tail(aof_redis, "--since", "0")
    tail.wait_for(2)
    kill_and_restart(aof_redis, down_s=2.0)
    after = [retry(lambda n=n: add_alert(client, n)) for n in (3, 4)]
    printed = tail.wait_for(4)
    time.sleep(1.5)  # a repeat would come with the next read
    assert tail.lines.empty(), f"printed more than the four alerts: {tail.lines.get()}"
    exit_code, err = tail.stop(signum)
    assert [(a["id"], a["message"]) for a in printed] == list(
        zip(before + after, ["alert 1", "alert 2", "alert 3", "alert 4"], strict=True)
    )
    assert exit_code == code, err
    assert "Traceback" not in err, err
    lost = [line for line in err.splitlines() if "unavailable" in line]
    assert len(lost) == 1 and f"Redis at {aof_redis.url} unavailable" in lost[0], err
    assert err.count(f"Redis at {aof_redis.url} back after") == 1, err


@pytest.mark.chaos
def test_tail_started_before_redis_waits_for_it(aof_redis: EmbeddedRedis, start_tail: Any) -> None:
    """A tail started while Redis is down says so once, waits, and prints the alerts once it is up."""
    assert aof_redis.process is not None
    aof_redis.process.kill()
    aof_redis.process.wait()
    tail = start_tail(aof_redis, "--since", "0")
    tail.wait_for_error("unavailable")  # it has met the outage (a loaded machine may take seconds to start it)
    aof_redis.start(timeout=30)
    added = retry(lambda: add_alert(redis.Redis(port=aof_redis.port), 1))
    (printed,) = tail.wait_for(1)
    exit_code, err = tail.stop(signal.SIGINT)
    assert printed["id"] == added and exit_code == 130
    assert "Traceback" not in err and err.count("unavailable") == 1, err
