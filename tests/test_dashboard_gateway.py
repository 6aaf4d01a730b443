"""The websocket gateway against a real Redis: one reader, coalesced frames, gap filling, the token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tickerdash.dashboard.auth import TokenRequiredError, required_token
from tickerdash.dashboard.gateway import GATEWAY_CLIENT_NAME, Gateway
from tickerdash.dashboard.gateway_thread import GatewayThread
from tickerdash.dashboard.push import Frame, GatewayConfig, PushClient
from tickerdash.dashboard.server import DashboardServer
from tickerdash.ingest.contract.alerts import ALERT_FIELDS, ALERT_NUMBERS
from tickerdash.ingest.contract.anomalies import ANOMALY_FIELDS, ANOMALY_NUMBERS
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import SymbolUpdate, encode_updates
from tickerdash.ingest.group_progress import create_group, record_missed
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings

KEYS = Keys()


def update(symbol: str, ts: int, price: float) -> SymbolUpdate:
    """A SymbolUpdate as the worker writes it, with open 1s and 1m bars."""
    return SymbolUpdate(
        symbol=symbol,
        ts=ts,
        price=price,
        change_pct=0.5,
        trades=ts % 1000,
        volume=10.0,
        bars={
            "1s": [float(ts // 1000 * 1000), price, price, price, price, 1.0],
            "1m": [float(ts // 60_000 * 60_000), price, price, price, price, 1.0],
        },
    )


def receive(
    ws: ClientConnection, kind: str, until: Callable[[dict[str, Any]], Any] = bool, timeout: float = 30.0
) -> dict[str, Any]:
    """The next message of a kind for which `until` holds (others are skipped); TimeoutError after `timeout`
    (a bound for a loaded machine, not a measure of speed)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if message["type"] == kind and until(message):
            return message


@pytest.fixture
def gateway(settings: Settings, redis_client: redis.Redis) -> Iterator[Gateway]:
    """A gateway on a free loopback port over the test Redis (with a little history already there)."""
    redis_client.hset(KEYS.snapshot(), "AAPL", encode_updates([update("AAPL", 1_000, 10.0)]))
    redis_client.xadd(
        KEYS.alerts(),
        {
            "rule_id": "r1",
            "symbol": "AAPL",
            "ts": 900,
            "price": 9.5,
            "reference_price": 10,
            "drop_pct": 5,
            "window_s": 60,
            "message": "AAPL -5%",
        },
    )
    assert settings.redis_url is not None
    with GatewayThread(Gateway(settings.redis_url, KEYS, GatewayConfig(port=0, health_every_s=0.2))) as thread:
        yield thread.gateway


def url(gateway: Gateway, query: str = "") -> str:
    """The gateway's websocket URL."""
    return f"ws://127.0.0.1:{gateway.port}/ws{query}"


