"""Every stage a worker can run, in the order a batch flows through them: the one list that the
`tickerdash analytics --stages` option, the docs and the tests read.

Adding a stage is one module (a class with the `engine.stage.Stage` members) and one line here.
Core stages run in every worker (the bars contract and the live view need them); the others are
chosen with `--stages` (default: those marked on by default), and run after the core ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tickerdash.analytics.engine.stage import Stage, StageFactory
from tickerdash.analytics.stages import bars, indicators
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.anomaly.stage import AnomalyStage
from tickerdash.analytics.stages.bars_stage import BarsStage
from tickerdash.analytics.stages.indicators_stage import IndicatorsStage
from tickerdash.analytics.stages.overlays.stage import OverlayStage

if TYPE_CHECKING:
    from tickerdash.analytics.engine.config import WorkerConfig


def _bars(config: WorkerConfig) -> Stage:
    return BarsStage(config.bars, config.bar_retention)


def _indicators(config: WorkerConfig) -> Stage:
    return IndicatorsStage(config.indicators)


def _overlays(config: WorkerConfig) -> Stage:
    return OverlayStage()


@dataclass(frozen=True, slots=True)
class StageEntry:
    """One available stage: how it is made, what it writes, and what it is for.

    A core stage is made from the worker's config (`configured`); any other from its `factory` alone
    (which is what `WorkerConfig.stages` holds).
    """

    name: str
    description: str
    outputs: tuple[str, ...]  # the names of what it writes (the stage's own `outputs`)
    default: bool  # run when `--stages` is not given
    factory: StageFactory | None = None
    configured: Callable[[WorkerConfig], Stage] | None = None

    @property
    def core(self) -> bool:
        """Run by every worker, whatever `--stages` says (made from the worker's config)."""
        return self.configured is not None

    def make(self, config: WorkerConfig) -> Stage:
        """A fresh stage."""
        if self.configured is not None:
            return self.configured(config)
        assert self.factory is not None
        return self.factory()


# In the order a batch flows through them (core stages first).
STAGES: tuple[StageEntry, ...] = (
    StageEntry(
        "bars", "OHLCV bars per symbol and interval; refuses late trades", BarsStage.outputs, True, configured=_bars
    ),
    StageEntry(
        "overlays",
        "the chart's per-bar overlays (analytics/stages/overlays/), written into each closed bar's entry",
        OverlayStage.outputs,
        True,
        configured=_overlays,
    ),
    StageEntry(
        "indicators", "SMA, EMA and rolling VWAP at every trade, for the live view", (), True, configured=_indicators
    ),
    StageEntry("alerts", "slump-alert rules on every trade", SlumpAlertStage.outputs, True, factory=SlumpAlertStage),
    StageEntry("anomaly", "anomaly scores of suspicious trades", AnomalyStage.outputs, True, factory=AnomalyStage),
)


def entry(name: str) -> StageEntry:
    """The registered stage of this name (KeyError if none)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def preload_core() -> None:
    """Load the core stages' compiled loops (from numba's cache, or compiled once) before the first batch."""
    indicators.preload()
    bars.preload()


def core_stages() -> tuple[StageEntry, ...]:
    """The stages every worker runs, in order."""
    return tuple(stage for stage in STAGES if stage.core)


def optional_stages() -> tuple[StageEntry, ...]:
    """The stages `--stages` chooses from, in order."""
    return tuple(stage for stage in STAGES if not stage.core)


def default_stages() -> tuple[StageFactory, ...]:
    """The factories of the optional stages that are on by default, in order (`WorkerConfig.stages`)."""
    return tuple(stage.factory for stage in optional_stages() if stage.default and stage.factory is not None)
