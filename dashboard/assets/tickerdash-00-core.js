/* Tickerdash live page: one websocket to the gateway, Plotly.extendTraces on the price chart.
 *
 * The script is split by concern into assets Dash loads in name order, all adding to one namespace,
 * window.tickerdash:
 *   tickerdash-00-core.js    state, the URL's state, the websocket, alerts/anomalies bookkeeping, the onDrawn hook
 *   tickerdash-10-chart.js   the price chart: back-fill, streaming, y range, markers, focus, readout, pause
 *   tickerdash-20-panels.js  watchlist, alerts, anomalies, health
 *   tickerdash-90-start.js   the page's own controls, Dash clientside callbacks, the render loops, start
 *
 * Why this lives outside Dash's callbacks: routing streamed points through Dash's store duplicated
 * or re-applied points and froze the page at 100 msg/s. So frames land here, are merged
 * into pending state, and render loops apply them: the watchlist's text in the next animation frame,
 * the chart at most every CHART_GAP_MS (every extendTraces redraws the whole plot), the events tables
 * at most every TABLE_GAP_MS and never under the pointer. Everything that came from the wire is shown
 * with textContent, never as HTML.
 *
 * The price chart is this script's own Plotly plot in a div Dash never re-renders: a dcc.Graph
 * re-plots its stored figure after a relayout, which undid zooms made here. Each symbol/interval's
 * back-fill is fetched once (CHART_URL, a Plotly figure built by dashboard/figures.py); after that
 * only websocket frames change it. Overlays (moving averages, VWAP, oscillators) are computed by the
 * analytics worker, never here: the chart only draws the values it is sent.
 *
 * Freshness hook, for benchmarks/page_latency.py (and anyone measuring the page):
 *   window.tickerdash.onDrawn = function (kind, symbol, price, ts) { ... };   // default null
 * is called right after the page has put a new latest price on screen: kind "watchlist" once the
 * watchlist's cell shows it (in the animation frame after the websocket message), kind "chart" once the
 * chart's last point shows it (after the Plotly redraw resolved). `price` is the price shown and `ts`
 * the event time (epoch ms) of the update that carried it. An exception it throws is logged, not raised.
 */
