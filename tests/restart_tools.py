"""Shared by the restart tests: kill -9 a redis-server and start it again on its append-only file, and
read back every tick on the tick streams."""

from __future__ import annotations

import time
from typing import Any

import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
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
