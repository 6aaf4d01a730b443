/* Tickerdash live page: one websocket to the gateway, Plotly.extendTraces on the price chart.
 *
 * Why this lives outside Dash's callbacks: routing streamed points through Dash's store duplicated
 * or re-applied points and froze the page at 100 msg/s (issue 7). So frames land here, are merged
 * into pending state, and a render tick (at most ~5/s, since every extendTraces redraws the whole
 * plot) applies them. Everything that came from the wire is shown with textContent, never as HTML.
 *
 * The price chart is this script's own Plotly plot in a div Dash never re-renders: a dcc.Graph
 * re-plots its stored figure after a relayout, which undid zooms made here. Each symbol/interval's
 * back-fill is fetched once (CHART_URL, a Plotly figure built by dashboard/figures.py); after that
 * only websocket frames change it.
 *
 * Overlays (moving averages, VWAP, oscillators) are computed by the analytics worker, never here: the
 * back-fill carries their values, and a live update carries each interval's latest closed bar with its
 * overlay values, which extend the overlay lines. Which lines exist, and how they look, the chart's
 * layout.meta.overlays says.
 */
(function () {
  "use strict";

  var REDRAW_GAP_MS = 200;          // ~5 redraws/s at most
  var MAX_POINTS = 3000;            // bars kept on the chart before the oldest are dropped
  var SPARK_POINTS = 60;
  var MAX_FEED = 100;
  var FRESH_MS = 60000;             // a symbol is flagged this long after an alert or anomaly
  var BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 8000;
  var CHART_URL = "/tickerdash/chart";
  var PLOT_CONFIG = {displaylogo: false, responsive: true};

  var state = {
    ws: null, attempts: 0, everConnected: false, status: "connecting",
    seq: 0, frames: 0, redraws: 0, extends: 0, reconnects: 0,
    badMessages: 0, lastBadMessage: null,  // messages that could not be read or applied
    symbols: new Map(),             // symbol -> {update, spark: [], flaggedAt, row}
    selected: null,
    lastAlertId: "0-0", lastAnomalyId: "0-0",
    alerts: [], anomalies: [],
    fields: {alerts: {fields: [], numbers: []}, anomalies: {fields: [], numbers: [], table: []}},  // from the hello
    chart: null,                    // {gd, symbol, interval, roles, overlays: [{field, overlay, trace, ...}]}
    interval: "1s", style: "candles", overlays: null,  // null: the server's default (every overlay)
    chartRequests: 0,               // bumped per back-fill fetch: a late answer for an old request is dropped
    pendingBars: [],                // bars (open or closed) for the chart, in arrival order
    pendingOverlays: [],            // [start, {field: value}] of closed bars, in arrival order
    pendingMarkers: [],             // [role, ts, price, text]
    health: {},
    dirty: {watchlist: false, alerts: false, anomalies: false, health: false},
    pendingZoom: null,
    plotting: Promise.resolve(), busy: false,
  };

  // ---- small helpers ---------------------------------------------------------------------------

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function idAfter(a, b) {  // stream IDs "ms-seq": is a after b?
    var pa = String(a).split("-"), pb = String(b).split("-");
    var ma = Number(pa[0]), mb = Number(pb[0]);
    return ma !== mb ? ma > mb : Number(pa[1] || 0) > Number(pb[1] || 0);
  }

  function clock(ts) {
    var d = new Date(Number(ts));
    return isNaN(d.getTime()) ? "" : d.toISOString().substring(11, 19);
  }

  function fmt(value, digits) {
    return (typeof value === "number" && isFinite(value)) ? value.toFixed(digits) : "–";
  }

  function selectSymbol(symbol) {
    if (!symbol || symbol === state.selected) return;
    state.selected = symbol;
    state.dirty.watchlist = true;
    loadChart();
  }

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

  function connect() {
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
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function requestGapFill(from) {
    // Bars that closed while this page was not listening come from the bar stream, via the gateway
    // (from `from`, or from the chart's last bar).
    var chart = state.chart;
    if (!chart || !chart.symbol) return;
    var xs = chart.gd.data[chart.roles.candles].x || [];
    var since = from !== undefined ? from : (xs.length ? Number(xs[xs.length - 1]) : 0);
    send({type: "bars", symbol: chart.symbol, interval: chart.interval, since: since});
  }

  function onHello(message) {
    state.seq = message.seq;
    if (message.fields) state.fields = message.fields;
    (message.snapshot || []).forEach(applyUpdate);
    addEvents(message.alerts || [], message.anomalies || []);
    if (message.health) { state.health = message.health; state.dirty.health = true; }
    if (state.everConnected) requestGapFill();
    state.everConnected = true;
    if (!state.selected && state.symbols.size) selectSymbol(Array.from(state.symbols.keys()).sort()[0]);
  }

  function onFrame(message) {
    state.frames += 1;
    var missed = message.coalesced > 1 || (state.seq && message.seq > state.seq + 1);
    state.seq = message.seq;
    (message.updates || []).forEach(applyUpdate);
    addEvents(message.alerts || [], message.anomalies || []);
    if (message.health) { state.health = message.health; state.dirty.health = true; }
    if (missed) requestGapFill();
    if (!state.selected && state.symbols.size) selectSymbol(Array.from(state.symbols.keys()).sort()[0]);
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
    if (!entry) { entry = {update: update, spark: [], flaggedAt: 0, row: null}; state.symbols.set(update.symbol, entry); }
    if (entry.update && entry.update.ts > update.ts) return;
    entry.update = update;
    entry.spark.push(update.price);
    if (entry.spark.length > SPARK_POINTS) entry.spark.shift();
    state.dirty.watchlist = true;
    var chart = state.chart;
    if (chart && update.symbol === chart.symbol && update.bars && update.bars[chart.interval]) {
      state.pendingBars.push(update.bars[chart.interval]);
    }
    var closed = chart && update.symbol === chart.symbol && update.overlays && update.overlays[chart.interval];
    if (closed) closedBar(chart, closed);
  }

  function closedBar(chart, closed) {
    // The latest closed bar's overlay values extend the lines; a count that grew by more than one says
    // bars closed in between (one live update shows only the latest): those come from the bar stream.
    var last = chart.lastClosed;
    if (last && closed.count <= last.count) return;
    if (!last) requestGapFill(chart.closedUntil === null ? 0 : chart.closedUntil + 1);  // since the back-fill
    else if (closed.count > last.count + 1) requestGapFill(last.start + 1);
    chart.lastClosed = {start: Number(closed.start), count: closed.count};
    state.pendingOverlays.push([Number(closed.start), closed]);
  }

  function addEvents(alerts, anomalies) {
    alerts.forEach(function (alert) {
      if (!idAfter(alert.id, state.lastAlertId)) return;
      state.lastAlertId = alert.id;
      state.alerts.unshift(alert);
      flag(alert.symbol);
      mark("alerts", alert.symbol, alert.ts, alert.price, alert.message || "alert");
      state.dirty.alerts = true;
    });
    anomalies.forEach(function (anomaly) {
      if (!idAfter(anomaly.id, state.lastAnomalyId)) return;
      state.lastAnomalyId = anomaly.id;
      state.anomalies.unshift(anomaly);
      flag(anomaly.symbol);
      mark("anomalies", anomaly.symbol, anomaly.ts, anomaly.price,
           "score " + fmt(anomaly.score, 2) + ": " + reasonsText(anomaly.reasons));
      state.dirty.anomalies = true;
    });
    if (state.alerts.length > MAX_FEED) state.alerts.length = MAX_FEED;
    if (state.anomalies.length > MAX_FEED) state.anomalies.length = MAX_FEED;
  }

  function cellText(name, value, numbers) {  // one event field as table text, by its kind in the contract
    if (name === "ts") return clock(value);
    if (name === "reasons") return reasonsText(value);
    return numbers.indexOf(name) >= 0 ? fmt(value, 2) : value;
  }

  function reasonsText(reasons) {
    if (Array.isArray(reasons)) return reasons.join(", ");
    var text = String(reasons === undefined ? "" : reasons);
    if (text.charAt(0) === "[") { try { return JSON.parse(text).join(", "); } catch (err) { return text; } }
    return text;
  }

  function flag(symbol) {
    var entry = state.symbols.get(symbol);
    if (entry) { entry.flaggedAt = Date.now(); state.dirty.watchlist = true; }
  }

  function mark(role, symbol, ts, price, text) {
    var chart = state.chart;
    if (chart && symbol === chart.symbol) state.pendingMarkers.push([role, ts, price, text]);
  }

  // ---- the chart -------------------------------------------------------------------------------

  function plot(operation) {
    // Plotly calls run one after another: a relayout issued during a redraw could otherwise be lost.
    state.busy = true;
    state.plotting = state.plotting.then(operation).then(
      function () { state.busy = false; },
      function (err) { state.busy = false; console.error("tickerdash chart:", err); });
  }

  function chartHost() {
    var host = document.getElementById("price-chart");
    if (!host) return null;
    var plotDiv = host.querySelector(".td-plot");
    if (!plotDiv) { plotDiv = el("div", null, "td-plot"); host.appendChild(plotDiv); }
    return plotDiv;
  }

  function loadChart() {
    // Back-fill the selected symbol at the chosen interval, then stream onto it (attachChart).
    var request = ++state.chartRequests;
    var query = "?interval=" + encodeURIComponent(state.interval) + "&style=" + encodeURIComponent(state.style) +
                (state.overlays ? "&overlays=" + encodeURIComponent(state.overlays.join(",")) : "") +
                (state.selected ? "&symbol=" + encodeURIComponent(state.selected) : "");
    fetch(CHART_URL + query, {credentials: "same-origin", cache: "no-store"})
      .then(function (response) {
        if (!response.ok) throw new Error("chart back-fill: HTTP " + response.status);
        return response.json();
      })
      .then(function (figure) {
        if (request !== state.chartRequests) return;  // the symbol or interval changed meanwhile
        plot(function () {
          var plotDiv = chartHost();
          if (!plotDiv) { setTimeout(loadChart, 100); return null; }  // the layout is not rendered yet
          if (request !== state.chartRequests) return null;
          state.chart = null;  // no bars go onto the old traces while the new ones are drawn
          return Plotly.newPlot(plotDiv, figure.data, figure.layout, PLOT_CONFIG).then(attachChart);
        });
      })
      .catch(function (err) { console.error("tickerdash chart:", err); });
  }

  function attachChart(gd) {
    // A back-filled chart is drawn: start streaming onto it.
    var meta = gd.layout.meta;
    state.chart = {gd: gd, symbol: meta.symbol, interval: meta.interval, roles: meta.roles, overlays: meta.overlays || [],
                   closedUntil: meta.closed_until === undefined ? null : meta.closed_until, lastClosed: null};
    state.pendingBars = [];
    state.pendingMarkers = [];
    state.pendingOverlays = [];
    if (meta.symbol) {
      var entry = state.symbols.get(meta.symbol);
      if (entry && entry.update.bars && entry.update.bars[meta.interval]) state.pendingBars.push(entry.update.bars[meta.interval]);
      var closed = entry && entry.update.overlays && entry.update.overlays[meta.interval];
      if (closed) closedBar(state.chart, closed);
      requestGapFill();
    }
    if (state.pendingZoom && state.pendingZoom.symbol === meta.symbol) { zoomTo(state.pendingZoom.ts); state.pendingZoom = null; }
  }

  function indexOfStart(xs, start) {
    for (var i = xs.length - 1; i >= 0 && Number(xs[i]) >= start; i--) if (Number(xs[i]) === start) return i;
    return -1;
  }

  function setAt(array, index, value) {
    if (index === array.length) array.push(value); else array[index] = value;
  }

  function applyOverlays(chart) {
    // Put each closed bar's overlay values (from the worker) on the overlay lines; true if any changed.
    var data = chart.gd.data, changed = false;
    state.pendingOverlays.forEach(function (item) {
      var start = item[0], values = item[1];
      chart.overlays.forEach(function (line) {
        var value = values[line.field];
        if (typeof value !== "number" || !isFinite(value)) return;  // not defined at this bar
        var trace = data[line.trace], xs = trace.x, at = xs.length;
        while (at > 0 && Number(xs[at - 1]) > start) at--;  // a gap's bars may come after later ones
        if (at > 0 && Number(xs[at - 1]) === start) trace.y[at - 1] = value;
        else { xs.splice(at, 0, start); trace.y.splice(at, 0, value); }
        changed = true;
      });
    });
    state.pendingOverlays = [];
    return changed;
  }

  function redrawChart() {
    var chart = state.chart;
    if (!chart || (!state.pendingBars.length && !state.pendingMarkers.length && !state.pendingOverlays.length)) return;
    trimChart(chart);
    var gd = chart.gd, data = gd.data, r = chart.roles, candles = data[r.candles];
    // Latest state per bar start wins, except that a closed bar (with its VWAP) is final.
    var byStart = new Map();
    state.pendingBars.forEach(function (bar) {
      var start = Number(bar[0]), known = byStart.get(start);
      if (!(known && known.length > 6 && bar.length <= 6)) byStart.set(start, bar);
    });
    state.pendingBars = [];
    var starts = Array.from(byStart.keys()).sort(function (a, b) { return a - b; });
    var lastX = candles.x.length ? Number(candles.x[candles.x.length - 1]) : -Infinity;
    var length = candles.x.length, appended = [], barsChanged = false;
    starts.forEach(function (start) {
      var bar = byStart.get(start), index;
      if (start > lastX) {
        index = length++;            // new bar: the candlestick gets it through extendTraces below
        appended.push(bar);
        [r.line, r.volume].forEach(function (t) { data[t].x.push(start); });
      } else {
        index = indexOfStart(candles.x, start);
        if (index < 0) return;       // between or before the chart's bars: nothing to put it on
        candles.open[index] = bar[1]; candles.high[index] = bar[2]; candles.low[index] = bar[3];
        candles.close[index] = bar[4];
      }
      setAt(data[r.line].y, index, bar[4]);
      setAt(data[r.volume].y, index, bar[5]);
      setAt(data[r.volume].customdata, index, bar.length > 6 ? bar[6] : (bar[2] + bar[3] + bar[4]) / 3);
      barsChanged = true;
    });
    var overlaid = applyOverlays(chart);
    var marked = state.pendingMarkers.length > 0;
    state.pendingMarkers.forEach(function (m) {
      var trace = data[r[m[0]]];
      trace.x.push(m[1]); trace.y.push(m[2]);
      trace.hovertext.push(String(m[3]).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"));
    });
    state.pendingMarkers = [];
    if (appended.length) {
      state.extends += 1;
      var extension = {
        x: [appended.map(function (b) { return Number(b[0]); })],
        open: [appended.map(function (b) { return b[1]; })], high: [appended.map(function (b) { return b[2]; })],
        low: [appended.map(function (b) { return b[3]; })], close: [appended.map(function (b) { return b[4]; })],
      };
      plot(function () { return Plotly.extendTraces(gd, extension, [r.candles]); });
      state.redraws += 1;
    } else if (barsChanged || marked || overlaid) {
      plot(function () { return Plotly.redraw(gd); });
      state.redraws += 1;
    }
  }

  function trimChart(chart) {
    var data = chart.gd.data, r = chart.roles;
    var extra = data[r.candles].x.length - MAX_POINTS;
    if (extra <= 0) return;
    [r.line, r.volume].forEach(function (t) { data[t].x.splice(0, extra); data[t].y.splice(0, extra); });
    data[r.volume].customdata.splice(0, extra);
    ["x", "open", "high", "low", "close"].forEach(function (k) { data[r.candles][k].splice(0, extra); });
    var first = Number(data[r.candles].x[0]);
    chart.overlays.forEach(function (line) {  // an overlay line keeps the points of the bars still shown
      var trace = data[line.trace], drop = 0;
      while (drop < trace.x.length && Number(trace.x[drop]) < first) drop++;
      trace.x.splice(0, drop); trace.y.splice(0, drop);
    });
  }

  function zoomTo(ts) {
    var chart = state.chart;
    if (!chart) return;
    var half = chart.interval === "1m" ? 30 * 60000 : 60000;
    var gd = chart.gd, range = [Number(ts) - half, Number(ts) + half], update = {};
    // Every x axis: the price axis `matches` the others (shared x), and a range set on the price axis
    // alone was back to autorange after the next streamed redraw (caught by the zoom test).
    Object.keys(gd.layout).forEach(function (key) { if (/^xaxis\d*$/.test(key)) update[key + ".range"] = range; });
    plot(function () { return Plotly.relayout(gd, update); });
  }

  // ---- the other live panels -------------------------------------------------------------------

  function sparkline(values) {
    var svgNS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", "70"); svg.setAttribute("height", "20"); svg.setAttribute("class", "td-spark");
    if (values.length > 1) {
      var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values), span = (hi - lo) || 1;
      var points = values.map(function (v, i) {
        return (i * 70 / (values.length - 1)).toFixed(1) + "," + (19 - (v - lo) * 18 / span).toFixed(1);
      }).join(" ");
      var line = document.createElementNS(svgNS, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", values[values.length - 1] >= values[0] ? "#26a69a" : "#ef5350");
      svg.appendChild(line);
    }
    return svg;
  }

  function renderWatchlist() {
    var host = document.getElementById("watchlist");
    if (!host) return;
    var table = host.querySelector("table");
    if (!table) {
      table = el("table", null, "td-table td-watchlist");
      var head = el("tr");
      ["", "symbol", "last", "chg %", ""].forEach(function (h) { head.appendChild(el("th", h)); });
      table.appendChild(head);
      host.appendChild(table);
    }
    var now = Date.now();
    Array.from(state.symbols.keys()).sort().forEach(function (symbol) {
      var entry = state.symbols.get(symbol);
      if (!entry.row) {
        entry.row = el("tr", null, "td-watch-row");
        entry.row.dataset.symbol = symbol;
        for (var i = 0; i < 5; i++) entry.row.appendChild(el("td"));
        entry.row.addEventListener("click", function () { selectSymbol(symbol); });
        table.appendChild(entry.row);
      }
      var cells = entry.row.children, u = entry.update;
      cells[0].textContent = now - entry.flaggedAt < FRESH_MS ? "●" : "";
      cells[0].className = "td-flag";
      cells[1].textContent = symbol;
      cells[2].textContent = fmt(u.price, 2);
      cells[3].textContent = (u.change_pct >= 0 ? "+" : "") + fmt(u.change_pct, 2);
      cells[3].className = u.change_pct >= 0 ? "td-up" : "td-down";
      cells[4].replaceChildren(sparkline(entry.spark));
      entry.row.classList.toggle("td-selected", symbol === state.selected);
      entry.row.title = indicatorText(u);
    });
    // keep rows in symbol order (new symbols may arrive at any time)
    Array.from(state.symbols.keys()).sort().forEach(function (symbol) { table.appendChild(state.symbols.get(symbol).row); });
  }

  function indicatorText(update) {
    // The worker's per-trade indicators of a symbol (names as it sends them), e.g. "sma_20 187.21 · vwap_1m 187.30".
    var indicators = update.indicators || {};
    return Object.keys(indicators).map(function (name) { return name + " " + fmt(indicators[name], 2); }).join(" · ");
  }

  function renderIndicators() {
    // The selected symbol's live indicators, in a line above the chart.
    var host = document.getElementById("price-chart");
    if (!host) return;
    var line = host.querySelector(".td-indicators");
    if (!line) { line = el("div", null, "td-indicators"); host.insertBefore(line, host.firstChild); }
    var entry = state.selected ? state.symbols.get(state.selected) : null;
    var text = entry ? indicatorText(entry.update) : "";
    line.textContent = text ? state.selected + " per trade: " + text : "";
  }

  function renderAlerts() {
    var feed = document.getElementById("alerts-feed");
    if (!feed) return;
    feed.replaceChildren.apply(feed, state.alerts.map(function (alert) {
      var item = el("li", null, "td-alert");
      item.appendChild(el("span", clock(alert.ts), "td-time"));
      item.appendChild(el("span", alert.symbol, "td-symbol"));
      item.appendChild(el("span", alert.message || ("-" + fmt(alert.drop_pct, 1) + "%"), "td-message"));
      return item;
    }));
  }

  function renderAnomalies() {
    var host = document.getElementById("anomalies-table");
    if (!host) return;
    var table = el("table", null, "td-table td-anomalies");
    var head = el("tr");
    var spec = state.fields.anomalies;
    spec.table.forEach(function (name) { head.appendChild(el("th", name === "ts" ? "time" : name)); });
    table.appendChild(head);
    state.anomalies.forEach(function (anomaly) {
      var row = el("tr", null, "td-anomaly-row");
      spec.table.forEach(function (name) { row.appendChild(el("td", cellText(name, anomaly[name], spec.numbers))); });
      row.addEventListener("click", function () { focusEvent(anomaly.symbol, anomaly.ts); });
      table.appendChild(row);
    });
    host.replaceChildren(table);
  }

  function focusEvent(symbol, ts) {
    if (state.chart && state.chart.symbol === symbol) { zoomTo(ts); return; }
    state.pendingZoom = {symbol: symbol, ts: ts};  // applied once the symbol's chart has loaded
    selectSymbol(symbol);
  }

  function renderHealth() {
    var host = document.getElementById("health-strip");
    if (!host) return;
    var h = state.health;
    var age = h.update_age_ms === null || h.update_age_ms === undefined ? "–" : (h.update_age_ms / 1000).toFixed(1) + "s";
    var items = [
      ["ticks/s", fmt(h.ticks_per_s, 0)], ["worker lag", (h.lag === undefined ? "–" : h.lag) + " entries"],
      ["last update", age], ["pending", h.pending === undefined ? "–" : h.pending],
      ["dead letters", h.deadletters === undefined ? "–" : h.deadletters], ["clients", h.clients === undefined ? "–" : h.clients],
      ["redis", h.redis || "–"],
    ];
    // plain words for what went wrong, first in the strip: ticks lost to trimming, a producer held back
    if (h.lost) items.unshift(["lost", fmt(h.lost, 0) + " entries trimmed before any worker read them"]);
    if (h.producer_waiting) items.unshift(["waiting", h.producer_waiting]);
    host.replaceChildren.apply(host, items.map(function (item) {
      var span = el("span", null, "td-health-item");
      span.appendChild(el("b", item[0] + " "));
      span.appendChild(document.createTextNode(String(item[1])));
      return span;
    }));
  }

  function renderTick() {
    try {
      if (state.chart && !document.body.contains(state.chart.gd)) {  // the page was re-rendered around it
        state.chart = null;
        loadChart();
      }
      if (!state.busy) redrawChart();  // a redraw still running: this tick's points wait for the next
      if (state.dirty.watchlist) { state.dirty.watchlist = false; renderWatchlist(); renderIndicators(); }
      if (state.dirty.alerts) { state.dirty.alerts = false; renderAlerts(); }
      if (state.dirty.anomalies) { state.dirty.anomalies = false; renderAnomalies(); }
      if (state.dirty.health) { state.dirty.health = false; renderHealth(); }
    } finally {
      setTimeout(renderTick, REDRAW_GAP_MS);
    }
  }

  // ---- Dash clientside callbacks ----------------------------------------------------------------

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    tickerdash: {
      applyStyle: function (style, overlays) {
        // Remembered for charts loaded later; the chart shown now is restyled in place.
        var shown = overlays || [];
        state.style = style; state.overlays = shown;
        var chart = state.chart;
        if (chart) {
          var r = chart.roles;
          var visible = [style === "candles", style === "line"], traces = [r.candles, r.line];
          chart.overlays.forEach(function (line) { visible.push(shown.indexOf(line.overlay) >= 0); traces.push(line.trace); });
          plot(function () { return Plotly.restyle(chart.gd, {visible: visible}, traces); });
        }
        return style + ":" + shown.join(",");
      },
      applyInterval: function (interval) {
        if (interval && interval !== state.interval) { state.interval = interval; loadChart(); }
        return interval;
      },
    },
  });

  window.tickerdash = {state: state, selectSymbol: selectSymbol, focusEvent: focusEvent};
  loadChart();  // the empty "waiting for the first trades" chart until a symbol is selected
  connect();
  setTimeout(renderTick, REDRAW_GAP_MS);
})();
