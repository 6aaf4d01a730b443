"""A slump rule as the `alerts` commands take it: the flags that give one, and the store that holds them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tickerdash.ingest.clikit import fail, load_settings
from tickerdash.ingest.contract.keys import Keys

if TYPE_CHECKING:
    from tickerdash.analytics.stages.alerts.rules import Rule
    from tickerdash.analytics.stages.alerts.store import RuleStore
    from tickerdash.ingest.cluster import AnyRedis

# the rules and the store load inside the functions: `--help` needs neither

SymbolOpt = Annotated[str | None, typer.Option("--symbol", help="Ticker to watch, or * for every symbol.")]
DropOpt = Annotated[str | None, typer.Option("--drop", help="Drop in percent below the window's high (0-100).")]
WindowOpt = Annotated[str | None, typer.Option("--window", help="Trailing event-time window: 60s, 5m, 1h.")]
CooldownOpt = Annotated[str | None, typer.Option("--cooldown", help="Quiet time after a firing (default: window).")]
BadPrintsOpt = Annotated[
    bool,
    typer.Option(
        "--include-bad-prints",
        help="Count bad prints for this rule: they then set the window's high, fire and re-arm it. A bad print "
        "is a trade more than 1% off its symbol's last good price that 3 agreeing "
        "trades have not confirmed. By default a rule ignores bad prints.",
    ),
]


def rule_store(client: AnyRedis) -> RuleStore:
    """The rules stored under the configured key prefix."""
    from tickerdash.analytics.stages.alerts.store import RuleStore

    settings = load_settings()
    return RuleStore(client, Keys(settings.prefix, settings.partitions))


def rule_from_flags(
    symbol: str | None,
    drop: str | None,
    window: str | None,
    cooldown: str | None,
    webhook: str | None = None,
    name: str = "",
    rule_id: str | None = None,
    enabled: bool = True,
    include_bad_prints: bool = False,
) -> Rule:
    """The rule the flags give; a missing or invalid flag ends the command with what to fix."""
    from tickerdash.analytics.stages.alerts.rules import RuleError, make_rule

    missing = [flag for flag, value in (("--symbol", symbol), ("--drop", drop), ("--window", window)) if value is None]
    if missing:
        fail(f"give {', '.join(missing)} (e.g. --symbol AAPL --drop 5 --window 60s)")
    assert symbol is not None and drop is not None and window is not None
    try:
        return make_rule(
            symbol,
            drop.strip().rstrip("%"),
            window,
            cooldown=cooldown,
            webhook=webhook,
            name=name,
            rule_id=rule_id,
            enabled=enabled,
            include_bad_prints=include_bad_prints,
        )
    except RuleError as exc:
        fail(str(exc))
