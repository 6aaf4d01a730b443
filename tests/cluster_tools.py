"""A real Redis Cluster for tests: three primaries on free loopback ports, the 16,384 slots split between them."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import redis

from tickerdash.ingest.redis_server import EmbeddedRedis, free_port

SLOTS = 16_384
BUS_OFFSET = 10_000  # a node's cluster bus listens here above its port (Redis 6.2 cannot move it)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above) is free and valid too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


def cluster_node(port: int | None = None) -> EmbeddedRedis:
    """A cluster-enabled server (not started), failing over 2 s after its primary stops answering."""
    return EmbeddedRedis(
        port=port or free_cluster_port(),
        appendonly=False,
        extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"),
    )


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `ready` every 0.1 s until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.1)


def cluster_ok(nodes: list[EmbeddedRedis]) -> bool:
    """Whether every running node reports the cluster ok."""
    for node in nodes:
        if node.process is None:
            continue
        with contextlib.closing(redis.Redis(port=node.port)) as client:
            if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                return False
    return True


@contextlib.contextmanager
def redis_cluster(primaries: int = 3, replicas: int = 0) -> Iterator[list[EmbeddedRedis]]:
    """Start `primaries` cluster-enabled servers sharing the slots, and `replicas` replicas of each (after
    the primaries in the list, replica k of primary i at `primaries + i * replicas + k`); yields them once
    the cluster reports itself ok and every replica is in sync."""
    nodes = [cluster_node() for _ in range(primaries * (1 + replicas))]
    try:
        for node in nodes:
            node.start()
        clients = [redis.Redis(port=node.port, decode_responses=True) for node in nodes]
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        bounds = [SLOTS * k // primaries for k in range(primaries + 1)]
        for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
        ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
        for index, client in enumerate(clients[primaries:]):
            primary = index // replicas
            wait_until(
                lambda client=client, primary=primary: ids[primary] in client.execute_command("CLUSTER", "NODES"),
                "the replica did not learn of its primary",
            )
            client.execute_command("CLUSTER", "REPLICATE", ids[primary])
        wait_until(lambda: cluster_ok(nodes), "the cluster did not come up")
        for client in clients[primaries:]:
            wait_until(
                lambda client=client: client.info("replication").get("master_link_status") == "up",
                "a replica did not sync",
            )
        for client in clients:
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def keys_on(nodes: list[EmbeddedRedis]) -> int:
    """How many keys the cluster holds, over every node."""
    total = 0
    for node in nodes:
        with contextlib.closing(redis.Redis(port=node.port)) as client:
            total += int(client.dbsize())
    return total
