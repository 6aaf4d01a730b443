"""The market simulator: a seeded market model with scripted and labelled episodes, and its runner."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickerdash.simulator.config import MarketConfig
    from tickerdash.simulator.labels import LabelBatch
    from tickerdash.simulator.market import generate
    from tickerdash.simulator.scenarios import Scenario, ScenarioError

__all__ = ["LabelBatch", "MarketConfig", "Scenario", "ScenarioError", "generate"]

# Loaded on first use: `tickerdash simulate --help` imports simulator.scenarios for its presets, which
# would otherwise pay for the market model's numpy, pyarrow and scipy through this package's import.
_HOMES = {
    "MarketConfig": "config",
    "LabelBatch": "labels",
    "generate": "market",
    "Scenario": "scenarios",
    "ScenarioError": "scenarios",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
