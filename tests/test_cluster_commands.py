"""The commands that read and write streams, rules and bars, on a real Redis Cluster.

Three primaries with a replica each, TICKERDASH_PARTITIONS=6, the URL of one node: `simulate`, `ingest`,
`status`, the rules CLI and `export --all` each give what the same command gives on a standalone server
with the same partitions, and a producer whose pipeline meets MOVED, a dropped connection or the failover
of a primary writes every tick once. The failover test kills a primary: it comes last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from cluster_tools import emptied_cluster_client, move_slot, redis_cluster, wait_until
from redis.cluster import key_slot
from restart_tools import BackgroundPublish
from typer.testing import CliRunner

from tickerdash.commands import app
from tickerdash.ingest.cluster import AnyRedis, node_client, node_name
from tickerdash.ingest.contract.bars import bar_entry_id, encode_bar
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import PRODUCER_FIELD, decode_entries
from tickerdash.ingest.layout import LayoutMismatchError
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.redis_server import EmbeddedRedis, redis_connection
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

pytestmark = pytest.mark.slow

P = 6
PRIMARIES = 3
KEYS = Keys(partitions=P)
PRODUCER_KEY = PRODUCER_FIELD.encode()
OUTAGES = 3  # pipelines cut under the producer
START = "2026-01-02T14:30:00Z"  # the simulator's event clock, written on every entry


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three primaries sharing the slots, then a replica of each, for the whole module (flushed before each
    test)."""
    with redis_cluster(PRIMARIES, replicas=1) as nodes:
        yield nodes


@pytest.fixture
def cluster_client(cluster: list[EmbeddedRedis]) -> Iterator[AnyRedis]:
    """A cluster client from one node's URL, on an empty cluster."""
    with emptied_cluster_client(cluster[1]) as client:
        yield client


Run = Callable[..., Any]


