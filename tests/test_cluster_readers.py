"""The readers on a real Redis Cluster (three primaries, P = 6), given the URL of any node: the dashboard's
gateway and chart history, webhook delivery, `alerts tail` and the archiver each see every partition, whichever
node holds it, and the gateway goes on when a partition's slot moves to another node (MOVED)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import redis
from cluster_tools import emptied_cluster_client, move_slot, redis_cluster, wait_until
from redis.cluster import key_slot
from test_dashboard_gateway import receive, update
from websockets.sync.client import connect

from tickerdash.analytics.delivery.webhooks import WebhookDelivery, WebhookPolicy
from tickerdash.analytics.history.archive_layout import PARTITIONING, archive_root
from tickerdash.analytics.stages.alerts.rules import make_rule
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.dashboard import history
from tickerdash.dashboard.gateway import Gateway
from tickerdash.dashboard.gateway_thread import GatewayThread
from tickerdash.dashboard.push import GatewayConfig
from tickerdash.dashboard.server import DashboardServer
from tickerdash.ingest.cluster import node_name
from tickerdash.ingest.contract.alerts import encode_alert
from tickerdash.ingest.contract.bars import bar_feed_fields, encode_bar
from tickerdash.ingest.contract.keys import ARCHIVE_GROUP, Keys
from tickerdash.ingest.contract.live import encode_updates
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings

pytestmark = pytest.mark.slow

P = 6
KEYS = Keys(partitions=P)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three primaries sharing the slots, for the whole module."""
    with redis_cluster(3) as nodes:
        yield nodes


@pytest.fixture
def client(cluster: list[EmbeddedRedis]) -> Iterator[redis.RedisCluster]:
    """A cluster client (from the second node's URL) on an emptied cluster."""
    with emptied_cluster_client(cluster[1]) as cluster_client:
        yield cluster_client


def one_partition_per_node(client: redis.RedisCluster) -> list[int]:
    """A partition held by each primary (so a test that writes to them writes to every node)."""
    by_node: dict[str, int] = {}
    for partition in range(P):
        by_node.setdefault(node_name(client, KEYS.alerts(partition)), partition)
    assert len(by_node) == 3, by_node
    return sorted(by_node.values())


BAR = dict(zip(*[iter(encode_bar(1, 2, 0.5, 1.5, 7, 1.2, 3))] * 2, strict=True))  # a closed bar's fields


def symbol_of(partition: int) -> str:
    """A ticker that lives in the partition."""
    return next(f"S{n}" for n in range(1_000) if KEYS.partition_of(f"S{n}") == partition)


def alert_fields(symbol: str, ts: int, rule_id: str = "r1") -> dict[str, str]:
    """An alert entry as the worker writes it."""
    return encode_alert(rule_id, symbol, ts, 95.0, 100.0, 5.0, 60, f"{symbol} -5%")


