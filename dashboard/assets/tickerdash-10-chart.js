/* Tickerdash live page, the price chart: back-fill, streaming, the price axis, markers, focus, readout, pause.
 *
 * The price axis is set here, not by Plotly's autorange, so that an off-market print (a +/-10 % trade
 * among prices that move 0.1 %) does not flatten the chart: each bar counts with the part of its range
 * within a tolerance of the median close of its neighbours, so an isolated spike is left out while a real
 * move (which lasts more than a bar or two) is followed. Markers outside the axis are drawn at its edge as
 * arrows whose hover text gives the real price; "full range" hands the axis back to Plotly's autorange.
 * The axis only moves when the prices leave it (or it has become far too wide), so it does not jump on
 * every tick. No indicator is computed here: overlay values come from the worker.
 */
(function (td) {
  "use strict";

  var state = td.state, el = td.el;
  var MAX_POINTS = 3000;            // bars kept on the chart before the oldest are dropped
  var MAX_EVENTS = 1000;            // markers kept per kind
  var PLOT_CONFIG = {displaylogo: false, responsive: true};
  var NEIGHBOURS = 2;               // a bar is compared with the median close of itself and 2 bars either side
  var TOLERANCE_SCALES = 6;         // ...and counts within 6 typical bar ranges (or steps) of it,
  var TOLERANCE_FRACTION = 0.005;   // or within 0.5 % of it, whichever is wider
  var MARGIN = 0.08;                // of the span, above and below
  var SHRINK_FACTOR = 2;            // the axis narrows once it is this many times wider than the prices need
  var NARROW_PX = 480;              // a chart narrower than this has no legend

  function plot(operation) {
    // Plotly calls run one after another: a relayout issued during a redraw could otherwise be lost.
    state.busy = true;
    state.plotting = state.plotting.then(operation).then(
      function () { state.busy = false; },
      function (err) { state.busy = false; console.error("tickerdash chart:", err); });
    return state.plotting;
  }
  td.plot = plot;

  function chartHost() {
    var host = document.getElementById("price-chart");
    if (!host) return null;
    var plotDiv = host.querySelector(".td-plot");
    if (!plotDiv) { plotDiv = el("div", null, "td-plot"); host.appendChild(plotDiv); }
    return plotDiv;
  }

  td.loadChart = function loadChart() {
    // Back-fill the selected symbol at the chosen interval, then stream onto it (attachChart).
    var request = ++state.chartRequests;
    var query = "?interval=" + encodeURIComponent(state.interval) + "&style=" + encodeURIComponent(state.style) +
                "&theme=" + encodeURIComponent(state.theme) +
                (state.overlays ? "&overlays=" + encodeURIComponent(state.overlays.join(",")) : "") +
                (state.selected ? "&symbol=" + encodeURIComponent(state.selected) : "");
    fetch(td.CHART_URL + query, {credentials: "same-origin", cache: "no-store"})
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
          // on a phone the legend would take half the chart: the overlay checkboxes name the lines there
          if (plotDiv.clientWidth < NARROW_PX) figure.layout.showlegend = false;
          return Plotly.newPlot(plotDiv, figure.data, figure.layout, PLOT_CONFIG).then(attachChart);
        });
      })
      .catch(function (err) { console.error("tickerdash chart:", err); });
  };

  function eventsOf(trace) {  // a marker trace of the back-fill as the events it marks (its text is escaped already)
    return (trace.x || []).map(function (x, i) {
      var score = trace.customdata ? trace.customdata[i] : null;
      return {ts: Number(x), price: trace.y[i], text: trace.hovertext[i], score: typeof score === "number" ? score : null};
    });
  }

  function attachChart(gd) {
    // A back-filled chart is drawn: start streaming onto it.
    var meta = gd.layout.meta, roles = meta.roles;
    var chart = state.chart = {
      gd: gd, symbol: meta.symbol, interval: meta.interval, roles: roles, overlays: meta.overlays || [],
      closedUntil: meta.closed_until === undefined ? null : meta.closed_until, lastClosed: null,
      events: {alerts: eventsOf(gd.data[roles.alerts]), anomalies: eventsOf(gd.data[roles.anomalies])},
      focus: null, yRange: null, userY: false, forceFit: true, needsDraw: true, hoverIndex: null,
      shapes: {},                   // each marker trace's own symbol (an arrow replaces it at the axis' edge)
    };
    ["alerts", "anomalies", "focus"].forEach(function (role) { chart.shapes[role] = gd.data[roles[role]].marker.symbol; });
    state.pendingBars = [];
    state.pendingOverlays = [];
    state.pendingLatest = null;
    // newPlot dropped the listeners of the previous plot in this div
    gd.on("plotly_relayout", onRelayout);
    gd.on("plotly_hover", onHover);
    gd.on("plotly_unhover", function () { chart.hoverIndex = null; td.renderReadout(); });
    if (meta.symbol) {
      var entry = state.symbols.get(meta.symbol);
      if (entry && entry.update.bars && entry.update.bars[meta.interval]) state.pendingBars.push(entry.update.bars[meta.interval]);
      var closed = entry && entry.update.overlays && entry.update.overlays[meta.interval];
      if (closed) td.closedBar(chart, closed);
      td.requestGapFill();
    }
    td.syncControls();  // the controls are rendered by now: show the state a URL may have set
    var zoom = state.pendingZoom;
    if (zoom && zoom.symbol === meta.symbol) { state.pendingZoom = null; td.zoomTo(zoom.ts, zoom.price); }
    td.redrawChart(true);
  }

  td.requestGapFill = function (from) {
    // Bars that closed while this page was not listening come from the bar stream, via the gateway
    // (from `from`, or from the chart's last bar).
    var chart = state.chart;
    if (!chart || !chart.symbol) return;
    var xs = chart.gd.data[chart.roles.candles].x || [];
    var since = from !== undefined ? from : (xs.length ? Number(xs[xs.length - 1]) : 0);
    td.send({type: "bars", symbol: chart.symbol, interval: chart.interval, since: since});
  };

  td.closedBar = function (chart, closed) {
    // The latest closed bar's overlay values extend the lines; a count that grew by more than one says
    // bars closed in between (one live update shows only the latest): those come from the bar stream.
    var last = chart.lastClosed;
    if (last && closed.count <= last.count) return;
    if (!last) td.requestGapFill(chart.closedUntil === null ? 0 : chart.closedUntil + 1);  // since the back-fill
    else if (closed.count > last.count + 1) td.requestGapFill(last.start + 1);
    chart.lastClosed = {start: Number(closed.start), count: closed.count};
    state.pendingOverlays.push([Number(closed.start), closed]);
  };

  td.markEvent = function (role, symbol, event) {
    var chart = state.chart;
    if (!chart || symbol !== chart.symbol) return;
    var events = chart.events[role];
    events.push({ts: Number(event.ts), price: event.price, text: td.escapeHtml(event.text), score: event.score});
    if (events.length > MAX_EVENTS) events.shift();
    if (!state.paused) chart.needsDraw = true;  // paused: drawn with everything else on resume
  };

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

  function applyBars(chart) {
    // Latest state per bar start wins, except that a closed bar (with its VWAP) is final. Returns the new bars
    // (for extendTraces) and whether any bar changed.
    var data = chart.gd.data, r = chart.roles, candles = data[r.candles];
    var byStart = new Map();
    state.pendingBars.forEach(function (bar) {
      var start = Number(bar[0]), known = byStart.get(start);
      if (!(known && known.length > 6 && bar.length <= 6)) byStart.set(start, bar);
    });
    state.pendingBars = [];
    var starts = Array.from(byStart.keys()).sort(function (a, b) { return a - b; });
    var lastX = candles.x.length ? Number(candles.x[candles.x.length - 1]) : -Infinity;
    var length = candles.x.length, appended = [], changed = false;
    starts.forEach(function (start) {
      var bar = byStart.get(start), index;
      if (start > lastX) {
        index = length++;            // new bar: the candlestick gets it through extendTraces
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
      changed = true;
    });
    return {appended: appended, changed: changed};
  }

  td.redrawChart = function (layoutOnly) {
    // Streamed bars, overlay values and markers onto the plot, the price axis fitted, in one Plotly call.
    // Paused, streamed data waits in the pending lists; a zoom or a threshold change is still drawn.
    var chart = state.chart;
    if (!chart || state.busy) return;
    var streaming = !state.paused && !layoutOnly;
    var streamed = streaming && (state.pendingBars.length > 0 || state.pendingOverlays.length > 0);
    if (!streamed && !chart.needsDraw) return;
    chart.needsDraw = false;
    var gd = chart.gd, bars = {appended: [], changed: false}, latest = null;
    if (streaming) {
      trimChart(chart);
      bars = applyBars(chart);
      applyOverlays(chart);
      latest = state.pendingLatest;
      state.pendingLatest = null;
    }
    fitPriceAxis(chart);
    placeAllMarkers(chart);
    var operation;
    if (bars.appended.length) {
      state.extends += 1;
      var appended = bars.appended;
      var extension = {
        x: [appended.map(function (b) { return Number(b[0]); })],
        open: [appended.map(function (b) { return b[1]; })], high: [appended.map(function (b) { return b[2]; })],
        low: [appended.map(function (b) { return b[3]; })], close: [appended.map(function (b) { return b[4]; })],
      };
      operation = function () { return Plotly.extendTraces(gd, extension, [chart.roles.candles]); };
    } else {
      operation = function () { return Plotly.redraw(gd); };
    }
    state.redraws += 1;
    plot(operation).then(function () {
      if (state.chart !== chart) return;
      td.renderReadout();
      if (latest) td.drawn("chart", chart.symbol, latest.price, latest.ts);
    });
  };

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
    ["alerts", "anomalies"].forEach(function (role) {
      chart.events[role] = chart.events[role].filter(function (e) { return e.ts >= first; });
    });
  }

  // ---- the price axis ------------------------------------------------------------------------------

  function median(values) {
    var sorted = values.filter(function (v) { return typeof v === "number" && isFinite(v); })
      .sort(function (a, b) { return a - b; });
    if (!sorted.length) return NaN;
    var mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  function shownWindow(gd) {  // the x range shown, in ms, or null when it follows the data
    var axis = gd.layout.xaxis;
    if (!axis || axis.autorange !== false || !Array.isArray(axis.range)) return null;
    return [td.toMs(axis.range[0]), td.toMs(axis.range[1])];
  }

  function within(candidates, floor, ceiling, fallback) {  // the first candidate between floor and ceiling
    for (var k = 0; k < candidates.length; k++) {
      var value = candidates[k];
      if (typeof value === "number" && value >= floor && value <= ceiling) return value;
    }
    return fallback;
  }

  function robustExtent(chart, window) {
    // [low, high] of the shown bars without isolated off-market prints (see the top of this file).
    var data = chart.gd.data, c = data[chart.roles.candles], xs = c.x, n = xs.length, from = 0, to = n, i;
    if (window) {
      while (from < n && Number(xs[from]) < window[0]) from++;
      to = from;
      while (to < n && Number(xs[to]) <= window[1]) to++;
    }
    if (to <= from) return null;
    var candles = state.style === "candles", ranges = [], steps = [];
    for (i = from; i < to; i++) {
      ranges.push(c.high[i] - c.low[i]);
      if (i > from) steps.push(Math.abs(c.close[i] - c.close[i - 1]));
    }
    var scale = Math.max(median(ranges) || 0, median(steps) || 0);
    var lo = Infinity, hi = -Infinity, allowed = new Map();
    for (i = from; i < to; i++) {
      var reference = median(c.close.slice(Math.max(from, i - NEIGHBOURS), Math.min(to, i + NEIGHBOURS + 1)));
      if (!isFinite(reference)) continue;
      var tolerance = Math.max(TOLERANCE_SCALES * scale, TOLERANCE_FRACTION * Math.abs(reference));
      var floor = reference - tolerance, ceiling = reference + tolerance;
      allowed.set(Number(xs[i]), [floor, ceiling]);
      // the bar's extreme if it is within the tolerance, else its body's, else the reference: a print that
      // made the wick (or the close) leaves the rest of its bar counting
      var body = [c.open[i], c.close[i]];
      var top = within(candles ? [c.high[i], Math.max.apply(null, body)] : [c.close[i]], floor, ceiling, reference);
      var bottom = within(candles ? [c.low[i], Math.min.apply(null, body)] : [c.close[i]], floor, ceiling, reference);
      lo = Math.min(lo, bottom); hi = Math.max(hi, top);
    }
    chart.overlays.forEach(function (line) {  // shown price-panel lines, where they stay near the prices
      var trace = data[line.trace];
      if (line.panel !== "price" || trace.visible === false || trace.visible === "legendonly") return;
      for (var k = 0; k < trace.x.length; k++) {
        var bounds = allowed.get(Number(trace.x[k])), value = trace.y[k];
        if (!bounds || typeof value !== "number" || value < bounds[0] || value > bounds[1]) continue;
        lo = Math.min(lo, value); hi = Math.max(hi, value);
      }
    });
    return isFinite(lo) && isFinite(hi) ? [lo, hi] : null;
  }

  function fitPriceAxis(chart) {
    var axis = chart.gd.layout.yaxis;
    if (state.fullRange) { axis.autorange = true; chart.yRange = null; return; }
    if (chart.userY) return;  // the user zoomed the price axis: theirs until a double-click
    var extent = robustExtent(chart, shownWindow(chart.gd));
    if (!extent) return;
    var span = Math.max(extent[1] - extent[0], Math.abs(extent[1]) * 0.001), margin = span * MARGIN;
    var current = chart.yRange;
    var holds = current && extent[0] >= current[0] && extent[1] <= current[1] &&
                current[1] - current[0] <= SHRINK_FACTOR * (span + 2 * margin);
    if (holds && !chart.forceFit) return;
    chart.forceFit = false;
    chart.yRange = [extent[0] - margin, extent[1] + margin];
    axis.range = chart.yRange.slice();
    axis.autorange = false;
  }

  function placeMarkers(trace, events, range, base) {
    // Markers at their price, or at the axis' edge as an arrow (hover: the real price) when outside it.
    var x = [], y = [], text = [], shapes = [], edge = [];
    var inset = range ? (range[1] - range[0]) * 0.02 : 0;
    function add(ts, shown, shape, hover) { x.push(ts); y.push(shown); shapes.push(shape); text.push(hover); }
    events.forEach(function (event) {
      var price = event.price;
      if (typeof price !== "number" || !isFinite(price)) return;
      if (range && price > range[1]) edge.push([event, range[1] - inset, "arrow-up", "above the axis: "]);
      else if (range && price < range[0]) edge.push([event, range[0] + inset, "arrow-down", "below the axis: "]);
      else add(event.ts, price, base, event.text || "");
    });
    edge.forEach(function (item) {  // last: the legend shows a trace's first marker, which should be its own shape
      add(item[0].ts, item[1], item[2], item[3] + "price " + item[0].price + "<br>" + (item[0].text || ""));
    });
    trace.x = x; trace.y = y; trace.hovertext = text;
    trace.marker = Object.assign({}, trace.marker, {symbol: shapes});
  }

  function placeAllMarkers(chart) {
    var data = chart.gd.data, r = chart.roles, range = state.fullRange ? null : chart.yRange, shapes = chart.shapes;
    var anomalies = chart.events.anomalies.filter(function (e) { return td.anomalyShown(e.score); });
    placeMarkers(data[r.anomalies], anomalies, range, shapes.anomalies);
    placeMarkers(data[r.alerts], chart.events.alerts, range, shapes.alerts);
    placeMarkers(data[r.focus], chart.focus ? [chart.focus] : [], range, shapes.focus);
  }

  function onRelayout(event) {
    // Only the user relayouts (this script changes the layout in place and redraws): a new x window refits
    // the price axis to it; a zoom on the price axis is the user's until a double-click resets it.
    var chart = state.chart;
    if (!chart || !event) return;
    var keys = Object.keys(event);
    var x = keys.some(function (k) { return /^xaxis\d*\.(range|autorange)/.test(k); });
    var y = keys.some(function (k) { return /^yaxis\.(range|autorange)/.test(k); });
    if (event["yaxis.autorange"] === true) chart.userY = false;
    else if (y) chart.userY = true;
    if (x || y) { chart.forceFit = true; chart.needsDraw = true; td.redrawChart(true); }
  }

  // ---- focus on an event, hover readout -----------------------------------------------------------

  td.zoomTo = function (ts, price) {
    // A window of two minutes (1s bars) or an hour (1m) around the event, ringed; centred on it unless that
    // leaves the right half empty: then the window ends at the latest bar. The price axis fits the window.
    var chart = state.chart;
    if (!chart) return;
    var barMs = chart.interval === "1m" ? 60000 : 1000, half = chart.interval === "1m" ? 30 * 60000 : 60000;
    var xs = chart.gd.data[chart.roles.candles].x, at = Number(ts);
    var latestEnd = xs.length ? Number(xs[xs.length - 1]) + barMs : at + barMs;
    var end = Math.min(at + half, Math.max(latestEnd, at + barMs)), range = [end - 2 * half, end];
    var layout = chart.gd.layout;
    // Every x axis: the price axis `matches` the others (shared x), and a range set on the price axis
    // alone was back to autorange after the next streamed redraw (caught by the zoom test).
    Object.keys(layout).forEach(function (key) {
      if (/^xaxis\d*$/.test(key)) { layout[key].range = range.slice(); layout[key].autorange = false; }
    });
    chart.focus = typeof price === "number" && isFinite(price) ? {ts: at, price: price, text: "selected"} : null;
    chart.userY = false;
    chart.forceFit = true;
    chart.needsDraw = true;
    td.redrawChart(true);
  };

  td.focusEvent = function (symbol, ts, price) {
    var chart = state.chart;
    if (chart && chart.symbol === symbol && chart.interval === state.interval) { td.zoomTo(ts, price); return; }
    state.pendingZoom = {symbol: symbol, ts: ts, price: price};  // applied once the symbol's chart has loaded
    if (symbol === state.selected) td.loadChart(); else td.selectSymbol(symbol);
  };

  function onHover(event) {
    var chart = state.chart;
    if (!chart || !event || !event.points || !event.points.length) return;
    var r = chart.roles, bars = [r.candles, r.line, r.volume];
    var point = event.points.filter(function (p) { return bars.indexOf(p.curveNumber) >= 0; })[0];
    if (point) chart.hoverIndex = point.pointNumber;
    else {  // a marker or an overlay: the bar at or before its time
      var xs = chart.gd.data[r.candles].x, at = td.toMs(event.points[0].x), i = xs.length - 1;
      while (i > 0 && Number(xs[i]) > at) i--;
      chart.hoverIndex = i;
    }
    td.renderReadout();
  }

  function volumeText(value) {
    return typeof value === "number" && isFinite(value) ? Math.round(value).toLocaleString("en-US") : "–";
  }

  td.renderReadout = function () {
    // Open/high/low/close/volume of the bar under the pointer, else of the latest bar.
    var chart = state.chart, node = document.getElementById("chart-readout");
    if (!node) return;
    if (!chart || !chart.symbol) { node.textContent = ""; return; }
    var c = chart.gd.data[chart.roles.candles], volume = chart.gd.data[chart.roles.volume], n = c.x.length;
    var hovered = chart.hoverIndex !== null && chart.hoverIndex < n, i = hovered ? chart.hoverIndex : n - 1;
    if (i < 0) { node.textContent = chart.symbol + ": no bars yet"; return; }
    var fmt = td.fmt;
    state.readout = {index: i, hovered: hovered};
    node.textContent = chart.symbol + " " + chart.interval + " " + td.clock(c.x[i]) + (hovered ? "" : " (latest)") +
      "   O " + fmt(c.open[i], 2) + "  H " + fmt(c.high[i], 2) + "  L " + fmt(c.low[i], 2) + "  C " + fmt(c.close[i], 2) +
      "  V " + volumeText(volume.y[i]);
  };

  // ---- the page's chart controls ------------------------------------------------------------------

  td.setThreshold = function (threshold) {
    state.threshold = threshold;
    td.writeUrl();
    if (state.chart) { state.chart.needsDraw = true; td.redrawChart(true); }
    state.symbols.forEach(function (entry, symbol) { state.dirtySymbols.add(symbol); });  // flags depend on it
    state.dirty.watchlist = true;
    state.dirty.anomalies = true;
    td.requestFrame();
  };

  td.setFullRange = function (on) {
    state.fullRange = on;
    var chart = state.chart;
    if (chart) { chart.userY = false; chart.forceFit = true; chart.needsDraw = true; td.redrawChart(true); }
  };

  td.setPaused = function (paused) {
    // Paused, streamed bars wait in state.pendingBars and the chart stands still; resuming draws them all.
    state.paused = paused;
    if (!paused && state.chart) { state.chart.needsDraw = true; td.redrawChart(); }
  };

  td.restyle = function (style, shown) {
    // Style and overlays change trace visibility in place, keeping the streamed points.
    var chart = state.chart;
    if (!chart) return;
    var r = chart.roles, visible = [style === "candles", style === "line"], traces = [r.candles, r.line];
    chart.overlays.forEach(function (line) { visible.push(shown.indexOf(line.overlay) >= 0); traces.push(line.trace); });
    plot(function () { return Plotly.restyle(chart.gd, {visible: visible}, traces); });
    chart.forceFit = true;  // candles count their wicks, a line its closes
    chart.needsDraw = true;
  };
})(window.tickerdash);
