"""A Redis Cluster on this machine: primaries sharing the 16,384 slots, with replicas, on free loopback ports.

For trying Tickerdash on a cluster (`tickerdash local-cluster`), for the cluster benchmark and for the tests.
Every node is a redis-server child process (the one `find_redis_server` picks) with its own data dir.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from tickerdash.ingest.redis_server import EmbeddedRedis, RedisServerError, free_port

SLOTS = 16_384
BUS_OFFSET = 10_000  # a node's cluster bus listens here above its port (Redis 6.2 cannot move it)
NODE_TIMEOUT_MS = 2_000  # a primary silent this long is failed over to its replica


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


def cluster_node(data_dir: Path | None = None, *, appendonly: bool = False) -> EmbeddedRedis:
    """A cluster-enabled server (not started), failed over NODE_TIMEOUT_MS after it stops answering."""
    return EmbeddedRedis(
        data_dir,
        port=free_cluster_port(),
        appendonly=appendonly,
        extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
    )


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `ready` every 0.1 s until it holds; raise RedisServerError saying `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RedisServerError(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)


def cluster_ok(nodes: list[EmbeddedRedis]) -> bool:
    """Whether every running node reports the cluster ok."""
    for node in nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        with contextlib.closing(redis.Redis(port=node.port)) as client:
            if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                return False
    return True


def in_sync(replica: redis.Redis) -> bool:
    """Whether a replica's link to its primary is up."""
    return bool(replica.info("replication").get("master_link_status") == "up")


@contextlib.contextmanager
def local_cluster(
    primaries: int = 3, replicas: int = 0, data_dir: Path | None = None, *, appendonly: bool = False
) -> Iterator[list[EmbeddedRedis]]:
    """Start `primaries` servers sharing the slots and `replicas` replicas of each (after the primaries in the
    list: replica k of primary i at `primaries + i * replicas + k`); yields them once the cluster reports
    itself ok and every replica is in sync, and stops them all at the end."""
    count = primaries * (1 + replicas)
    dirs = [data_dir / f"node-{k}" for k in range(count)] if data_dir else [None] * count
    nodes = [cluster_node(where, appendonly=appendonly) for where in dirs]
    clients: list[redis.Redis] = []
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
            primary = ids[index // replicas]
            wait_until(lambda: primary in _known_nodes(client), "a replica did not learn of its primary")  # noqa: B023
            client.execute_command("CLUSTER", "REPLICATE", primary)
        wait_until(lambda: cluster_ok(nodes), "the cluster did not come up")
        for client in clients[primaries:]:
            wait_until(lambda: in_sync(client), "a replica did not sync with its primary")  # noqa: B023
        yield nodes
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.stop()


def _known_nodes(client: redis.Redis) -> str:
    return str(client.execute_command("CLUSTER", "NODES"))
