"""The Dash app: layout, callbacks, the price chart's data route and the guards on its Flask server.

The price chart is not a `dcc.Graph`: the page's script draws it with Plotly into a plain div that
Dash never re-renders (a dcc.Graph re-plots its stored figure after a relayout, undoing a zoom the
script made, and would wipe the streamed points). So the script fetches each chart's back-fill as a
Plotly figure from `CHART_PATH` and Plotly itself from `PLOTLY_PATH`; live data still comes only
over the gateway's websocket.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dash
import flask

from tickerdash.dashboard import callbacks, figures, history
from tickerdash.dashboard.auth import TOKEN_COOKIE, TOKEN_QUERY, allowed_hosts, presented_token, refusal, token_accepted
from tickerdash.dashboard.compression import compress_responses
from tickerdash.dashboard.gap_fill import INTERVALS
from tickerdash.dashboard.layout import build_layout
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
PLOTLY_PATH = "/tickerdash/plotly.min.js"
CHART_PATH = "/tickerdash/chart"
MAX_SYMBOL_CHARS = 64


def create_app(
    client: AnyRedis,
    keys: Keys,
    settings: Settings,
    *,
    ws_port: int,
    ws_url: str | None = None,
    token: str | None = None,
    hosts: frozenset[str] | None = None,
) -> dash.Dash:
    """The dashboard as a Dash app whose Flask server checks Host and Origin, and the token (when set), on every
    request; `hosts` are the names it answers to (dashboard.auth.allowed_hosts, loopback by default)."""
    app = dash.Dash(
        __name__,
        title="Tickerdash",
        assets_folder=str(ASSETS),
        serve_locally=True,
        update_title="",
        external_scripts=[PLOTLY_PATH],
    )
    app.layout = build_layout(ws_port, ws_url)
    callbacks.register(app, client, keys, settings)
    _chart_routes(app.server, client, keys)
    compress_responses(app.server)
    _guard_hosts(app.server, hosts if hosts is not None else allowed_hosts("127.0.0.1"))
    if token is not None:
        _guard(app.server, token)
    return app


def _chart_routes(server: flask.Flask, client: AnyRedis, keys: Keys) -> None:
    @server.route(PLOTLY_PATH)
    def plotly_js() -> flask.Response:
        response = flask.Response(_plotly_js(), mimetype="text/javascript")
        response.cache_control.max_age = 86_400  # versioned with the installed plotly package
        return response

    @server.route(CHART_PATH)
    def chart() -> flask.Response:
        """A symbol's back-filled price chart (bars, open bar, alert and anomaly markers) as Plotly JSON."""
        args = flask.request.args
        symbol, interval = args.get("symbol") or None, args.get("interval", "1s")
        style, theme = args.get("style", "candles"), args.get("theme", "light")
        overlays = [o for o in args.get("overlays", ",".join(figures.OVERLAYS)).split(",") if o in figures.OVERLAYS]
        if (
            interval not in INTERVALS
            or style not in figures.STYLES
            or theme not in figures.THEMES
            or len(symbol or "") > MAX_SYMBOL_CHARS
        ):
            return flask.Response(
                f"interval must be one of {', '.join(INTERVALS)}, style one of {', '.join(figures.STYLES)}, "
                f"theme one of {', '.join(figures.THEMES)}, symbol at most {MAX_SYMBOL_CHARS} characters\n",
                status=400,
                mimetype="text/plain",
            )
        if symbol is None:
            figure = figures.price_figure(
                figures.BarHistory(), symbol=None, interval=interval, style=style, overlays=overlays, theme=theme
            )
        else:
            bars = history.read_bars(client, keys, symbol, interval)
            bars = bars.with_open_bar(history.read_open_bar(client, keys, symbol, interval))
            figure = figures.price_figure(
                bars,
                symbol=symbol,
                interval=interval,
                style=style,
                overlays=overlays,
                alerts=history.read_alert_markers(client, keys, symbol),
                anomalies=history.read_anomaly_markers(client, keys, symbol),
                theme=theme,
            )
        response = flask.Response(figure.to_json(), mimetype="application/json")
        response.cache_control.no_store = True
        return response


@functools.cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _guard_hosts(server: flask.Flask, hosts: frozenset[str]) -> None:
    @server.before_request
    def _require_known_host() -> Any:
        headers = flask.request.headers
        refused = refusal(hosts, headers.get("Host"), headers.get("Origin"))
        if refused is not None:
            return flask.Response(refused[1], status=refused[0], mimetype="text/plain")
        return None


def _guard(server: flask.Flask, token: str) -> None:
    @server.before_request
    def _require_token() -> Any:
        request = flask.request
        presented = presented_token(
            request.query_string.decode(), request.headers.get("Cookie"), request.headers.get("Authorization")
        )
        if not token_accepted(token, presented):
            return flask.Response(
                "a valid token is required: open the dashboard with ?token=...\n", status=401, mimetype="text/plain"
            )
        if TOKEN_QUERY in request.args:
            # Swap the token in the address bar for a cookie: it then stays out of history and logs,
            # and the browser sends it to the gateway's handshake too (cookies ignore ports).
            # The rest of the query (a shared link's symbol, interval...) is kept.
            kept = [(name, value) for name, value in request.args.items(multi=True) if name != TOKEN_QUERY]
            response = flask.redirect(request.path + (f"?{urlencode(kept)}" if kept else ""), code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=request.scheme == "https")
            return response
        return None
