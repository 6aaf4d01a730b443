"""`tickerdash simulate`: flags in, a market out (to Redis or a file), with a progress bar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console

from tickerdash.ingest.cli_output import output_console
from tickerdash.ingest.clikit import freeze_import_objects, setup_logging
from tickerdash.ingest.stopping import Terminated
from tickerdash.simulator.scenarios import (
    PRESETS,
    HardNegatives,
    Scenario,
    ScenarioError,
    Suspicious,
    from_flags,
    resolve,
)

if TYPE_CHECKING:  # simulator.run loads pandas (pyarrow does, on its first array): only `simulate` itself imports it
    from rich.progress import Progress

    from tickerdash.simulator.run import Chunk, FileSink, Limits, RedisSink, RunSummary

# The market model (numpy, pyarrow, scipy) and the settings (pydantic-settings) load inside `simulate`:
# `--help` needs only the presets' names.

DEFAULT_FAST_COUNT = 1_000_000
DEFAULT_RATE_MARKET = 1_000.0


def parse_start(value: str | None) -> int:
    """Epoch milliseconds from `--start`: epoch ms, or ISO-8601 (naive means UTC); None means now."""
    if value is None:
        return int(time.time()) * 1000
    text = value.strip()
    if text.lstrip("-").isdigit():
        ms = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is neither epoch milliseconds nor an ISO-8601 time (e.g. 2024-03-01T14:30:00Z)",
                param_hint="--start",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = int(moment.timestamp() * 1000)
    if not 0 <= ms < 2**53:
        raise typer.BadParameter(f"{value!r} is out of range for epoch milliseconds", param_hint="--start")
    return ms


def _scenario(
    name: str | None,
    slumps: list[str],
    rallies: list[str],
    halts: list[str],
    suspicious_rate: float | None,
    hard_negatives: bool | None,
) -> Scenario:
    try:
        base = resolve(name) if name else Scenario()
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from None
    try:
        scenario = base.merged(from_flags(slumps, rallies, halts))
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slump/--rally/--halt") from None
    updates: dict[str, object] = {}
    if suspicious_rate is not None:
        updates["suspicious"] = (scenario.suspicious or Suspicious()).model_copy(update={"rate": suspicious_rate})
    if hard_negatives is not None:
        updates["hard_negatives"] = (scenario.hard_negatives or HardNegatives()) if hard_negatives else None
    return scenario.model_copy(update=updates) if updates else scenario


def _progress(console: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>12} ticks/s"),
        TextColumn("{task.fields[labels]} labels"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def simulate(
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated tickers, e.g. AAPL,MSFT,GOOG."),
    universe: int | None = typer.Option(
        None, "--universe", min=1, max=20_000, help="Generate this many tickers instead (default 10, or the preset's)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed: same seed and flags, same tape, byte for byte."),
    start: str | None = typer.Option(
        None,
        "--start",
        help="Event time of the first open: epoch ms or ISO-8601 (default now; give it for byte-identical reruns).",
    ),
    rate: float | None = typer.Option(
        None,
        "--rate",
        min=0.001,
        help="Ticks per wall-clock second on average (live demos): the tape is "
        "released on its own event clock, so the open and close come faster. "
        "Default: --fast.",
    ),
    fast: bool = typer.Option(False, "--fast", help="As fast as possible (the default unless --rate)."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many trades."),
    duration: float | None = typer.Option(
        None, "--duration", min=0.001, help="Stop after this many seconds of event time."
    ),
    market_rate: float | None = typer.Option(
        None,
        "--market-rate",
        min=0.001,
        help="Mean trades per event-time second, market-wide (default: "
        "--rate, so event time keeps pace with the wall clock; else "
        "the preset's, or 1000).",
    ),
    session_s: float = typer.Option(
        23_400.0,
        "--session-s",
        min=60,
        max=86_400,
        help="Trading session length; sessions start every 24 h (86400: no close).",
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help=f"Scenario file (.yaml/.json) or preset: {', '.join(PRESETS)}."
    ),
    slump: list[str] = typer.Option(
        [],
        "--slump",
        metavar="SYM:START_S:DROP_PCT:DURATION_S[:RECOVERY_S]",
        help="Scripted slump (repeatable), e.g. AAPL:600:8:60:300.",
    ),
    rally: list[str] = typer.Option(
        [], "--rally", metavar="SYM:START_S:RISE_PCT:DURATION_S[:RECOVERY_S]", help="Scripted rally (repeatable)."
    ),
    halt: list[str] = typer.Option([], "--halt", metavar="SYM:START_S:DURATION_S", help="Trading halt (repeatable)."),
    suspicious_rate: float | None = typer.Option(
        None, "--suspicious-rate", min=0.0, max=0.2, help="Share of trades in labelled suspicious episodes (0: none)."
    ),
    hard_negatives: bool | None = typer.Option(
        None, "--hard-negatives/--no-hard-negatives", help="Unlabelled news jumps, block trades, volatility regimes."
    ),
    per_tick: bool = typer.Option(False, "--per-tick", help="One stream entry per tick (interoperable, slower)."),
    out: Path | None = typer.Option(
        None, "--out", help="Write trades.parquet|.csv (labels beside it) instead of Redis."
    ),
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Redis to write to (default TICKERDASH_REDIS_URL, else the embedded server)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Simulate a market: realistic ticks, scripted slumps/rallies/halts, labelled suspicious trades.

    Writes to Redis (batch entries; --per-tick: one entry per trade), labels on tickerdash:labels;
    or with --out to a Parquet/CSV file, labels beside it in NAME.labels.EXT.

    Examples: `tickerdash simulate --symbols AAPL,MSFT --rate 200` (a live feed);
    `tickerdash simulate --scenario evaluation --out trades.parquet --seed 1 --start 2024-03-01T14:30:00Z`.
    """
    from tickerdash.ingest.settings import Settings
    from tickerdash.simulator.config import MarketConfig
    from tickerdash.simulator.market import generate
    from tickerdash.simulator.run import FILE_SUFFIXES, FileSink, Limits, RedisSink

    if rate is not None and fast:
        raise typer.BadParameter("--rate and --fast exclude each other: choose one", param_hint="--rate/--fast")
    if out is not None and out.suffix.lower() not in FILE_SUFFIXES:
        raise typer.BadParameter(f"{out} must end in {' or '.join(FILE_SUFFIXES)}", param_hint="--out")
    if out is not None and per_tick:
        raise typer.BadParameter(
            "--per-tick is a Redis entry form; it means nothing with --out", param_hint="--per-tick"
        )
    preset = PRESETS.get(scenario or "")
    market = _scenario(scenario, slump, rally, halt, suspicious_rate, hard_negatives)
    start_ms = parse_start(start)
    try:
        config = MarketConfig(
            symbols=tuple(s for s in symbols.split(",") if s.strip()) if symbols is not None else None,
            universe=universe or (preset.universe if preset else 10),
            seed=seed,
            start_ms=start_ms,
            trades_per_s=market_rate or rate or (preset.trades_per_s if preset else DEFAULT_RATE_MARKET),
            session_s=session_s,
        )
    except ValidationError as exc:
        problem = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise typer.BadParameter(problem, param_hint="--symbols") from None
    try:
        chunks = generate(config, market)  # validates the scenario against the symbols now, and loads scipy
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario/--slump/--rally/--halt") from None
    if count is None and duration is None and rate is None:
        count = preset.count if preset else DEFAULT_FAST_COUNT
    limits = Limits(count=count, duration_s=duration)

    console = output_console(stderr=True)
    settings = Settings()
    if redis_url:
        settings = settings.model_copy(update={"redis_url": redis_url})
    with contextlib.ExitStack() as stack:
        if out is not None:
            sink: FileSink | RedisSink = FileSink(out)
            target = f"{out} (labels: {out.stem}.labels{out.suffix})"
        else:
            from tickerdash.ingest.redis_server import redis_connection

            setup_logging()  # the producer says when it waits for the workers (backpressure)
            client = stack.enter_context(redis_connection(settings, cluster=True))
            sink = RedisSink(client, settings, per_tick=per_tick)
            sink.record_run(config, scenario or "flags")
            target = f"{sink.producer.keys.ticks()} ({'per-tick' if per_tick else 'batch'} entries)"
        freeze_import_objects()
        # with the market's mean rate at --rate, follow the tape's event clock: event time then keeps pace
        # with the wall clock through the busier open and close; an explicit --market-rate paces by count
        summary = _run_with_progress(
            chunks, sink, start_ms, limits, rate, console, quiet, event_time=rate is not None and market_rate is None
        )
    console.print(
        f"wrote {summary.ticks:,} ticks and {summary.labels:,} labels to {target} "
        f"in {summary.elapsed_s:.2f} s ({summary.ticks_per_s:,.0f} ticks/s)"
    )


