"""The dashboard under abuse, from the outside: flooding and non-reading websocket clients, foreign Host
and Origin headers (DNS rebinding), non-finite numbers in what the gateway sends, placeholder tokens."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tickerdash.dashboard.auth import TokenRequiredError, allowed_hosts, host_accepted, required_token
from tickerdash.dashboard.gateway import Gateway
from tickerdash.dashboard.gateway_thread import GatewayThread
from tickerdash.dashboard.push import GatewayConfig
from tickerdash.dashboard.server import DashboardServer
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import SymbolUpdate, encode_updates
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.ingest.settings import Settings

KEYS = Keys()
REPO = Path(__file__).resolve().parents[1]
FLOOD_BARS = 5_000  # one reply to a bars request is then ~350 kB: the amplification a flooder relies on
RSS_GROWTH_LIMIT_MB = 150  # the old gateway passed this within seconds of two flooders


def strict_json(text: str | bytes) -> Any:
    """Parse as browsers do: Infinity and NaN are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def receive(
    ws: ClientConnection, kind: str, until: Callable[[dict[str, Any]], Any] = bool, timeout: float = 10.0
) -> dict[str, Any]:
    """The next message of a kind for which `until` holds, every message parsed as strict JSON."""
    deadline = time.monotonic() + timeout
    while True:
        message = strict_json(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if message["type"] == kind and until(message):
            return message


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    """Wait until something listens on the loopback port (a loaded machine imports slowly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the dashboard exited: {proc.communicate()[1][-2000:]}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def tickerdash_exe() -> str:
    """The console script of the virtualenv running the tests."""
    return shutil.which("tickerdash", path=str(Path(sys.executable).parent)) or "tickerdash"


@pytest.fixture
def dashboard_process(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`tickerdash dashboard` as its own process (so its RSS is its own), with its websocket port."""
    http_port, ws_port = free_port(), free_port()
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [tickerdash_exe(), "dashboard", "--port", str(http_port), "--ws-port", str(ws_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(http_port, proc)
        wait_for_port(ws_port, proc)
        yield proc, ws_port
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def seed_bars(client: redis.Redis, symbol: str, count: int) -> None:
    """`count` closed 1s bars of a symbol, as the worker writes them."""
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        price = 100.0 + i * 0.013
        pipe.xadd(
            KEYS.bars("1s", symbol),
            {
                "open": price,
                "high": price + 0.25,
                "low": price - 0.25,
                "close": price + 0.125,
                "volume": 1234.5,
                "vwap": price + 0.0625,
                "trades": 17,
            },
            id=f"{1_000_000 + i * 1000}-0",
        )
    pipe.execute()


class Flooder(threading.Thread):
    """A websocket client that sends bars requests as fast as it can and never reads a reply.

    `max_queue=1` makes the client library stop reading the socket once one message waits, so the
    replies back up in the kernel and then in the gateway, as with a stalled or hostile browser.
    """

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(daemon=True)
        self.ws = ws
        self.sent = 0
        self.cut_off = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        request = json.dumps({"type": "bars", "symbol": "AAPL", "interval": "1s", "since": 0})
        try:
            while not self.stop.is_set():
                self.ws.send(request)
                self.sent += 1
        except (ConnectionClosed, OSError):
            self.cut_off.set()

    def close(self) -> None:
        """Stop flooding and drop the socket."""
        self.stop.set()
        self.ws.close_socket()
        self.join(10)


@pytest.mark.slow
class TestFloodingClients:
    def test_two_flooding_clients_that_never_read_are_cut_off_and_the_gateway_stays_small(
        self, dashboard_process: tuple[subprocess.Popen[str], int], redis_client: redis.Redis
    ) -> None:
        """Two sockets that flood bars requests and read nothing are disconnected, stop being counted, and the
        dashboard's memory stays within bounds while they try."""
        proc, ws_port = dashboard_process
        url = f"ws://127.0.0.1:{ws_port}/ws"
        seed_bars(redis_client, "AAPL", FLOOD_BARS)
        with connect(url) as warm:  # the bars path once, so that the baseline includes its imports and buffers
            receive(warm, "hello")
            warm.send(json.dumps({"type": "bars", "symbol": "AAPL", "interval": "1s", "since": 0}))
            assert len(receive(warm, "bars")["bars"]) == FLOOD_BARS
        before = rss_mb(proc.pid)
        stack = contextlib.ExitStack()
        flooders = [Flooder(stack.enter_context(connect(url, max_queue=1, open_timeout=30))) for _ in range(2)]
        peak = before
        try:
            for flooder in flooders:
                flooder.start()
            deadline = time.monotonic() + 60
            while not all(f.cut_off.is_set() for f in flooders) and time.monotonic() < deadline:
                peak = max(peak, rss_mb(proc.pid))
                if peak - before > RSS_GROWTH_LIMIT_MB:
                    break  # the old gateway: stop before it eats the machine
                time.sleep(0.1)
            peak = max(peak, rss_mb(proc.pid))
            cut_off = [f.cut_off.is_set() for f in flooders]
            sent = [f.sent for f in flooders]
        finally:
            for flooder in flooders:
                flooder.close()
            stack.close()
        print(
            f"dashboard RSS before the flood {before:.0f} MB, peak during it {peak:.0f} MB; "
            f"requests sent before the cut-off: {sent}"
        )
        assert peak - before <= RSS_GROWTH_LIMIT_MB, f"RSS grew from {before:.0f} to {peak:.0f} MB"
        assert cut_off == [True, True], "a flooding client was never disconnected"

        def counted_clients() -> int:
            with connect(url) as ws:
                return int(receive(ws, "hello")["health"]["clients"])

        deadline = time.monotonic() + 30
        while counted_clients() != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counted_clients() == 1, "dropped clients are still counted"  # 1: the probe itself

    def test_a_client_that_stops_reading_frames_is_disconnected_and_uncounted(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A page that reads nothing while big frames stream is aborted once a send is stuck past the timeout."""
        assert settings.redis_url is not None
        config = GatewayConfig(port=0, send_timeout_s=1.0, health_every_s=0.2)
        symbols = [f"S{i:04d}" for i in range(2_000)]
        stop = threading.Event()

        def feed() -> None:  # ~300 kB frames, ten a second: kernel buffers fill within seconds
            ts = 1_000
            while not stop.is_set():
                ts += 1
                bars = {"1s": [float(ts), 1.0, 2.0, 0.5, 1.5, 3.0]}
                updates = [
                    SymbolUpdate(
                        symbol=s, ts=ts, price=100.0 + ts % 7, change_pct=0.5, trades=ts, volume=1.0, bars=bars
                    )
                    for s in symbols
                ]
                redis_client.xadd(KEYS.live(), {"u": encode_updates(updates)})
                stop.wait(0.1)

        with GatewayThread(Gateway(settings.redis_url, KEYS, config)) as thread:
            gateway = thread.gateway
            writer = threading.Thread(target=feed, daemon=True)
            with connect(f"ws://127.0.0.1:{gateway.port}/ws", max_queue=1) as stalled:
                writer.start()
                try:
                    deadline = time.monotonic() + 60
                    while gateway.client_count > 0 and time.monotonic() < deadline:
                        time.sleep(0.2)
                    counted = gateway.client_count
                    with pytest.raises((ConnectionClosed, OSError)):  # the socket is gone: sends fail
                        for _ in range(1_000):
                            stalled.send("{}")
                            time.sleep(0.01)
                finally:
                    stop.set()
                    writer.join(5)
                    stalled.close_socket()
        assert counted == 0


class TestHostAndOrigin:
    def test_a_foreign_host_is_refused_on_http_and_websocket_without_a_token(
        self, redis_server: EmbeddedRedis, redis_client: redis.Redis
    ) -> None:
        """A DNS-rebinding page names its own host: the token-less loopback dashboard refuses it, on both ports."""
        with DashboardServer(redis_server.url, KEYS, port=0, ws_port=0) as server:
            base = server.url
            for path in ("", "_dash-layout", "tickerdash/chart?interval=1s"):
                request = urllib.request.Request(base + path, headers={"Host": f"evil.example:{server._http.port}"})  # type: ignore[union-attr]
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=10)
                assert refused.value.code == 421
                assert "TICKERDASH_ALLOWED_HOSTS" in refused.value.read().decode()
            # what a browser does once evil.example resolves to 127.0.0.1: its own name in Host (and Origin)
            ws_port, http_port = server.gateway.port, server._http.port  # type: ignore[union-attr]
            for origin in (None, f"http://evil.example:{http_port}"):
                with (
                    pytest.raises(InvalidStatus) as refused_ws,
                    connect(
                        f"ws://evil.example:{ws_port}/ws",
                        sock=socket.create_connection(("127.0.0.1", ws_port)),
                        origin=None if origin is None else Origin(origin),
                    ),
                ):
                    pass
                assert refused_ws.value.response.status_code == 421
                assert b"TICKERDASH_ALLOWED_HOSTS" in refused_ws.value.response.body

    def test_a_page_of_another_origin_is_refused_on_http(
        self, redis_server: EmbeddedRedis, redis_client: redis.Redis
    ) -> None:
        """A request that a foreign page makes to the real loopback address carries its Origin: refused (403)."""
        with DashboardServer(redis_server.url, KEYS, port=0, ws_port=0) as server:
            request = urllib.request.Request(
                server.url + "_dash-layout", headers={"Origin": "http://evil.example:8050"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 403

    def test_loopback_names_ip_addresses_and_configured_names_are_accepted(
        self, redis_server: EmbeddedRedis, redis_client: redis.Redis
    ) -> None:
        """localhost, 127.0.0.1, [::1], the bound address and TICKERDASH_ALLOWED_HOSTS names are answered."""
        with DashboardServer(redis_server.url, KEYS, port=0, ws_port=0, public_names="ticks.example.org") as server:
            http_port, ws_port = server._http.port, server.gateway.port  # type: ignore[union-attr]
            for host in ("localhost", "127.0.0.1", "[::1]", "ticks.example.org", "LOCALHOST"):
                request = urllib.request.Request(
                    server.url + "_dash-layout",
                    headers={"Host": f"{host}:{http_port}", "Origin": f"http://{host}:{http_port}"},
                )
                with urllib.request.urlopen(request, timeout=10) as ok:
                    assert ok.status == 200, host
                with connect(
                    f"ws://{host}:{ws_port}/ws",
                    origin=Origin(f"http://{host}:{http_port}"),
                    sock=socket.create_connection(("127.0.0.1", ws_port)),
                ) as ws:
                    assert receive(ws, "hello")["type"] == "hello", host
        names = allowed_hosts("0.0.0.0", " ticks.example.org, Other.Example ")
        assert host_accepted(names, "192.168.1.20:8050")  # an IP literal cannot be a rebinding attack
        assert host_accepted(names, "other.example")
        assert not host_accepted(names, "evil.example")
        assert not host_accepted(names, None)


class TestFiniteJson:
    def test_non_finite_numbers_reach_clients_as_null_in_valid_json(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Infinity and NaN in the snapshot, the live feed, alerts, anomalies and bars: every message is strict
        JSON, the non-finite numbers null."""
        infinite_update = (
            '[{"symbol":"INF","ts":1000,"price":Infinity,"change_pct":NaN,"trades":1,"volume":'
            '-Infinity,"bars":{"1s":[1000,Infinity,Infinity,1,Infinity,Infinity]}}]'
        )
        redis_client.hset(KEYS.snapshot(), "INF", infinite_update)
        redis_client.xadd(
            KEYS.alerts(),
            {
                "rule_id": "r1",
                "symbol": "INF",
                "ts": 900,
                "price": "inf",
                "reference_price": "1e308",
                "drop_pct": "nan",
                "window_s": 60,
                "message": "INF fell",
            },
        )
        overflowing_bar: dict[Any, Any] = {
            "open": 1,
            "high": "inf",
            "low": 1,
            "close": "1e309",
            "volume": "inf",
            "vwap": "nan",
            "trades": 1,
        }
        redis_client.xadd(KEYS.bars("1s", "INF"), overflowing_bar, id="1000-0")
        assert settings.redis_url is not None
        with (
            GatewayThread(Gateway(settings.redis_url, KEYS, GatewayConfig(port=0))) as thread,
            connect(f"ws://127.0.0.1:{thread.gateway.port}/ws") as ws,
        ):
            hello = receive(ws, "hello")
            redis_client.xadd(KEYS.live(), {"u": infinite_update.replace('"ts":1000', '"ts":2000')})
            redis_client.xadd(
                KEYS.anomalies(),
                {"symbol": "INF", "ts": 2000, "price": "-inf", "size": "inf", "score": "nan", "reasons": "size"},
            )
            frame = receive(ws, "frame", until=lambda f: f["anomalies"])
            ws.send(json.dumps({"type": "bars", "symbol": "INF", "interval": "1s", "since": 0}))
            bars = receive(ws, "bars")
        assert hello["alerts"][0]["price"] is None and hello["alerts"][0]["reference_price"] == 1e308
        assert frame["anomalies"][0]["score"] is None and frame["anomalies"][0]["size"] is None
        assert bars["bars"][0][1:] == [1.0, None, 1.0, None, None, None, 1]


class TestTokens:
    def test_a_non_loopback_bind_needs_a_real_token(self) -> None:
        """Off loopback: no token, an empty one, the old compose default or a short one are refused, saying how to
        set one; on loopback none is needed."""
        for weak in (None, "", "change-me", "CHANGE-ME", "short-token"):
            with pytest.raises(TokenRequiredError, match="TICKERDASH_TOKEN"):
                required_token("0.0.0.0", weak)
        assert required_token("0.0.0.0", "k3J9-vQ2x_Lr8Tz4") == "k3J9-vQ2x_Lr8Tz4"
        assert required_token("127.0.0.1", None) is None
        assert required_token("localhost", "") is None

    def test_the_compose_dashboard_command_refuses_the_placeholder_token(
        self, redis_server: EmbeddedRedis, tmp_path: Path
    ) -> None:
        """`tickerdash dashboard --host 0.0.0.0` with TICKERDASH_TOKEN=change-me exits with what to do, binding
        nothing."""
        env = {
            **os.environ,
            "TICKERDASH_REDIS_URL": redis_server.url,
            "TICKERDASH_DATA_DIR": str(tmp_path),
            "TICKERDASH_TOKEN": "change-me",
        }
        http_port = free_port()
        command = [
            tickerdash_exe(),
            "dashboard",
            "--host",
            "0.0.0.0",
            "--port",
            str(http_port),
            "--ws-port",
            str(free_port()),
        ]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            listening = False
            while proc.poll() is None and not listening and time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", http_port), timeout=1):
                    listening = True
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate(timeout=30)
        assert not listening, "the dashboard started with the placeholder token"
        assert proc.returncode not in (0, -9), f"the dashboard did not refuse the placeholder token: {err[-2000:]}"
        assert "TICKERDASH_TOKEN" in err and "16" in err
