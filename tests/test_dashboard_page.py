"""What a user sees on the dashboard page, in a real headless Chromium over a real Redis (issue #17).

The fixtures (a real redis-server, the dashboard on free ports, a seeded history of AAPL, MSFT and NVDA)
are those of test_dashboard_browser.py; these tests cover the page's reading of the market: markers,
the price axis, the phone layout, the URL, the events tables, the watchlist's flags and the hooks.
"""

from __future__ import annotations

import gzip
import itertools
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import test_dashboard_browser as browser_tests
from tests.test_dashboard_browser import (
    CHROMIUM,
    KEYS,
    LiveFeed,
    Page,
    bar_close,
    history_end,
    last_closes,
    markers_drawn,
)
from tickerdash.dashboard.server import DashboardServer

# the browser, the seeded dashboard and a page on it: the fixtures of test_dashboard_browser.py
browser, dashboard, page = browser_tests.browser, browser_tests.dashboard, browser_tests.page
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
SYMBOLS = {"AAPL": 187.0, "MSFT": 410.0, "NVDA": 120.0}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture
def open_page(browser: Any, dashboard: DashboardServer) -> Iterator[Any]:
    """Open the dashboard with browser-context options (viewport, colour scheme...) and a URL query."""
    opened: list[Page] = []

    def open_with(query: str = "", **context: Any) -> Page:
        shown = Page(browser, dashboard.url + query, **context)
        opened.append(shown)
        return shown

    yield open_with
    for shown in opened:
        shown.close()


def add_anomaly(client: redis.Redis, symbol: str, ts: int, price: float, score: float, reasons: str = "size") -> None:
    """An anomaly entry as the anomaly stage writes it."""
    client.xadd(
        KEYS.anomalies(),
        {
            "symbol": symbol,
            "ts": ts,
            "price": price,
            "size": 250000,
            "trade_id": f"t-{ts}",
            "tick_id": "1-0",
            "score": score,
            "reasons": reasons,
        },
    )


def add_alert(client: redis.Redis, symbol: str, ts: int, price: float, message: str = "") -> None:
    """An alert entry as the alerts stage writes it."""
    client.xadd(
        KEYS.alerts(),
        {
            "rule_id": "r1",
            "symbol": symbol,
            "ts": ts,
            "price": price,
            "reference_price": price / 0.95,
            "drop_pct": 5.0,
            "window_s": 60,
            "message": message or f"{symbol} fell 5.0% in 60s",
        },
    )


def spike(client: redis.Redis, symbol: str, factor: float) -> tuple[int, float]:
    """Make one 1s bar near the end of the history an off-market print (its high and close at `factor` x the
    price); returns its start and the print's price."""
    stream = KEYS.bars("1s", symbol)
    entries = client.xrange(stream)
    entry_id, fields = entries[-6]
    close = float(fields[b"close"])
    bad = round(close * factor, 4)
    fields.update({b"high": repr(max(bad, close)).encode(), b"close": repr(bad).encode()})
    client.delete(stream)  # a stream takes no entry before its last: write it again, the print in place
    pipe = client.pipeline(transaction=False)
    for written_id, written in entries:
        pipe.xadd(stream, written, id=written_id)
    pipe.execute()
    return int(entry_id.split(b"-")[0]), bad


PRICE_AXIS = "gd._fullLayout.yaxis.range.slice()"
MARKERS = """(role) => { const chart = window.tickerdash.state.chart, t = chart.gd.data[chart.roles[role]];
  return t.x.map((x, i) => ({x: Number(x), y: t.y[i], symbol: t.marker.symbol[i], text: t.hovertext[i]})); }"""


def markers(page: Page, role: str) -> list[dict[str, Any]]:
    """The points of the chart's alerts, anomalies or focus trace as drawn (position, symbol, hover text)."""
    return list(page.page.evaluate(MARKERS, role))


def boxes(page: Page, selectors: list[str]) -> dict[str, dict[str, float]]:
    """Each selector's bounding box in page coordinates (scrolled, so below-the-fold elements count too)."""
    return dict(
        page.page.evaluate(
            """(selectors) => Object.fromEntries(selectors.map(s => { const r = document.querySelector(s)
                .getBoundingClientRect(); return [s, {x: r.left + scrollX, y: r.top + scrollY, width: r.width,
                height: r.height}]; }))""",
            selectors,
        )
    )


