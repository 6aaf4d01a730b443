"""The `tickerdash` command: every package's commands under one roof (`tickerdash.cli` runs it)."""

from __future__ import annotations

import typer

from tickerdash.analytics.commands import evaluate
from tickerdash.analytics.commands import history as export_cli
from tickerdash.analytics.commands import worker as analytics_cli
from tickerdash.dashboard import cli as dashboard_cli
from tickerdash.ingest import cli as ingest_cli
from tickerdash.ingest import cluster_cli
from tickerdash.ingest.clikit import setup_logging
from tickerdash.simulator import cli as simulator_cli
from tickerdash.up import up

app = typer.Typer(
    name="tickerdash",
    help="Real-time stock-ticker analytics on Redis Streams. Start with `tickerdash up`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _common(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


app.command("up")(up)
for package_cli in (ingest_cli, cluster_cli, simulator_cli, analytics_cli, export_cli, evaluate, dashboard_cli):
    package_cli.register(app)
