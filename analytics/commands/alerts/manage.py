"""`alerts add`, `list`, `remove`, `enable`, `disable`: the stored rules, changed and shown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tickerdash.analytics.commands.alerts.rule_flags import (
    BadPrintsOpt,
    CooldownOpt,
    DropOpt,
    SymbolOpt,
    WindowOpt,
    rule_from_flags,
    rule_store,
)
from tickerdash.ingest.cli_output import print_json, print_table
from tickerdash.ingest.clikit import console, fail, load_settings

if TYPE_CHECKING:
    from tickerdash.analytics.stages.alerts.rules import Rule

# the rules, the store and the Redis client load inside the commands: `--help` needs none of them


def _rule_row(rule: Rule) -> dict[str, Any]:
    from tickerdash.analytics.stages.alerts.rules import format_duration

    return {
        **rule.to_dict(),
        "window": format_duration(rule.window_s),
        "cooldown": format_duration(rule.window_s if rule.cooldown_s is None else rule.cooldown_s),
        "bad prints": "count" if rule.include_bad_prints else "ignore",
    }


def add(
    symbol: SymbolOpt = None,
    drop: DropOpt = None,
    window: WindowOpt = None,
    cooldown: CooldownOpt = None,
    webhook: Annotated[str | None, typer.Option(help="http(s) URL that receives each alert as a JSON POST.")] = None,
    name: Annotated[str, typer.Option(help="A name to recognise the rule by.")] = "",
    rule_id: Annotated[str | None, typer.Option("--id", help="Rule id (default: random).")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Store the rule switched off.")] = False,
    include_bad_prints: BadPrintsOpt = False,
) -> None:
    """Add a rule: alert when SYMBOL trades DROP % below its highest price of the last WINDOW.

    Examples: `tickerdash alerts add --symbol AAPL --drop 5 --window 60s`;
    `tickerdash alerts add --symbol '*' --drop 8 --window 5m --cooldown 1h --webhook https://example.com/hook`.
    """
    from tickerdash.analytics.stages.alerts.rules import RuleError
    from tickerdash.ingest.redis_server import redis_connection

    rule = rule_from_flags(symbol, drop, window, cooldown, webhook, name, rule_id, not disabled, include_bad_prints)
    with redis_connection(load_settings(), cluster=True) as client:
        try:
            stored = rule_store(client).add(rule)
        except RuleError as exc:
            fail(str(exc))
    typer.echo(
        f"added rule {stored.id}: {stored.title} (cooldown {_rule_row(stored)['cooldown']}"
        f"{', bad prints included' if stored.include_bad_prints else ''}{', disabled' if not stored.enabled else ''})"
    )


LIST_JSON_HELP = (
    "Print JSON instead of a table: a list of objects, one per rule, with the stored fields "
    "(id, symbol, drop_pct, window_s and cooldown_s in seconds, enabled, name, webhook, ...)."
)


def list_rules(as_json: Annotated[bool, typer.Option("--json", help=LIST_JSON_HELP)] = False) -> None:
    """List the stored rules.

    Ids, URLs and numbers are printed whole, also through a pipe: `tickerdash alerts list | grep AAPL`.
    """
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings(), cluster=True) as client:
        snapshot = rule_store(client).snapshot()
    if as_json:
        print_json([{**r.to_dict(), "include_bad_prints": r.include_bad_prints} for r in snapshot.rules])
        return
    table = Table(title=f"Alert rules (version {snapshot.version})", title_justify="left")
    # the column shows only when some rule counts bad prints: the default needs no room in an 80-column terminal
    columns = ["id", "symbol", "drop", "window", "cooldown", "enabled", "name", "webhook"]
    if any(rule.include_bad_prints for rule in snapshot.rules):
        columns.insert(5, "bad prints")
    for column in columns:
        table.add_column(column, justify="right" if column == "drop" else "left")
    for rule in snapshot.rules:
        row = {
            **_rule_row(rule),
            "drop": f"{rule.drop_pct:g}%",
            "enabled": "yes" if rule.enabled else "no",
            "webhook": rule.webhook or "",
        }
        table.add_row(*(str(row[column]) for column in columns))
    print_table(table)
    for rule_id, reason in snapshot.invalid.items():
        console.print(f"[yellow]ignored invalid stored rule {rule_id}:[/] {reason}", highlight=False)


def remove(rule_id: Annotated[str, typer.Argument(help="Id of the rule to delete.")]) -> None:
    """Delete a rule (its id as `tickerdash alerts list` shows it)."""
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings(), cluster=True) as client:
        store = rule_store(client)
        if not client.hexists(store.keys.rules, rule_id):
            fail(f"no rule with id {rule_id!r}: see `tickerdash alerts list`")
        store.remove(rule_id)
    typer.echo(f"removed rule {rule_id}")


def _set_enabled(rule_id: str, enabled: bool) -> None:
    from tickerdash.analytics.stages.alerts.rules import RuleError
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings(), cluster=True) as client:
        try:
            rule_store(client).set_enabled(rule_id, enabled)
        except RuleError as exc:
            fail(str(exc))
    typer.echo(f"{'enabled' if enabled else 'disabled'} rule {rule_id}")


def enable(rule_id: Annotated[str, typer.Argument(help="Id of the rule to switch on.")]) -> None:
    """Switch a rule on."""
    _set_enabled(rule_id, True)


def disable(rule_id: Annotated[str, typer.Argument(help="Id of the rule to switch off.")]) -> None:
    """Switch a rule off (it stays stored)."""
    _set_enabled(rule_id, False)