# -- phone and desktop layout ---------------------------------------------------------------------------

PANELS = [
    "#watchlist-panel",
    ".td-chart-controls",
    "#price-chart",
    "#alerts-panel",
    "#anomalies-panel",
    "#rules-panel",
    "#downloads-panel",
]
CONTROLS = [
    "#chart-interval",
    "#chart-style",
    "#chart-overlays",
    "#chart-anomalies",
    "#chart-full-range",
    "#chart-pause",
]
INPUTS = ["#rule-symbol", "#rule-drop_pct", "#export-symbols", "#export-start", "#export-end"]


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_every_panel_fits_the_screen_without_sideways_scrolling(open_page: Any, device: str) -> None:
    """On a 390x844 phone (touch) the panels stack in one column in reading order, nothing is wider than the
    screen, the chart's controls are on screen and the inputs keep a usable width; a desktop never scrolls
    sideways either."""
    context = PHONE if device == "phone" else DESKTOP
    width = context["viewport"]["width"]
    shown = open_page(**context)
    shown.wait_for_chart("AAPL")
    shown.page.locator("#watchlist .td-watch-row").nth(2).wait_for()
    assert shown.page.evaluate("document.scrollingElement.scrollWidth") <= width
    placed = boxes(shown, PANELS + CONTROLS + INPUTS)
    for selector, box in placed.items():
        assert box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box)
    for selector in INPUTS:
        assert placed[selector]["width"] >= 150, (selector, placed[selector])
    if device == "phone":
        tops = [placed[s]["y"] for s in PANELS]
        assert tops == sorted(tops), f"not in reading order: {dict(zip(PANELS, tops, strict=True))}"
        assert placed["#price-chart"]["y"] + placed["#price-chart"]["height"] <= placed["#alerts-panel"]["y"]
        assert placed["#anomalies-panel"]["height"] > 40  # shown, not collapsed away
    assert shown.console_errors == []


# -- anomaly markers and the price axis --------------------------------------------------------------------


def test_anomaly_markers_follow_the_threshold_and_alert_markers_are_drawn_above_them(
    page: Page, redis_client: redis.Redis
) -> None:
    """Only anomalies scoring at least the chosen threshold are marked (none when off); alert markers are a
    later trace than anomaly markers (drawn on top), and larger."""
    page.wait_for_chart("AAPL")
    now = history_end(redis_client, "AAPL")
    for ago, score in ((30_000, 0.55), (25_000, 0.65), (20_000, 0.75), (15_000, 0.95)):
        add_anomaly(redis_client, "AAPL", now - ago, bar_close(redis_client, "AAPL", now - ago), score)
    add_alert(redis_client, "AAPL", now - 10_000, bar_close(redis_client, "AAPL", now - 10_000))
    page.page.locator("#anomalies-table .td-anomaly-row").nth(3).wait_for()
    page.wait_for(lambda: markers_drawn(page, "anomalies") == 3, what="the 3 anomalies scoring 0.6 or more")
    assert page.page.locator("#chart-anomalies").input_value() == "0.6"
    page.wait_for(lambda: markers_drawn(page, "alerts") == 1, what="the alert marker")
    page.page.select_option("#chart-anomalies", "0.9")
    page.wait_for(lambda: markers_drawn(page, "anomalies") == 1, what="only the 0.95 anomaly")
    page.page.select_option("#chart-anomalies", "off")
    page.wait_for(lambda: markers_drawn(page, "anomalies") == 0, what="no anomaly marker")
    roles = page.state("gd.layout.meta.roles")
    assert roles["alerts"] > roles["anomalies"]
    sizes = page.state(
        "[gd.data[gd.layout.meta.roles.alerts].marker.size, gd.data[gd.layout.meta.roles.anomalies].marker.size]"
    )
    assert sizes[0] > sizes[1]
    assert page.console_errors == []


