"""The Dash app: layout, callbacks and the token guard on its Flask server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dash
import flask
import redis

from dashboard import callbacks
from dashboard.auth import TOKEN_COOKIE, TOKEN_QUERY, presented_token, token_accepted
from dashboard.layout import build_layout
from ingest.keys import Keys
from ingest.settings import Settings

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"


def create_app(client: redis.Redis, keys: Keys, settings: Settings, *, ws_port: int, ws_url: str | None = None,
               token: str | None = None) -> dash.Dash:  # fmt: skip
    """The dashboard as a Dash app whose Flask server checks the token (when set) on every request."""
    app = dash.Dash(__name__, title="Tickerdash", assets_folder=str(ASSETS), serve_locally=True,
                    update_title="")  # fmt: skip
    app.layout = build_layout(ws_port, ws_url)
    callbacks.register(app, client, keys, settings)
    if token is not None:
        _guard(app.server, token)
    return app


def _guard(server: flask.Flask, token: str) -> None:
    @server.before_request
    def _require_token() -> Any:
        request = flask.request
        presented = presented_token(request.query_string.decode(), request.headers.get("Cookie"),
                                    request.headers.get("Authorization"))  # fmt: skip
        if not token_accepted(token, presented):
            return flask.Response("a valid token is required: open the dashboard with ?token=...\n", status=401,
                                  mimetype="text/plain")  # fmt: skip
        if TOKEN_QUERY in request.args:
            # Swap the token in the address bar for a cookie: it then stays out of history and logs,
            # and the browser sends it to the gateway's handshake too (cookies ignore ports).
            response = flask.redirect(request.path, code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict",
                                secure=request.scheme == "https")  # fmt: skip
            return response
        return None
