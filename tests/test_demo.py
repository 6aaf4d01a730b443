"""The default `tickerdash up` as a newcomer meets it: its story, its anomalies, its page on a phone.

The demo was started when the session started (tests/demo_run.py) and has run beside the suite; this
test, which runs last, reads what it did from its Redis and opens its page in Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from demo_run import DemoRun

from tickerdash.ingest.contract.alerts import decode_alert
from tickerdash.ingest.contract.anomalies import decode_anomaly
from tickerdash.ingest.contract.keys import Keys
from tickerdash.up import DEMO_SLUMP_AFTER_S, DEMO_SYMBOLS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SLUMP_S = 60.0  # the scripted slump's length (tickerdash/up.py: demo_market_args)
STORY_S = 240.0  # the demo rule must have fired within 4 minutes of start-up
PAGE_SCORE = 0.6  # the chart's default anomaly threshold: markers at or above it are drawn
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
KEYS = Keys()


@pytest.fixture(scope="module")
def story(demo_run: DemoRun) -> tuple[DemoRun, redis.Redis]:
    """The demo, once its first four minutes have passed (at once, when the suite took longer)."""
    wait = demo_run.started_at + STORY_S - time.time()
    if wait > 0:
        time.sleep(wait)  # wall time is what the demo's story is told in
    assert demo_run.process is not None and demo_run.process.poll() is None, demo_run.log()
    assert demo_run.first_trade_ms is not None, "the simulator wrote no trade: " + demo_run.log()
    return demo_run, redis.Redis.from_url(demo_run.redis.url)


def test_the_demo_rule_fires_during_the_scripted_slump_and_not_before(story: tuple[DemoRun, redis.Redis]) -> None:
    """The `demo-slump` rule (5% in 60 s) fires on the first symbol while it slumps 8% over a minute from
    2 minutes after start-up, within 4 minutes of start-up, and never before the slump."""
    demo, client = story
    assert demo.first_trade_ms is not None
    market_open = demo.first_trade_ms // 1000 * 1000  # the simulator opens its market at a whole second
    slump_from = market_open + DEMO_SLUMP_AFTER_S * 1000
    slump_to = slump_from + SLUMP_S * 1000
    fired = [decode_alert(fields) for _, fields in client.xrange(KEYS.alerts())]
    demo_alerts = [alert for alert in fired if alert.rule_id == "demo-slump"]
    assert demo_alerts, f"the demo rule never fired; alerts: {fired[:5]}"
    first = min(alert.ts for alert in demo_alerts)
    assert slump_from <= first <= slump_to, (first - market_open) / 1000
    assert first <= market_open + STORY_S * 1000
    assert all(alert.ts >= slump_from for alert in demo_alerts)  # nothing fired it before the slump
    assert demo_alerts[0].symbol == DEMO_SYMBOLS.split(",")[0]


def test_the_chart_shows_at_most_one_anomaly_per_symbol_minute(story: tuple[DemoRun, redis.Redis]) -> None:
    """Suspicious episodes are rare and flags calibrated: on average at most one marker at the chart's
    default threshold per symbol and minute of the demo, and the demo flags something."""
    demo, client = story
    anomalies = [decode_anomaly(fields) for _, fields in client.xrange(KEYS.anomalies())]
    minutes = (time.time() - demo.started_at) / 60.0
    shown = [anomaly for anomaly in anomalies if anomaly.score >= PAGE_SCORE]
    symbols = len(DEMO_SYMBOLS.split(","))
    assert anomalies, "no anomaly in the whole demo: the scorer flags nothing"
    assert len(shown) / (symbols * minutes) <= 1.0, (len(shown), len(anomalies), minutes)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_phone_view_has_every_panel_and_no_sideways_scroll(
    story: tuple[DemoRun, redis.Redis], chromium: Any
) -> None:
    """At 390x844: no horizontal scroll; the watchlist, chart, alerts (with the demo's alert) and the rule
    editor are each reachable by scrolling down; a chosen symbol survives a reload."""
    demo, _ = story
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(demo.url)
        page.wait_for_function("() => document.querySelectorAll('#watchlist tr.td-watch-row').length >= 8")
        page.wait_for_function("() => document.querySelector('#alerts-feed li')")  # the slump's alert
        width = page.evaluate("() => document.scrollingElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at 390"
        for selector in ("#watchlist", "#price-chart", "#alerts-feed", "#rule-form"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, selector
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, (selector, box)
        page.locator("#watchlist tr.td-watch-row[data-symbol='MSFT']").click()
        page.wait_for_function("() => window.tickerdash.state.selected === 'MSFT'")
        page.reload()
        page.wait_for_function("() => window.tickerdash && window.tickerdash.state.chart")
        assert page.evaluate("() => window.tickerdash.state.selected") == "MSFT"
    finally:
        context.close()
