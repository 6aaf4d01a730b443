"""`alerts failures`: the webhook deliveries that failed after every retry."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tickerdash.ingest.cli_output import iso_ms, print_json, print_table
from tickerdash.ingest.clikit import load_settings
from tickerdash.ingest.contract.keys import Keys

# the webhooks and the Redis client load inside the command: `--help` needs neither


def failures(
    count: Annotated[int, typer.Option(help="How many of the latest failures to show.")] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead of the table: a list of objects, newest first (id, alert_id, rule_id, symbol, "
            "url, attempts, error, ts in epoch ms and time in ISO-8601 UTC).",
        ),
    ] = False,
) -> None:
    """Show the latest webhook deliveries that failed after every retry."""
    from tickerdash.analytics.delivery.webhooks import recent_failures
    from tickerdash.ingest.redis_server import redis_connection

    settings = load_settings()
    with redis_connection(settings, cluster=True) as client:
        rows = recent_failures(client, Keys(settings.prefix, settings.partitions), count)
    if as_json:
        print_json([_failure_object(row) for row in rows])
        return
    if not rows:
        typer.echo("no failed webhook deliveries")
        return
    table = Table(title="Failed webhook deliveries", title_justify="left")
    for column in ("when (UTC)", "rule", "symbol", "url", "attempts", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            iso_ms(int(row.get("ts", "0"))),
            row.get("rule_id", ""),
            row.get("symbol", ""),
            row.get("url", ""),
            row.get("attempts", ""),
            row.get("error", ""),
        )
    print_table(table)


def _failure_object(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = dict(row)
    for name in ("ts", "attempts"):
        if typed.get(name, "").isdigit():
            typed[name] = int(typed[name])
    if isinstance(typed.get("ts"), int):
        typed["time"] = iso_ms(typed["ts"])
    return typed