(function () {
  "use strict";

  var td = window.tickerdash = window.tickerdash || {};

  td.CHART_GAP_MS = 100;            // the chart redraws at most ~10 times a second
  td.TABLE_GAP_MS = 500;            // the alerts and anomalies tables at most twice a second
  td.MAX_FEED = 100;
  td.CHART_URL = "/tickerdash/chart";
  var SPARK_POINTS = 60;
  var BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 8000;

  var state = td.state = {
    ws: null, attempts: 0, everConnected: false, status: "connecting",
    seq: 0, frames: 0, redraws: 0, extends: 0, reconnects: 0, panelTicks: 0,
    badMessages: 0, lastBadMessage: null,  // messages that could not be read or applied
    symbols: new Map(),             // symbol -> {update, spark: [], flags: [], row, drawnTs}
    selected: null,
    lastAlertId: "0-0", lastAnomalyId: "0-0",
    alerts: [], anomalies: [],
    fields: {alerts: {fields: [], numbers: []}, anomalies: {fields: [], numbers: [], table: []}},  // from the hello
    chart: null,                    // {gd, symbol, interval, roles, overlays, events, ...} (tickerdash-10-chart.js)
    interval: "1s", style: "candles", overlays: null,  // null: the server's default (every overlay)
    threshold: 0.6,                 // anomaly markers shown at or above this score; null: none
    paused: false, fullRange: false,
    theme: "light",
    freshMs: 60000,                 // a watchlist row is flagged this long after an alert or anomaly (event and wall time)
    chartRequests: 0,               // bumped per back-fill fetch: a late answer for an old request is dropped
    pendingBars: [],                // bars (open or closed) for the chart, in arrival order
    pendingOverlays: [],            // [start, {field: value}] of closed bars, in arrival order
    pendingLatest: null,            // {price, ts} of the newest update whose bar waits for the chart
    health: {},
    dirty: {watchlist: false, alerts: false, anomalies: false, health: false},
    dirtySymbols: new Set(),        // watchlist rows whose price changed since the last frame
    pendingZoom: null,
    plotting: Promise.resolve(), busy: false,
    config: null,                   // read once from #td-config (what the layout allows)
  };
  td.onDrawn = null;

  // ---- small helpers ---------------------------------------------------------------------------

  td.el = function (tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  };

  function idAfter(a, b) {  // stream IDs "ms-seq": is a after b?
    var pa = String(a).split("-"), pb = String(b).split("-");
    var ma = Number(pa[0]), mb = Number(pb[0]);
    return ma !== mb ? ma > mb : Number(pa[1] || 0) > Number(pb[1] || 0);
  }

  td.clock = function (ts) {
    var d = new Date(Number(ts));
    return isNaN(d.getTime()) ? "" : d.toISOString().substring(11, 19);
  };

  td.fmt = function (value, digits) {
    return (typeof value === "number" && isFinite(value)) ? value.toFixed(digits) : "–";
  };

  td.toMs = function (value) {  // a date axis value (epoch ms, or Plotly's "YYYY-MM-DD hh:mm:ss.sss" UTC) in ms
    if (typeof value === "number") return value;
    return new Date(String(value).replace(" ", "T") + (/[Zz+]/.test(String(value).slice(10)) ? "" : "Z")).getTime();
  };

  td.escapeHtml = function (text) {  // Plotly renders hover text as pseudo-HTML
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  };

  td.drawn = function (kind, symbol, price, ts) {
    var hook = td.onDrawn;
    if (typeof hook !== "function") return;
    try { hook(kind, symbol, price, ts); } catch (err) { console.warn("tickerdash.onDrawn:", err); }
  };

  // ---- settings from the layout and the URL ------------------------------------------------------

  td.readConfig = function () {
    // What the layout allows, then what the URL asks for within it (a shared link or a reload).
    if (state.config) return state.config;
    var node = document.getElementById("td-config");
    if (!node) return null;
    var data = node.dataset, list = function (text) { return String(text || "").split(",").filter(Boolean); };
    var config = state.config = {
      intervals: list(data.intervals), styles: list(data.styles), thresholds: list(data.thresholds).map(Number),
    };
    state.threshold = Number(data.defaultThreshold);
    var query = new URLSearchParams(location.search);
    var interval = query.get("interval"), style = query.get("style"), anomalies = query.get("anomalies");
    var symbol = query.get("symbol");
    if (config.intervals.indexOf(interval) >= 0) state.interval = interval;
    if (config.styles.indexOf(style) >= 0) state.style = style;
    if (anomalies === "off") state.threshold = null;
    else if (anomalies !== null && config.thresholds.indexOf(Number(anomalies)) >= 0) state.threshold = Number(anomalies);
    if (symbol && symbol.length <= 64) state.selected = symbol;
    return config;
  };

  td.writeUrl = function () {
    // replaceState: the URL always says what the page shows, without a history entry per click.
    if (!state.config) return;
    var query = new URLSearchParams(location.search);
    if (state.selected) query.set("symbol", state.selected);
    query.set("interval", state.interval);
    query.set("style", state.style);
    query.set("anomalies", state.threshold === null ? "off" : String(state.threshold));
    var search = "?" + query.toString();
    if (search !== location.search) history.replaceState(history.state, "", location.pathname + search + location.hash);
  };

  td.selectSymbol = function (symbol) {
    if (!symbol || symbol === state.selected) return;
    state.selected = symbol;
    state.dirty.watchlist = true;
    Array.from(state.symbols.keys()).forEach(function (s) { state.dirtySymbols.add(s); });
    td.requestFrame();
    td.writeUrl();
    td.loadChart();
  };

  // ---- websocket -------------------------------------------------------------------------------

  function socketUrl() {
    var config = document.getElementById("td-config");
    if (!config) return null;
    if (config.dataset.wsUrl) return config.dataset.wsUrl;
    var scheme = location.protocol === "https:" ? "wss" : "ws";
    return scheme + "://" + location.hostname + ":" + config.dataset.wsPort + "/ws";
  }

  function setStatus(status, text) {
    state.status = status;
    var node = document.getElementById("connection-status");
    if (!node) return;
    node.textContent = text || status;
    node.className = "td-conn td-conn-" + status;
  }

  td.connect = function connect() {
    var url = socketUrl();
    if (!url) { setTimeout(connect, 50); return; }  // the layout is not rendered yet
    setStatus("connecting", state.everConnected ? "reconnecting…" : "connecting…");
    var ws = new WebSocket(url);
    state.ws = ws;
    var unreadable = false;
    ws.onopen = function () {
      if (state.everConnected) state.reconnects += 1;
      setStatus("connecting", "connected, loading…");  // "live" only once the hello has been applied
    };
    ws.onmessage = function (event) {
      if (unreadable) return;
      try {
        var message = JSON.parse(event.data);
        if (message.type === "hello") { onHello(message); state.attempts = 0; setStatus("live", "live"); }
        else if (message.type === "frame") onFrame(message);
        else if (message.type === "bars") onBars(message);
      } catch (err) {
        // The page would otherwise show stale or partial data under a "live" header. Say so, and
        // reconnect: the next hello brings the whole state again.
        unreadable = true;
        state.badMessages += 1;
        state.lastBadMessage = String(err);
        console.warn("tickerdash: unreadable message from the gateway:", err);
        setStatus("error", "error: unreadable data from the gateway, reconnecting");
        ws.close();
      }
    };
    ws.onclose = function () {
      if (state.ws !== ws) return;
      state.ws = null;
      var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempts));
      delay = delay * (0.5 + Math.random() / 2);  // jitter: pages do not all come back at once
      state.attempts += 1;
      var retry = "retrying in " + Math.ceil(delay / 1000) + "s";
      if (unreadable) setStatus("error", "error: unreadable data from the gateway, " + retry);
      else setStatus("down", "disconnected, " + retry);
      setTimeout(connect, delay);
    };
  };

  td.send = function (message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  };

  function selectFirstSymbol() {
    if (!state.selected && state.symbols.size) td.selectSymbol(Array.from(state.symbols.keys()).sort()[0]);
  }

  function onHello(message) {
    state.seq = message.seq;
    if (message.fields) state.fields = message.fields;
    (message.snapshot || []).forEach(applyUpdate);
    addEvents(message.alerts || [], message.anomalies || []);
    if (message.health) { state.health = message.health; state.dirty.health = true; }
    if (state.everConnected) td.requestGapFill();
    state.everConnected = true;
    selectFirstSymbol();
  }

  function onFrame(message) {
    state.frames += 1;
    var missed = message.coalesced > 1 || (state.seq && message.seq > state.seq + 1);
    state.seq = message.seq;
    (message.updates || []).forEach(applyUpdate);
    addEvents(message.alerts || [], message.anomalies || []);
    if (message.health) { state.health = message.health; state.dirty.health = true; }
    if (missed) td.requestGapFill();
    selectFirstSymbol();
  }

  function onBars(message) {
    var chart = state.chart;
    if (!chart || message.symbol !== chart.symbol || message.interval !== chart.interval) return;
    var overlays = message.overlays || [];
    (message.bars || []).forEach(function (bar, i) {
      state.pendingBars.push(bar);
      if (overlays[i]) state.pendingOverlays.push([Number(bar[0]), overlays[i]]);
    });
    if (message.open) state.pendingBars.push(message.open);
  }

  function applyUpdate(update) {
    var entry = state.symbols.get(update.symbol);
    if (!entry) {
      entry = {update: update, spark: [], flags: [], row: null, drawnTs: null};
      state.symbols.set(update.symbol, entry);
    }
    if (entry.update && entry.update.ts > update.ts) return;
    entry.update = update;
    entry.spark.push(update.price);
    if (entry.spark.length > SPARK_POINTS) entry.spark.shift();
    state.dirty.watchlist = true;
    state.dirtySymbols.add(update.symbol);
    td.requestFrame();
    var chart = state.chart;
    if (chart && update.symbol === chart.symbol && update.bars && update.bars[chart.interval]) {
      state.pendingBars.push(update.bars[chart.interval]);
      state.pendingLatest = {price: update.price, ts: update.ts};
    }
    var closed = chart && update.symbol === chart.symbol && update.overlays && update.overlays[chart.interval];
    if (closed) td.closedBar(chart, closed);
  }
  td.applyUpdate = applyUpdate;

  // ---- alerts and anomalies ----------------------------------------------------------------------

  td.anomalyShown = function (score) {  // does the chart (and so the watchlist's flag) show an anomaly of this score?
    return state.threshold !== null && typeof score === "number" && score >= state.threshold;
  };

  function addEvents(alerts, anomalies) {
    var now = Date.now();
    alerts.forEach(function (alert) {
      if (!idAfter(alert.id, state.lastAlertId)) return;
      state.lastAlertId = alert.id;
      state.alerts.unshift(alert);
      flag(alert.symbol, alert.ts, now, null);
      td.markEvent("alerts", alert.symbol, {ts: alert.ts, price: alert.price, text: alert.message || "alert", score: null});
      state.dirty.alerts = true;
    });
    anomalies.forEach(function (anomaly) {
      if (!idAfter(anomaly.id, state.lastAnomalyId)) return;
      state.lastAnomalyId = anomaly.id;
      state.anomalies.unshift(anomaly);
      flag(anomaly.symbol, anomaly.ts, now, anomaly.score);
      td.markEvent("anomalies", anomaly.symbol, {ts: anomaly.ts, price: anomaly.price, score: anomaly.score,
        text: "score " + td.fmt(anomaly.score, 2) + ": " + td.reasonsText(anomaly.reasons)});
      state.dirty.anomalies = true;
    });
    if (state.alerts.length > td.MAX_FEED) state.alerts.length = td.MAX_FEED;
    if (state.anomalies.length > td.MAX_FEED) state.anomalies.length = td.MAX_FEED;
  }

  td.reasonsText = function (reasons) {
    if (Array.isArray(reasons)) return reasons.join(", ");
    var text = String(reasons === undefined ? "" : reasons);
    if (text.charAt(0) === "[") { try { return JSON.parse(text).join(", "); } catch (err) { return text; } }
    return text;
  };

  function flag(symbol, ts, receivedAt, score) {
    // Kept with its event time and arrival: the watchlist decides freshness (td.flagged) when it draws.
    var entry = state.symbols.get(symbol);
    if (!entry || typeof ts !== "number") return;
    entry.flags.push({ts: ts, receivedAt: receivedAt, score: score});
    if (entry.flags.length > 20) entry.flags.shift();
    state.dirty.watchlist = true;
    state.dirtySymbols.add(symbol);
  }

  td.flagged = function (entry, now) {
    // An event flags its symbol while it is fresh by both clocks: within freshMs of the symbol's latest
    // event time (a replay's or a restarted page's old events do not light up), and of its arrival here
    // (the flag clears when the feed goes quiet). An anomaly counts only if the chart shows its score.
    var marketNow = entry.update ? entry.update.ts : 0;
    entry.flags = entry.flags.filter(function (f) { return now - f.receivedAt < state.freshMs; });
    return entry.flags.some(function (f) {
      return Math.max(marketNow, f.ts) - f.ts < state.freshMs && (f.score === null || td.anomalyShown(f.score));
    });
  };
})();
