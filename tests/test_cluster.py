"""A Redis Cluster URL is recognised. A caller that runs on one server only refuses it in words; every command
runs on one, and refuses in words, before writing anything, a layout a cluster cannot hold (one partition).

The commands are tested on a cluster in tests/test_cluster_commands.py, test_cluster_readers.py and
test_cluster_worker.py. These tests start a real three-primary cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
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


def test_local_cluster_runs_a_cluster_every_command_can_use_until_ctrl_c(tmp_path: Path) -> None:
    """`tickerdash local-cluster` prints the settings to use; with them `simulate` and `status` run on the
    cluster it started; Ctrl-C stops every node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERDASH_")}
    runs = subprocess.Popen(
        [sys.executable, "-m", "tickerdash", "local-cluster", "--primaries", "3", "--replicas", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert runs.stdout is not None
        said: list[str] = []
        while not any("TICKERDASH_PARTITIONS" in line for line in said):
            line = runs.stdout.readline()
            assert line, "".join(said)
            said.append(line)
        settings = dict(re.findall(r"export (TICKERDASH_\w+)=(\S+)", "".join(said)))
        assert set(settings) == {"TICKERDASH_REDIS_URL", "TICKERDASH_PARTITIONS"}, said
        ports = [int(port) for port in re.findall(r"ports ([\d, ]+)\)", "".join(said))[0].split(", ")]
        with_cluster = env | settings | {"TICKERDASH_DATA_DIR": str(tmp_path)}
        tickerdash = [sys.executable, "-m", "tickerdash"]
        simulate = [*tickerdash, "simulate", "--count", "2000", "--fast", "--quiet"]
        subprocess.run(simulate, env=with_cluster, check=True, capture_output=True, timeout=120)
        status = subprocess.run(
            [*tickerdash, "status", "--json"], env=with_cluster, capture_output=True, text=True, timeout=120
        )
        assert status.returncode == 0, status.stderr[-2000:]
        partitions = json.loads(status.stdout)["partitions"]
        assert len(partitions) == int(settings["TICKERDASH_PARTITIONS"]) == 6
        assert {int(p["node"].rsplit(":", 1)[1]) for p in partitions} <= set(ports)
        assert sum(p["length"] for p in partitions) > 0
    finally:
        runs.send_signal(signal.SIGINT)
        runs.wait(60)
    assert runs.returncode == 0
    for port in ports:
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
