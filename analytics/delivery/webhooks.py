"""Webhook delivery: POST each fired alert as JSON to its rule's webhook, retried with backoff.

The task reads the alerts streams (one per partition) through its own consumer group (`webhooks`), so it never slows
the analytics workers, and an alert is acknowledged only once it is delivered or given up on: a
restart redelivers whatever was in flight (at-least-once). Attempts run on a small thread pool,
so one slow endpoint does not hold up the others. An alert given up on after `max_attempts` goes
to the partition's `Keys.webhook_failures` stream (shown by `tickerdash status` and
`tickerdash alerts failures`) and to the log.

The group is created at the end of the alerts stream the first time (old alerts are not replayed
to webhooks configured later); after that it resumes where it stood.

On a Redis Cluster each partition's alerts stream is a slot of its own, so each is read by an XREADGROUP of
its own (pipelined, one round trip per node); a given-up alert's failure record and its XACK share the
partition's slot, so they stay one transaction. A failover or a slot move is waited out like an outage.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import redis

from tickerdash.analytics.stages.alerts.rules import Rule, now_ms
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis, read_streams, refresh_slot_map
from tickerdash.ingest.contract.alerts import AlertEntry, decode_alert
from tickerdash.ingest.contract.fields import as_text, id_order, text_fields
from tickerdash.ingest.contract.keys import WEBHOOKS_GROUP, Keys
from tickerdash.ingest.contract.webhook_failures import encode_webhook_failure
from tickerdash.ingest.reconnect import Outage, wait_out

log = logging.getLogger(__name__)
GROUP = WEBHOOKS_GROUP
READ_COUNT = 200  # alert entries per stream per read
FAILURES_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """How hard to try: attempts, exponential backoff between them, and the per-request timeout."""

    max_attempts: int = 6
    first_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    timeout_s: float = 5.0
    workers: int = 4

    def backoff_s(self, attempts: int) -> float:
        """Wait before the next attempt after `attempts` failed ones: 0.5 s, 1 s, 2 s, ... capped."""
        return float(min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempts - 1)))


@dataclass(slots=True)
class Delivery:
    """One alert on its way to one URL."""

    stream: str  # the alerts stream it came from (one per partition)
    entry_id: str
    alert: AlertEntry
    rule: Rule
    url: str
    attempts: int = 0
    last_error: str = ""

    def body(self) -> bytes:
        """The JSON POSTed: the alert, its stream entry id and the rule's id and name."""
        return json.dumps(
            {"alert_id": self.entry_id, "rule_name": self.rule.title, **self.alert.to_json_dict()}, sort_keys=True
        ).encode()


