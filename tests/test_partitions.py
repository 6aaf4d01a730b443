"""Partitions on one Redis: the hash-tagged key layout of P > 1, what it writes and what its readers see, and
the stored layout that keeps a process of another partition count out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from redis.crc import key_slot
from test_worker import bar_streams, market

from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.contract.alerts import decode_alert
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.layout import LayoutMismatchError, check_layout
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

PARTITIONS = 4
RULES = (
    Rule(id="any-0.3", symbol="*", drop_pct=0.3, window_s=30),
    Rule(id="s01", symbol="S01", drop_pct=0.2, window_s=10),
)


def _run(client: redis.Redis, server: EmbeddedRedis, prefix: str, partitions: int, ticks: TickBatch) -> Settings:
    """Publish the ticks under `prefix` with `partitions` partitions and drain them through one worker with alerts."""
    settings = Settings(redis_url=server.url, prefix=prefix, partitions=partitions, consumer="w", block_ms=20)
    store = RuleStore(client, Keys(prefix, partitions))
    for rule in RULES:
        store.add(rule)
    Producer(client, settings).publish(ticks)
    config = WorkerConfig(checkpoint_every_s=0.2, stages=(SlumpAlertStage,))
    AnalyticsWorker(client, settings, None, config).run(max_idle_reads=3)
    return settings


def _alerts(client: redis.Redis, keys: Keys) -> dict[str, list[tuple[str, str, int, float]]]:
    """Each alerts stream's alerts as (rule, symbol, ts, price), in stream order."""
    return {
        stream: [
            (a.rule_id, a.symbol, a.ts, a.price) for a in (decode_alert(fields) for _, fields in client.xrange(stream))
        ]
        for stream in keys.alert_streams
    }


@pytest.fixture(scope="module")
def partitioned(redis_server: EmbeddedRedis) -> tuple[redis.Redis, TickBatch]:
    """The same market run with one partition (prefix `one`) and with four (prefix `four`)."""
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(match="one:*"):
        client.delete(key)
    for key in client.scan_iter(match="four:*"):
        client.delete(key)
    ticks = market(30_000, symbols=24, per_second=1_000)
    _run(client, redis_server, "one", 1, ticks)
    _run(client, redis_server, "four", PARTITIONS, ticks)
    return client, ticks


def test_four_partitions_write_the_bars_and_alerts_one_partition_writes(
    partitioned: tuple[redis.Redis, TickBatch],
) -> None:
    """Partitioning moves keys, not results: every symbol's bars are equal entry for entry, and the alerts are the
    same alerts, each in its symbol's partition's stream."""
    client, _ = partitioned
    one, four = Keys("one", 1), Keys("four", PARTITIONS)
    untagged = {
        re.sub(r"^:bars:\{\d+\}:", ":bars:", key): entries for key, entries in bar_streams(client, "four").items()
    }
    assert untagged == bar_streams(client, "one") and untagged
    [single] = _alerts(client, one).values()
    by_partition = _alerts(client, four)
    assert Counter(single) == Counter(a for alerts in by_partition.values() for a in alerts) and single
    for partition, stream in enumerate(four.alert_streams):
        assert all(four.partition_of(symbol) == partition for _, symbol, _, _ in by_partition[stream])
    assert sum(1 for alerts in by_partition.values() if alerts) > 1  # several partitions did fire


def test_every_key_of_a_partitioned_run_is_its_partitions_or_global(partitioned: tuple[redis.Redis, TickBatch]) -> None:
    """With P > 1 each key the worker and producer wrote carries a partition's tag (a symbol's bars their symbol's
    partition's), or is one of the global keys, which share the rules key's slot where they change with it."""
    client, _ = partitioned
    keys = Keys("four", PARTITIONS)
    found = sorted(k.decode() for k in client.scan_iter(match="four:*", count=1000))
    global_keys = {keys.rules, keys.rules_version, keys.layout}
    tagged = [k for k in found if k not in global_keys]
    assert set(found) >= global_keys and len(tagged) > 2 * PARTITIONS
    for key in tagged:
        match = re.search(r"\{(\d+)\}", key)
        assert match is not None, f"{key} has no partition tag"
        partition = int(match.group(1))
        assert key_slot(key.encode()) == key_slot(keys.ticks(partition).encode())
        bars = re.fullmatch(r"four:bars:\{\d+\}:\w+:(\w+)", key)
        if bars is not None:
            assert keys.partition_of(bars.group(1)) == partition
    assert key_slot(keys.rules_version.encode()) == key_slot(keys.rules.encode())


def test_readers_merge_every_partitions_alerts(
    partitioned: tuple[redis.Redis, TickBatch], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`export --include alerts` and `status --json` read every partition: the export holds every alert in event
    time, and status counts every partition's dead letters."""
    client, _ = partitioned
    keys = Keys("four", PARTITIONS)
    client.xadd(keys.deadletter(3), {"reason": "symbol: bad", "source": "test"})
    client.xadd(keys.deadletter(0), {"reason": "price: bad", "source": "test"})
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_PREFIX": "four"}
    env |= {"TICKERDASH_PARTITIONS": str(PARTITIONS), "TICKERDASH_DATA_DIR": str(tmp_path)}
    out = tmp_path / "bars.parquet"
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickerdash",
            "export",
            "--all",
            "--interval",
            "1m",
            "--include",
            "alerts",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode == 0, export.stderr
    alerts = pq.read_table(tmp_path / "bars.alerts.parquet")
    expected = sorted(a for stream in _alerts(client, keys).values() for a in stream)
    assert alerts.num_rows == len(expected) > 0
    assert np.all(np.diff(alerts["ts"].cast("int64").to_numpy()) >= 0)
    status = subprocess.run(
        [sys.executable, "-m", "tickerdash", "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert '"count": 2' in status.stdout.replace("\n", " ").replace("  ", " ")


def test_a_process_with_another_partition_count_refuses_to_start(
    partitioned: tuple[redis.Redis, TickBatch], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """The layout is stored once: a worker or a command configured with another P says so and how to move, and
    writes nothing."""
    client, _ = partitioned
    before = sorted(client.scan_iter(match="four:*"))
    with pytest.raises(LayoutMismatchError, match="TICKERDASH_PARTITIONS=4"):
        AnalyticsWorker(client, Settings(redis_url=redis_server.url, prefix="four", partitions=2)).acquire()
    with pytest.raises(LayoutMismatchError, match="TICKERDASH_PARTITIONS=1"):
        check_layout(client, Keys("one", 3))
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_PREFIX": "four"}
    env |= {"TICKERDASH_PARTITIONS": "1", "TICKERDASH_DATA_DIR": str(tmp_path)}
    simulate = subprocess.run(
        [sys.executable, "-m", "tickerdash", "simulate", "--fast", "--count", "1000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert simulate.returncode == 1
    assert "written with TICKERDASH_PARTITIONS=4" in simulate.stdout + simulate.stderr
    assert "Traceback" not in simulate.stdout + simulate.stderr
    assert sorted(client.scan_iter(match="four:*")) == before
