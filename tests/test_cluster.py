"""A Redis Cluster URL is recognised. A caller that runs on one server only refuses it in words; every command
runs on one, and refuses in words, before writing anything, a layout a cluster cannot hold (one partition).

The commands are tested on a cluster in tests/test_cluster_commands.py, test_cluster_readers.py and
test_cluster_worker.py. These tests start a real three-primary cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cluster_tools import keys_on, redis_cluster

from tickerdash.ingest.cluster import primary_clients
from tickerdash.ingest.redis_server import ClusterNotSupportedError, EmbeddedRedis, client_for, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three primaries sharing the slots."""
    with redis_cluster(3) as nodes:
        yield nodes


def test_a_client_for_one_server_refuses_a_cluster_node_with_what_to_do(cluster: list[EmbeddedRedis]) -> None:
    """Any node's URL is recognised as a cluster; the message names it and the setting to change."""
    for node in cluster:
        with pytest.raises(ClusterNotSupportedError) as refused:
            client_for(node.url)
        assert node.url in str(refused.value) and "TICKERDASH_REDIS_URL" in str(refused.value)


def test_a_standalone_server_is_not_taken_for_a_cluster(redis_server: EmbeddedRedis) -> None:
    """The check lets an ordinary server through."""
    client = client_for(redis_server.url)
    try:
        assert client.ping()
    finally:
        client.close()


def test_every_caller_of_a_cluster_client_runs_on_one_too(cluster: list[EmbeddedRedis]) -> None:
    """A cluster client from any node, a plain one from a standalone server's URL."""
    for node in cluster:
        client = client_for(node.url, cluster=True)
        assert isinstance(client, redis.RedisCluster) and len(primary_clients(client)) == 3
        client.close()


COMMANDS = {
    "simulate": ["simulate", "--count", "1000", "--quiet"],
    "ingest": ["ingest", "{trades}"],
    "analytics": ["analytics"],
    "archive": ["archive"],
    "status": ["status"],
    "alerts add": ["alerts", "add", "--symbol", "AAPL", "--drop", "5", "--window", "60s"],
    "alerts list": ["alerts", "list"],
    "alerts tail": ["alerts", "tail"],
    "alerts backtest": ["alerts", "backtest", "--symbol", "AAPL", "--drop", "5", "--window", "60s"],
    "alerts failures": ["alerts", "failures"],
    "export": ["export", "--all", "--out", "{out}"],
    "dashboard": ["dashboard", "--port", "{port}", "--ws-port", "{ws_port}"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_refuses_one_partition_on_a_cluster_before_writing_anything(
    name: str, cluster: list[EmbeddedRedis], tmp_path: Path
) -> None:
    """With TICKERDASH_PARTITIONS=1 (the default) on a cluster, each command exits 1 with one line that says
    what to set, no traceback, and the cluster holds no key afterwards."""
    trades = tmp_path / "trades.csv"
    trades.write_text("symbol,price,size,ts\nAAPL,187.5,100,1767225600000\n")
    places = {"trades": str(trades), "out": str(tmp_path / "bars.parquet"), "port": "0", "ws_port": "0"}
    places["port"], places["ws_port"] = str(free_port()), str(free_port())
    args = [arg.format(**places) for arg in COMMANDS[name]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERDASH_")} | {
        "TICKERDASH_REDIS_URL": cluster[1].url,
        "TICKERDASH_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tickerdash", *args], env=env, capture_output=True, text=True, timeout=120
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-2000:]
    assert "Redis Cluster" in said and "TICKERDASH_PARTITIONS to 2 or more" in said, said[-2000:]
    assert "Traceback" not in said, said[-2000:]
    assert keys_on(cluster) == 0