def test_an_off_market_print_does_not_stretch_the_price_axis_and_full_range_shows_it(
    page: Page, redis_client: redis.Redis
) -> None:
    """A +10 % print leaves the price axis on the traded prices; its anomaly marker sits at the axis' top
    edge as an up arrow whose hover text gives the real price; 'full range' then shows the print."""
    start, bad = spike(redis_client, "MSFT", 1.10)
    add_anomaly(redis_client, "MSFT", start + 500, bad, 0.97, "price 40 sigma from the 1m VWAP")
    page.page.locator(".td-watch-row[data-symbol=MSFT]").click()
    page.wait_for_chart("MSFT")
    page.wait_for(lambda: markers(page, "anomalies"), what="the print's marker")
    low, high = page.state(PRICE_AXIS)
    closes = [float(f[b"close"]) for _, f in redis_client.xrange(KEYS.bars("1s", "MSFT")) if float(f[b"close"]) != bad]
    assert low <= min(closes) and max(closes) <= high
    assert high < bad * 0.95, f"the axis ({low:.2f}-{high:.2f}) stretched towards the print at {bad}"
    (marker,) = markers(page, "anomalies")
    assert marker["symbol"] == "arrow-up" and low < marker["y"] <= high
    assert f"price {bad}" in marker["text"]
    page.page.click("#chart-full-range")
    page.wait_for(lambda: page.state(PRICE_AXIS)[1] >= bad, what="the full range")
    assert page.page.locator("#chart-full-range").get_attribute("aria-pressed") == "true"
    assert markers(page, "anomalies")[0]["y"] == bad
    page.page.click("#chart-full-range")
    page.wait_for(lambda: page.state(PRICE_AXIS)[1] < bad * 0.95, what="the robust range again")
    assert page.console_errors == []


RECORD_AXIS = """() => { window.tdAxes = [];
  window.tickerdash.onDrawn = (kind, symbol, price) => { if (kind !== 'chart') return;
    const gd = window.tickerdash.state.chart.gd;
    window.tdAxes.push({axis: gd._fullLayout.yaxis.range.slice(), price: price}); }; }"""


def test_the_price_axis_follows_streamed_prices_without_jumping_on_every_tick(
    page: Page, redis_client: redis.Redis
) -> None:
    """While prices stream, every price the chart draws is inside its axis, and the axis changes far less
    often than the chart is redrawn."""
    page.wait_for_chart("AAPL")
    page.page.evaluate(RECORD_AXIS)
    with LiveFeed(redis_client, last_closes(redis_client, tuple(SYMBOLS))):
        page.wait_for(lambda: page.page.evaluate("window.tdAxes.length") >= 30, what="30 streamed redraws")
    drawn = page.page.evaluate("window.tdAxes")
    assert all(d["axis"][0] <= d["price"] <= d["axis"][1] for d in drawn)
    changes = sum(1 for before, after in itertools.pairwise(drawn) if before["axis"] != after["axis"])
    assert changes <= len(drawn) // 4, f"the axis changed {changes} times in {len(drawn)} redraws"
    assert page.console_errors == []


# -- the URL ----------------------------------------------------------------------------------------------


def test_a_reload_or_a_shared_link_shows_the_same_chart(page: Page, open_page: Any) -> None:
    """Symbol, interval, style and anomaly threshold go into the URL; reloading it, or opening it elsewhere,
    shows the same chart with the same controls."""
    page.wait_for_chart("AAPL")
    page.page.locator(".td-watch-row[data-symbol=NVDA]").click()
    page.wait_for_chart("NVDA")
    page.page.locator("#chart-interval").get_by_label("1m").check()
    page.page.locator("#chart-style").get_by_label("line").check()
    page.page.select_option("#chart-anomalies", "0.8")
    page.wait_for(lambda: "anomalies=0.8" in page.page.url and "style=line" in page.page.url, what="the URL")
    assert "symbol=NVDA" in page.page.url and "interval=1m" in page.page.url
    page.page.reload()
    shared = open_page("?" + page.page.url.split("?", 1)[1], **DESKTOP)
    for shown in (page, shared):
        shown.wait_for(
            lambda s=shown: s.state("!!(s.chart && s.chart.symbol === 'NVDA' && s.chart.interval === '1m')"),
            what="NVDA's 1m chart",
        )
        assert shown.state(
            "[gd.data[gd.layout.meta.roles.candles].visible, gd.data[gd.layout.meta.roles.line].visible]"
        ) == [False, True]
        assert shown.page.locator("#chart-interval input[value='1m']").is_checked()
        assert shown.page.locator("#chart-style input[value='line']").is_checked()
        shown.wait_for(lambda s=shown: s.page.locator("#chart-anomalies").input_value() == "0.8", what="0.8 chosen")
        assert shown.console_errors == []


