/* Tickerdash live page, the panels around the chart: watchlist, alerts, anomalies, health.
 *
 * The watchlist's prices are text set in the animation frame after the update arrived (and reported to
 * window.tickerdash.onDrawn). The alerts and anomalies tables only add rows at the top, at most every
 * TABLE_GAP_MS, and not while the pointer is over them: a row must not move away from a click.
 */
(function (td) {
  "use strict";

  var state = td.state, el = td.el, fmt = td.fmt;
  var SPARK_WIDTH = 70, SPARK_HEIGHT = 20;

  function sparkline(values) {
    var svgNS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", String(SPARK_WIDTH)); svg.setAttribute("height", String(SPARK_HEIGHT));
    svg.setAttribute("class", "td-spark");
    if (values.length > 1) {
      var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values), span = (hi - lo) || 1;
      var points = values.map(function (v, i) {
        return (i * SPARK_WIDTH / (values.length - 1)).toFixed(1) + "," + (19 - (v - lo) * 18 / span).toFixed(1);
      }).join(" ");
      var line = document.createElementNS(svgNS, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", values[values.length - 1] >= values[0] ? "#26a69a" : "#ef5350");
      svg.appendChild(line);
    }
    return svg;
  }

  function watchTable(host) {
    var table = host.querySelector("table");
    if (!table) {
      table = el("table", null, "td-table td-watchlist");
      var head = el("tr");
      ["", "symbol", "last", "chg %", ""].forEach(function (h) { head.appendChild(el("th", h)); });
      table.appendChild(head);
      host.appendChild(table);
    }
    return table;
  }

  td.renderWatchlist = function () {
    // The rows of the symbols whose update (or flag, or selection) changed since the last frame.
    var host = document.getElementById("watchlist");
    if (!host) return false;
    var table = watchTable(host), now = Date.now(), added = false, drawn = [];
    state.dirtySymbols.forEach(function (symbol) {
      var entry = state.symbols.get(symbol);
      if (!entry) return;
      if (!entry.row) {
        entry.row = el("tr", null, "td-watch-row");
        entry.row.dataset.symbol = symbol;
        for (var i = 0; i < 5; i++) entry.row.appendChild(el("td"));
        entry.row.children[0].className = "td-flag";
        entry.row.addEventListener("click", function () { td.selectSymbol(symbol); });
        added = true;
      }
      var cells = entry.row.children, u = entry.update;
      cells[0].textContent = td.flagged(entry, now) ? "●" : "";
      cells[1].textContent = symbol;
      cells[2].textContent = fmt(u.price, 2);
      cells[3].textContent = (u.change_pct >= 0 ? "+" : "") + fmt(u.change_pct, 2);
      cells[3].className = u.change_pct >= 0 ? "td-up" : "td-down";
      cells[4].replaceChildren(sparkline(entry.spark));
      entry.row.classList.toggle("td-selected", symbol === state.selected);
      entry.row.title = indicatorText(u);
      if (entry.drawnTs !== u.ts) { entry.drawnTs = u.ts; drawn.push([symbol, u.price, u.ts]); }
    });
    state.dirtySymbols.clear();
    if (added) {  // keep rows in symbol order (new symbols may arrive at any time)
      Array.from(state.symbols.keys()).sort().forEach(function (symbol) { table.appendChild(state.symbols.get(symbol).row); });
    }
    drawn.forEach(function (d) { td.drawn("watchlist", d[0], d[1], d[2]); });
    return true;
  };

  td.refreshFlags = function () {
    // Flags clear when their events age, without any new update to redraw the row.
    var now = Date.now();
    state.symbols.forEach(function (entry) {
      if (entry.row) entry.row.children[0].textContent = td.flagged(entry, now) ? "●" : "";
    });
  };

  function indicatorText(update) {
    // The worker's per-trade indicators of a symbol (names as it sends them), e.g. "sma_20 187.21 · vwap_1m 187.30".
    var indicators = update.indicators || {};
    return Object.keys(indicators).map(function (name) { return name + " " + fmt(indicators[name], 2); }).join(" · ");
  }

  td.renderIndicators = function () {
    // The selected symbol's live indicators, in a line above the chart.
    var host = document.getElementById("price-chart");
    if (!host) return;
    var line = host.querySelector(".td-indicators");
    if (!line) { line = el("div", null, "td-indicators"); host.insertBefore(line, host.firstChild); }
    var entry = state.selected ? state.symbols.get(state.selected) : null;
    var text = entry ? indicatorText(entry.update) : "";
    line.textContent = text ? state.selected + " per trade: " + text : "";
  };

  // ---- alerts and anomalies: rows added at the top, never under the pointer -------------------------

  // A touch screen keeps :hover on the last row tapped: there, the tables never wait.
  var canHover = !(window.matchMedia && window.matchMedia("(hover: none)").matches);

  function pointerOver(node) {
    var panel = node && node.closest(".td-panel");
    return !!(canHover && panel && panel.matches(":hover"));
  }

  function prependRows(host, events, rowsOf, makeRow) {
    // The events not shown yet (they are newest first) go above the others; the oldest beyond MAX_FEED go.
    var fresh = [];
    for (var i = 0; i < events.length && !rowsOf.has(events[i].id); i++) fresh.push(events[i]);
    var rows = fresh.map(function (event) { var row = makeRow(event); row.dataset.id = event.id; rowsOf.set(event.id, row); return row; });
    var first = host.querySelector("[data-id]");
    rows.forEach(function (row) { host.insertBefore(row, first); });
    var shown = host.querySelectorAll("[data-id]");
    for (var k = td.MAX_FEED; k < shown.length; k++) { rowsOf.delete(shown[k].dataset.id); shown[k].remove(); }
  }

  var alertRows = new Map(), anomalyRows = new Map();

  td.renderAlerts = function () {
    var feed = document.getElementById("alerts-feed");
    if (!feed) return true;
    if (pointerOver(feed)) return false;
    prependRows(feed, state.alerts, alertRows, function (alert) {
      var message = alert.message || ("-" + fmt(alert.drop_pct, 1) + "%");
      var item = el("li", null, "td-alert");
      item.title = td.clock(alert.ts) + " " + alert.symbol + ": " + message;
      item.appendChild(el("span", td.clock(alert.ts), "td-time"));
      item.appendChild(el("span", alert.symbol, "td-symbol"));
      item.appendChild(el("span", message, "td-message"));
      item.addEventListener("click", function () { td.focusEvent(alert.symbol, alert.ts, alert.price); });
      return item;
    });
    return true;
  };

  function cellText(name, value, numbers) {  // one event field as table text, by its kind in the contract
    if (name === "ts") return td.clock(value);
    if (name === "reasons") return td.reasonsText(value);
    return numbers.indexOf(name) >= 0 ? fmt(value, 2) : value;
  }

  function anomalyTable(host, columns) {
    var table = host.querySelector("table");
    if (table && table.dataset.columns === columns.join(",")) return table;
    anomalyRows.clear();
    table = el("table", null, "td-table td-anomalies");
    table.dataset.columns = columns.join(",");
    var colgroup = el("colgroup"), head = el("tr", null, "td-head");
    columns.forEach(function (name) {
      colgroup.appendChild(el("col", null, "td-col-" + name));
      head.appendChild(el("th", name === "ts" ? "time" : name));
    });
    table.appendChild(colgroup);
    var body = el("tbody");
    body.appendChild(head);
    table.appendChild(body);
    host.replaceChildren(table);
    return table;
  }

  td.renderAnomalies = function () {
    var host = document.getElementById("anomalies-table");
    if (!host) return true;
    if (pointerOver(host)) return false;
    var spec = state.fields.anomalies, body = anomalyTable(host, spec.table).tBodies[0];
    prependRows(body, state.anomalies, anomalyRows, function (anomaly) {
      var row = el("tr", null, "td-anomaly-row");
      row.dataset.score = String(anomaly.score);
      spec.table.forEach(function (name) {
        var text = cellText(name, anomaly[name], spec.numbers), cell = el("td", text);
        cell.title = String(text);
        row.appendChild(cell);
      });
      row.addEventListener("click", function () { td.focusEvent(anomaly.symbol, anomaly.ts, anomaly.price); });
      return row;
    });
    anomalyRows.forEach(function (row) {  // rows below the chart's threshold are shown faint
      row.classList.toggle("td-below-threshold", !td.anomalyShown(Number(row.dataset.score)));
    });
    return true;
  };

  td.renderHealth = function () {
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
    if (h.owners) {  // which worker owns which partitions
      var owned = Object.keys(h.owners).sort().map(function (name) { return name + ": " + h.owners[name].join(","); });
      if (h.unowned && h.unowned.length) owned.push("none: " + h.unowned.join(","));
      items.push(["partitions", owned.join(" · ") || "–"]);
    }
    if (h.nodes) {  // on a Redis Cluster: which node serves which partitions
      var served = Object.keys(h.nodes).sort().map(function (name) { return name + ": " + h.nodes[name].join(","); });
      items.push(["nodes", served.join(" · ") || "–"]);
    }
    // plain words for what went wrong, first in the strip: ticks lost to trimming, a producer held back
    if (h.lost) items.unshift(["lost", fmt(h.lost, 0) + " entries trimmed before any worker read them"]);
    if (h.producer_waiting) items.unshift(["waiting", h.producer_waiting]);
    host.replaceChildren.apply(host, items.map(function (item) {
      var span = el("span", null, "td-health-item");
      span.appendChild(el("b", item[0] + " "));
      span.appendChild(document.createTextNode(String(item[1])));
      return span;
    }));
  };
})(window.tickerdash);
