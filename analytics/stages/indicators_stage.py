"""The indicators stage: the pure `Indicators` as a stage of the engine.

It writes nothing itself: its `IndicatorFrame` (every indicator at every trade of the batch) is handed
on as the product "indicators", which the live view publishes.
"""

from __future__ import annotations

from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.stages.indicators import IndicatorConfig, Indicators
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.ticks import TickBatch


class IndicatorsStage:
    """Stage `indicators`: SMA, EMA and rolling VWAP per symbol at every trade."""

    name = "indicators"
    outputs: tuple[str, ...] = ()

    def __init__(self, config: IndicatorConfig | None = None) -> None:
        self.indicators = Indicators(config)

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Hand on the batch's `IndicatorFrame` as the product "indicators"."""
        effects.products["indicators"] = self.indicators.process(batch)

    def to_bytes(self) -> bytes:
        """The indicators' checkpoint (sums, EMAs, rolling windows)."""
        return self.indicators.to_bytes()

    def load(self, data: bytes) -> None:
        """Restore a checkpoint."""
        self.indicators = Indicators.from_bytes(data)

    def refresh(self, client: object, keys: Keys) -> None:
        """Nothing outside the stream changes the indicators."""
