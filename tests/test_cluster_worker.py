"""An analytics worker on a real Redis Cluster (three primaries, a replica each): the same ticks give the same
bars, alerts and anomalies as on a standalone server, and a primary killed mid-stream (its replica promoted)
loses and repeats no trade."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cluster_tools import cluster_ok, emptied_cluster_client, move_slot, redis_cluster, wait_until
from test_hostile_input import batch_entry
from test_shared_partitions import three_workers_then_a_kill
from test_worker import bar_streams, expected_bars, market

from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.history.export.request import ExportRequest
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.stage import AnomalyStage
from tickerdash.dashboard.downloads import export_download
from tickerdash.ingest.cluster import node_name, primary_clients
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

pytestmark = pytest.mark.slow

PARTITIONS = 6
PREFIX = "td"
RULES = (
    Rule(id="any-0.5", symbol="*", drop_pct=0.5, window_s=30),
    Rule(id="s01", symbol="S01", drop_pct=0.2, window_s=10),
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three primaries (the first three nodes) with a replica each."""
    with redis_cluster(3, replicas=1) as nodes:
        yield nodes


@pytest.fixture
def on_cluster(cluster: list[EmbeddedRedis]) -> Iterator[redis.RedisCluster]:
    """A cluster client from one seed node, on an empty cluster."""
    with emptied_cluster_client(cluster[2]) as client:
        yield client


def settings_for(url: str, **overrides: Any) -> Settings:
    """Six partitions under PREFIX, small reads."""
    return Settings(redis_url=url, prefix=PREFIX, partitions=PARTITIONS, consumer="w", block_ms=20, **overrides)


def publish_to_both(
    standalone: redis.Redis, server: EmbeddedRedis, cluster: redis.RedisCluster, ticks: TickBatch, per_tick: bool
) -> None:
    """Publish the ticks on the standalone server and copy its tick streams, byte for byte, to the cluster."""
    standalone.flushall()
    Producer(standalone, settings_for(server.url)).publish(ticks, per_tick=per_tick)
    for stream in Keys(PREFIX, PARTITIONS).tick_streams:
        dumped = standalone.dump(stream)
        assert dumped is not None, stream
        cluster.restore(stream, 0, dumped)
    for primary in primary_clients(cluster):
        assert primary.execute_command("WAIT", 1, 5000) == 1  # on the replicas too: the failover loses no tick


def outputs(client: redis.Redis | redis.RedisCluster) -> dict[str, Any]:
    """Every bar stream, and each partition's alerts and anomalies in order (their fields: their IDs are the
    time they were written)."""
    keys = Keys(PREFIX, PARTITIONS)
    return {
        "bars": bar_streams(client, PREFIX),  # type: ignore[arg-type]
        "alerts": [[fields for _, fields in client.xrange(keys.alerts(p))] for p in range(PARTITIONS)],
        "anomalies": [[fields for _, fields in client.xrange(keys.anomalies(p))] for p in range(PARTITIONS)],
    }


