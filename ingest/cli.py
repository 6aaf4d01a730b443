"""`tickerdash ingest FILE|-`: validate trades from a CSV, NDJSON or Parquet file and publish them."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from tickerdash.ingest.cli_output import output_console
from tickerdash.ingest.clikit import console as err_console
from tickerdash.ingest.clikit import fail, freeze_import_objects, load_settings, setup_logging
from tickerdash.ingest.status import status

if TYPE_CHECKING:
    from rich.progress import Progress

    from tickerdash.ingest.contract.tick_entries import Rejected
    from tickerdash.ingest.importers import TradeReader
    from tickerdash.ingest.producer import Producer
    from tickerdash.ingest.replay import ReplayPacer

# The importers (pyarrow), the producer and the Redis client load inside the command: `--help` needs none.
# DEFAULT_CHUNK_ROWS is `importers.DEFAULT_CHUNK_ROWS`, repeated so that the help can show it
# (tests/test_cli_help.py checks that they agree).
DEFAULT_CHUNK_ROWS = 50_000
REASONS_SHOWN = 10  # the summary lists the most common reasons; the dead-letter stream has them all


@dataclass(slots=True)
class IngestSummary:
    """What an ingest run did: trades published, stream entries written, rejected rows per reason."""

    published: int = 0
    entries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def publish_trades(
    reader: TradeReader,
    producer: Producer,
    *,
    source: str,
    per_tick: bool = False,
    pacer: ReplayPacer | None = None,
    summary: IngestSummary | None = None,
    on_progress: Callable[[IngestSummary], None] | None = None,
) -> IngestSummary:
    """Publish every valid trade the reader yields; rejected rows go to the dead-letter stream as `source`."""
    import numpy as np

    from tickerdash.ingest.reconnect import through_outages
    from tickerdash.ingest.replay import ReplayPacer

    summary = summary if summary is not None else IngestSummary()
    pacer = pacer or ReplayPacer(None)
    for ticks, rejected in reader:
        if rejected:
            # through an outage a dead letter may be written twice; a trade never is (`Producer.publish`)
            through_outages(functools.partial(_write_rejected, producer, rejected, source), producer.outage)
            summary.rejected.update(r.reason for r in rejected)
        for run in pacer.pace(ticks.ts):
            part = ticks if run == slice(0, len(ticks)) else ticks.take(np.arange(run.start, run.stop))
            result = producer.publish(part, per_tick=per_tick)
            summary.published += result.ticks
            summary.entries += result.entries
            if on_progress is not None:
                on_progress(summary)
        if on_progress is not None:
            on_progress(summary)
    return summary


def _write_rejected(producer: Producer, rejected: list[Rejected], source: str) -> None:
    import redis

    from tickerdash.ingest.cluster import node_client, not_applied_here, refresh_slot_map
    from tickerdash.ingest.deadletter import add_rejected

    stream = producer.keys.deadletter()  # a producer's: partition 0's stream
    pipe = node_client(producer.client, stream).pipeline(transaction=False)  # on a cluster, the stream's node
    add_rejected(pipe, stream, rejected, source)
    try:
        pipe.execute()
    except redis.ResponseError as exc:
        if not not_applied_here(exc):
            raise
        refresh_slot_map(producer.client)  # the slot moved: tried again on its node, like after a dropped connection
        raise redis.ConnectionError(f"{stream} is served by another node now ({exc})") from exc


def _progress_bar(unit: str) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=30),
        amount,
        TextColumn("{task.fields[published]:,} published"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _print_summary(
    summary: IngestSummary, reader: TradeReader, source: str, deadletter: str, per_tick: bool, interrupted: bool
) -> None:
    out = output_console()
    form = "per-tick" if per_tick else "batch"
    unit = f", ts unit {reader.ts_unit}" if reader.ts_unit else ""
    head = "interrupted after publishing" if interrupted else "published"
    out.print(f"{head} {summary.published:,} trades from {reader.name} in {summary.entries:,} {form} entries{unit}")
    total = sum(summary.rejected.values())
    if not total:
        out.print("rejected 0")
        return
    out.print(f"rejected {total:,} rows, sent to {deadletter} with source {source}:")
    for reason, count in summary.rejected.most_common(REASONS_SHOWN):
        out.print(f"  {count:>9,}  {reason}")
    hidden = len(summary.rejected) - REASONS_SHOWN
    if hidden > 0:
        out.print(f"  ... and {hidden:,} more reasons")


def ingest(
    file: Annotated[str, typer.Argument(help="Trade file (CSV, NDJSON or Parquet), or - to read stdin.")],
    symbol_col: Annotated[str | None, typer.Option(help="Column of the ticker (auto: symbol, ticker, sym).")] = None,
    price_col: Annotated[str | None, typer.Option(help="Column of the trade price (auto: price, px).")] = None,
    size_col: Annotated[
        str | None, typer.Option(help="Column of the quantity (auto: size, qty, quantity, amount, volume).")
    ] = None,
    ts_col: Annotated[
        str | None, typer.Option(help="Column of the event time (auto: ts, timestamp, time, ts_ns, ...).")
    ] = None,
    ts_unit: Annotated[
        str, typer.Option(help="Unit of --ts-col: s, ms, us, ns, iso, or auto (by magnitude; ISO-8601 text).")
    ] = "auto",
    symbol: Annotated[str | None, typer.Option(help="Ticker of every trade, for a single-symbol file.")] = None,
    side_col: Annotated[str | None, typer.Option(help="Column of the aggressor side: buy/sell/B/S.")] = None,
    trade_id_col: Annotated[str | None, typer.Option(help="Column of the trade id (auto: trade_id, id).")] = None,
    buyer_col: Annotated[str | None, typer.Option(help="Column of the buyer's account id.")] = None,
    seller_col: Annotated[str | None, typer.Option(help="Column of the seller's account id.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, ndjson or parquet (default: from the extension, or sniffed).")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(help="Replay at N x the file's own pace in event time (default: as fast as possible)."),
    ] = None,
    per_tick: Annotated[
        bool, typer.Option("--per-tick", help="Publish one stream entry per trade instead of columnar batches.")
    ] = False,
    chunk_rows: Annotated[int, typer.Option(help="Rows read, validated and published at a time.")] = DEFAULT_CHUNK_ROWS,
) -> None:
    """Validate trades from a CSV, NDJSON or Parquet file (or stdin) and publish them onto the tick streams.

    Examples: `tickerdash ingest trades.csv`; `tickerdash ingest day.parquet --speed 10` (replay at 10 x);
    `cat feed.ndjson | tickerdash ingest - --format ndjson`.
    """
    import pyarrow as pa
    import redis

    from tickerdash.ingest.importers import ColumnMapping, ImportOptionError, TradeReader
    from tickerdash.ingest.producer import Producer
    from tickerdash.ingest.redis_server import redis_connection
    from tickerdash.ingest.replay import ReplayPacer

    if speed is not None and not speed > 0:
        fail(f"--speed {speed} must be > 0 (leave it out to publish as fast as possible)")
    settings = load_settings()
    setup_logging()  # the producer says when it waits for the workers (backpressure)
    try:
        mapping = ColumnMapping(
            symbol_col=symbol_col,
            price_col=price_col,
            size_col=size_col,
            ts_col=ts_col,
            side_col=side_col,
            trade_id_col=trade_id_col,
            buyer_col=buyer_col,
            seller_col=seller_col,
            symbol=symbol,
            ts_unit=ts_unit,
        )
        reader = TradeReader(file, mapping, fmt=fmt, chunk_rows=chunk_rows)
    except ImportOptionError as exc:
        fail(str(exc))
    source = f"ingest:{reader.name}"
    summary = IngestSummary()
    interrupted = False
    with reader, redis_connection(settings, cluster=True) as client, Producer(client, settings) as producer:
        freeze_import_objects()  # a replay (--speed) or a feed on stdin may run for hours
        _, total, unit = reader.progress
        with _progress_bar(unit) as bar:
            task = bar.add_task(reader.name, total=total, published=0)

            def show(progress: IngestSummary) -> None:
                bar.update(task, completed=reader.progress[0], published=progress.published)

            try:
                publish_trades(
                    reader,
                    producer,
                    source=source,
                    per_tick=per_tick,
                    pacer=ReplayPacer(speed),
                    summary=summary,
                    on_progress=show,
                )
            except KeyboardInterrupt:
                interrupted = True
            except pa.ArrowInvalid as exc:
                where = f" at lines {reader.lines_at[0]}-{reader.lines_at[1]}" if reader.lines_at else ""
                err_console.print(f"[bold red]error:[/] cannot parse {reader.name}{where}: {exc}", highlight=False)
                raise typer.Exit(1) from exc
            except redis.RedisError as exc:
                err_console.print(f"[bold red]error:[/] Redis failed: {exc}", highlight=False)
                raise typer.Exit(1) from exc
        _print_summary(summary, reader, source, producer.keys.deadletter(), per_tick, interrupted)
    if interrupted:
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    """Add the `ingest` and `status` commands to a typer app."""
    app.command("ingest")(ingest)
    app.command("status")(status)
