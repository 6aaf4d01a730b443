/* Tickerdash live page, last: the page's own chart controls, Dash's clientside callbacks, the render loops, start.
 *
 * Three loops, so that nothing slow holds up what must be quick: the watchlist's text in the next animation
 * frame after an update; the chart every CHART_GAP_MS at most; the alerts and anomalies tables, the health
 * strip and the watchlist's ageing flags every TABLE_GAP_MS.
 */
(function (td) {
  "use strict";

  var state = td.state;
  var darkScheme = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var frameRequested = false, flagsRefreshedAt = 0;

  td.requestFrame = function () {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(function () {
      frameRequested = false;
      if (!state.dirty.watchlist) return;
      state.dirty.watchlist = false;
      td.renderWatchlist();
      td.renderIndicators();
    });
  };

  function chartTick() {
    try {
      if (state.chart && !document.body.contains(state.chart.gd)) {  // the page was re-rendered around it
        state.chart = null;
        td.loadChart();
      }
      td.redrawChart();  // a redraw still running: this tick's points wait for the next
    } finally {
      setTimeout(chartTick, td.CHART_GAP_MS);
    }
  }

  function panelsTick() {
    state.panelTicks += 1;
    try {
      syncControls();
      if (state.dirty.alerts) state.dirty.alerts = !td.renderAlerts();
      if (state.dirty.anomalies) state.dirty.anomalies = !td.renderAnomalies();
      if (state.dirty.health) { state.dirty.health = false; td.renderHealth(); }
      var now = Date.now();
      if (now - flagsRefreshedAt >= 1000) { flagsRefreshedAt = now; td.refreshFlags(); }
    } finally {
      setTimeout(panelsTick, td.TABLE_GAP_MS);
    }
  }

  // ---- the controls the script owns: anomaly threshold, full range, pause --------------------------

  td.syncControls = syncControls;
  function syncControls() {
    // Dash renders them; their state is the script's (and the URL's), shown here.
    var select = document.getElementById("chart-anomalies");
    var wanted = state.threshold === null ? "off" : String(state.threshold);
    if (select && select.value !== wanted && document.activeElement !== select) select.value = wanted;
    var full = document.getElementById("chart-full-range");
    if (full) full.setAttribute("aria-pressed", String(state.fullRange));
    var pause = document.getElementById("chart-pause");
    if (pause) {
      pause.setAttribute("aria-pressed", String(state.paused));
      pause.textContent = state.paused ? "follow live" : "pause";
    }
  }

  document.addEventListener("change", function (event) {
    if (event.target.id !== "chart-anomalies") return;
    var value = event.target.value;
    td.setThreshold(value === "off" ? null : Number(value));
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button") : null;
    if (!button) return;
    if (button.id === "chart-full-range") td.setFullRange(!state.fullRange);
    else if (button.id === "chart-pause") td.setPaused(!state.paused);
    else return;
    syncControls();
  });

  // ---- Dash clientside callbacks ----------------------------------------------------------------

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    tickerdash: {
      initialControls: function () {
        // The interval and style the URL asked for (Dash runs this before the two below, which take them as inputs).
        td.readConfig();
        return [state.interval, state.style];
      },
      applyStyle: function (style, overlays) {
        // Remembered for charts loaded later; the chart shown now is restyled in place.
        var shown = overlays || [];
        state.style = style; state.overlays = shown;
        td.restyle(style, shown);
        td.writeUrl();
        return style + ":" + shown.join(",");
      },
      applyInterval: function (interval) {
        if (interval && interval !== state.interval) { state.interval = interval; td.writeUrl(); td.loadChart(); }
        return interval;
      },
    },
  });

  function start() {
    if (!td.readConfig()) { setTimeout(start, 50); return; }  // the layout is not rendered yet
    state.theme = darkScheme && darkScheme.matches ? "dark" : "light";
    if (darkScheme) {
      darkScheme.addEventListener("change", function () {
        state.theme = darkScheme.matches ? "dark" : "light";
        td.loadChart();
      });
    }
    td.loadChart();  // the empty "waiting for the first trades" chart until a symbol is selected
    td.connect();
    setTimeout(chartTick, td.CHART_GAP_MS);
    setTimeout(panelsTick, td.TABLE_GAP_MS);
  }

  start();
})(window.tickerdash);
