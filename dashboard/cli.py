"""`tickerdash dashboard`: the web app and the websocket push server in one process."""

from __future__ import annotations

import logging

import typer

from tickerdash.dashboard.auth import TokenRequiredError
from tickerdash.ingest.clikit import fail, freeze_import_objects, load_settings
from tickerdash.ingest.contract.keys import Keys

log = logging.getLogger(__name__)


def dashboard(
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8050, min=0, max=65535, help="HTTP port of the web app."),
    ws_port: int = typer.Option(8051, min=0, max=65535, help="Port of the websocket push server."),
    ws_url: str | None = typer.Option(None, help="Websocket URL the page should use (behind a proxy)."),
    token: str | None = typer.Option(
        None,
        envvar="TICKERDASH_TOKEN",
        show_default=False,
        help="Token checked on every request and websocket (env TICKERDASH_TOKEN); 16+ characters off loopback.",
    ),
    allowed_hosts: str | None = typer.Option(
        None,
        envvar="TICKERDASH_ALLOWED_HOSTS",
        show_default=False,
        help="Comma-separated host names the dashboard is reached by, besides loopback, the bound address and IP "
        "addresses (env TICKERDASH_ALLOWED_HOSTS).",
    ),
) -> None:
    """Serve the live dashboard: charts pushed over websockets, alerts, anomalies, rule editor, health.

    Examples: `tickerdash dashboard` (http://127.0.0.1:8050/);
    `tickerdash dashboard --host 0.0.0.0 --token "$(openssl rand -hex 16)"`.
    """
    from tickerdash.dashboard.server import (
        DashboardServer,
    )  # dash, plotly, pandas: only the command that serves loads them
    from tickerdash.ingest.redis_server import redis_url

    settings = load_settings()
    with redis_url(settings) as url:
        try:
            server = DashboardServer(
                url,
                Keys(settings.prefix, settings.partitions),
                host=host,
                port=port,
                ws_port=ws_port,
                token=token,
                ws_url=ws_url,
                analytics_group=settings.group,
                settings=settings,
                public_names=allowed_hosts,
            )
        except TokenRequiredError as exc:
            fail(str(exc))
        try:
            server.start(background=False)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}/{ws_port}: {exc}")
        typer.echo(f"Tickerdash dashboard: {server.url}")
        freeze_import_objects()  # the app is built: its imports are all loaded
        try:
            server.serve_forever()
        finally:
            server.stop()


def register(app: typer.Typer) -> None:
    """Add the `dashboard` command to a typer app."""
    app.command("dashboard")(dashboard)
