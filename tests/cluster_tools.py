"""A real Redis Cluster for tests (`ingest.local_cluster`): primaries on free loopback ports sharing the slots,
with replicas where a test asks for them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import redis
from redis.crc import key_slot

from tickerdash.ingest.cluster import primary_clients
from tickerdash.ingest.local_cluster import cluster_ok, local_cluster
from tickerdash.ingest.local_cluster import wait_until as wait_or_raise
from tickerdash.ingest.redis_server import EmbeddedRedis, client_for

__all__ = ["cluster_ok", "emptied_cluster_client", "keys_on", "move_slot", "redis_cluster", "wait_until"]


def redis_cluster(primaries: int = 3, replicas: int = 0) -> contextlib.AbstractContextManager[list[EmbeddedRedis]]:
    """`primaries` servers sharing the slots and `replicas` replicas of each (after the primaries in the list)."""
    return local_cluster(primaries, replicas)


@contextlib.contextmanager
def emptied_cluster_client(seed: EmbeddedRedis) -> Iterator[redis.RedisCluster]:
    """A cluster client from one node's URL (any node will do), on a cluster emptied first; closed at the end."""
    client = client_for(seed.url, cluster=True)
    assert isinstance(client, redis.RedisCluster)
    for primary in primary_clients(client):
        primary.flushall()
    try:
        yield client
    finally:
        client.close()


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


def move_slot(primaries: list[EmbeddedRedis], key: str) -> str:
    """Move the key's slot, with its keys, to the next primary, as a resharding does (clients that cached the
    slot then meet ASK while it moves and MOVED after); returns the new primary's host:port."""
    slot = key_slot(key.encode())
    nodes = [redis.Redis(port=node.port, decode_responses=True) for node in primaries]
    try:
        ids = [node.execute_command("CLUSTER", "MYID") for node in nodes]
        source = next(i for i, node in enumerate(nodes) if slot in slots_of(node, ids[i]))
        target = (source + 1) % len(nodes)
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            nodes[source].execute_command("MIGRATE", "127.0.0.1", primaries[target].port, "", 0, 5_000, "KEYS", *keys)
        for node in nodes:  # replicas learn it from their primaries
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        wait_until(lambda: slot in slots_of(nodes[source], ids[target]), "the source did not learn of the move")
        return f"127.0.0.1:{primaries[target].port}"
    finally:
        for node in nodes:
            node.close()


def slots_of(node: redis.Redis, node_id: str) -> set[int]:
    """The slots `node` believes `node_id` serves."""
    for line in node.execute_command("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if fields[0] == node_id:
            slots: set[int] = set()
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being imported or migrated
                low, _, high = part.partition("-")
                slots.update(range(int(low), int(high or low) + 1))
            return slots
    return set()