def env_for(node: EmbeddedRedis, data_dir: Path) -> dict[str, str]:
    """A command's environment: the node's URL, P and a private data dir."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("TICKERDASH_")}
    return kept | {
        "TICKERDASH_REDIS_URL": node.url,
        "TICKERDASH_PARTITIONS": str(P),
        "TICKERDASH_DATA_DIR": str(data_dir),
    }


class TestDashboard:
    def test_the_gateway_pushes_every_partitions_feeds_and_health_and_goes_on_after_a_slot_moves(
        self, cluster: list[EmbeddedRedis], client: redis.RedisCluster
    ) -> None:
        """Live updates and alerts written to partitions on all three nodes reach the page; the health part names
        every partition's node and owner; after a partition's slot moves to another node, its updates still come."""
        partitions = one_partition_per_node(client)
        symbols = {p: symbol_of(p) for p in partitions}
        for p in range(P):
            client.set(KEYS.lease("analytics", p), f"w{p % 2}")
        config = GatewayConfig(port=0, health_every_s=0.2)
        with (
            GatewayThread(Gateway(cluster[2].url, KEYS, config)) as thread,
            connect(f"ws://127.0.0.1:{thread.gateway.port}/ws") as ws,
        ):
            receive(ws, "hello")
            for n, (p, symbol) in enumerate(symbols.items()):
                client.xadd(KEYS.live(p), {"u": encode_updates([update(symbol, 2_000 + n, 10.0 + n)])})
                client.xadd(KEYS.alerts(p), alert_fields(symbol, 2_000 + n))
            updated: set[str] = set()
            alerted: set[str] = set()
            health: dict[str, Any] = {}
            deadline = time.monotonic() + 30
            while updated != set(symbols.values()) or alerted != updated or "nodes" not in health:
                assert time.monotonic() < deadline, (updated, alerted, health)
                frame = receive(ws, "frame")
                updated |= {u["symbol"] for u in frame["updates"]}
                alerted |= {a["symbol"] for a in frame["alerts"]}
                health = frame["health"] or health
            assert sorted(p for served in health["nodes"].values() for p in served) == list(range(P))
            assert len(health["nodes"]) == 3
            assert health["owners"] == {"w0": [0, 2, 4], "w1": [1, 3, 5]} and health["unowned"] == []

            moved = partitions[0]
            move_slot(cluster, KEYS.live(moved))
            client.nodes_manager.initialize()
            client.xadd(KEYS.live(moved), {"u": encode_updates([update(symbols[moved], 9_000, 42.0)])})
            frame = receive(ws, "frame", until=lambda f: any(u["price"] == 42.0 for u in f["updates"]))
            assert [u["symbol"] for u in frame["updates"] if u["price"] == 42.0] == [symbols[moved]]
            now_on = node_name(client, KEYS.live(moved))
            frame = receive(
                ws, "frame", until=lambda f: moved in ((f["health"] or {}).get("nodes") or {}).get(now_on, [])
            )
            assert frame["health"]["redis"] == "ok"

    def test_charts_and_snapshots_come_from_every_partition_through_the_dashboard_server(
        self, cluster: list[EmbeddedRedis], client: redis.RedisCluster, tmp_path: Path
    ) -> None:
        """Given one node's URL, the dashboard starts; its chart route serves each symbol's bars from the node
        that holds them, and the snapshot read covers every partition."""
        partitions = one_partition_per_node(client)
        symbols = [symbol_of(p) for p in partitions]
        for n, symbol in enumerate(symbols):
            for start in (1_000, 2_000, 3_000)[: n + 1]:
                client.xadd(KEYS.bars("1s", symbol), BAR, id=f"{start}-0")
            client.hset(KEYS.snapshot(KEYS.partition_of(symbol)), symbol, encode_updates([update(symbol, 4_000, 9.0)]))
        assert sorted(history.read_snapshot(client, KEYS)) == sorted(symbols)
        settings = Settings(redis_url=cluster[0].url, partitions=P, data_dir=tmp_path / "data")
        with DashboardServer(cluster[0].url, KEYS, port=0, ws_port=0, settings=settings) as server:
            for n, symbol in enumerate(symbols):
                chart = f"{server.url}tickerdash/chart?symbol={symbol}&interval=1s"
                with urllib.request.urlopen(chart, timeout=30) as response:
                    figure = json.load(response)
                candles = next(trace for trace in figure["data"] if trace.get("type") == "candlestick")
                assert len(candles["x"]) == n + 2  # its closed bars and the open one from the snapshot


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint recording every JSON body POSTed to it."""
    bodies: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


