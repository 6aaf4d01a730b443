"""What is on the page. Live parts (watchlist, feeds, health, status) are empty containers here:
assets/tickerdash-*.js fill them from the gateway's websocket, as text nodes, never as HTML.
"""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from tickerdash.dashboard.downloads import FORMATS as EXPORT_FORMATS
from tickerdash.dashboard.downloads import INCLUDES as EXPORT_INCLUDES
from tickerdash.dashboard.downloads import INTERVALS as EXPORT_INTERVALS
from tickerdash.dashboard.figures import OVERLAY_LABELS, OVERLAYS, STYLES

CHART_INTERVALS = ("1s", "1m")
# The anomaly markers the chart shows: those scoring at least this (anomaly scores are in [0, 1)).
ANOMALY_THRESHOLDS = ("0.5", "0.6", "0.7", "0.8", "0.9")
DEFAULT_ANOMALY_THRESHOLD = "0.6"

RULE_FIELDS = (
    ("id", "id", "leave empty for a random id"),
    ("symbol", "symbol", "AAPL, or * for every symbol"),
    ("drop_pct", "drop %", "e.g. 5"),
    ("window_s", "window", "e.g. 60s, 5m"),
    ("cooldown_s", "cooldown", "empty: the window"),
    ("name", "name", "optional"),
)


def _panel(title: str, *children: Any, panel_id: str) -> html.Section:
    return html.Section([html.H3(title), *children], className="td-panel", id=panel_id)


def _rule_form() -> html.Div:
    rows = []
    for field, label, hint in RULE_FIELDS:
        rows.append(
            html.Div(
                [
                    html.Label(label, htmlFor=f"rule-{field}"),
                    dcc.Input(id=f"rule-{field}", type="text", placeholder=hint, debounce=False, className="td-input"),
                    html.Span(id=f"rule-{field}-error", className="td-field-error"),
                ],
                className="td-form-row",
            )
        )
    rows.append(
        html.Div(
            [
                dcc.Checklist(id="rule-enabled", options=[{"label": " enabled", "value": "on"}], value=["on"]),
                dcc.Checklist(
                    id="rule-include-bad-prints",
                    options=[{"label": " count bad prints (off-market trades)", "value": "on"}],
                    value=[],
                ),
                html.Button("Save rule", id="rule-save", n_clicks=0, className="td-button"),
                html.Button("Clear", id="rule-clear", n_clicks=0, className="td-button td-secondary"),
                html.Span(id="rule-form-error", className="td-field-error"),
                html.Span(id="rule-form-status", className="td-status-text"),
            ],
            className="td-form-row",
        )
    )
    return html.Div(rows, id="rule-form")


def _download_form() -> html.Div:
    def row(label: str, control: Any) -> html.Div:
        return html.Div([html.Label(label, htmlFor=control.id), control], className="td-form-row")

    return html.Div(
        [
            row(
                "symbols",
                dcc.Input(id="export-symbols", type="text", placeholder="AAPL,MSFT (empty: all)", className="td-input"),
            ),
            row(
                "interval",
                dcc.RadioItems(id="export-interval", options=list(EXPORT_INTERVALS), value="1m", inline=True),
            ),
            row(
                "start",
                dcc.Input(
                    id="export-start", type="text", placeholder="2026-11-26 or 2026-11-26T14:30", className="td-input"
                ),
            ),
            row(
                "end",
                dcc.Input(id="export-end", type="text", placeholder="empty: up to now (UTC)", className="td-input"),
            ),
            row(
                "format", dcc.RadioItems(id="export-format", options=list(EXPORT_FORMATS), value="parquet", inline=True)
            ),
            row("include", dcc.Checklist(id="export-include", options=list(EXPORT_INCLUDES), value=[], inline=True)),
            html.Div(
                [
                    html.Button("Download", id="export-button", n_clicks=0, className="td-button"),
                    html.Span(id="export-error", className="td-field-error"),
                    html.Span(id="export-status", className="td-status-text"),
                ],
                className="td-form-row",
            ),
            dcc.Download(id="export-download"),
        ],
        id="export-form",
    )