# -- screenshots for the README ----------------------------------------------------------------------------


@pytest.mark.skipif(  # read at import: conftest.py clears every TICKERDASH_* variable before a test runs
    os.environ.get("TICKERDASH_SCREENSHOTS") != "1",
    reason="writes docs/screenshots/*.png only when asked: set TICKERDASH_SCREENSHOTS=1",
)
def test_screenshots_of_the_page_for_the_readme(open_page: Any, redis_client: redis.Redis) -> None:
    """docs/screenshots/desktop-light.png, desktop-dark.png and phone.png: the page streaming, with an alert,
    anomalies and an off-market print on NVDA's chart."""
    start, bad = spike(redis_client, "NVDA", 1.10)
    now = history_end(redis_client, "NVDA")
    add_anomaly(redis_client, "NVDA", start + 400, bad, 0.97, "price 40 sigma from the 1m VWAP")
    for ago, score in ((50_000, 0.82), (33_000, 0.71), (21_000, 0.64)):
        add_anomaly(
            redis_client, "NVDA", now - ago, bar_close(redis_client, "NVDA", now - ago), score, "size 30x median"
        )
    add_alert(redis_client, "NVDA", now - 12_000, bar_close(redis_client, "NVDA", now - 12_000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {
        "desktop-light.png": DESKTOP,
        "desktop-dark.png": {**DESKTOP, "color_scheme": "dark"},
        "phone.png": {**PHONE, "device_scale_factor": 1},
    }
    with LiveFeed(redis_client, last_closes(redis_client, tuple(SYMBOLS))):
        for name, context in shots.items():
            shown = open_page("?symbol=NVDA", **context)
            shown.wait_for_chart("NVDA")
            shown.wait_for(lambda s=shown: markers_drawn(s, "alerts") == 1, what="the alert on the chart")
            redraws = shown.state("s.redraws")
            shown.wait_for(lambda s=shown, r=redraws: s.state("s.redraws") >= r + 5, what="a few streamed bars")
            shown.page.screenshot(path=str(SCREENSHOTS / name))
            assert (SCREENSHOTS / name).stat().st_size > 10_000
            assert shown.console_errors == []


# -- the events tables and the watchlist's flags ---------------------------------------------------------

LONG_REASONS = "size 40x the symbol's median, price 6 sigma from the 1m VWAP, a burst of 30 trades in 1s"


def test_the_events_tables_fit_their_panels_and_hold_still_under_the_pointer(
    page: Page, redis_client: redis.Redis
) -> None:
    """Long reasons and messages are cut to the panel's width (the whole text in the title); while the pointer
    is over the anomalies table no row is added under it, and the rows that came meanwhile appear once it leaves."""
    page.wait_for_chart("AAPL")
    now = history_end(redis_client, "AAPL")
    add_anomaly(redis_client, "AAPL", now - 9_000, bar_close(redis_client, "AAPL", now - 9_000), 0.9, LONG_REASONS)
    add_alert(redis_client, "AAPL", now - 8_000, 180.0, "AAPL fell 5.0% in 60s " + LONG_REASONS)
    rows = page.page.locator("#anomalies-table .td-anomaly-row")
    rows.first.wait_for()
    page.page.locator("#alerts-feed li").first.wait_for()
    for panel in ("#alerts-panel", "#anomalies-panel"):
        scroll, client = page.page.evaluate(
            f"[document.querySelector('{panel}').scrollWidth, document.querySelector('{panel}').clientWidth]"
        )
        assert scroll <= client, f"{panel}: {scroll} px of content in {client} px"
    assert rows.first.locator("td").last.get_attribute("title") == LONG_REASONS
    rows.first.hover()
    for ago in (7_000, 6_000):
        add_anomaly(redis_client, "AAPL", now - ago, bar_close(redis_client, "AAPL", now - ago), 0.8)
    page.wait_for(lambda: page.state("s.anomalies.length") == 3, what="the new anomalies on the page")
    ticks = page.state("s.panelTicks")
    page.wait_for(lambda: page.state("s.panelTicks") >= ticks + 2, what="two table ticks")
    assert rows.count() == 1, "rows were added under the pointer"
    page.page.mouse.move(1, 1)
    page.wait_for(lambda: rows.count() == 3, what="the waiting rows once the pointer left")
    assert page.console_errors == []


def test_a_tapped_row_does_not_hold_the_tables_on_a_touch_screen(open_page: Any, redis_client: redis.Redis) -> None:
    """On a phone a tapped anomaly row (which keeps :hover there) focuses the chart, and later rows still appear."""
    shown = open_page(**PHONE)
    shown.wait_for_chart("AAPL")
    now = history_end(redis_client, "AAPL")
    add_anomaly(redis_client, "AAPL", now - 9_000, bar_close(redis_client, "AAPL", now - 9_000), 0.9)
    rows = shown.page.locator("#anomalies-table .td-anomaly-row")
    rows.first.tap()
    shown.wait_for(lambda: markers(shown, "focus"), what="the tapped anomaly ringed")
    add_anomaly(redis_client, "AAPL", now - 5_000, bar_close(redis_client, "AAPL", now - 5_000), 0.8)
    shown.wait_for(lambda: rows.count() == 2, what="the next anomaly's row")
    assert shown.console_errors == []


def flags(page: Page) -> dict[str, str]:
    """Each watchlist row's flag cell text, by symbol."""
    return dict(
        page.page.evaluate(
            "() => Array.from(document.querySelectorAll('.td-watch-row'))"
            ".map(row => [row.dataset.symbol, row.querySelector('.td-flag').textContent])"
        )
    )


def test_the_watchlist_flags_only_fresh_events_the_chart_shows_and_clears_them(
    page: Page, redis_client: redis.Redis
) -> None:
    """An alert two minutes old and an anomaly below the chart's threshold flag nothing; a fresh alert flags its
    symbol, and the flag clears once the event is older than the freshness window."""
    page.wait_for_chart("AAPL")
    with LiveFeed(redis_client, last_closes(redis_client, tuple(SYMBOLS))):
        now = int(time.time() * 1000)
        add_alert(redis_client, "MSFT", now - 120_000, 400.0)
        add_anomaly(redis_client, "AAPL", now - 2_000, 187.0, 0.3)
        page.wait_for(lambda: page.state("s.alerts.length + s.anomalies.length") == 2, what="both events")
        frames = page.state("s.frames")
        page.wait_for(lambda: page.state("s.frames") >= frames + 3, what="three frames drawn since")
        assert set(flags(page).values()) == {""}
        add_alert(redis_client, "NVDA", int(time.time() * 1000) - 1_000, 119.0)
        page.wait_for(lambda: flags(page)["NVDA"] == "●", what="NVDA flagged")
        assert flags(page)["MSFT"] == "" and flags(page)["AAPL"] == ""
        page.page.evaluate("window.tickerdash.state.freshMs = 3000")
        page.wait_for(lambda: flags(page)["NVDA"] == "", what="the flag cleared")
    assert page.console_errors == []


# -- clicking an event -----------------------------------------------------------------------------------


def window_bars(client: redis.Redis, symbol: str, low: float, high: float) -> list[dict[bytes, bytes]]:
    """The symbol's 1s bars starting inside [low, high]."""
    return [f for entry_id, f in client.xrange(KEYS.bars("1s", symbol)) if low <= int(entry_id.split(b"-")[0]) <= high]


def test_clicking_an_alert_centres_it_ringed_with_the_price_axis_fitted_to_the_window(
    page: Page, redis_client: redis.Redis
) -> None:
    """An alert row switches to its symbol and zooms to it: centred with bars on both sides, a ring on it and
    the price axis fitted to the bars of the window; a recent anomaly's window ends at the latest bar."""
    page.wait_for_chart("AAPL")
    end = history_end(redis_client, "NVDA")
    alert_ts = end - 70_000
    alert_price = bar_close(redis_client, "NVDA", alert_ts)
    add_alert(redis_client, "NVDA", alert_ts, alert_price)
    page.page.locator("#alerts-feed li").first.click()
    page.wait_for_chart("NVDA")
    page.wait_for(lambda: markers(page, "focus"), what="the ring")
    (ring,) = markers(page, "focus")
    assert ring["x"] == alert_ts and ring["y"] == alert_price
    low, high = page.state("gd.layout.xaxis.range.map(v => window.tickerdash.toMs(v))")
    assert (low + high) / 2 == alert_ts and high - low == 120_000
    bars = window_bars(redis_client, "NVDA", low, high)
    assert any(int(float(f[b"close"]) > 0) for f in bars)
    bottom, top = min(float(f[b"low"]) for f in bars), max(float(f[b"high"]) for f in bars)
    axis_low, axis_high = page.state(PRICE_AXIS)
    assert axis_low <= bottom and top <= axis_high
    assert axis_high - axis_low <= 1.3 * (top - bottom), "the price axis is not fitted to the window"
    anomaly_ts = end - 5_000
    add_anomaly(redis_client, "NVDA", anomaly_ts, bar_close(redis_client, "NVDA", anomaly_ts), 0.9)
    page.page.locator("#anomalies-table .td-anomaly-row").first.click()
    page.wait_for(lambda: markers(page, "focus") and markers(page, "focus")[0]["x"] == anomaly_ts, what="the ring")
    low, high = page.state("gd.layout.xaxis.range.map(v => window.tickerdash.toMs(v))")
    latest = page.state("Number(gd.data[gd.layout.meta.roles.candles].x.at(-1))")
    assert low < anomaly_ts < high and latest < high <= latest + 1_000
    assert page.console_errors == []


# -- hooks and readouts -----------------------------------------------------------------------------------

# Counts animation frames, notes the frame in which each websocket message arrived, and records every
# onDrawn call with what the watchlist cell and the chart's last point show at that moment.
RECORD_DRAWN = """() => { window.tdDrawn = []; window.tdFrame = 0; window.tdMessageFrame = null;
  const count = () => { window.tdFrame += 1; requestAnimationFrame(count); };
  requestAnimationFrame(count);
  const ws = window.tickerdash.state.ws, read = ws.onmessage;
  ws.onmessage = (event) => { window.tdMessageFrame = window.tdFrame; read(event); };
  window.tickerdash.onDrawn = (kind, symbol, price, ts) => {
    const chart = window.tickerdash.state.chart;
    const cell = document.querySelector(`.td-watch-row[data-symbol="${symbol}"] td:nth-child(3)`);
    window.tdDrawn.push({kind, symbol, price, ts, cell: cell ? cell.textContent : null,
                         last: chart.gd.data[chart.roles.candles].close.at(-1),
                         frames: window.tdMessageFrame === null ? null : window.tdFrame - window.tdMessageFrame});
  }; }"""


def test_on_drawn_reports_each_new_price_once_it_is_on_the_watchlist_and_the_chart(
    page: Page, redis_client: redis.Redis
) -> None:
    """window.tickerdash.onDrawn is called with the price the watchlist cell shows (in the animation frame after
    the message that brought it), and with the price that is the chart's last point, for the live feed's updates."""
    page.wait_for_chart("AAPL")
    page.wait_for(lambda: page.state("s.status") == "live", what="live")
    assert page.page.evaluate("window.tickerdash.onDrawn") is None
    page.page.evaluate(RECORD_DRAWN)
    with LiveFeed(redis_client, last_closes(redis_client, tuple(SYMBOLS))):
        page.wait_for(
            lambda: page.page.evaluate(
                "['watchlist', 'chart'].every(k => window.tdDrawn.filter(d => d.kind === k"
                " && d.symbol === 'AAPL').length >= 5)"
            ),
            what="five prices on the watchlist and the chart",
        )
    drawn = page.page.evaluate("window.tdDrawn")
    watchlist = [d for d in drawn if d["kind"] == "watchlist"]
    chart = [d for d in drawn if d["kind"] == "chart"]
    assert {d["symbol"] for d in watchlist} == set(SYMBOLS)
    assert all(d["cell"] == f"{d['price']:.2f}" for d in watchlist)
    after_message = [d["frames"] for d in watchlist if d["frames"] is not None]  # not a message read before
    assert after_message and all(frames <= 1 for frames in after_message), after_message
    assert all(d["symbol"] == "AAPL" and d["last"] == d["price"] for d in chart)
    assert all(isinstance(d["ts"], int) and d["ts"] > 0 for d in drawn)
    assert page.console_errors == []


def test_hovering_the_chart_shows_the_bar_under_the_pointer_in_the_readout(page: Page) -> None:
    """The readout above the chart shows the latest bar, and the open, high, low, close and volume of the bar
    under the pointer while it hovers."""
    page.wait_for_chart("AAPL")
    readout = page.page.locator("#chart-readout")
    page.wait_for(lambda: "(latest)" in readout.inner_text(), what="the latest bar in the readout")
    box = page.page.locator('#price-chart .nsewdrag[data-subplot="xy"]').bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.wait_for(lambda: page.state("s.readout && s.readout.hovered"), what="the hovered bar")
    index = page.state("s.readout.index")
    assert 0 < index < page.candles() - 1
    bar = page.state(
        f"(() => {{ const c = gd.data[gd.layout.meta.roles.candles], v = gd.data[gd.layout.meta.roles.volume];"
        f" return [c.open[{index}], c.high[{index}], c.low[{index}], c.close[{index}], v.y[{index}]]; }})()"
    )
    text = readout.inner_text()
    assert "(latest)" not in text
    for label, value in zip("OHLC", bar[:4], strict=True):
        assert f"{label} {value:.2f}" in text
    assert f"V {round(bar[4]):,}" in text
    assert page.console_errors == []


def test_pause_holds_the_chart_still_and_follow_live_catches_up(page: Page, redis_client: redis.Redis) -> None:
    """Paused, streamed bars are kept but not drawn (the chart stands still); 'follow live' draws them all."""
    page.wait_for_chart("AAPL")
    pause = page.page.locator("#chart-pause")
    pause.click()
    page.wait_for(lambda: pause.inner_text() == "follow live", what="the paused button")
    candles, redraws = page.candles(), page.state("s.redraws")
    with LiveFeed(redis_client, last_closes(redis_client, tuple(SYMBOLS))):
        page.wait_for(lambda: page.state("s.pendingBars.length") >= 20, what="20 updates kept while paused")
        assert page.candles() == candles and page.state("s.redraws") == redraws
        pause.click()
        page.wait_for(lambda: page.candles() > candles, what="the kept bars drawn")
    assert pause.inner_text() == "pause"
    assert page.console_errors == []


# -- theme and weight ------------------------------------------------------------------------------------


def luminance(css_colour: str) -> float:
    """Relative brightness (0 black, 1 white) of an 'rgb(r, g, b)', '#rrggbb', 'white' or 'black' colour."""
    css_colour = {"white": "#ffffff", "black": "#000000"}.get(css_colour, css_colour)
    if css_colour.startswith("#"):
        channels = [int(css_colour[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        channels = [int(float(c)) for c in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3]]
    return (0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]) / 255


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_the_page_and_the_chart_follow_the_systems_colour_scheme(open_page: Any, scheme: str) -> None:
    """With the system dark the page's background and the chart's paper are dark; light, they are light."""
    shown = open_page(**DESKTOP, color_scheme=scheme)
    shown.wait_for_chart("AAPL")
    page_colour = shown.page.evaluate("getComputedStyle(document.body).backgroundColor")
    paper = shown.state("gd._fullLayout.paper_bgcolor")
    if scheme == "dark":
        assert luminance(page_colour) < 0.15 and luminance(paper) < 0.15, (page_colour, paper)
    else:
        assert luminance(page_colour) > 0.85 and luminance(paper) > 0.85, (page_colour, paper)
    assert shown.console_errors == []


def test_the_page_is_served_gzipped(open_page: Any, dashboard: DashboardServer) -> None:
    """Plotly's bundle (the largest asset) comes gzipped to a client that accepts it, plain to one that does not;
    a whole page load transfers far less than its 6 MB of decoded scripts."""
    plotly_url = dashboard.url + "tickerdash/plotly.min.js"
    with urllib.request.urlopen(urllib.request.Request(plotly_url, headers={"Accept-Encoding": "gzip"})) as zipped:
        assert zipped.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["Vary"]
        body = zipped.read()
    with urllib.request.urlopen(plotly_url) as plain:
        assert plain.headers.get("Content-Encoding") is None
        assert gzip.decompress(body) == plain.read()
    shown = open_page(**DESKTOP)
    shown.wait_for_chart("AAPL")
    shown.page.wait_for_load_state("networkidle")
    transferred = decoded = 0
    for request in shown.finished:
        sizes = request.sizes()
        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
        decoded += len(request.response().body())
    print(f"page load: {transferred:,} bytes transferred, {decoded:,} bytes decoded, {len(shown.finished)} requests")
    assert transferred < decoded / 2.5
    assert shown.console_errors == []
