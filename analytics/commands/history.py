"""`tickerdash export` and `tickerdash archive`: history out of Redis and the archive, and into the archive."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from tickerdash.ingest.clikit import console, fail, freeze_import_objects, load_settings
from tickerdash.ingest.stop_flag import StopFlag

log = logging.getLogger(__name__)

# analytics.history.export and analytics.history.archive load pandas (pyarrow.dataset does too): ~1 s that every other
# command would pay, so they are imported by the commands below, as are the Redis client and the field rules.
# The help texts name their choices (INTERVAL_MS, INCLUDES, ARCHIVE_GROUP) as literals; tests/test_startup.py
# checks that they agree.


def _symbols(text: str | None, everything: bool) -> tuple[str, ...] | None:
    from tickerdash.ingest.field_rules import TickError, normalise_symbol

    if everything == (text is not None):
        fail("give either --symbols AAPL,MSFT or --all")
    if everything:
        return None
    try:
        return tuple(dict.fromkeys(normalise_symbol(s) for s in (text or "").split(",") if s.strip()))
    except TickError as exc:
        fail(f"--symbols: {exc}")


def export(
    out: Path = typer.Option(..., "--out", help="File to write (.parquet or .csv); replaced only when complete."),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated tickers, e.g. AAPL,MSFT."),
    everything: bool = typer.Option(False, "--all", help="Every symbol with bars in the range."),
    interval: str = typer.Option("1m", "--interval", help="Bar interval: 1s, 1m, 1h, 1d (1d: trend rows)."),
    start: str | None = typer.Option(
        None, "--start", help="First instant: date, ISO timestamp or epoch ms (default: the oldest bar)."
    ),
    end: str | None = typer.Option(
        None, "--end", help="End (exclusive; a date means through that day). Default: the newest bar."
    ),
    tz: str = typer.Option(
        "UTC",
        "--tz",
        help="Zone of --start/--end without offset, of the day boundaries for 1d, and of the timestamps written.",
    ),
    fmt: str | None = typer.Option(None, "--format", help="parquet or csv (default: from --out's suffix)."),
    include: str = typer.Option(
        "", "--include", help="Also write alerts, anomalies, trades beside --out (NAME.alerts.EXT ...), from Redis."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Export bars for symbols and a time range, from Redis and the archive together, to Parquet or CSV.

    Each row: OHLCV, VWAP, trades, then the chart's overlays (SMA, EMA, VWAP, RSI, Bollinger; empty until defined).

    Examples: `tickerdash export --symbols AAPL,MSFT --interval 1m --start 2024-03-01 --out bars.parquet`;
    `tickerdash export --all --interval 1d --out daily.csv --include alerts`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tickerdash.analytics.history.export import ExportError, ExportRequest, export_bars, parse_time
    from tickerdash.ingest.redis_server import redis_connection

    chosen = _symbols(symbols, everything)
    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "parquet")
    try:
        request = ExportRequest(
            symbols=chosen,
            interval=interval,
            start_ms=parse_time(start, tz) if start else None,
            end_ms=parse_time(end, tz, end=True) if end else None,
            tz=tz,
            format=fmt,  # type: ignore[arg-type]
            include=tuple(x.strip() for x in include.split(",") if x.strip()),
        )
    except ExportError as exc:
        fail(str(exc))
    settings = load_settings()
    progress = Progress(
        TextColumn("[bold]export"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    with redis_connection(settings, cluster=True) as client, progress:
        task = progress.add_task("export", total=None, rows="0")

        def advance(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=f"{rows:,}")

        try:
            result = export_bars(client, settings, request, out, on_progress=advance)
        except ExportError as exc:
            progress.stop()
            fail(str(exc))
    extra = "".join(f", {name}: {path}" for name, path in result.extra.items())
    console.print(
        f"wrote {result.rows:,} {interval} rows of {len(result.symbols)} symbols "
        f"(from {result.source_interval} bars) to {result.path}{extra} in {result.seconds:.2f} s"
    )


def archive(
    once: bool = typer.Option(False, "--once", help="Archive what the feed holds now, then exit."),
    consumer: str | None = typer.Option(
        None,
        "--consumer",
        help="Consumer name in group 'archive' "
        "(default host-pid); restarting with the same name resumes its pending bars.",
    ),
    compact_days: bool = typer.Option(
        False,
        "--compact",
        help="Before archiving, merge each finished day's files (older than today, UTC) into one file per interval.",
    ),
) -> None:
    """Archive closed bars into the Parquet dataset <data_dir>/archive, exactly once per bar."""
    from tickerdash.analytics.history.archive import archive_every_partition
    from tickerdash.analytics.history.archive_compact import compact
    from tickerdash.analytics.history.archive_layout import archive_root, utc_date
    from tickerdash.analytics.history.archive_read import archived_intervals
    from tickerdash.ingest.redis_server import redis_connection

    settings = load_settings(consumer=consumer)
    root = archive_root(settings)
    if compact_days:
        today = utc_date(int(time.time() * 1000))
        for interval in archived_intervals(root):
            for folder in sorted((root / f"interval={interval}").glob("date=*")):
                date = folder.name.split("=", 1)[1]
                if date < today:
                    compact(root, interval, date)
    stop = StopFlag().install()
    with redis_connection(settings, cluster=True) as client:
        log.info("archiver %s writing to %s", settings.consumer, root)
        freeze_import_objects()
        stats = archive_every_partition(client, settings, stop, once=once)
    console.print(
        f"archived {stats.bars:,} bars from {stats.entries:,} feed entries into {stats.files:,} files under {root}"
    )


def register(app: typer.Typer) -> None:
    """Add the `export` and `archive` commands to a typer app."""
    app.command("export")(export)
    app.command("archive")(archive)
