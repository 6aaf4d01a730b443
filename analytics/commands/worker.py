"""`tickerdash analytics`: run an analytics worker on some or all tick partitions."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import typer

from tickerdash.analytics.commands import alerts as alerts_cli
from tickerdash.ingest.clikit import fail, freeze_import_objects, load_settings
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.stop_flag import StopFlag

if TYPE_CHECKING:
    from tickerdash.analytics.engine.stage import StageFactory

log = logging.getLogger(__name__)


def parse_partitions(text: str, total: int) -> list[int]:
    """'all', '0,1' or '0-3' -> partition numbers, checked against the partition count."""
    if text.strip().lower() == "all":
        return list(range(total))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--partitions: {part!r} is not a number or range (use e.g. 0,1 or 0-3 or all)") from None
        out.extend(range(first, last + 1))
    bad = [p for p in out if not 0 <= p < total]
    if bad:
        raise ValueError(f"--partitions: {bad} out of range; TICKERDASH_PARTITIONS={total} gives 0-{total - 1}")
    return sorted(set(out))


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"{flag}: {text!r} must be comma-separated whole numbers")
    return values


def _durations_ms(text: str, flag: str) -> tuple[int, ...]:
    units = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        number = item.rstrip("smhd")
        unit = item[len(number) :] or "s"
        if item.endswith("ms"):
            number, unit = item[:-2], "ms"
        try:
            out.append(int(float(number) * units[unit]))
        except (ValueError, KeyError):
            fail(f"{flag}: {item!r} is not a duration like 1s, 1m, 5m, 1h")
    return tuple(out)


# The stage registry imports every stage (numpy, pyarrow, the engine): ~0.3 s that `--help` of every command
# would pay. So the default and the help name the registry's stages as literals, and
# tests/test_cli_help.py checks that they agree with `registry` (update them when a stage is added).
DEFAULT_STAGES = "alerts,anomaly"
STAGES_HELP = (
    "Stages after the core ones (bars, overlays, indicators), comma-separated, or none: "
    "alerts (slump-alert rules on every trade); anomaly (anomaly scores of suspicious trades)."
)


def analytics(
    partitions: str = typer.Option(
        "auto",
        help="Partitions to own: auto (share them with the group's other auto workers: each takes about P/N, and "
        "takes over a dead one's within --lease), all (want every one: a hot standby where another worker holds "
        "them), or a list such as 0,1 or 0-3.",
    ),
    consumer: str = typer.Option(
        None,
        help="Consumer name in group 'analytics' (default: host-pid). "
        "Restarting with the same name resumes its pending entries.",
    ),
    sma: str = typer.Option("20,50", help="SMA periods in trades."),
    ema: str = typer.Option("12,26", help="EMA periods in trades (alpha = 2/(N+1))."),
    vwap: str = typer.Option("1m,5m", help="Rolling VWAP windows in event time."),
    bars: str = typer.Option("1s,1m", help="OHLCV bar intervals (multiples of the finest)."),
    grace: float = typer.Option(2.0, help="Seconds a bar waits for late trades before it closes."),
    checkpoint_every: float = typer.Option(
        30.0, help="Seconds between full state checkpoints (a restart replays at most this much)."
    ),
    lease: float = typer.Option(10.0, help="Seconds a partition stays ours without renewal (failover time)."),
    webhooks: bool = typer.Option(True, help="Also deliver alert webhooks (a background thread; group 'webhooks')."),
    stages: str = typer.Option(DEFAULT_STAGES, help=STAGES_HELP),
) -> None:
    """Run an analytics worker: indicators, bars, alerts and anomaly scores on the tick stream.

    Examples: `tickerdash analytics` (its share of the partitions: all of them when it runs alone);
    `tickerdash analytics --partitions 0-3 --consumer w1`;
    `tickerdash analytics --stages none` (bars and indicators only).
    """
    from tickerdash.analytics.delivery.webhooks import WebhookDelivery
    from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
    from tickerdash.analytics.stages.bars import BarConfig
    from tickerdash.analytics.stages.indicators import IndicatorConfig
    from tickerdash.ingest.redis_server import redis_connection

    settings = load_settings(consumer=consumer)
    try:
        shared = partitions.strip().lower() == "auto"
        owned = None if shared else parse_partitions(partitions, settings.partitions)
        config = WorkerConfig(
            indicators=IndicatorConfig(_ints(sma, "--sma"), _ints(ema, "--ema"), _durations_ms(vwap, "--vwap")),
            bars=BarConfig(_durations_ms(bars, "--bars"), int(grace * 1000)),
            checkpoint_every_s=checkpoint_every,
            lease_ms=int(lease * 1000),
            stages=chosen_stages(stages),
        )
    except ValueError as exc:
        fail(str(exc))
    stop = StopFlag().install()
    with redis_connection(settings, cluster=True) as client:
        log.info("analytics worker %s starting on partitions %s", settings.consumer, "auto" if shared else owned)
        delivery = WebhookDelivery(client, Keys(settings.prefix, settings.partitions), consumer=settings.consumer)
        with delivery if webhooks else contextlib.nullcontext():
            worker = AnalyticsWorker(client, settings, owned, config, stop=stop, shared=shared)  # preloads its loop
            freeze_import_objects()
            worker.run()
    log.info("analytics worker %s stopped", settings.consumer)


def chosen_stages(text: str) -> tuple[StageFactory, ...]:
    """The optional stages named in `--stages` (comma-separated; `none` for the core stages only), in registry order."""
    from tickerdash.analytics.stages import registry

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    optional = registry.optional_stages()
    unknown = sorted(set(names) - {stage.name for stage in optional})
    if unknown or not names:
        each = [stage.name for stage in optional]
        raise ValueError(
            f"--stages: {', '.join(unknown) or 'nothing'} is not a stage; "
            f"use {', '.join(each)}, {','.join(each)} or none"
        )
    return tuple(stage.factory for stage in optional if stage.name in names and stage.factory is not None)


def default_stages() -> tuple[StageFactory, ...]:
    """The optional stages every worker runs unless `--stages` says otherwise (registry defaults)."""
    from tickerdash.analytics.stages import registry

    return registry.default_stages()


def register(app: typer.Typer) -> None:
    """Add the analytics commands to a typer app."""
    app.command("analytics")(analytics)
    alerts_cli.register(app)
