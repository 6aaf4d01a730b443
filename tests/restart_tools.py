"""Shared by the restart tests: kill -9 a redis-server and start it again on its append-only file, read back
every tick on the tick streams, and publish on a thread while a test cuts the connections under it."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.ticks import TickBatch, concat


def kill_and_restart(server: EmbeddedRedis, down_s: float) -> None:
    """kill -9 the server, keep it down `down_s`, then start it again on the same port and data dir."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    if server.process.stderr:
        server.process.stderr.close()
    time.sleep(down_s)
    server.start(timeout=30)


def stream_ticks(client: redis.Redis, keys: Keys) -> TickBatch:
    """Every tick on the tick streams, decoded (nothing may be rejected)."""
    pieces, raw = [], raw_client(client)
    for stream in keys.tick_streams:
        entries: Any = raw.xrange(stream)
        decoded = decode_entries(entries)
        assert not decoded.rejected, decoded.rejected[:3]
        pieces.append(decoded.ticks)
    return concat(pieces)


class BackgroundPublish:
    """A producer publishing `ticks` in slices of `step` on a thread of its own, until done or `stop()`:
    `published` counts the trades of the slices it finished, `failure` holds what it raised."""

    def __init__(
        self, producer: Producer, ticks: TickBatch, step: int, *, per_tick: bool = False, pause_s: float = 0.0
    ) -> None:
        self.producer, self.ticks, self.step, self.per_tick, self.pause_s = producer, ticks, step, per_tick, pause_s
        self.published = 0
        self.failure: list[BaseException] = []
        self._enough = threading.Event()
        self._thread = threading.Thread(target=self._publish)

    def _publish(self) -> None:
        try:
            for start in range(0, len(self.ticks), self.step):
                if self._enough.is_set():
                    return
                self.producer.publish(self.ticks.slice(start, start + self.step), per_tick=self.per_tick)
                self.published = min(start + self.step, len(self.ticks))
                time.sleep(self.pause_s)
        except BaseException as exc:  # handed to the test's thread
            self.failure.append(exc)

    def start(self) -> BackgroundPublish:
        """Start publishing."""
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        """Whether it is still publishing."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 120) -> None:
        """Stop after the slice in hand (or let it finish), wait for it, close the producer; fail the test if
        the publishing raised."""
        self._enough.set()
        self._thread.join(timeout=timeout)
        self.producer.close()
        assert not self.failure, self.failure
