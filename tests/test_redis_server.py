"""The embedded Redis that `tickerdash up` and the tests rely on."""

from __future__ import annotations

from pathlib import Path

import redis

from ingest.redis_server import EmbeddedRedis, find_redis_server, redis_connection, running_embedded_url
from ingest.settings import Settings


def test_embedded_server_answers_on_loopback_and_keeps_data_in_its_aof(tmp_path: Path) -> None:
    """Data written to an embedded server survives a restart on the same data dir (append-only file)."""
    with EmbeddedRedis(tmp_path) as server:
        assert server.port != 6379
        redis.Redis(port=server.port).xadd("s", {"k": "v"})
    assert (tmp_path / "appendonlydir").exists() or (tmp_path / "appendonly.aof").exists()
    with EmbeddedRedis(tmp_path) as again:
        assert redis.Redis(port=again.port).xlen("s") == 1


def test_binary_is_at_least_6_2() -> None:
    """The chosen redis-server supports XAUTOCLAIM and MINID (>= 6.2)."""
    import subprocess

    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in out.split("v=")[1].split(".")[:2])
    assert (major, minor) >= (6, 2)


def test_commands_share_the_running_embedded_server(tmp_path: Path) -> None:
    """A second command with no URL set finds the embedded server the first one started."""
    settings = Settings(data_dir=tmp_path)
    with redis_connection(settings) as first:
        first.set("k", "1")
        assert running_embedded_url(settings) is not None
        with redis_connection(settings) as second:
            assert second.get("k") == b"1"
    assert running_embedded_url(settings) is None
