"""`Scores`: what the anomaly scorer made of each trade, and the published score in [0, 1) it gives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HALF_SCORE_SURPRISE = 3.0  # a trade this surprising (1 in 1,000) gets score 0.5


@dataclass(frozen=True, slots=True)
class Scores:
    """What the scorer made of each row (batch row order)."""

    fused: np.ndarray  # surprise, -log10 scale
    rarity: np.ndarray  # the fused surprise's own rarity among recent trades, -log10 scale (0 below min_surprise)
    flagged: np.ndarray  # bool
    parts: np.ndarray  # (n, 3): rules, tail, forest surprises
    tail_parts: np.ndarray  # (n, len(TAIL_FEATURES)) per-feature surprises
    rule_hits: np.ndarray  # (n, 3) bool: off-market, wash, self-trade

    @property
    def score(self) -> np.ndarray:
        """The published score in [0, 1): rarity / (rarity + 3)."""
        return self.rarity / (self.rarity + HALF_SCORE_SURPRISE)
