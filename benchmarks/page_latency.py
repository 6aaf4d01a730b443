"""Freshness in a real browser: from a trade's XADD to its price on the page, at the demo's rate.

Run: .venv/bin/python -m benchmarks.page_latency [--seconds 30] [--rate 200]. Prints figures, asserts
nothing. The system runs as `tickerdash up` runs it: an embedded Redis, `tickerdash analytics` (default
stages) and `tickerdash dashboard` as subprocesses, and headless Chromium (/usr/bin/chromium) on the page
with the first symbol selected. The publisher replays the demo market (tickerdash/up.py:
`demo_market_args`, paced on event time as `simulate --rate` paces it) and notes the wall time of each
XADD and the newest event time of the selected symbol in it.

The page calls `window.tickerdash.onDrawn(kind, symbol, price, ts)` once a new latest price is on screen
("watchlist": the watchlist's price cell; "chart": the chart's last point). A trade's freshness is the
time from its XADD to the first draw of its symbol whose event time `ts` is at least the trade's: later
trades that supersede it count as showing it. Printed: p50/p95/p99 per kind, the page's animation frames
per second and websocket frames per second; and the reference, measured in the same run: the same trades
read back by a bare XREAD subscriber (the floor any pipeline through Redis pays).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port
from tickerdash.ingest.settings import Settings
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import paced
from tickerdash.simulator.scenarios import Suspicious, from_flags
from tickerdash.up import DEMO_SUSPICIOUS_RATE, DEMO_SYMBOLS

CHROMIUM = "/usr/bin/chromium"

# Installed before the page's script runs: the animation frames the page gets.
COUNT_FRAMES = """
window.__rafs = 0;
(function count() { window.__rafs += 1; requestAnimationFrame(count); })();
"""
# Set once the page's script has run: every draw the page reports, on this machine's clock.
RECORD_DRAWS = """() => {
  window.__draws = [];
  window.tickerdash.onDrawn = function (kind, symbol, price, ts) {
    window.__draws.push([kind, symbol, Number(ts), performance.timeOrigin + performance.now()]);
  };
}"""


def percentiles(values: list[float]) -> str:
    """p50 / p95 / p99 in ms."""
    if not values:
        return "no samples"
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000.0, [50, 95, 99])
    return f"p50 {p50:7.0f} ms   p95 {p95:7.0f} ms   p99 {p99:7.0f} ms   ({len(values)} samples)"


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Until the dashboard answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Publisher(threading.Thread):
    """Replays the demo market at `rate` on the wall clock; notes (XADD wall time, newest ts of `symbol`)."""

    def __init__(self, client: redis.Redis, settings: Settings, rate: float, seconds: float, symbol: str) -> None:
        super().__init__(name="publisher", daemon=True)
        self.producer = Producer(client, settings)
        self.rate, self.seconds, self.symbol = rate, seconds, symbol
        self.sent: list[tuple[float, int]] = []
        self.trades = 0

    def run(self) -> None:
        """Publish until `seconds` have passed."""
        scenario = from_flags().model_copy(update={"suspicious": Suspicious(rate=DEMO_SUSPICIOUS_RATE)})
        config = MarketConfig(symbols=tuple(DEMO_SYMBOLS.split(",")), trades_per_s=self.rate)
        ends = time.monotonic() + self.seconds
        for ticks, _ in paced(generate(config, scenario), self.rate, event_time=True):
            if time.monotonic() > ends:
                return
            mine = ticks.ts[np.asarray(ticks.symbols)[ticks.symbol_idx] == self.symbol]
            before = time.time()
            self.producer.publish(ticks)
            self.trades += len(ticks)
            if len(mine):
                self.sent.append((before, int(mine.max())))


class BareReader(threading.Thread):
    """The reference: XREAD of the tick streams, noting when each entry arrives."""

    def __init__(self, url: str, streams: list[str]) -> None:
        super().__init__(name="bare-reader", daemon=True)
        self.client = redis.Redis.from_url(url)
        self.cursor = dict.fromkeys(streams, "$")
        self.delays: list[float] = []  # seconds from each entry's XADD (its ID's time) to its arrival here
        self.stop = threading.Event()

    def run(self) -> None:
        """Read until stopped."""
        while not self.stop.is_set():
            reply: Any = self.client.xread(self.cursor, block=200)  # type: ignore[arg-type]
            now = time.time()
            for stream, entries in reply or []:
                for entry_id, _ in entries:
                    self.cursor[stream.decode()] = entry_id.decode()
                    self.delays.append(now - int(entry_id.split(b"-")[0]) / 1000.0)


def freshness(sent: list[tuple[float, int]], draws: list[tuple[int, float]]) -> list[float]:
    """For each XADD, seconds until the first draw at or after it showing an event time >= its newest."""
    draws.sort(key=lambda d: d[1])
    out = []
    for xadd_at, newest_ts in sent:
        shown = next((at for ts, at in draws if at >= xadd_at and ts >= newest_ts), None)
        if shown is not None:
            out.append(shown - xadd_at)
    return out


def main() -> None:
    """Run the system, drive the page, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="How long to publish.")
    parser.add_argument("--rate", type=float, default=200.0, help="Session-mean trades/s (the demo's: 200).")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    symbol = DEMO_SYMBOLS.split(",")[0]
    data = Path(tempfile.mkdtemp(prefix="tickerdash-page-latency-"))
    with EmbeddedRedis(data, appendonly=False) as server:
        settings = Settings(redis_url=server.url)
        env = {**os.environ, "TICKERDASH_REDIS_URL": server.url, "TICKERDASH_DATA_DIR": str(data)}
        port, ws_port = free_port(), free_port()
        children = [
            subprocess.Popen([sys.executable, "-m", "tickerdash", "analytics"], env=env),
            subprocess.Popen(
                [sys.executable, "-m", "tickerdash", "dashboard", "--port", str(port), "--ws-port", str(ws_port)],
                env=env,
            ),
        ]
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url)
            client = redis.Redis.from_url(server.url)
            keys = Keys(settings.prefix, settings.partitions)
            reader = BareReader(server.url, [keys.ticks(p) for p in range(settings.partitions)])
            reader.start()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(COUNT_FRAMES)
                page.goto(url)
                page.wait_for_function("() => window.tickerdash && window.tickerdash.state")
                page.evaluate(RECORD_DRAWS)
                warmup = Publisher(client, settings, args.rate, 5.0, symbol)  # symbols appear, the chart loads
                warmup.start()
                page.wait_for_function("() => window.tickerdash.state.symbols.size > 0", timeout=30_000)
                page.evaluate(f"() => window.tickerdash.selectSymbol({symbol!r})")
                warmup.join()
                page.evaluate("() => { window.__draws = []; window.__rafs = 0; window.tickerdash.state.frames = 0; }")
                publisher = Publisher(client, settings, args.rate, args.seconds, symbol)
                started = time.monotonic()
                publisher.start()
                publisher.join()
                time.sleep(1.0)  # the last trades reach the page
                elapsed = time.monotonic() - started
                raw: list[list[Any]] = page.evaluate("() => window.__draws")
                rafs = page.evaluate("() => window.__rafs")
                frames = page.evaluate("() => window.tickerdash.state.frames")
                browser.close()
            reader.stop.set()
            reader.join()
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(30)
    print(
        f"page latency: demo market, {publisher.trades:,} trades in {args.seconds:g} s "
        f"({publisher.trades / args.seconds:,.0f}/s), selected symbol {symbol}",
        flush=True,
    )
    for kind in ("watchlist", "chart"):
        draws = [(int(ts), at / 1000.0) for k, s, ts, at in raw if k == kind and s == symbol]
        print(f"  XADD -> {kind:<9} {percentiles(freshness(publisher.sent, draws))}")
    print(f"  reference: XADD -> bare XREAD   {percentiles(reader.delays)}")
    print(f"  page: {rafs / elapsed:.0f} animation frames/s, {frames / elapsed:.1f} websocket frames/s")


if __name__ == "__main__":
    main()
