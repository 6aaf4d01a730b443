"""The key layout a Redis holds, stored once: every process checks it before it reads or writes.

The partition count P decides every key name (`ingest.contract.keys`). Two processes with different P
would write and read different keys and never see each other's data, so the first process to reach a
Redis records P (and the layout's version) under `Keys.layout`, and a process configured otherwise
refuses to start, saying how to move the data.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import ClusterError, SlotNotCoveredError

from tickerdash.ingest.cluster import AnyRedis, is_cluster
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.redis_server import RedisServerError

LAYOUT_VERSION = 1  # hash-tagged per-partition keys (docs/design.md, "Partitions and Redis Cluster")


class LayoutMismatchError(RedisServerError):
    """The Redis holds data written with another partition count or key layout than this process's."""


def check_layout_if_reachable(client: AnyRedis, keys: Keys) -> None:
    """`check_layout`, unless Redis cannot be reached now, or a cluster cannot serve the layout's slot now (each
    command waits for Redis its own way)."""
    try:
        check_layout(client, keys)
    except (redis.ConnectionError, redis.TimeoutError, ClusterError, SlotNotCoveredError):
        return


def check_layout(client: AnyRedis, keys: Keys) -> None:
    """Record this process's layout if the Redis has none yet; raise LayoutMismatchError if it has another (or
    if the Redis is a cluster and the layout has one partition)."""
    if is_cluster(client) and keys.partitions == 1:
        raise LayoutMismatchError(
            "this Redis is a Redis Cluster, and TICKERDASH_PARTITIONS is 1: on a cluster each partition's keys "
            "live on one node, so set TICKERDASH_PARTITIONS to 2 or more (at least the number of primaries, e.g. 6)"
        )
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(keys.layout, "partitions", keys.partitions)
    pipe.hsetnx(keys.layout, "version", LAYOUT_VERSION)
    pipe.hmget(keys.layout, "partitions", "version")
    stored: Any = pipe.execute()[-1]
    partitions, version = (int(value) for value in stored)
    if partitions != keys.partitions:
        raise LayoutMismatchError(
            f"this Redis holds Tickerdash data (prefix {keys.prefix!r}) written with TICKERDASH_PARTITIONS="
            f"{partitions}, and this process has {keys.partitions}: set TICKERDASH_PARTITIONS={partitions}, or move "
            f"to {keys.partitions} partitions: export what you keep (`tickerdash export --all`), stop every "
            f"Tickerdash process, delete the keys matching '{keys.every_key}', then start again"
        )
    if version != LAYOUT_VERSION:
        raise LayoutMismatchError(
            f"this Redis holds Tickerdash data (prefix {keys.prefix!r}) in key layout {version}, and this version of "
            f"Tickerdash reads layout {LAYOUT_VERSION}: export what you keep with the Tickerdash that wrote it, "
            f"delete the keys matching '{keys.every_key}', then start again"
        )