@pytest.fixture
def run(
    cluster_client: AnyRedis,
    cluster: list[EmbeddedRedis],
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """`run("cluster" | "standalone", *args)`: a `tickerdash` command with P=6 against the cluster (the URL of
    its second node, with a 1 s socket timeout) or the test session's standalone server; fails the test
    unless it exits with `code` (0 by default)."""

    def invoke(where: str, *args: str, code: int = 0) -> Any:
        url = f"{cluster[1].url}?socket_timeout=1" if where == "cluster" else redis_server.url
        monkeypatch.setenv("TICKERDASH_REDIS_URL", url)
        monkeypatch.setenv("TICKERDASH_PARTITIONS", str(P))
        monkeypatch.setenv("TICKERDASH_DATA_DIR", str(tmp_path / where))
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == code, f"{result.output}\n{result.exception!r}"
        return result

    return invoke


def entries_by_partition(client: AnyRedis, keys: Keys = KEYS) -> list[list[dict[bytes, bytes]]]:
    """Each partition's tick entries, fields only (IDs and the producer's random name differ between runs)."""
    return [
        [{k: v for k, v in fields.items() if k != PRODUCER_KEY} for _, fields in client.xrange(stream)]  # type: ignore[union-attr]
        for stream in keys.tick_streams
    ]


def test_simulate_writes_the_same_tick_streams_on_a_cluster_as_standalone(
    run: Run, cluster_client: AnyRedis, redis_client: redis.Redis
) -> None:
    """Same seed, same partitions: every partition's stream holds the same entries in the same order, each
    stream on the node that holds its slot, with the streams spread over every primary."""
    for where in ("cluster", "standalone"):
        run(where, "simulate", "--seed", "5", "--count", "30000", "--universe", "30", "--start", START, "--quiet")
    on_cluster, standalone = entries_by_partition(cluster_client), entries_by_partition(redis_client)
    assert [len(entries) for entries in on_cluster] == [len(entries) for entries in standalone]
    assert all(on_cluster) and on_cluster == standalone
    ticks = sum(
        len(decode_entries(raw_client(node_client(cluster_client, s)).xrange(s)).ticks) for s in KEYS.tick_streams
    )
    assert ticks == 30_000
    for stream in KEYS.tick_streams:
        assert node_client(cluster_client, stream).exists(stream)  # on its own node, not just reachable
    assert len({node_name(cluster_client, stream) for stream in KEYS.tick_streams}) == 3


def test_ingest_publishes_a_file_on_a_cluster_as_standalone(
    run: Run, cluster_client: AnyRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A CSV with a bad row: the same ticks per partition as standalone, the bad row dead-lettered."""
    trades = tmp_path / "trades.csv"
    rows = [
        f"{sym},{100 + i % 7}.5,{10 + i},{1767225600000 + i}"
        for i, sym in enumerate(["AAPL", "MSFT", "TSLA", "NVDA", "AMD", "IBM"] * 50)
    ]
    trades.write_text("symbol,price,size,ts\n" + "\n".join([*rows, "AAPL,-1,5,1767225600000"]) + "\n")
    for where in ("cluster", "standalone"):
        run(where, "ingest", str(trades))
    on_cluster = entries_by_partition(cluster_client)
    assert on_cluster == entries_by_partition(redis_client) and sum(map(len, on_cluster)) > 0
    assert cluster_client.xlen(KEYS.deadletter()) == 1


def write_bars(client: AnyRedis, symbols: list[str], count: int) -> None:
    """`count` one-minute bars of each symbol, through the contract's codec, straight into their streams."""
    start = 1_767_225_600_000
    for s, symbol in enumerate(symbols):
        for i in range(count):
            price = 100.0 + s + i / 10
            fields = encode_bar(price, price + 1, price - 1, price + 0.5, 10.0 * (i + 1), price, i + 1)
            pairs = dict(zip(fields[0::2], fields[1::2], strict=True))
            client.xadd(KEYS.bars("1m", symbol), pairs, id=bar_entry_id(start + i * 60_000))  # type: ignore[arg-type]


def test_export_all_finds_every_symbols_bars_on_every_node(
    run: Run, cluster_client: AnyRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """`export --all` from one node's URL finds the bars of every symbol, whichever node holds them, and
    writes the very file the standalone export of the same bars writes."""
    symbols = [f"S{i:02d}" for i in range(12)]
    assert len({node_name(cluster_client, KEYS.bars("1m", s)) for s in symbols}) == 3
    for client in (cluster_client, redis_client):
        write_bars(client, symbols, 30)
    for where in ("cluster", "standalone"):
        run(where, "export", "--all", "--interval", "1m", "--out", str(tmp_path / f"{where}.csv"), "--quiet")
    text = (tmp_path / "cluster.csv").read_text()
    assert text == (tmp_path / "standalone.csv").read_text()
    lines = text.splitlines()
    assert len(lines) == 1 + 12 * 30 and {line.split(",")[0].strip('"') for line in lines[1:]} == set(symbols)


def test_status_shows_every_partition_with_its_node_and_length(run: Run, cluster_client: AnyRedis) -> None:
    """After a simulate, `status --json` from one node's URL lists all P partitions, each with the node that
    holds it and its stream's length, and the table names the nodes."""
    run("cluster", "simulate", "--seed", "2", "--count", "5000", "--universe", "30", "--start", START, "--quiet")
    report = json.loads(run("cluster", "status", "--json").stdout)
    rows = report["partitions"]
    assert [row["partition"] for row in rows] == list(range(P))
    for row in rows:
        stream = KEYS.ticks(row["partition"])
        assert row["stream"] == stream and row["node"] == node_name(cluster_client, stream)
        assert row["length"] == cluster_client.xlen(stream) > 0
    assert {s["stream"] for s in report["streams"]} >= set(KEYS.tick_streams)
    table = run("cluster", "status").stdout
    assert all(node_name(cluster_client, stream) in table for stream in KEYS.tick_streams)


def test_status_with_a_node_it_cannot_read_says_so_and_shows_nothing(
    run: Run, cluster: list[EmbeddedRedis], cluster_client: AnyRedis
) -> None:
    """One primary does not answer (paused longer than the socket timeout): `status` exits 1 naming the
    node, rather than a picture without that node's streams."""
    run("cluster", "simulate", "--seed", "2", "--count", "2000", "--universe", "30", "--start", START, "--quiet")
    with redis.Redis(port=cluster[2].port) as paused:
        paused.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        try:
            result = run("cluster", "status", "--json", code=1)
        finally:
            paused.execute_command("CLIENT", "UNPAUSE")
    assert f"cannot read every Redis node: Timeout reading from 127.0.0.1:{cluster[2].port}" in result.output
    assert '"streams"' not in result.output


def test_the_rules_cli_works_on_a_cluster(run: Run, cluster_client: AnyRedis) -> None:
    """add, list, disable, enable and remove: each change and its version bump in one transaction (the rules
    and their version share a slot)."""
    assert key_slot(KEYS.rules.encode()) == key_slot(KEYS.rules_version.encode())
    run("cluster", "alerts", "add", "--symbol", "AAPL", "--drop", "5", "--window", "60s", "--id", "r1")
    run("cluster", "alerts", "add", "--symbol", "*", "--drop", "8", "--window", "5m", "--id", "r2")
    run("cluster", "alerts", "disable", "r1")
    listed = json.loads(run("cluster", "alerts", "list", "--json").stdout)
    assert [(rule["id"], rule["enabled"]) for rule in listed] == [("r1", False), ("r2", True)]
    run("cluster", "alerts", "enable", "r1")
    run("cluster", "alerts", "remove", "r2")
    listed = json.loads(run("cluster", "alerts", "list", "--json").stdout)
    assert [(rule["id"], rule["enabled"]) for rule in listed] == [("r1", True)]
    assert int(cluster_client.get(KEYS.rules_version)) == 5  # type: ignore[arg-type]


def test_a_cluster_refuses_another_layout(
    cluster: list[EmbeddedRedis], cluster_client: AnyRedis, tmp_path: Path
) -> None:
    """The layout stored on the cluster is checked as on one server, and one partition is refused outright."""
    settings = Settings(redis_url=cluster[0].url, data_dir=tmp_path, partitions=P)
    with redis_connection(settings, cluster=True) as client:
        assert client.hget(KEYS.layout, "partitions") == b"6"  # type: ignore[union-attr]
    for partitions, said in ((4, "TICKERDASH_PARTITIONS=6"), (1, "2 or more")):
        other = settings.model_copy(update={"partitions": partitions})
        with pytest.raises(LayoutMismatchError, match=said), redis_connection(other, cluster=True):
            pass


def make_ticks(n: int) -> TickBatch:
    """n trades of 12 symbols with unique trade ids."""
    rng = np.random.default_rng(3)
    return TickBatch.from_columns(
        symbol=[f"S{i}" for i in rng.integers(0, 12, n)],
        price=rng.uniform(10, 20, n).round(2),
        size=rng.integers(1, 500, n),
        ts=1_700_000_000_000 + np.arange(n),
        trade_id=[f"t{i}" for i in range(n)],
    )


def trade_ids(client: AnyRedis, keys: Keys) -> list[list[str]]:
    """Each partition's trade ids in stream order (duplicates kept)."""
    found = []
    for stream in keys.tick_streams:
        ticks = decode_entries(raw_client(node_client(client, stream)).xrange(stream)).ticks
        found.append([] if ticks.trade_id is None else [str(t) for t in ticks.trade_id.to_pylist()])
    return found


def expected_ids(ticks: TickBatch, keys: Keys) -> list[list[str]]:
    """Each partition's trade ids as a producer writes them: in the batch's order."""
    assert ticks.trade_id is not None
    ids = [str(t) for t in ticks.trade_id.to_pylist()]
    symbols = [ticks.symbols[i] for i in ticks.symbol_idx]
    return [[t for t, s in zip(ids, symbols, strict=True) if keys.partition_of(s) == p] for p in range(keys.partitions)]


def test_a_producer_meeting_moved_mid_batch_writes_every_tick_once(
    cluster: list[EmbeddedRedis], cluster_client: AnyRedis, tmp_path: Path
) -> None:
    """A partition's slot moves to another node between two publishes: the producer's next pipeline to the old
    node meets MOVED for that stream only; it reads the slot map again, finds what landed, and sends the rest
    to the new node. Every partition then holds each of its trades once, in order."""
    settings = Settings(data_dir=tmp_path, partitions=P, batch_rows=50, stream_maxlen=0)
    ticks = make_ticks(6_000)
    with Producer(cluster_client, settings) as producer:
        producer.publish(ticks.slice(0, 3_000))
        moved_to = move_slot(cluster[:PRIMARIES], KEYS.ticks(2))
        producer.publish(ticks.slice(3_000, 6_000))
        assert producer.outage.outages == 1  # the MOVED was met, and handled
    assert node_name(cluster_client, KEYS.ticks(2)) == moved_to
    assert trade_ids(cluster_client, KEYS) == expected_ids(ticks, KEYS)


def test_connections_killed_under_a_publish_on_a_cluster_lose_and_repeat_no_trade(
    cluster: list[EmbeddedRedis], cluster_client: AnyRedis, tmp_path: Path
) -> None:
    """CLIENT KILL of every connection on every primary, again and again while a producer writes: afterwards
    each partition holds every trade published once, in order."""
    settings = Settings(data_dir=tmp_path, partitions=P, batch_rows=50, stream_maxlen=0)
    ticks = make_ticks(1_000_000)
    writer = BackgroundPublish(Producer(cluster_client, settings), ticks, 5_000).start()
    killers = [redis.Redis(port=node.port) for node in cluster[:PRIMARIES]]
    deadline = time.monotonic() + 20
    while writer.is_alive() and writer.producer.outage.outages < OUTAGES and time.monotonic() < deadline:
        time.sleep(0.02)  # most kills find the connections idle (redis-py reconnects those unseen): kill often
        for killer in killers:
            killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    writer.stop()
    for killer in killers:
        killer.close()
    assert writer.producer.outage.outages >= OUTAGES, "the publish ended before its pipelines were cut often enough"
    published = writer.published
    assert trade_ids(cluster_client, KEYS) == expected_ids(ticks.slice(0, published), KEYS)


def test_a_producer_rides_out_the_failover_of_a_primary(
    cluster: list[EmbeddedRedis], cluster_client: AnyRedis, tmp_path: Path
) -> None:
    """SIGKILL of the primary that holds a partition while a producer writes: its replica takes over, and
    every partition then holds each published trade once, in order."""
    settings = Settings(data_dir=tmp_path, partitions=P, batch_rows=50, stream_maxlen=0)
    ticks = make_ticks(300_000)
    victim_name = node_name(cluster_client, KEYS.ticks(0))
    victim = next(node for node in cluster if victim_name.endswith(f":{node.port}"))
    # a steady stream, still going when the replica takes over
    writer = BackgroundPublish(Producer(cluster_client, settings), ticks, 2_000, pause_s=0.01).start()
    wait_until(lambda: writer.published >= 20_000, "the producer did not get going")
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait()
    victim.process = None  # the fixture's stop: nothing left to stop
    while writer.is_alive():  # to the end: every slice is to be published
        time.sleep(0.05)
    writer.stop()
    assert writer.published == len(ticks) and writer.producer.outage.outages >= 1
    assert node_name(cluster_client, KEYS.ticks(0)) != victim_name  # its replica holds the slot now
    assert trade_ids(cluster_client, KEYS) == expected_ids(ticks, KEYS)
