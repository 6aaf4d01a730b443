"""A real Redis Cluster for tests (`ingest.local_cluster`): primaries on free loopback ports sharing the slots,
with replicas where a test asks for them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import redis

from tickerdash.ingest.local_cluster import cluster_ok, local_cluster
from tickerdash.ingest.local_cluster import wait_until as wait_or_raise
from tickerdash.ingest.redis_server import EmbeddedRedis

__all__ = ["cluster_ok", "keys_on", "redis_cluster", "wait_until"]


def redis_cluster(primaries: int = 3, replicas: int = 0) -> contextlib.AbstractContextManager[list[EmbeddedRedis]]:
    """`primaries` servers sharing the slots and `replicas` replicas of each (after the primaries in the list)."""
    return local_cluster(primaries, replicas)


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `ready` until it holds; fail the test with `what` after `timeout` seconds."""
    try:
        wait_or_raise(ready, what, timeout)
    except Exception as exc:
        raise AssertionError(str(exc)) from None


def keys_on(nodes: list[EmbeddedRedis]) -> int:
    """How many keys the cluster holds, over every node."""
    total = 0
    for node in nodes:
        with contextlib.closing(redis.Redis(port=node.port)) as client:
            total += int(client.dbsize())
    return total
