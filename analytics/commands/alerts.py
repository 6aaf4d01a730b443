"""`tickerdash alerts ...`: manage slump-alert rules, follow fired alerts, backtest a rule on history."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tickerdash.ingest.cli_output import iso_ms, output_console, print_json, print_table
from tickerdash.ingest.clikit import console, fail, load_settings
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.stopping import INTERRUPTED, Terminated

if TYPE_CHECKING:
    import redis

    from tickerdash.analytics.stages.alerts.rules import Rule
    from tickerdash.analytics.stages.alerts.store import RuleStore
    from tickerdash.ingest.contract.alerts import AlertEntry
    from tickerdash.ingest.importers import TradeReader
    from tickerdash.ingest.reconnect import Outage
    from tickerdash.ingest.ticks import TickBatch

# The rules, the store, the backtest, the importers and the Redis client (numpy, pyarrow, redis) load
# inside the commands that use them: `--help` needs none of them.

XRANGE_COUNT = 1_000  # stream entries per read while backtesting (a batch entry holds many trades)

log = logging.getLogger(__name__)
alerts_app = typer.Typer(
    name="alerts",
    no_args_is_help=True,
    help="Slump-alert rules: add, list, remove, enable, disable; tail fired alerts; backtest a rule.",
)

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
FileOpt = Annotated[str | None, typer.Option(help="Trade file (CSV, NDJSON, Parquet) instead of the tick streams.")]
SINCE_HELP = "Start: $ (new alerts only), a stream ID (0: all), or a duration back from now such as 10m."


def _store(client: redis.Redis) -> RuleStore:
    from tickerdash.analytics.stages.alerts.store import RuleStore

    settings = load_settings()
    return RuleStore(client, Keys(settings.prefix, settings.partitions))


def _rule_from_flags(
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


def _rule_row(rule: Rule) -> dict[str, Any]:
    from tickerdash.analytics.stages.alerts.rules import format_duration

    return {
        **rule.to_dict(),
        "window": format_duration(rule.window_s),
        "cooldown": format_duration(rule.window_s if rule.cooldown_s is None else rule.cooldown_s),
        "bad prints": "count" if rule.include_bad_prints else "ignore",
    }


@alerts_app.command("add")
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

    rule = _rule_from_flags(symbol, drop, window, cooldown, webhook, name, rule_id, not disabled, include_bad_prints)
    with redis_connection(load_settings()) as client:
        try:
            stored = _store(client).add(rule)
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


@alerts_app.command("list")
def list_rules(as_json: Annotated[bool, typer.Option("--json", help=LIST_JSON_HELP)] = False) -> None:
    """List the stored rules.

    Ids, URLs and numbers are printed whole, also through a pipe: `tickerdash alerts list | grep AAPL`.
    """
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings()) as client:
        snapshot = _store(client).snapshot()
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


@alerts_app.command("remove")
def remove(rule_id: Annotated[str, typer.Argument(help="Id of the rule to delete.")]) -> None:
    """Delete a rule (its id as `tickerdash alerts list` shows it)."""
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings()) as client:
        store = _store(client)
        if not client.hexists(store.keys.rules, rule_id):
            fail(f"no rule with id {rule_id!r}: see `tickerdash alerts list`")
        store.remove(rule_id)
    typer.echo(f"removed rule {rule_id}")


def _set_enabled(rule_id: str, enabled: bool) -> None:
    from tickerdash.analytics.stages.alerts.rules import RuleError
    from tickerdash.ingest.redis_server import redis_connection

    with redis_connection(load_settings()) as client:
        try:
            _store(client).set_enabled(rule_id, enabled)
        except RuleError as exc:
            fail(str(exc))
    typer.echo(f"{'enabled' if enabled else 'disabled'} rule {rule_id}")


@alerts_app.command("enable")
def enable(rule_id: Annotated[str, typer.Argument(help="Id of the rule to switch on.")]) -> None:
    """Switch a rule on."""
    _set_enabled(rule_id, True)


@alerts_app.command("disable")
def disable(rule_id: Annotated[str, typer.Argument(help="Id of the rule to switch off.")]) -> None:
    """Switch a rule off (it stays stored)."""
    _set_enabled(rule_id, False)


def _start_id(since: str) -> str:
    """A stream ID to read after: '$' (new only), a stream ID, or a duration back from now."""
    from tickerdash.analytics.stages.alerts.rules import RuleError, parse_duration

    if since == "$" or since.replace("-", "").isdigit():
        return since
    try:
        back_ms = round(parse_duration(since, "--since") * 1000)
    except RuleError as exc:
        fail(f"{exc} (or $ for new alerts only, or a stream ID such as 0)")
    return f"{max(0, time.time_ns() // 1_000_000 - back_ms)}-0"


def _alert_line(entry_id: str, alert: AlertEntry) -> str:
    from tickerdash.analytics.stages.alerts.rules import format_duration

    return (
        f"{iso_ms(alert.ts)}  {alert.symbol:<8} -{alert.drop_pct:.2f}%  {alert.price:.10g} "
        f"(high {alert.reference_price:.10g} in {format_duration(alert.window_s)})  rule {alert.rule_id}  "
        f"[{entry_id}]"
    )


TAIL_READ_COUNT = 100  # alerts per XREAD
TAIL_BLOCK_MS = 1_000  # how long one XREAD waits for new alerts (Ctrl-C is seen at once regardless)


def _last_alert_id(client: redis.Redis, keys: Keys) -> str:
    import redis

    try:
        info: Any = client.xinfo_stream(keys.alerts)
    except redis.ResponseError:  # no alerts stream yet: every alert is new
        return "0-0"
    return info["last-generated-id"].decode()


def follow_alerts(client: redis.Redis, keys: Keys, after: str, outage: Outage) -> Iterator[tuple[str, AlertEntry]]:
    """Every alert after stream ID `after` (`$`: after the newest now), as it arrives, with its entry id.

    Redis outages are waited out with `outage`'s backoff, and the reads resume after the last alert
    yielded: across a restart no alert is repeated or skipped. An entry that cannot be decoded is logged
    and skipped.
    """
    from tickerdash.ingest.contract.alerts import decode_alert
    from tickerdash.ingest.reconnect import REDIS_DOWN, through_outages, wait_out

    if after == "$":  # resolve now, so alerts between two reads are never skipped
        after = through_outages(lambda: _last_alert_id(client, keys), outage)
    while True:
        try:
            reply: Any = client.xread({keys.alerts: after}, count=TAIL_READ_COUNT, block=TAIL_BLOCK_MS)
        except REDIS_DOWN as exc:  # the cursor `after` resumes exactly where the outage began
            wait_out(outage, exc)
            continue
        outage.recovered()
        for _, entries in reply or []:
            for raw_id, fields in entries:
                after = raw_id.decode()
                try:
                    alert = decode_alert(fields)
                except (KeyError, ValueError) as exc:
                    log.warning("skipped alert entry %s of %s: cannot decode it (%s)", after, keys.alerts, exc)
                    continue
                yield after, alert


@alerts_app.command("tail")
def tail(
    count: Annotated[int | None, typer.Option(help="Stop after this many alerts (default: follow forever).")] = None,
    since: Annotated[str, typer.Option(help=SINCE_HELP)] = "$",
    rule_id: Annotated[str | None, typer.Option("--rule", help="Only alerts of this rule.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line: id (stream entry id), rule_id, symbol, ts (epoch ms), price, "
            "reference_price, drop_pct, window_s, message, tick_id.",
        ),
    ] = False,
) -> None:
    """Follow fired alerts live from the alerts stream.

    Rides out a Redis restart: one line says that Redis is gone, one that it is back, and the alerts
    resume after the last one printed, none repeated or skipped.
    Ctrl-C ends it with exit code 130, SIGTERM with 0.

    Examples: `tickerdash alerts tail`; `tickerdash alerts tail --since 10m --rule demo-slump --json`.
    """
    from tickerdash.ingest.reconnect import Outage
    from tickerdash.ingest.redis_server import client_for, redis_url, shown_url

    if count is not None and count < 1:
        fail("--count must be at least 1")
    settings = load_settings()
    keys = Keys(settings.prefix, settings.partitions)
    after = _start_id(since)
    shown = 0
    try:
        with redis_url(settings) as url, contextlib.closing(client_for(url)) as client:
            outage = Outage(log, what=f"Redis at {shown_url(url)}")
            for entry_id, alert in follow_alerts(client, keys, after, outage):
                if rule_id is not None and alert.rule_id != rule_id:
                    continue
                typer.echo(
                    json.dumps({"id": entry_id, **alert.to_json_dict()}) if as_json else _alert_line(entry_id, alert)
                )
                shown += 1
                if count is not None and shown >= count:
                    return
    except KeyboardInterrupt as stop:
        raise typer.Exit(0 if isinstance(stop, Terminated) else INTERRUPTED) from None


def stream_batches(client: redis.Redis, keys: Keys, symbol: str | None = None) -> Iterator[TickBatch]:
    """Every trade stored on the tick streams (one partition when a symbol is given), in stream order."""
    from tickerdash.ingest.contract.tick_entries import decode_entries
    from tickerdash.ingest.redis_adapter import raw_client

    raw = raw_client(client)
    streams = [keys.ticks(keys.partition_of(symbol))] if symbol else keys.tick_streams
    for stream in streams:
        start = "-"
        while True:
            entries: Any = raw.xrange(stream, min=start, count=XRANGE_COUNT)
            if not entries:
                break
            decoded = decode_entries(entries)
            if len(decoded.ticks):
                yield decoded.ticks
            start = "(" + (entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0])


def file_batches(reader: TradeReader) -> Iterator[TickBatch]:
    """Every valid trade of a trade file, chunk by chunk (rejected rows are skipped)."""
    for ticks, _rejected in reader:
        if len(ticks):
            yield ticks


@alerts_app.command("backtest")
def backtest_command(
    rule_id: Annotated[str | None, typer.Argument(help="Id of a stored rule (or give the rule by flags).")] = None,
    symbol: SymbolOpt = None,
    drop: DropOpt = None,
    window: WindowOpt = None,
    cooldown: CooldownOpt = None,
    include_bad_prints: BadPrintsOpt = False,
    file: FileOpt = None,
    ts_col: Annotated[str | None, typer.Option(help="Event-time column of --file (auto: ts, timestamp, ...).")] = None,
    ts_unit: Annotated[str, typer.Option(help="Unit of --ts-col: s, ms, us, ns, iso or auto.")] = "auto",
    symbol_col: Annotated[str | None, typer.Option(help="Ticker column of --file (auto: symbol, ticker).")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead of the table: an object with rule, trades and firings, a list of objects "
            "(rule_id, symbol, ts in epoch ms, price, reference_price, drop_pct, window_s, message, tick_id).",
        ),
    ] = False,
) -> None:
    """List when a rule would have fired over stored history (tick streams or a trade file).

    Examples: `tickerdash alerts backtest demo-slump`;
    `tickerdash alerts backtest --symbol AAPL --drop 5 --window 60s --file trades.csv --json`.
    """
    from tickerdash.analytics.stages.alerts.backtest import backtest
    from tickerdash.analytics.stages.alerts.rules import RuleError
    from tickerdash.ingest.importers import ColumnMapping, ImportOptionError, TradeReader
    from tickerdash.ingest.redis_server import redis_connection

    settings = load_settings()
    keys = Keys(settings.prefix, settings.partitions)
    by_flags = any(v is not None for v in (symbol, drop, window, cooldown)) or include_bad_prints
    if rule_id is not None and by_flags:
        fail("give either a rule id or --symbol/--drop/--window (and --include-bad-prints), not both")
    rule = (
        None
        if rule_id is not None
        else _rule_from_flags(symbol, drop, window, cooldown, rule_id="backtest", include_bad_prints=include_bad_prints)
    )
    started = time.perf_counter()
    trades = 0

    def counted(batches: Iterator[TickBatch]) -> Iterator[TickBatch]:
        nonlocal trades
        for batch in batches:
            trades += len(batch)
            yield batch

    need_redis = rule is None or file is None
    connection: AbstractContextManager[redis.Redis | None] = (
        redis_connection(settings) if need_redis else contextlib.nullcontext()
    )
    with connection as client:
        if rule is None:
            assert rule_id is not None and client is not None
            try:
                rule = _store(client).require(rule_id)
            except RuleError as exc:
                fail(str(exc))
        watch = None if rule.symbol == "*" else rule.symbol
        if file is not None:
            try:
                reader = TradeReader(file, ColumnMapping(ts_col=ts_col, ts_unit=ts_unit, symbol_col=symbol_col))
            except ImportOptionError as exc:
                fail(str(exc))
            with reader:
                fired = backtest(rule, counted(file_batches(reader)))
        else:
            assert client is not None
            fired = backtest(rule, counted(stream_batches(client, keys, watch)))
    if as_json:
        print_json({"rule": rule.to_dict(), "trades": trades, "firings": [a.to_json_dict() for a in fired]})
        return
    table = Table(title=f"Backtest of rule {rule.id}: {rule.title}", title_justify="left")
    for column in ("time (UTC)", "symbol", "price", "window high", "drop", "tick"):
        table.add_column(column, justify="left" if column in ("time (UTC)", "symbol", "tick") else "right")
    for alert in fired:
        table.add_row(
            iso_ms(alert.ts),
            alert.symbol,
            f"{alert.price:.10g}",
            f"{alert.reference_price:.10g}",
            f"{alert.drop_pct:.2f}%",
            alert.tick_id,
        )
    out = output_console()
    print_table(table, out)
    out.print(f"{len(fired)} firings over {trades:,} trades in {time.perf_counter() - started:.2f}s")


@alerts_app.command("failures")
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
    with redis_connection(settings) as client:
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


def register(app: typer.Typer) -> None:
    """Add the `alerts` command group to a typer app."""
    app.add_typer(alerts_app, name="alerts")