def _chart_controls() -> html.Div:
    """Interval, style and overlays (Dash controls); anomaly threshold, full range and pause belong to the script."""
    return html.Div(
        [
            dcc.RadioItems(id="chart-interval", options=list(CHART_INTERVALS), value="1s", inline=True),
            dcc.RadioItems(
                id="chart-style",
                options=[{"label": f" {style}", "value": style} for style in STYLES],
                value="candles",
                inline=True,
            ),
            dcc.Checklist(
                id="chart-overlays",
                options=[{"label": f" {OVERLAY_LABELS[o]}", "value": o} for o in OVERLAYS],
                value=list(OVERLAYS),
                inline=True,
            ),
            html.Label(
                [
                    "anomalies ",
                    html.Select(
                        [html.Option("off", value="off")]
                        + [html.Option(f"score ≥ {t}", value=t) for t in ANOMALY_THRESHOLDS],
                        id="chart-anomalies",
                        className="td-select",
                    ),
                ],
                className="td-control",
            ),
            html.Button(
                "full range",
                id="chart-full-range",
                className="td-button td-small td-toggle",
                title="show every print, off-market ones included",
            ),
            html.Button(
                "pause",
                id="chart-pause",
                className="td-button td-small td-toggle",
                title="stop the chart to inspect it",
            ),
        ],
        className="td-chart-controls",
    )


def build_layout(ws_port: int, ws_url: str | None = None) -> html.Div:
    """The whole page; `ws_port` (or an explicit `ws_url`, e.g. behind a proxy) tells the script where to connect."""
    config = {
        "data-ws-port": str(ws_port),
        "data-ws-url": ws_url or "",
        # what a shared link may ask for (the script checks the URL's query against these)
        "data-intervals": ",".join(CHART_INTERVALS),
        "data-styles": ",".join(STYLES),
        "data-thresholds": ",".join(ANOMALY_THRESHOLDS),
        "data-default-threshold": DEFAULT_ANOMALY_THRESHOLD,
    }
    return html.Div(
        [
            html.Div(id="td-config", style={"display": "none"}, **config),  # type: ignore[arg-type]
            dcc.Store(id="style-applied"),
            dcc.Store(id="interval-applied"),
            dcc.Store(id="rules-version", data=0),
            html.Header(
                [
                    html.H1("Tickerdash"),
                    html.Span("connecting…", id="connection-status", className="td-conn td-conn-connecting"),
                    html.Div(id="health-strip", className="td-health"),
                ],
                className="td-header",
            ),
            html.Div(
                [
                    _panel("Watchlist", html.Div(id="watchlist"), panel_id="watchlist-panel"),
                    html.Div(
                        [
                            _chart_controls(),
                            # open/high/low/close/volume of the bar under the pointer (or the latest bar)
                            html.Div(id="chart-readout", className="td-readout"),
                            # A plain div that no callback writes: the script plots into it and extends the
                            # traces in place, so neither a zoom nor the streamed points are redrawn away.
                            html.Div(id="price-chart", className="td-chart"),
                        ],
                        className="td-main",
                    ),
                    html.Div(
                        [
                            _panel("Alerts", html.Ol(id="alerts-feed", className="td-feed"), panel_id="alerts-panel"),
                            _panel("Anomalies", html.Div(id="anomalies-table"), panel_id="anomalies-panel"),
                        ],
                        className="td-side",
                    ),
                ],
                className="td-body",
            ),
            html.Div(
                [
                    _panel("Alert rules", html.Div(id="rules-list"), _rule_form(), panel_id="rules-panel"),
                    _panel(
                        "Downloads",
                        html.P(
                            "Bars from Redis and the archive, as `tickerdash export` writes them (UTC).",
                            className="td-muted",
                        ),
                        _download_form(),
                        panel_id="downloads-panel",
                    ),
                ],
                className="td-lower",
            ),
        ],
        className="td-page",
    )
