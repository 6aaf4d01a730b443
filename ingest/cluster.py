"""Redis Cluster: the URL of any node is recognised as a cluster, and each partition's commands go to the
primary that holds the partition's slot.

With P > 1 every key one partition's batch touches carries the partition's hash tag (`Keys`), so it lives
in one slot, on one primary. A command that touches one key (XADD, HGET, XRANGE, ...) goes through the
`redis.RedisCluster` client, which routes it and follows MOVED by itself. What must stay on one node, a
partition's MULTI ... EXEC, its pipelined reads and its scripts, uses `node_client(client, key)`: a plain
`redis.Redis` on the primary that holds the key's slot. On a standalone server both are the same client,
so every caller is written once.

A redirect (MOVED, ASK), `CLUSTERDOWN`, `TRYAGAIN`, a `READONLY` node (a primary demoted by a failover)
or a dropped connection means the command was not applied: the caller refreshes the slot map
(`refresh_slot_map`), takes the node client again, and restores what it held from its checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

AnyRedis: TypeAlias = "redis.Redis | redis.RedisCluster"

# replies that say "this node does not (or no longer) serves that slot": nothing was applied
NOT_HERE = (AskError, ClusterDownError, TryAgainError, ReadOnlyError)  # MovedError is an AskError
# what every loop rides out with backoff, on a standalone server or a cluster: the server (or the node that
# holds a slot) is down, failing over, or no longer serves the slot; a slot map with a hole in it, or no node
# answering it, while a failover is under way; redirects that outlasted the cluster client's attempts. A
# cluster client refreshes its slot map on these by itself, so the next attempt goes to the right node.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    *NOT_HERE,
    ClusterError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)


def cluster_enabled(client: redis.Redis) -> bool:
    """Whether the client's server is a node of a Redis Cluster (False if it cannot be asked now)."""
    try:
        info: Any = client.info("cluster")
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False  # down (each command waits for Redis its own way) or INFO refused: nothing to tell
    return int(info.get("cluster_enabled", 0)) == 1


def is_cluster(client: AnyRedis) -> bool:
    """Whether the client talks to a Redis Cluster."""
    return isinstance(client, redis.RedisCluster)


def read_streams(
    client: AnyRedis,
    cursors: Mapping[str, str],
    *,
    count: int,
    block_ms: int | None,
    group: tuple[str, str] | None = None,
    idle: Callable[[], object] | None = None,
) -> list[tuple[Any, Any]]:
    """New entries of several streams after their cursors, as (stream, entries) pairs: XREAD, or XREADGROUP as
    (group name, consumer) with `group`.

    On a standalone server one read covers every stream and blocks up to `block_ms` (None: not at all). On a
    Redis Cluster each stream may be a slot of its own: a read over several slots is refused, and one blocking
    read would hold up the others, so each stream gets a read that does not block, all pipelined (a round trip
    per node), and `idle` (the caller's pause, in place of the block) runs when none brought an entry. The
    dashboard's gateway, which is asynchronous, waits on one blocking read per partition instead
    (`dashboard/feed_reads.py`).
    """

    def read(target: Any, streams: Mapping[str, str], block: int | None) -> Any:
        if group is None:
            return target.xread(dict(streams), count=count, block=block)
        return target.xreadgroup(group[0], group[1], dict(streams), count=count, block=block)

    cluster = is_cluster(client)
    if not cluster:
        replies = [read(client, cursors, block_ms)]
    else:
        pipe = client.pipeline(transaction=False)
        for stream, after in cursors.items():
            read(pipe, {stream: after}, None)
        replies = pipe.execute()
    found = [(stream, entries) for reply in replies for stream, entries in (reply or [])]
    if idle is not None and cluster and not any(entries for _, entries in found):
        idle()
    return found


def node_client(client: AnyRedis, key: str) -> redis.Redis:
    """A plain client on the primary that holds the key's slot (on a standalone server, the client itself)."""
    if isinstance(client, redis.RedisCluster):
        connection = client.get_node_from_key(key).redis_connection
        assert connection is not None  # every node of the slot map has its client
        return connection
    return client


def primary_clients(client: AnyRedis) -> list[redis.Redis]:
    """A plain client on every primary (on a standalone server, the client itself): for SCAN and other
    commands that must see every node."""
    if isinstance(client, redis.RedisCluster):
        nodes = sorted(client.get_primaries(), key=lambda node: node.name)
        return [node.redis_connection for node in nodes if node.redis_connection is not None]
    return [client]


def node_name(client: AnyRedis, key: str) -> str:
    """host:port of the primary that holds the key's slot ("" on a standalone server)."""
    if isinstance(client, redis.RedisCluster):
        return str(client.get_node_from_key(key).name)
    return ""


def refresh_slot_map(client: AnyRedis) -> None:
    """Read the slot map again after a redirect or a failover (nothing on a standalone server, nor while no
    node answers: the caller's next attempt refreshes it)."""
    if isinstance(client, redis.RedisCluster):
        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            client.nodes_manager.initialize()


def not_applied_here(error: BaseException) -> bool:
    """Whether an error says the node does not serve the slot (now): the command was not applied."""
    return isinstance(error, NOT_HERE)


def by_node(client: AnyRedis, keys: Sequence[str]) -> list[tuple[redis.Redis, list[int]]]:
    """The positions of `keys` grouped by the primary that holds each one (in order within a group), with a
    plain client on it: one pipeline per node (one group on a standalone server)."""
    if not isinstance(client, redis.RedisCluster):
        return [(client, list(range(len(keys))))] if keys else []
    groups: dict[str, tuple[redis.Redis, list[int]]] = {}
    for position, key in enumerate(keys):
        node = client.get_node_from_key(key)
        assert node.redis_connection is not None  # every node of the slot map has its client
        groups.setdefault(node.name, (node.redis_connection, []))[1].append(position)
    return list(groups.values())