class TestWebhooks:
    def test_alerts_of_every_partition_are_delivered_once_and_failures_recorded_with_their_ack(
        self, client: redis.RedisCluster
    ) -> None:
        """Alerts in all six partitions reach the receiver once each; an alert whose endpoint refuses is given
        up on in one transaction on its partition's slot (failure record and XACK), leaving nothing pending."""
        for p in range(P):  # what lets the give-up be one transaction on a cluster
            assert key_slot(KEYS.webhook_failures(p).encode()) == key_slot(KEYS.alerts(p).encode())
        with webhook_receiver() as (url, bodies):
            store = RuleStore(client, KEYS)
            good = store.add(make_rule("*", 5, "60s", webhook=url, rule_id="good"))
            dead = store.add(make_rule("*", 5, "60s", webhook="http://127.0.0.1:9/refused", rule_id="dead"))
            policy = WebhookPolicy(max_attempts=1, timeout_s=2)
            with WebhookDelivery(client, KEYS, policy=policy, block_ms=50) as delivery:
                sent = [client.xadd(KEYS.alerts(p), alert_fields(symbol_of(p), 1_000 + p, good.id)) for p in range(P)]
                refused = one_partition_per_node(client)[:2]
                for p in refused:
                    client.xadd(KEYS.alerts(p), alert_fields(symbol_of(p), 5_000, dead.id))
                wait_until(lambda: len(bodies) >= P and delivery.stats.failed == 2, "every alert was handled")
                time.sleep(0.3)  # a duplicate would come now
        assert sorted(body["alert_id"] for body in bodies) == sorted(entry_id.decode() for entry_id in sent)
        assert {body["symbol"] for body in bodies} == {symbol_of(p) for p in range(P)}
        assert [client.xlen(KEYS.webhook_failures(p)) for p in refused] == [1, 1]
        assert all(client.xpending(stream, "webhooks")["pending"] == 0 for stream in KEYS.alert_streams)


class TestAlertsTail:
    def test_tail_prints_the_alerts_of_every_partition_then_follows_new_ones(
        self, cluster: list[EmbeddedRedis], client: redis.RedisCluster, tmp_path: Path
    ) -> None:
        """`alerts tail --since 0` on one node's URL prints the alerts already in all six partitions, then an
        alert written afterwards on another node."""
        written = [client.xadd(KEYS.alerts(p), alert_fields(symbol_of(p), 1_000 + p)).decode() for p in range(P)]
        tail = subprocess.Popen(
            [sys.executable, "-m", "tickerdash", "alerts", "tail", "--json", "--since", "0", "--count", str(P + 1)],
            env=env_for(cluster[0], tmp_path / "data"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tail.stdout is not None
            printed = [json.loads(tail.stdout.readline()) for _ in range(P)]
            later = client.xadd(KEYS.alerts(one_partition_per_node(client)[-1]), alert_fields("LATE", 9_000)).decode()
            out, err = tail.communicate(timeout=60)
        finally:
            if tail.poll() is None:
                tail.kill()
        assert tail.returncode == 0, err[-2000:]
        assert sorted(line["id"] for line in printed) == sorted(written)
        assert [json.loads(line)["id"] for line in out.splitlines()] == [later]


class TestArchive:
    def test_closed_bars_of_every_partition_end_in_the_parquet_archive(
        self, cluster: list[EmbeddedRedis], client: redis.RedisCluster, tmp_path: Path
    ) -> None:
        """`archive --once` on one node's URL archives the closed-bars feed of all six partitions and
        acknowledges every entry."""
        day = 1_767_225_600_000  # 2026-01-01 UTC
        expected = set()
        for p in range(P):
            symbol = symbol_of(p)
            for batch in range(2):
                starts = [day + (batch * 2 + k) * 1_000 for k in range(2)]
                columns = {
                    "symbol": [symbol] * 2,
                    "interval_ms": [1_000] * 2,
                    "start_ms": starts,
                    **{name: [1.0, 2.0] for name in ("open", "high", "low", "close", "volume", "vwap")},
                    "trades": [3, 4],
                }
                client.xadd(KEYS.closed_bars(p), bar_feed_fields(columns))  # type: ignore[arg-type]
                expected |= {(symbol, start) for start in starts}
        done = subprocess.run(
            [sys.executable, "-m", "tickerdash", "archive", "--once", "--consumer", "arch"],
            env=env_for(cluster[2], tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
        settings = Settings(partitions=P, data_dir=tmp_path / "data")
        table = ds.dataset(archive_root(settings), format="parquet", partitioning=PARTITIONING).to_table()
        starts = [int(start.timestamp() * 1000) for start in table["start"].to_pylist()]
        rows = set(zip(table["symbol"].to_pylist(), starts, strict=True))
        assert rows == expected and table.num_rows == len(expected)
        assert all(client.xpending(feed, ARCHIVE_GROUP)["pending"] == 0 for feed in KEYS.closed_bars_streams)
