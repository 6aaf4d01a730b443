"""The rule scorer: patterns that are suspicious in themselves, whatever the recent history says.

An off-market print (price beyond `offmarket_sigma` robust sigmas from both the weighted VWAP and the
previous trade, in the same direction); the wash pattern (the same account pair trading the opposite legs
at the same size within the window); a self-trade (buyer == seller).
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.anomaly.features import F

RULE_SURPRISE = 6.0  # a broken rule is strong evidence on its own: above any budget threshold seen in tuning
RULE_NAMES = ("off-market", "wash", "self-trade")


def rule_surprises(
    values: np.ndarray, self_trade: np.ndarray, warming: np.ndarray, offmarket_sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rule surprise (RULE_SURPRISE plus how far past the rule) and which rules hit (`RULE_NAMES`), per row."""
    price_z, jump_z = values[:, F["price_z"]], values[:, F["jump_z"]]
    same_way = np.sign(price_z) == np.sign(jump_z)
    offmarket_z = np.where(same_way, np.minimum(np.abs(price_z), np.abs(jump_z)), 0.0)
    offmarket = (offmarket_z >= offmarket_sigma) & ~warming
    round_trips = values[:, F["round_trips"]]
    # one reversed leg at a common size happens by chance (a busy trader and a market maker); a
    # third trade of the pair, or a match at an uncommon size, rarely does
    wash = (round_trips >= 1) & ((values[:, F["same_pair"]] >= 2) | (values[:, F["size_z"]] >= 1.5))
    past = np.log2(np.maximum(offmarket_z, 1.0) / offmarket_sigma)
    surprise = np.where(offmarket, RULE_SURPRISE + past, 0.0)
    surprise = np.maximum(surprise, np.where(wash, RULE_SURPRISE + 0.5 * round_trips, 0.0))
    surprise = np.maximum(surprise, np.where(self_trade, RULE_SURPRISE + 2.0, 0.0))
    return surprise, np.stack([offmarket, wash, self_trade], axis=1)