def _run_with_progress(
    chunks: Iterable[Chunk],
    sink: FileSink | RedisSink,
    start_ms: int,
    limits: Limits,
    rate: float | None,
    console: Console,
    quiet: bool,
    *,
    event_time: bool,
) -> RunSummary:
    from tickerdash.simulator.run import run

    if quiet:
        try:
            return run(chunks, sink, start_ms=start_ms, limits=limits, rate=rate, event_time=event_time)
        except KeyboardInterrupt as stop:
            raise typer.Exit(0 if isinstance(stop, Terminated) else 130) from None
    with _progress(console) as progress:
        task = progress.add_task("simulate", total=limits.count, rate="-", labels=0)
        began = time.perf_counter()
        done = {"ticks": 0, "labels": 0}

        def advance(ticks: int, labels: int) -> None:
            done["ticks"] += ticks
            done["labels"] += labels
            speed = done["ticks"] / max(time.perf_counter() - began, 1e-9)
            progress.update(task, advance=ticks, rate=f"{speed:,.0f}", labels=f"{done['labels']:,}")

        try:
            return run(
                chunks, sink, start_ms=start_ms, limits=limits, rate=rate, event_time=event_time, on_progress=advance
            )
        except KeyboardInterrupt as stop:
            progress.stop()
            console.print(f"stopped after {done['ticks']:,} ticks")
            raise typer.Exit(0 if isinstance(stop, Terminated) else 130) from None


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to a Typer app (the `tickerdash` front door, or `python -m tickerdash.simulator`)."""
    app.command("simulate", no_args_is_help=False)(simulate)
