"""The default `tickerdash up`, started when the session starts and checked by tests/test_demo.py at its end.

The demo's story takes minutes of wall time (the scripted slump starts 2 minutes after start-up and lasts
one), so it runs beside the rest of the suite instead of after it: conftest.py starts it once the demo
test is collected, moves that test to the end of the run, and stops the demo when the session finishes.
Everything is the user's default but the places: its own Redis on a free port, its own data dir, free
HTTP and websocket ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.ingest.settings import Settings


class DemoRun:
    """`tickerdash up` with its defaults, on a private Redis; notes the event time of its first trade."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="tickerdash-demo-"))
        self.redis = EmbeddedRedis(self.home / "redis", appendonly=False)
        self.port, self.ws_port = free_port(), free_port()
        self.log_path = self.home / "up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # wall clock, s
        self.first_trade_ms: int | None = None  # event time of the first trade the simulator wrote
        self._watcher = threading.Thread(target=self._note_first_trade, name="demo-first-trade", daemon=True)

    @property
    def url(self) -> str:
        """The dashboard's page."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> DemoRun:
        """Start Redis, then `up` (its default market and demo rule), in the background."""
        (self.home / "redis").mkdir()
        self.redis.start()
        env = {name: value for name, value in os.environ.items() if not name.startswith("TICKERDASH_")} | {
            "TICKERDASH_REDIS_URL": self.redis.url,
            "TICKERDASH_DATA_DIR": str(self.home / "data"),
            "XDG_DATA_HOME": str(self.home / "xdg"),
        }
        args = ["up", "--port", str(self.port), "--ws-port", str(self.ws_port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tickerdash", *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_at = time.time()
        self._watcher.start()
        return self

    def _note_first_trade(self) -> None:
        settings = Settings(redis_url=self.redis.url)
        keys = Keys(settings.prefix, settings.partitions)
        client = raw_client(redis.Redis.from_url(self.redis.url))
        deadline = time.monotonic() + 300
        while self.first_trade_ms is None and time.monotonic() < deadline:
            firsts = []
            for stream in keys.tick_streams:
                with contextlib.suppress(redis.RedisError):
                    entries: Any = client.xrange(stream, count=1)
                    if entries:
                        firsts.append(int(decode_entries(entries).ticks.ts.min()))
            if firsts:
                self.first_trade_ms = min(firsts)
            else:
                time.sleep(0.2)

    def log(self) -> str:
        """The last part of what `up` and its services printed."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Ctrl-C to `up` (it stops its services), then Redis."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.redis.stop()
        shutil.rmtree(self.home, ignore_errors=True)
