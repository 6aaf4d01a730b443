"""A real Redis Cluster for tests: three primaries on free loopback ports, the 16,384 slots split between them."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

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


@contextlib.contextmanager
def redis_cluster(primaries: int = 3) -> Iterator[list[EmbeddedRedis]]:
    """Start `primaries` cluster-enabled servers, join them and assign the slots; yields them once the cluster
    reports itself ok."""
    nodes = [
        EmbeddedRedis(
            port=free_cluster_port(),
            appendonly=False,
            extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"),
        )
        for _ in range(primaries)
    ]
    try:
        for node in nodes:
            node.start()
        clients = [redis.Redis(port=node.port) for node in nodes]
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        bounds = [SLOTS * k // primaries for k in range(primaries + 1)]
        for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
        deadline = time.monotonic() + 30
        while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            assert time.monotonic() < deadline, "the cluster did not come up within 30 s"
            time.sleep(0.1)
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
