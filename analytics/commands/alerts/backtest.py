"""`alerts backtest`: when a rule would have fired over stored trades (the tick streams or a trade file)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
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
from tickerdash.ingest.cli_output import iso_ms, output_console, print_json, print_table
from tickerdash.ingest.clikit import fail, load_settings
from tickerdash.ingest.contract.keys import Keys

if TYPE_CHECKING:
    from tickerdash.ingest.cluster import AnyRedis
    from tickerdash.ingest.importers import TradeReader
    from tickerdash.ingest.ticks import TickBatch

# the backtest, the importers and the Redis client (numpy, pyarrow, redis) load inside the functions:
# `--help` needs none of them

XRANGE_COUNT = 1_000  # stream entries per read while backtesting (a batch entry holds many trades)
FileOpt = Annotated[str | None, typer.Option(help="Trade file (CSV, NDJSON, Parquet) instead of the tick streams.")]


def stream_batches(client: AnyRedis, keys: Keys, symbol: str | None = None) -> Iterator[TickBatch]:
    """Every trade stored on the tick streams (one partition when a symbol is given), in stream order."""
    from tickerdash.ingest.contract.tick_entries import decode_entries
    from tickerdash.ingest.redis_adapter import PerNode, raw_client

    raw_of = PerNode(client, raw_client)  # each stream read on the primary that holds it (on a cluster)
    streams = [keys.ticks(keys.partition_of(symbol))] if symbol else keys.tick_streams
    for stream in streams:
        raw = raw_of(stream)
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
        else rule_from_flags(symbol, drop, window, cooldown, rule_id="backtest", include_bad_prints=include_bad_prints)
    )
    started = time.perf_counter()
    trades = 0

    def counted(batches: Iterator[TickBatch]) -> Iterator[TickBatch]:
        nonlocal trades
        for batch in batches:
            trades += len(batch)
            yield batch

    need_redis = rule is None or file is None
    connection: AbstractContextManager[AnyRedis | None] = (
        redis_connection(settings, cluster=True) if need_redis else contextlib.nullcontext()
    )
    with connection as client:
        if rule is None:
            assert rule_id is not None and client is not None
            try:
                rule = rule_store(client).require(rule_id)
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
