"""The push server: one Redis reader fans the analytics feeds out to every browser over websockets.

One task reads every partition's live-update, alerts and anomalies streams (XREAD on one connection
for the whole process, never one per browser; on a Redis Cluster one XREAD per partition, see
`dashboard.feed_reads`). What it reads goes into the gateway's state (each symbol's latest update, the
recent alerts and anomalies) and into the pending frame.
A pump sends the pending frame to every client at most `max_fps` times a second, encoded once.

Each client gets the frames at its own pace (`dashboard.push`); every message is strict JSON. A ping
unanswered for `ping_timeout_s` closes the connection. `dashboard.gateway_thread` runs the gateway
beside the web server.

Messages (JSON text):
- to the page on connect: `{"type": "hello", "seq", "ids", "snapshot": [update...], "alerts": [...],
  "anomalies": [...], "health": {...}, "fields": {...}}`; `fields` holds the contract's field lists of
  alerts and anomalies and which of them are numbers (`event_fields`), so the page repeats none;
- then `{"type": "frame", "seq", "ids", "updates": [...], "alerts": [...], "anomalies": [...],
  "health": {...} | null, "coalesced": n}`; `seq` grows by one per frame the gateway makes, `ids` are
  the last stream IDs read, `coalesced > 1` says this client missed intermediate states;
- on a page's `bars` request (filling the gap after a reconnect), the reply of `dashboard.gap_fill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tickerdash.dashboard.auth import presented_token, refusal, token_accepted
from tickerdash.dashboard.feed_reads import AsyncRedis, FeedReads, open_client
from tickerdash.dashboard.gap_fill import bars_reply, parse_bars_request
from tickerdash.dashboard.gateway_health import HealthMeter
from tickerdash.dashboard.push import Frame, GatewayConfig, PushClient, to_json
from tickerdash.ingest.cluster import UNAVAILABLE
from tickerdash.ingest.contract.alerts import ALERT_FIELDS, ALERT_NUMBERS, alert_event
from tickerdash.ingest.contract.anomalies import ANOMALY_FIELDS, ANOMALY_NUMBERS, anomaly_event
from tickerdash.ingest.contract.fields import as_text, id_order
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import decode_updates, live_entry_payload
from tickerdash.ingest.reconnect import Outage

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4_096
GATEWAY_CLIENT_NAME = "tickerdash-gateway"
STOP_ATTEMPTS = 10  # of cancelling the tasks, half a second apart


ANOMALY_TABLE = ("ts", "symbol", "price", "score", "reasons")  # the page's anomaly table, left to right


def event_fields() -> dict[str, dict[str, list[str]]]:
    """The alert and anomaly fields, which of them are numbers, and the anomaly table's columns (sent with the
    hello, so that the page spells no field name of its own)."""
    return {
        "alerts": {"fields": list(ALERT_FIELDS), "numbers": list(ALERT_NUMBERS)},
        "anomalies": {"fields": list(ANOMALY_FIELDS), "numbers": list(ANOMALY_NUMBERS), "table": list(ANOMALY_TABLE)},
    }


class Gateway:
    """The websocket push server over one Redis reader; `start()` binds, `stop()` closes everything."""

    def __init__(self, redis_url: str, keys: Keys, config: GatewayConfig | None = None) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self._alert_streams = set(keys.alert_streams)
        self.config = config or GatewayConfig()
        self.symbols: dict[str, dict[str, Any]] = {}
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=self.config.recent_events)
        self.recent_anomalies: deque[dict[str, Any]] = deque(maxlen=self.config.recent_events)
        self.health: dict[str, Any] = {"redis": "connecting", "clients": 0}
        self.seq = 0
        self.frames_made = 0
        self._clients: set[PushClient] = set()
        self._cursor: dict[str, str] = {}
        self._pending: Frame | None = None
        self._dirty = asyncio.Event()
        self._redis: AsyncRedis | None = None  # opened by `start`, or by the reader once Redis answers
        self._reads = FeedReads(
            [(keys.live(p), keys.alerts(p), keys.anomalies(p)) for p in range(keys.partitions)], self._cursor
        )
        self._health = HealthMeter(keys, self.config.analytics_group)
        self._opening = asyncio.Lock()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._loaded = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when the config asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def client_count(self) -> int:
        """Browsers connected right now."""
        return len(self._clients)

    async def start(self) -> None:
        """Bind the websocket server and start the reader, the pump and the health probe."""
        try:  # so that the first page already gets a full hello; if Redis is down, the reader retries
            await self._load_initial()
            self._loaded = True
            self.health["redis"] = "ok"
        except UNAVAILABLE as exc:
            log.warning("gateway starts without Redis (%s); retrying", exc)
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            compression=None,  # per-message deflate tripled gateway CPU at 200 clients
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
            close_timeout=self.config.close_timeout_s,
            max_size=MAX_REQUEST_BYTES,
            process_request=self._check_request,
        )
        for job in (self._read_feeds, self._pump, self._probe_health):
            self._tasks.append(asyncio.create_task(job(), name=f"gateway{job.__name__}"))
        log.info("gateway on ws://%s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        """Close the server and every connection, end the tasks, close Redis."""
        self._stopping = True
        if self._server is not None:  # first, so that pages learn at once and start retrying
            self._server.close()
            await self._server.wait_closed()
        # redis-py can turn a cancelled XREAD into a ConnectionError, which the reader would retry
        # forever; `_stopping` ends the loops then, and cancelling again covers any other await.
        pending = set(self._tasks)
        for _ in range(STOP_ATTEMPTS):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending:
            log.warning("gateway tasks did not end: %s", sorted(task.get_name() for task in pending))
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("gateway task %s had failed: %r", task.get_name(), task.exception())
        self._tasks.clear()
        self._reads.cancel()
        if self._redis is not None:
            await self._redis.aclose()

    # -- handshake and connections ---------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse handshakes naming a foreign Host, from other sites' pages (Origin), or without the token."""
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        if len(hosts) != 1 or len(origins) > 1:
            return connection.respond(HTTPStatus.BAD_REQUEST, "one Host header and at most one Origin, please\n")
        refused = refusal(self.config.allowed_hosts, hosts[0], origins[0] if origins else None)
        if refused is not None:
            return connection.respond(HTTPStatus(refused[0]), refused[1])
        url = urlsplit(request.path)
        token = presented_token(url.query, request.headers.get("Cookie"), request.headers.get("Authorization"))
        if not token_accepted(self.config.token, token):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        client = PushClient(connection, self.config)
        client.reply(self._hello())
        self._clients.add(client)
        self.health["clients"] = len(self._clients)
        sender = asyncio.create_task(client.send_forever())
        try:
            async for message in connection:
                await self._answer(client, message)
                if client.dropped is not None:
                    break
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            self.health["clients"] = len(self._clients)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    def _hello(self) -> str:
        return to_json(
            {
                "type": "hello",
                "seq": self.seq,
                "ids": dict(self._cursor),
                "snapshot": list(self.symbols.values()),
                "alerts": list(self.recent_alerts),
                "anomalies": list(self.recent_anomalies),
                "health": {**self.health, "clients": len(self._clients) + 1},
                "fields": event_fields(),
            }
        )

    async def _answer(self, client: PushClient, message: str | bytes) -> None:
        """Serve a page's request; a malformed one is answered with an error, never raised."""
        request = parse_bars_request(message)
        if request is None:
            client.reply(to_json({"type": "error", "error": "bad request"}))
            return
        try:
            redis_client = await self._client()
            reply = await bars_reply(redis_client, self.keys, request, self.symbols)
        except UNAVAILABLE:
            reply = {"type": "error", "error": "redis unavailable"}
        client.reply(to_json(reply))

    # -- reading Redis ---------------------------------------------------------------------------

    def _pending_frame(self) -> Frame:
        if self._pending is None:
            self._pending = Frame(seq=0, ids={})
        self._dirty.set()
        return self._pending

    async def _client(self) -> AsyncRedis:
        """The Redis client, opened on first use (a cluster client for a cluster node's URL)."""
        async with self._opening:  # the reader, the health probe and a page's request may all ask at once
            if self._redis is None:
                # named, so that CLIENT LIST tells the gateway's connections from the workers'
                self._redis = await open_client(self.redis_url, socket_keepalive=True, client_name=GATEWAY_CLIENT_NAME)
        return self._redis

    async def _load_initial(self) -> None:
        """Start from the snapshot and the recent events, with cursors just past what was loaded."""
        client = await self._client()
        # The live cursors are taken before the snapshots: updates in between are read twice, which is
        # harmless (an older update never replaces a newer state), whereas the other order loses them.
        for live in self.keys.live_streams:
            last_live: Any = await client.xrevrange(live, count=1)
            self._cursor[live] = as_text(last_live[0][0]) if last_live else "0-0"
        for snapshot_key in self.keys.snapshots:
            snapshot: Any = await client.hgetall(snapshot_key)
            for raw in snapshot.values():
                for update in decode_updates(raw):
                    self.symbols[update.symbol] = update.to_dict()
        for streams, recent, as_event in (
            (self.keys.alert_streams, self.recent_alerts, alert_event),
            (self.keys.anomaly_streams, self.recent_anomalies, anomaly_event),
        ):
            events: list[dict[str, Any]] = []
            for stream in streams:  # one per partition: merged by entry ID, the newest kept
                entries: Any = await client.xrevrange(stream, count=self.config.recent_events)
                events.extend(as_event(as_text(i), f) for i, f in reversed(entries))
                self._cursor[stream] = as_text(entries[0][0]) if entries else "0-0"
            recent.extend(sorted(events, key=lambda event: id_order(event["id"]))[-self.config.recent_events :])

    def _apply_updates(self, entry_id: str, fields: dict[Any, Any]) -> None:
        payload = live_entry_payload(fields)
        if payload is None:
            return
        try:
            updates = decode_updates(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping undecodable live entry %s: %s", entry_id, exc)
            return
        frame = self._pending_frame()
        for update in updates:
            known = self.symbols.get(update.symbol)
            if known is not None and known["ts"] > update.ts:
                continue
            state = update.to_dict()
            self.symbols[update.symbol] = state
            frame.updates[update.symbol] = state

    def _apply_event(self, stream: str, entry_id: str, fields: dict[Any, Any]) -> None:
        frame = self._pending_frame()
        if stream in self._alert_streams:
            alert = alert_event(entry_id, fields)
            self.recent_alerts.append(alert)
            frame.alerts.append(alert)
        else:
            anomaly = anomaly_event(entry_id, fields)
            self.recent_anomalies.append(anomaly)
            frame.anomalies.append(anomaly)

    async def _read_feeds(self) -> None:
        """The one Redis reader: XREAD on the live, alerts and anomalies streams, forever.

        A server (or a cluster node) that is down, failing over or no longer serving a slot is waited out:
        the cluster client follows the slot map anew, and the reads resume from the cursors.
        """
        outage = Outage(log, what="gateway: redis")
        live = set(self.keys.live_streams)
        while not self._stopping:
            try:
                if not self._loaded:
                    await self._load_initial()
                    self._loaded = True
                    self.health["redis"] = "ok"
                reply = await self._reads.read(
                    await self._client(), count=self.config.read_count, block_ms=self.config.read_block_ms
                )
                outage.recovered()
            except UNAVAILABLE as exc:
                if self._stopping:
                    return
                self.health["redis"] = "down"
                await asyncio.sleep(outage.failed(exc))
                continue
            for raw_stream, entries in reply:
                stream = as_text(raw_stream)
                for raw_id, fields in entries:
                    entry_id = as_text(raw_id)
                    self._cursor[stream] = entry_id
                    if stream in live:
                        self._apply_updates(entry_id, fields)
                    else:
                        self._apply_event(stream, entry_id, fields)

    # -- pushing ---------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Send the pending frame to every client as soon as there is one, at most max_fps a second."""
        loop = asyncio.get_running_loop()
        min_gap = 1.0 / self.config.max_fps
        next_at = 0.0
        while True:
            await self._dirty.wait()
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty.clear()
            frame, self._pending = self._pending, None
            if frame is None:
                continue
            self.seq += 1
            frame.seq, frame.ids = self.seq, dict(self._cursor)
            next_at = loop.time() + min_gap
            self.frames_made += 1
            for client in list(self._clients):
                client.offer(frame)

    async def _probe_health(self) -> None:
        """Once a second: the health figures (`dashboard.gateway_health`), pushed with the next frame."""
        while not self._stopping:
            await asyncio.sleep(self.config.health_every_s)
            try:
                health = await self._health.measure(await self._client(), self.symbols, self._cursor)
            except UNAVAILABLE:
                health = {"redis": "down"}
            self.health.update(health, clients=len(self._clients))
            self._pending_frame().health = dict(self.health)