class TestFrames:
    def test_hello_carries_the_snapshot_and_recent_alerts(self, gateway: Gateway) -> None:
        """A page that connects first gets every symbol's latest state and the recent alerts."""
        with connect(url(gateway)) as ws:
            hello = receive(ws, "hello")
        assert [u["symbol"] for u in hello["snapshot"]] == ["AAPL"]
        assert [a["message"] for a in hello["alerts"]] == ["AAPL -5%"]
        assert hello["alerts"][0]["price"] == 9.5

    def test_hello_carries_the_contract_field_lists_for_the_page(self, gateway: Gateway) -> None:
        """The page learns the alert and anomaly fields, their numeric ones and its anomaly table's columns from
        the hello (the contract's lists), so the JavaScript spells none of them."""
        with connect(url(gateway)) as ws:
            fields = receive(ws, "hello")["fields"]
        assert fields["alerts"] == {"fields": list(ALERT_FIELDS), "numbers": list(ALERT_NUMBERS)}
        assert fields["anomalies"]["fields"] == list(ANOMALY_FIELDS)
        assert fields["anomalies"]["numbers"] == list(ANOMALY_NUMBERS)
        assert set(fields["anomalies"]["table"]) <= set(ANOMALY_FIELDS)

    def test_live_entries_reach_the_page_as_frames_with_sequence_and_stream_ids(
        self, gateway: Gateway, redis_client: redis.Redis
    ) -> None:
        """A live entry written to Redis arrives in a frame that names the last stream ID read."""
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            entry_id = redis_client.xadd(KEYS.live(), {"u": encode_updates([update("MSFT", 2_000, 300.0)])})
            frame = receive(ws, "frame", until=lambda f: f["updates"])
        assert frame["updates"][0]["symbol"] == "MSFT"
        assert frame["ids"][KEYS.live()] == entry_id.decode()
        assert frame["seq"] >= 1

    def test_a_burst_is_coalesced_into_at_most_max_fps_frames_a_second_latest_state_winning(
        self, gateway: Gateway, redis_client: redis.Redis
    ) -> None:
        """200 live entries in under a second become few frames (at most the gateway's `max_fps` a second), and the
        last price is what the page ends with."""
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            started = time.monotonic()
            for i in range(200):
                redis_client.xadd(KEYS.live(), {"u": encode_updates([update("AAPL", 10_000 + i, 10.0 + i)])})
            frames: list[dict[str, Any]] = []

            def has_last_price(frame: dict[str, Any]) -> bool:
                frames.append(frame)
                return any(u["price"] == 209.0 for u in frame["updates"])

            receive(ws, "frame", until=has_last_price)
            elapsed = time.monotonic() - started
        assert len(frames) <= gateway.config.max_fps * elapsed + 2

    def test_alerts_and_anomalies_are_pushed_with_parsed_numbers(
        self, gateway: Gateway, redis_client: redis.Redis
    ) -> None:
        """New alert and anomaly entries arrive in frames with their fields, numbers as numbers."""
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            redis_client.xadd(
                KEYS.anomalies(),
                {
                    "symbol": "AAPL",
                    "ts": 5_000,
                    "price": 11.0,
                    "size": 1e6,
                    "trade_id": "t9",
                    "tick_id": "5-0",
                    "score": 0.97,
                    "reasons": "size",
                },
            )
            frame = receive(ws, "frame", until=lambda f: f["anomalies"])
        assert frame["anomalies"][0]["score"] == 0.97
        assert frame["anomalies"][0]["reasons"] == "size"

    def test_every_page_shares_one_redis_reader(self, gateway: Gateway, redis_client: redis.Redis) -> None:
        """Twenty pages connected add no Redis connections: the gateway reads once and fans out."""

        def gateway_connections() -> int:  # other tests' clients may still be closing on the shared server
            return sum(1 for c in redis_client.client_list() if c["name"] == GATEWAY_CLIENT_NAME)

        with connect(url(gateway)) as first:
            receive(first, "hello")
            receive(first, "frame", until=lambda f: "deadletters" in (f["health"] or {}))  # the probe's connection too
            before = gateway_connections()
            assert before >= 1
            with contextlib.ExitStack() as stack:
                pages = [stack.enter_context(connect(url(gateway))) for _ in range(20)]
                for page in pages:
                    receive(page, "hello")
                redis_client.xadd(KEYS.live(), {"u": encode_updates([update("AAPL", 50_000, 12.0)])})
                for page in pages:
                    assert receive(page, "frame")["type"] == "frame"
                after = gateway_connections()
                assert gateway.client_count == 21
        assert after == before

    def test_health_reports_clients_and_dead_letters(self, gateway: Gateway, redis_client: redis.Redis) -> None:
        """The health part of frames counts the connected pages and the dead-letter stream."""
        redis_client.xadd(KEYS.deadletter(), {"reason": "symbol: bad", "source": "test"})
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            frame = receive(ws, "frame", until=lambda f: (f["health"] or {}).get("deadletters") == 1)
        assert frame["health"]["clients"] == 1
        assert frame["health"]["redis"] == "ok"

    def test_health_says_which_worker_owns_each_partition(self, gateway: Gateway, redis_client: redis.Redis) -> None:
        """The health part of frames names each lease holder with its partitions, and the partitions nobody holds
        (the page's health strip shows them)."""
        redis_client.set(KEYS.lease("analytics", 0), "w1")
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            frame = receive(ws, "frame", until=lambda f: (f["health"] or {}).get("owners"))
        assert frame["health"]["owners"] == {"w1": [0]} and frame["health"]["unowned"] == []
        redis_client.delete(KEYS.lease("analytics", 0))
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            frame = receive(ws, "frame", until=lambda f: (f["health"] or {}).get("unowned"))
        assert frame["health"]["owners"] == {} and frame["health"]["unowned"] == [0]

    def test_health_reports_ticks_trimmed_before_the_workers_read_them(
        self, gateway: Gateway, redis_client: redis.Redis
    ) -> None:
        """Entries an operator trimmed before the analytics group read them, once a worker has counted them, are
        in the health part of frames (the page says "lost N entries trimmed before any worker read them")."""
        stream = KEYS.ticks()
        create_group(redis_client, stream, "analytics")
        for i in range(10):
            redis_client.xadd(stream, {"symbol": "AAPL", "price": 10 + i, "size": 1})
        redis_client.xtrim(stream, maxlen=4, approximate=False)
        assert record_missed(redis_client, KEYS, "analytics", stream) == (6, 6)
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            frame = receive(ws, "frame", until=lambda f: (f["health"] or {}).get("lost"))
        assert frame["health"]["lost"] == 6 and frame["health"]["producer_waiting"] is None


