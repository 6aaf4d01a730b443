"""Backtesting: the alerts rules would have fired over past trades, computed by the live stage's code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tickerdash.analytics.stages.alerts.alert import Alert
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.ingest.ticks import TickBatch


def backtest(rules: Rule | Sequence[Rule], batches: Iterable[TickBatch]) -> list[Alert]:
    """Every alert the rules (enabled or not) would have fired over these batches: the live stage's code."""
    chosen = [rules] if isinstance(rules, Rule) else list(rules)
    stage = SlumpAlerts([r if r.enabled else r.evolve(enabled=True) for r in chosen])
    alerts: list[Alert] = []
    for batch in batches:
        alerts.extend(stage.process(batch))
    return alerts
