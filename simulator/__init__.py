"""The market simulator: a seeded market model with scripted and labelled episodes, and its runner."""

from tickerdash.simulator.market import LabelBatch, MarketConfig, generate
from tickerdash.simulator.scenarios import Scenario, ScenarioError

__all__ = ["LabelBatch", "MarketConfig", "Scenario", "ScenarioError", "generate"]
