"""The `tickerdash` command: every package's commands under one roof (`tickerdash.cli` runs it)."""

from __future__ import annotations

import typer

import analytics.cli
import analytics.evaluate
import analytics.export_cli
import dashboard.cli
import ingest.cli
import simulator.cli
from ingest.clikit import setup_logging
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
for package_cli in (ingest.cli, simulator.cli, analytics.cli, analytics.export_cli, analytics.evaluate, dashboard.cli):
    package_cli.register(app)
