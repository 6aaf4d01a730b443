"""`tickerdash alerts ...`: the command group, its commands registered in the order `--help` lists them."""

from __future__ import annotations

import typer

from tickerdash.analytics.commands.alerts import backtest, failures, manage, tail

alerts_app = typer.Typer(
    name="alerts",
    no_args_is_help=True,
    help="Slump-alert rules: add, list, remove, enable, disable; tail fired alerts; backtest a rule.",
)
# registered here, not by decorators in their modules, so that the order of `--help` does not depend on
# the order the modules happen to be imported in
alerts_app.command("add")(manage.add)
alerts_app.command("list")(manage.list_rules)
alerts_app.command("remove")(manage.remove)
alerts_app.command("enable")(manage.enable)
alerts_app.command("disable")(manage.disable)
alerts_app.command("tail")(tail.tail)
alerts_app.command("backtest")(backtest.backtest_command)
alerts_app.command("failures")(failures.failures)


def register(app: typer.Typer) -> None:
    """Add the `alerts` command group to a typer app."""
    app.add_typer(alerts_app, name="alerts")