def download(client: redis.Redis | redis.RedisCluster, settings: Settings) -> dict[str, str]:
    """The dashboard's download of every symbol's 1m bars with alerts and anomalies (CSV): each file's text."""
    request = ExportRequest(interval="1m", format="csv", include=("alerts", "anomalies"))
    packed = export_download(client, settings, request)
    with zipfile.ZipFile(io.BytesIO(packed.content)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_a_worker_on_a_cluster_writes_what_it_writes_on_one_server(
    on_cluster: redis.RedisCluster, redis_client: redis.Redis, redis_server: EmbeddedRedis, cluster: list[EmbeddedRedis]
) -> None:
    """Same ticks, same P, same rules: the cluster's bars, alerts and anomalies equal the standalone server's,
    and each partition's keys are on the primary that holds its slot."""
    ticks = market(60_000, symbols=30, per_second=2_000, seed=5)
    publish_to_both(redis_client, redis_server, on_cluster, ticks, per_tick=False)
    touchy = functools.partial(AnomalyStage, scorer=ScorerConfig(flag_rarity=2.0))  # flags 1 trade in ~100
    config = WorkerConfig(checkpoint_every_s=0.2, stages=(SlumpAlertStage, touchy))
    results = []
    for client, url in ((redis_client, redis_server.url), (on_cluster, cluster[0].url)):
        store = RuleStore(client, Keys(PREFIX, PARTITIONS))
        for rule in RULES:
            store.add(rule)
        AnalyticsWorker(client, settings_for(url), None, config).run(max_idle_reads=5)
        results.append(outputs(client) | {"download": download(client, settings_for(url))})
    standalone, clustered = results
    bars_csv = "tickerdash_1m.csv"  # the dashboard's download, with alerts and anomalies: same files, same rows
    assert len(standalone["download"]) == 3 and all(len(t.splitlines()) > 1 for t in standalone["download"].values())
    assert clustered["download"].pop(bars_csv) == standalone["download"].pop(bars_csv)
    assert {name: len(text.splitlines()) for name, text in clustered.pop("download").items()} == {
        name: len(text.splitlines()) for name, text in standalone.pop("download").items()
    }
    assert sum(len(entries) for entries in standalone["alerts"]) > 0
    assert sum(len(entries) for entries in standalone["anomalies"]) > 0
    assert len(standalone["bars"]) > 0
    assert clustered == standalone
    keys = Keys(PREFIX, PARTITIONS)
    homes = {node_name(on_cluster, keys.ticks(p)) for p in range(PARTITIONS)}
    assert len(homes) == 3  # six partitions over three primaries: each has some
    for p in range(PARTITIONS):
        node = node_name(on_cluster, keys.ticks(p))
        assert (
            node_name(on_cluster, keys.alerts(p)) == node
            and node_name(on_cluster, keys.checkpoint("analytics", p)) == node
        )


def test_hostile_entries_on_a_cluster_go_to_their_partitions_dead_letters_and_cost_no_valid_tick(
    on_cluster: redis.RedisCluster, cluster: list[EmbeddedRedis]
) -> None:
    """Malformed entries written straight into partitions held by different primaries (an unparsable price, a ts
    beyond int64, a batch whose codes lie outside its dictionary) each land in their own partition's dead-letter
    stream with a reason; the valid ticks around them give the bars they give alone."""
    keys = Keys(PREFIX, PARTITIONS)
    ticks = market(20_000, symbols=30, per_second=2_000, seed=3)
    settings = settings_for(cluster[0].url)
    Producer(on_cluster, settings).publish(ticks)
    now = int(time.time() * 1000)
    hostile = {
        0: {"symbol": "S01", "price": "abc", "size": 1, "ts": now},
        2: {"symbol": "S02", "price": 10, "size": 1, "ts": "99999999999999999999"},
        4: batch_entry([0, 5], ["S03", "S04"], [10.0, 11.0], [1.0, 1.0], [now, now]),
    }
    ids = {p: on_cluster.xadd(keys.ticks(p), fields).decode() for p, fields in hostile.items()}  # type: ignore[arg-type]
    assert len({node_name(on_cluster, keys.ticks(p)) for p in hostile}) >= 2  # on more than one primary
    config = WorkerConfig(checkpoint_every_s=0.2)
    AnalyticsWorker(on_cluster, settings, None, config).run(max_idle_reads=5)
    for p in range(PARTITIONS):
        letters = [
            {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            for _, fields in on_cluster.xrange(keys.deadletter(p))
        ]
        if p not in hostile:
            assert letters == []
            continue
        (letter,) = letters
        assert letter["entry_id"] == ids[p] and letter["reason"], letter
    reasons = [on_cluster.xrange(keys.deadletter(p))[0][1][b"reason"].decode() for p in sorted(hostile)]
    assert reasons[0].startswith("price") and reasons[1].startswith("ts") and reasons[2].startswith("symbol"), reasons
    assert bar_streams(on_cluster, PREFIX) == expected_bars(ticks, config, PARTITIONS)  # type: ignore[arg-type]


def test_three_workers_on_a_cluster_split_the_partitions_and_a_killed_ones_are_taken_within_the_lease(
    on_cluster: redis.RedisCluster, cluster: list[EmbeddedRedis]
) -> None:
    """As on one server (tests/test_shared_partitions.py): three workers started one after another end with
    disjoint partitions covering all six; a kill -9 of one hands its partitions to the others within the lease
    time; the bars equal an uninterrupted run's."""
    three_workers_then_a_kill(on_cluster, cluster[1].url, Settings(redis_url=cluster[1].url, partitions=PARTITIONS))


@contextlib.contextmanager
def worker_mid_stream(
    on_cluster: redis.RedisCluster, url: str, standalone: redis.Redis, server: EmbeddedRedis, seed: int
) -> Iterator[tuple[TickBatch, WorkerConfig]]:
    """A worker in a thread draining 40,000 per-tick entries; yields (the ticks, its config) once it has read a
    quarter of partition 0, and not all of it; at the end, waits until it has read and acknowledged
    everything, then stops it."""
    ticks = market(40_000, symbols=30, per_second=2_000, seed=seed)
    publish_to_both(standalone, server, on_cluster, ticks, per_tick=True)
    keys = Keys(PREFIX, PARTITIONS)
    config = WorkerConfig(checkpoint_every_s=0.1, lease_ms=3_000)
    worker = AnalyticsWorker(on_cluster, settings_for(url, read_count=10), None, config)  # many small batches
    runs = threading.Thread(target=worker.run, daemon=True)
    runs.start()
    try:
        total = on_cluster.xlen(keys.ticks(0))
        wait_until(lambda: _read(on_cluster, keys.ticks(0)) >= total // 4, "the worker did not start on partition 0")
        assert _read(on_cluster, keys.ticks(0)) < total, "partition 0 was done already: not mid-stream"
        yield ticks, config
        wait_until(lambda: _caught_up(on_cluster, keys), "the worker did not finish", timeout=120)
    finally:
        worker.stop.set()
        runs.join(timeout=60)
    assert not runs.is_alive()


def test_a_partition_resharded_mid_stream_loses_and_repeats_no_trade(
    on_cluster: redis.RedisCluster,
    redis_client: redis.Redis,
    redis_server: EmbeddedRedis,
    cluster: list[EmbeddedRedis],
) -> None:
    """Partition 0's slot, with every key of the partition, moves to another primary while a worker reads it
    (ASK while it moves, MOVED after): the worker follows it (rebuilding the partition there if a batch met the
    move), reads the rest of the partition from its new primary, and the bars equal those of an uninterrupted
    run."""
    keys = Keys(PREFIX, PARTITIONS)
    before = node_name(on_cluster, keys.ticks(0))
    with worker_mid_stream(on_cluster, cluster[0].url, redis_client, redis_server, seed=13) as (ticks, config):
        moved_to = move_slot(cluster[:3], keys.ticks(0))
        read_when_moved = _read(on_cluster, keys.ticks(0))  # the group moved with the stream
        assert 0 < read_when_moved < on_cluster.xlen(keys.ticks(0)), "the move did not land mid-stream"
    assert moved_to != before and node_name(on_cluster, keys.ticks(0)) == moved_to
    assert bar_streams(on_cluster, PREFIX) == expected_bars(ticks, config, PARTITIONS)  # type: ignore[arg-type]


def test_a_primary_killed_mid_stream_loses_and_repeats_no_trade(
    on_cluster: redis.RedisCluster,
    redis_client: redis.Redis,
    redis_server: EmbeddedRedis,
    cluster: list[EmbeddedRedis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL of the primary that holds partition 0 while a worker reads it: its replica is promoted, the
    worker rebuilds the partitions that moved from what the new primary holds, and the bars equal those of
    an uninterrupted run: no trade lost, none counted twice."""
    caplog.set_level(logging.WARNING)
    keys = Keys(PREFIX, PARTITIONS)
    victim_name = node_name(on_cluster, keys.ticks(0))
    victim = next(node for node in cluster if f"127.0.0.1:{node.port}" == victim_name)
    with worker_mid_stream(on_cluster, cluster[0].url, redis_client, redis_server, seed=11) as (ticks, config):
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        victim.process = None
        wait_until(lambda: cluster_ok(cluster), "no replica was promoted", timeout=60)
    assert node_name(on_cluster, keys.ticks(0)) != victim_name
    assert any("moved from" in record.getMessage() for record in caplog.records)
    assert bar_streams(on_cluster, PREFIX) == expected_bars(ticks, config, PARTITIONS)  # type: ignore[arg-type]


def _read(client: redis.RedisCluster, stream: str) -> int:
    """How many entries of the stream the analytics group has read (0 while it cannot be asked)."""
    try:
        groups: Any = client.xinfo_groups(stream)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return 0
    return int(groups[0]["entries-read"] or 0) if groups else 0


def _caught_up(client: redis.RedisCluster, keys: Keys) -> bool:
    """Whether the analytics group has read and acknowledged every entry of every partition."""
    time.sleep(0.2)
    try:
        for stream in keys.tick_streams:
            groups: Any = client.xinfo_groups(stream)
            if not groups or groups[0]["lag"] != 0 or groups[0]["pending"] != 0:
                return False
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    return True
