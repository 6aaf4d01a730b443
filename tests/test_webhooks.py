"""Webhook delivery against a real HTTP server on loopback: retries with backoff, failures recorded, acks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from tickerdash.analytics.delivery.webhooks import GROUP, WebhookDelivery, WebhookPolicy, recent_failures
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.redis_server import free_port
from tickerdash.ingest.ticks import TickBatch

KEYS = Keys()
# short backoffs; a request timeout no loaded machine reaches on loopback, so attempts are counted exactly
FAST = WebhookPolicy(max_attempts=3, first_backoff_s=0.05, max_backoff_s=0.2, timeout_s=30.0)


class Endpoint:
    """A local HTTP server that answers 500 to the first `failures` POSTs, then 204; it keeps every body."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[dict[str, object]] = []
        self.attempts = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.attempts += 1
                if endpoint.attempts <= endpoint.failures:
                    self.send_response(500)
                else:
                    endpoint.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Callable[[int], Endpoint]]:
    """Start local HTTP endpoints; all are shut down after the test."""
    started: list[Endpoint] = []

    def make(failures: int = 0) -> Endpoint:
        started.append(Endpoint(failures))
        return started[-1]

    yield make
    for e in started:
        e.server.shutdown()
        e.server.server_close()


def fire(client: redis.Redis, rule: Rule) -> str:
    """Fire the rule once through the real stage and write the alert entry, as the worker does."""
    slide = [100.0, 99.2, 98.4, 97.6, 96.8, 96.0, 95.2, 94.4]  # under 1% a trade (no bad print), 5.6% down at the end
    alerts = SlumpAlerts([rule]).process(
        TickBatch.from_columns([rule.symbol] * len(slide), slide, [1.0] * len(slide), list(range(len(slide))))
    )
    assert len(alerts) == 1
    return client.xadd(KEYS.alerts(), alerts[0].to_fields()).decode()  # type: ignore[union-attr, arg-type]


def wait_until(check: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll until `check()` holds or time runs out (a bound for a loaded machine, not a measure of speed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def pending(client: redis.Redis) -> int:
    """Alerts read by the webhook group but not acknowledged yet."""
    return int(client.xpending(KEYS.alerts(), GROUP)["pending"])


def test_alert_is_posted_as_json_after_retries_and_acknowledged(redis_client: redis.Redis, endpoint) -> None:
    """A webhook that fails twice receives the alert on the third attempt; the entry is then acknowledged."""
    hook = endpoint(2)
    rule = RuleStore(redis_client).add(Rule(id="hooked", symbol="AAPL", drop_pct=5, window_s=60, webhook=hook.url))
    with WebhookDelivery(redis_client, policy=FAST, block_ms=50) as delivery:
        entry_id = fire(redis_client, rule)
        assert wait_until(lambda: delivery.stats.delivered == 1)
        assert wait_until(lambda: pending(redis_client) == 0)
    assert hook.attempts == 3 and delivery.stats.retried == 2
    body = hook.bodies[0]
    assert (body["alert_id"], body["rule_id"], body["symbol"], body["price"]) == (entry_id, "hooked", "AAPL", 94.4)


def test_delivery_that_keeps_failing_is_recorded_and_acknowledged(redis_client: redis.Redis) -> None:
    """After max_attempts failures the alert goes to the webhook_failures stream with the error, and is acked."""
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    rule = RuleStore(redis_client).add(Rule(id="dead", symbol="AAPL", drop_pct=5, window_s=60, webhook=dead_url))
    with WebhookDelivery(redis_client, policy=FAST, block_ms=50) as delivery:
        entry_id = fire(redis_client, rule)
        assert wait_until(lambda: delivery.stats.failed == 1)
    failures = recent_failures(redis_client)
    assert [(f["alert_id"], f["rule_id"], f["url"], f["attempts"]) for f in failures] == [
        (entry_id, "dead", dead_url, str(FAST.max_attempts))
    ]
    assert "URLError" in failures[0]["error"] or "Connection" in failures[0]["error"]
    assert pending(redis_client) == 0


def test_alert_of_a_rule_without_webhook_is_acknowledged_without_a_post(redis_client: redis.Redis, endpoint) -> None:
    """Alerts whose rule has no webhook are skipped (acknowledged), and nothing is posted anywhere."""
    rule = RuleStore(redis_client).add(Rule(id="quiet", symbol="AAPL", drop_pct=5, window_s=60))
    with WebhookDelivery(redis_client, policy=FAST, block_ms=50) as delivery:
        fire(redis_client, rule)
        assert wait_until(lambda: delivery.stats.skipped == 1)
    assert pending(redis_client) == 0 and delivery.stats.delivered == 0


def test_a_restart_redelivers_what_was_in_flight(redis_client: redis.Redis, endpoint) -> None:
    """An alert still being retried when the task stops is delivered by the next task with the same consumer."""
    hook = endpoint(10**6)  # always fails while the first task runs
    patient = WebhookPolicy(max_attempts=100, first_backoff_s=0.05, max_backoff_s=0.1)
    rule = RuleStore(redis_client).add(Rule(id="later", symbol="AAPL", drop_pct=5, window_s=60, webhook=hook.url))
    with WebhookDelivery(redis_client, policy=patient, block_ms=50):
        entry_id = fire(redis_client, rule)
        assert wait_until(lambda: hook.attempts >= 2)
    assert pending(redis_client) == 1
    hook.failures = 0  # the endpoint is back
    with WebhookDelivery(redis_client, policy=patient, block_ms=50) as second:
        assert wait_until(lambda: second.stats.delivered == 1)
    assert [b["alert_id"] for b in hook.bodies] == [entry_id]


@pytest.mark.slow
def test_the_analytics_command_delivers_webhooks_of_the_alerts_it_fires(
    endpoint: Callable[[int], Endpoint], redis_client: redis.Redis, redis_server: object
) -> None:
    """`tickerdash analytics` runs the delivery task beside the worker: a slump fires and its rule's URL hears it."""
    import os
    import signal
    import subprocess
    import sys

    from tickerdash.analytics.stages.alerts.rules import make_rule

    hook = endpoint(0)
    RuleStore(redis_client, KEYS).add(make_rule("AAPL", 5, "60s", webhook=hook.url, rule_id="aapl-5"))
    env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "TICKERDASH_BLOCK_MS": "50"}  # type: ignore[attr-defined]
    worker = subprocess.Popen(
        [sys.executable, "-m", "tickerdash", "analytics", "--consumer", "hooked"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120  # the worker's imports alone take tens of seconds on a loaded machine
        while redis_client.get(KEYS.lease(ANALYTICS_GROUP, 0)) != b"hooked":
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for i, price in enumerate((100.0, 101.0, 100.2, 99.4, 98.6, 97.8, 97.0, 96.2, 95.4)):  # < 1% a trade
            redis_client.xadd(KEYS.ticks(), {"symbol": "AAPL", "price": price, "size": 10, "ts": 1_767_225_600_000 + i})
        while not hook.bodies:
            assert worker.poll() is None and time.monotonic() < deadline, "no webhook within 120 s"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err[-2000:]
    (body,) = hook.bodies
    assert body["rule_id"] == "aapl-5" and body["symbol"] == "AAPL"
    assert float(body["price"]) == 95.4 and float(body["reference_price"]) == 101.0
