"""`WorkerConfig`: what an analytics worker computes, and how often it checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tickerdash.analytics.engine.stage import StageFactory
from tickerdash.analytics.stages.bars import BarConfig
from tickerdash.analytics.stages.bars_stage import DEFAULT_BAR_RETENTION
from tickerdash.analytics.stages.indicators import IndicatorConfig
from tickerdash.ingest.contract.live import LIVE_HZ


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker computes (the core stages' settings, the optional stages) and how often it checkpoints."""

    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    bars: BarConfig = field(default_factory=BarConfig)
    bar_retention: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BAR_RETENTION))
    checkpoint_every_s: float = 30.0
    checkpoint_every_ticks: int = 1_000_000
    lease_ms: int = 10_000
    # write checkpoints from a forked child after their batch commits, so the loop never serialises the
    # whole state (a rolling 5-minute window at 100k trades/s is tens of MB: ~0.1 s a checkpoint)
    background_checkpoints: bool = hasattr(os, "fork")
    # read a batch's transaction replies once the next batch is computed, so that Redis applies one
    # batch (its bars, alerts, acknowledgements) while this process computes the next
    defer_commit: bool = True
    live_hz: float = LIVE_HZ
    snapshot_hz: float = 50.0
    # the stages after the core ones (bars, indicators: see `stages.registry`), in order
    stages: tuple[StageFactory, ...] = ()
