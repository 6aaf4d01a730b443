"""The overlays the worker computes for every bar series, in the order their fields follow a bar's own.

Registering an overlay is one line here; its module defines the rest (see docs/extending.md).
"""

from __future__ import annotations

from tickerdash.analytics.stages.overlays.base import Overlay, OverlayLine
from tickerdash.analytics.stages.overlays.bollinger import BollingerBands
from tickerdash.analytics.stages.overlays.ema import ExponentialMovingAverage
from tickerdash.analytics.stages.overlays.rsi import RelativeStrengthIndex
from tickerdash.analytics.stages.overlays.sma import SimpleMovingAverage
from tickerdash.analytics.stages.overlays.vwap import RollingVwap

OVERLAYS: tuple[Overlay, ...] = (
    SimpleMovingAverage(20),
    ExponentialMovingAverage(20),
    RollingVwap(20),
    RelativeStrengthIndex(14),
    BollingerBands(20, 2.0),
)


def overlay_lines(overlays: tuple[Overlay, ...] = OVERLAYS) -> tuple[OverlayLine, ...]:
    """Every line of the overlays, in field order."""
    return tuple(line for overlay in overlays for line in overlay.lines)
