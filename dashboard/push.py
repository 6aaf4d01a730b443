"""What the gateway pushes, and how it paces each browser: frames, their JSON, and the per-client backlog.

A client that cannot keep up is not allowed to grow memory: frames queue per client up to
`client_backlog`, then merge into one (updates are states, so the latest per symbol wins; alerts
and anomalies are events, so they are concatenated up to `recent_events`). Replies to a client's own
requests queue up to `max_replies`; a client that asks for more while they wait (it floods requests
or does not read), or a send that takes longer than `send_timeout_s`, drops the connection: the
socket is aborted, not closed with a handshake, because the handshake would wait behind the very
send that is stuck.

Every message is strict JSON: a non-finite number (a producer's `1e308` overflowing a bar) is sent
as null, never as `Infinity`, which no browser's JSON.parse accepts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from tickerdash.dashboard.auth import allowed_hosts
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the gateway binds, paces and protects itself; every field has a working default."""

    host: str = "127.0.0.1"
    port: int = 8051
    token: str | None = None  # enforced on every handshake when set (see dashboard.auth)
    # the Host names handshakes may carry, token or not (dashboard.auth.allowed_hosts)
    allowed_hosts: frozenset[str] = field(default_factory=lambda: allowed_hosts("127.0.0.1"))
    max_fps: float = 20.0  # as the worker's live feed (LIVE_HZ): each waits at most 50 ms
    client_backlog: int = 20  # frames queued per client before they are merged into one
    max_replies: int = 16  # replies to a client's requests waiting to be sent before it is dropped
    recent_events: int = 200  # alerts and anomalies kept for pages that connect later
    send_timeout_s: float = 5.0
    ping_interval_s: float = 10.0
    ping_timeout_s: float = 10.0
    close_timeout_s: float = 2.0  # a page that does not answer the closing handshake holds up shutdown no longer
    read_block_ms: int = 200
    read_count: int = 1_000
    health_every_s: float = 1.0
    analytics_group: str = ANALYTICS_GROUP


def finite(value: Any) -> Any:
    """The value with every non-finite float (inf, -inf, nan) inside lists and dicts replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(message: Any) -> str:
    """Compact, strict JSON; non-finite numbers become null (rare, so only then is the message walked)."""
    try:
        return json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(finite(message), separators=(",", ":"), allow_nan=False)


@dataclass(slots=True)
class Frame:
    """One push to the pages: the symbols that changed, new alerts and anomalies, fresh health."""

    seq: int
    ids: dict[str, str]
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] | None = None
    coalesced: int = 1
    _payload: str | None = None

    def payload(self) -> str:
        """The JSON text of the frame, encoded once however many clients get it."""
        if self._payload is None:
            self._payload = to_json(
                {
                    "type": "frame",
                    "seq": self.seq,
                    "ids": self.ids,
                    "updates": list(self.updates.values()),
                    "alerts": self.alerts,
                    "anomalies": self.anomalies,
                    "health": self.health,
                    "coalesced": self.coalesced,
                }
            )
        return self._payload

    def merged(self, later: Frame, keep_events: int) -> Frame:
        """This frame followed by a later one, as one frame (latest state wins, events add up)."""
        return Frame(
            seq=later.seq,
            ids=later.ids,
            updates={**self.updates, **later.updates},
            alerts=(self.alerts + later.alerts)[-keep_events:],
            anomalies=(self.anomalies + later.anomalies)[-keep_events:],
            health=later.health or self.health,
            coalesced=self.coalesced + later.coalesced,
        )


class PushClient:
    """One browser connection: its frame backlog and the task that drains it."""

    def __init__(self, connection: ServerConnection, config: GatewayConfig) -> None:
        self.connection = connection
        self.config = config
        self.backlog: deque[Frame] = deque()
        self.replies: deque[str] = deque()
        self.wake = asyncio.Event()
        self.sent = 0
        self.dropped: str | None = None  # why the connection was aborted

    def offer(self, frame: Frame) -> None:
        """Queue a frame; past the backlog limit everything queued becomes one merged frame."""
        self.backlog.append(frame)
        if len(self.backlog) > self.config.client_backlog:
            self.backlog = deque([self._merge_all()])
        self.wake.set()

    def reply(self, message: str) -> None:
        """Queue an answer to this client's own request (sent before the next frame); too many waiting drops it."""
        if len(self.replies) >= self.config.max_replies:
            self.drop(f"{len(self.replies)} replies unsent (floods requests or does not read)")
            return
        self.replies.append(message)
        self.wake.set()

    def drop(self, reason: str) -> None:
        """Abort the connection at once: no closing handshake, which would queue behind a stuck send."""
        if self.dropped is not None:
            return
        self.dropped = reason
        self.replies.clear()
        self.backlog.clear()
        log.warning("dropping client %s: %s", self.connection.remote_address, reason)
        transport = self.connection.transport
        if transport is not None:
            transport.abort()  # the reading side then ends with ConnectionClosed, which unregisters the client

    def _merge_all(self) -> Frame:
        merged = self.backlog.popleft()
        while self.backlog:
            merged = merged.merged(self.backlog.popleft(), self.config.recent_events)
        return merged

    async def send_forever(self) -> None:
        """Send replies and frames as they come; a send slower than the timeout drops the client."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.replies or self.backlog:
                message = self.replies.popleft() if self.replies else self._merge_all().payload()
                try:
                    await asyncio.wait_for(self.connection.send(message), self.config.send_timeout_s)
                except TimeoutError:
                    self.drop(f"a send took over {self.config.send_timeout_s:g}s (not reading)")
                    return
                self.sent += 1