class TestGapFilling:
    def test_bars_since_a_start_come_from_the_bar_stream_with_the_open_bar(
        self, gateway: Gateway, redis_client: redis.Redis
    ) -> None:
        """A reconnecting page asking for bars since a start gets the closed bars from then and the open bar."""
        for start in (1_000, 2_000, 3_000):
            redis_client.xadd(
                KEYS.bars("1s", "AAPL"),
                {"open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 7, "vwap": 1.2, "trades": 3},
                id=f"{start}-0",
            )
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            ws.send(json.dumps({"type": "bars", "symbol": "AAPL", "interval": "1s", "since": 2_000}))
            reply = receive(ws, "bars")
        assert [bar[0] for bar in reply["bars"]] == [2_000, 3_000]
        assert reply["bars"][0][1:] == [1.0, 2.0, 0.5, 1.5, 7.0, 1.2, 3]
        assert reply["open"] == [1_000.0, 10.0, 10.0, 10.0, 10.0, 1.0]

    def test_the_overlay_fields_of_the_bars_come_with_them(self, gateway: Gateway, redis_client: redis.Redis) -> None:
        """Each bar's fields after its own seven (its overlays; SMA absent where undefined) come in `overlays`."""
        bar = {"open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 7, "vwap": 1.2, "trades": 3}
        redis_client.xadd(KEYS.bars("1s", "AAPL"), {**bar, "ema20": 1.25}, id="1000-0")
        redis_client.xadd(KEYS.bars("1s", "AAPL"), {**bar, "sma20": 1.5, "ema20": 1.3}, id="2000-0")
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            ws.send(json.dumps({"type": "bars", "symbol": "AAPL", "interval": "1s", "since": 0}))
            reply = receive(ws, "bars")
        assert reply["overlays"] == [{"ema20": 1.25}, {"sma20": 1.5, "ema20": 1.3}]

    def test_a_malformed_request_is_answered_with_an_error(self, gateway: Gateway) -> None:
        """A request for a symbol outside the tick alphabet gets an error reply and the connection stays up."""
        with connect(url(gateway)) as ws:
            receive(ws, "hello")
            ws.send(json.dumps({"type": "bars", "symbol": "<img src=x>", "interval": "1s"}))
            assert receive(ws, "error")["error"] == "bad request"
            ws.send(json.dumps({"type": "bars", "symbol": "AAPL", "interval": "1s"}))
            assert receive(ws, "bars")["symbol"] == "AAPL"


class TestSlowClients:
    class _Silent:
        remote_address = ("127.0.0.1", 0)

    def test_a_client_that_does_not_drain_keeps_a_bounded_backlog_with_latest_states_and_all_events(self) -> None:
        """Frames past the backlog limit merge into one: latest update per symbol, events concatenated."""
        client = PushClient(self._Silent(), GatewayConfig(client_backlog=5, recent_events=100))  # type: ignore[arg-type]
        for seq in range(1, 51):
            client.offer(
                Frame(seq=seq, ids={"live": f"{seq}-0"}, updates={"AAPL": {"price": seq}}, alerts=[{"id": f"{seq}-0"}])
            )
        assert len(client.backlog) <= 6
        merged = client._merge_all()
        assert merged.seq == 50
        assert merged.updates["AAPL"]["price"] == 50
        assert len(merged.alerts) == 50
        assert merged.coalesced == 50


class TestShutdown:
    def test_a_gateway_that_never_started_or_already_stopped_stops_quietly(self, settings: Settings) -> None:
        """stop() before start() and twice in a row is a no-op, as a shutdown path after a failed start needs."""
        assert settings.redis_url is not None
        gateway = Gateway(settings.redis_url, KEYS, GatewayConfig(port=0))

        async def stop_twice() -> None:
            await gateway.stop()
            await gateway.stop()

        asyncio.run(stop_twice())
        assert gateway.client_count == 0

    def test_stop_closes_pages_and_frees_the_port_even_when_the_reader_swallows_its_cancellation(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """redis-py can turn a cancelled XREAD into a ConnectionError; stop must still end, close pages, unbind."""
        real_xread = aioredis.Redis.xread

        async def xread_as_redis_py_may(self: aioredis.Redis, *args: Any, **kwargs: Any) -> Any:
            try:
                return await real_xread(self, *args, **kwargs)
            except asyncio.CancelledError:
                raise redis.ConnectionError("Connection closed by server.") from None

        monkeypatch.setattr(aioredis.Redis, "xread", xread_as_redis_py_may)
        assert settings.redis_url is not None
        thread = GatewayThread(Gateway(settings.redis_url, KEYS, GatewayConfig(port=0))).start()
        port = thread.gateway.port
        with connect(url(thread.gateway)) as ws:
            receive(ws, "hello")
            deadline = time.monotonic() + 60
            while not any(c["name"] == GATEWAY_CLIENT_NAME and c["cmd"] == "xread" for c in redis_client.client_list()):
                assert time.monotonic() < deadline, "the gateway's reader never blocked in XREAD"
                time.sleep(0.02)
            started = time.monotonic()
            thread.stop(timeout=60)  # a stop that hangs (the reader retrying for ever) never ends: only a bound
            stopped_in = time.monotonic() - started
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=5)
        assert stopped_in < 60, "stop hung"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away: pages retry
        with GatewayThread(Gateway(settings.redis_url, KEYS, GatewayConfig(port=port))) as again:
            assert again.gateway.port == port


class TestAccess:
    def test_a_non_loopback_bind_without_a_token_is_refused(self) -> None:
        """Binding 0.0.0.0 needs a token; loopback does not."""
        with pytest.raises(TokenRequiredError):
            required_token("0.0.0.0", None)
        assert required_token("127.0.0.1", None) is None
        assert required_token("::1", None) is None

    def test_the_gateway_refuses_a_handshake_without_the_token(self, settings: Settings) -> None:
        """With a token set, only handshakes carrying it (query, cookie or bearer) are accepted."""
        assert settings.redis_url is not None
        config = GatewayConfig(port=0, token="s3cret")
        with GatewayThread(Gateway(settings.redis_url, KEYS, config)) as thread:
            base = f"ws://127.0.0.1:{thread.gateway.port}/ws"
            with pytest.raises(InvalidStatus) as refused, connect(base):
                pass
            assert refused.value.response.status_code == 401
            with pytest.raises(InvalidStatus), connect(base + "?token=wrong"):
                pass
            with connect(base + "?token=s3cret") as ws:
                assert receive(ws, "hello")["type"] == "hello"
            with connect(base, additional_headers={"Cookie": "tickerdash_token=s3cret"}) as ws:
                assert receive(ws, "hello")["type"] == "hello"

    def test_a_page_from_another_site_cannot_open_the_websocket(self, gateway: Gateway) -> None:
        """A handshake whose Origin is another host is refused (cross-site websocket hijacking)."""
        with pytest.raises(InvalidStatus) as refused, connect(url(gateway), origin="http://evil.example"):  # type: ignore[arg-type]
            pass
        assert refused.value.response.status_code == 403
        with connect(url(gateway), origin="http://127.0.0.1:8050") as ws:  # type: ignore[arg-type]
            assert receive(ws, "hello")["type"] == "hello"

    def test_every_http_request_needs_the_token_which_becomes_a_cookie(
        self, redis_server: EmbeddedRedis, redis_client: redis.Redis
    ) -> None:
        """Without the token the app answers 401; ?token= sets an HttpOnly cookie that then admits requests."""
        with DashboardServer(redis_server.url, KEYS, port=0, ws_port=0, token="s3cret") as server:
            base = server.url.split("?")[0]
            for path in ("", "_dash-layout", "assets/tickerdash-00-core.js"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(base + path, timeout=5)
                assert refused.value.code == 401

            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                    return None

            opener = urllib.request.build_opener(NoRedirect)
            with pytest.raises(urllib.error.HTTPError) as redirected:
                opener.open(base + "?token=s3cret&symbol=MSFT&interval=1m", timeout=5)
            assert redirected.value.code == 303
            assert redirected.value.headers["Location"].endswith("/?symbol=MSFT&interval=1m")  # a shared link's view
            cookie = redirected.value.headers["Set-Cookie"]
            assert "tickerdash_token=s3cret" in cookie and "HttpOnly" in cookie
            request = urllib.request.Request(base + "_dash-layout", headers={"Cookie": "tickerdash_token=s3cret"})
            with urllib.request.urlopen(request, timeout=5) as ok:
                assert ok.status == 200