def post_json(url: str, body: bytes, timeout_s: float) -> None:
    """POST a JSON body; raises OSError (urllib's errors included) unless the answer is 2xx."""
    headers = {"Content-Type": "application/json", "User-Agent": "tickerdash"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # Rule only admits http(s) URLs
        status = response.status
    if not 200 <= status < 300:
        raise OSError(f"HTTP {status}")


@dataclass(slots=True)
class DeliveryStats:
    """What the delivery task did so far."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0  # alerts whose rule has no webhook (or no longer exists)


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    delivery: Delivery = field(compare=False)


class WebhookDelivery:
    """The delivery task: `start()` runs it on a background thread, `stop()` ends it; `step()` is one turn."""

    def __init__(
        self,
        client: AnyRedis,
        keys: Keys | None = None,
        *,
        consumer: str = "webhooks",
        policy: WebhookPolicy | None = None,
        block_ms: int = 200,
        post: Any = post_json,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.consumer = consumer
        self.policy = policy or WebhookPolicy()
        self.block_ms = block_ms
        self.post = post
        self.stats = DeliveryStats()
        self.store = RuleStore(client, self.keys)
        self._rules: dict[str, Rule] = {}
        self._rules_version: int | None = None
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._inflight: list[tuple[Future[None], Delivery]] = []
        self._pool = ThreadPoolExecutor(self.policy.workers, thread_name_prefix="webhook")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # per alerts stream: first re-read our own unacknowledged entries (from "0"), then new ones (">")
        self._read_from = dict.fromkeys(self.keys.alert_streams, "0")
        self._failures_of = dict(zip(self.keys.alert_streams, self.keys.webhook_failure_streams, strict=True))

    def ensure_group(self) -> None:
        """Create the `webhooks` group on every alerts stream (at its end) unless it exists."""
        for stream in self.keys.alert_streams:
            try:
                self.client.xgroup_create(stream, GROUP, id="$", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _refresh_rules(self) -> None:
        snapshot = self.store.load_if_changed(self._rules_version)
        if snapshot is not None:
            self._rules = {r.id: r for r in snapshot.rules}
            self._rules_version = snapshot.version

    def _schedule(self, delivery: Delivery, at: float) -> None:
        heapq.heappush(self._due, _Due(at, next(self._seq), delivery))

    def _read(self) -> int:
        """Take new alert entries (first, this consumer's own unacknowledged ones) and schedule them."""
        now = time.monotonic()
        busy = self._inflight or (self._due and self._due[0].at <= now)
        wait_ms = 0 if busy else self.block_ms
        if self._due and not busy:
            wait_ms = max(1, min(wait_ms, int((self._due[0].at - now) * 1000)))
        history = any(start != ">" for start in self._read_from.values())
        got = self._read_group(None if history or wait_ms == 0 else wait_ms)
        for stream, start in self._read_from.items():
            if start != ">":  # our own unacknowledged entries: go on after the last one, or on to new ones
                batch = got.get(stream)
                self._read_from[stream] = as_text(batch[-1][0]) if batch else ">"
        scheduled = {(d.delivery.stream, d.delivery.entry_id) for d in self._due}
        scheduled |= {(d.stream, d.entry_id) for _, d in self._inflight}
        read = 0
        for stream, batch in got.items():
            to_ack = []
            read += len(batch)
            for raw_id, fields in batch:
                entry_id = as_text(raw_id)
                if (stream, entry_id) in scheduled:
                    continue
                if not fields:  # trimmed from the stream while pending: nothing left to deliver
                    to_ack.append(entry_id)
                    continue
                alert = decode_alert(fields)
                rule = self._rules.get(alert.rule_id)
                if rule is None or not rule.webhook:
                    to_ack.append(entry_id)
                    self.stats.skipped += 1
                    continue
                self._schedule(Delivery(stream, entry_id, alert, rule, rule.webhook), now)
            if to_ack:
                self.client.xack(stream, GROUP, *to_ack)
        return read

    def _read_group(self, block_ms: int | None) -> dict[str, Any]:
        """Entries of every alerts stream from `_read_from`, by stream (`read_streams`: one XREADGROUP on a
        standalone server; on a cluster one per stream, none blocking, so an empty round waits `block_ms` here)."""
        found = read_streams(
            self.client,
            self._read_from,
            count=READ_COUNT,
            block_ms=block_ms,
            group=(GROUP, self.consumer),
            idle=(lambda: self._stop.wait(block_ms / 1000)) if block_ms else None,
        )
        return {as_text(stream): batch for stream, batch in found}

    def _launch_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0].at <= now:
            delivery = heapq.heappop(self._due).delivery
            future = self._pool.submit(self.post, delivery.url, delivery.body(), self.policy.timeout_s)
            self._inflight.append((future, delivery))

    def _settle(self, wait_s: float = 0.0) -> None:
        """Handle finished attempts: acknowledge deliveries, reschedule or give up failures."""
        if self._inflight and wait_s > 0:
            wait([f for f, _ in self._inflight], timeout=wait_s, return_when=FIRST_COMPLETED)
        still = []
        for future, delivery in self._inflight:
            if not future.done():
                still.append((future, delivery))
                continue
            error = future.exception()
            delivery.attempts += 1
            if error is None:
                self.client.xack(delivery.stream, GROUP, delivery.entry_id)
                self.stats.delivered += 1
                continue
            delivery.last_error = f"{type(error).__name__}: {error}"[:500]
            if delivery.attempts >= self.policy.max_attempts:
                self._give_up(delivery)
            else:
                self.stats.retried += 1
                self._schedule(delivery, time.monotonic() + self.policy.backoff_s(delivery.attempts))
        self._inflight = still

    def _give_up(self, delivery: Delivery) -> None:
        log.warning(
            "webhook %s for alert %s (rule %s) failed %d times, giving up: %s",
            delivery.url,
            delivery.entry_id,
            delivery.rule.id,
            delivery.attempts,
            delivery.last_error,
        )
        pipe = self.client.pipeline(transaction=True)  # the failure's record and the alert's XACK: one slot
        pipe.xadd(
            self._failures_of[delivery.stream],
            encode_webhook_failure(  # type: ignore[arg-type]
                alert_id=delivery.entry_id,
                rule_id=delivery.rule.id,
                url=delivery.url,
                attempts=delivery.attempts,
                error=delivery.last_error,
                ts=now_ms(),
                symbol=delivery.alert.symbol,
            ),
            maxlen=FAILURES_MAXLEN,
            approximate=True,
        )
        pipe.xack(delivery.stream, GROUP, delivery.entry_id)
        pipe.execute()
        self.stats.failed += 1

    def step(self) -> None:
        """One turn: refresh rules, read alerts, start due attempts, handle finished ones."""
        self._refresh_rules()
        self._read()
        self._launch_due()
        self._settle(wait_s=0.05 if self._inflight else 0.0)

    def run(self) -> None:
        """Deliver until `stop()`; a Redis hiccup is logged and retried after a pause."""
        outage, group_checked = Outage(log, what="webhook delivery: redis"), False
        while not self._stop.is_set():
            try:
                if not group_checked or outage.ongoing:  # a server restarted without its data has no group
                    self.ensure_group()
                    group_checked = True
                self.step()
                outage.recovered()
            except UNAVAILABLE as exc:
                refresh_slot_map(self.client)
                wait_out(outage, exc, self._stop)

    def start(self) -> WebhookDelivery:
        """Run the task on a daemon thread."""
        self.ensure_group()
        self._thread = threading.Thread(target=self.run, name="webhook-delivery", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading; attempts in flight finish (unacknowledged ones are redelivered after a restart)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WebhookDelivery:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def recent_failures(client: AnyRedis, keys: Keys | None = None, count: int = 50) -> list[dict[str, str]]:
    """The latest recorded delivery failures, newest first, as text fields plus `id`."""
    keys = keys or Keys()
    rows: list[dict[str, str]] = []
    for stream in keys.webhook_failure_streams:
        entries: Any = client.xrevrange(stream, count=count)
        rows.extend({"id": as_text(entry_id), **text_fields(fields)} for entry_id, fields in entries)
    return sorted(rows, key=lambda row: id_order(row["id"]), reverse=True)[:count]
