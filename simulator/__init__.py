"""The market simulator: a seeded market model with scripted and labelled episodes, and its runner."""

from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.labels import LabelBatch
from tickerdash.simulator.market import generate
from tickerdash.simulator.scenarios import Scenario, ScenarioError

__all__ = ["LabelBatch", "MarketConfig", "Scenario", "ScenarioError", "generate"]
