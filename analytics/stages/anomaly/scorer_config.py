"""`ScorerConfig`: the anomaly scorer's settings (flag threshold, rule thresholds, calibration, forest), checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Flag threshold, rule thresholds, calibration and forest settings."""

    # flag trades rarer than 1 in 10**flag_rarity recent ones: 1 in 30,000, about 2 a minute market-wide at
    # 1,000 trades/s, plus the episodes (4, 1 in 10,000, gave twice that on the demo's open)
    flag_rarity: float = 4.5
    min_surprise: float = 2.0  # never flag a trade less surprising than 1 in 100
    offmarket_sigma: float = 8.0
    # trades scored against one state of the calibrations before they learn. 2048 scores 12% faster (the
    # per-block work is fixed) and keeps every simulator target, but the scorer warms up over two blocks:
    # on the RCN pump-and-dump file, whose pump starts with its data, it then flags 4 trades instead of 277
    block: int = 1024
    calibration_half_life: float = 200_000.0  # trades
    bins: int = 600
    # 8 trees of 64 samples (depth 6): 48 node steps a trade, against 84 for 12 x 128 and 175 for 25 x 128.
    # On tuning seeds 0-4 the mean PR-AUC was 0.684 with 25 x 128, 0.691 with 16 x 128, 0.688 with 12 x 128
    # and with 8 x 128, 0.685 with 6 x 128 and 0.689 with 8 x 64 (the same recalls): the forest corroborates
    # the rules and the tails, and more or deeper trees only smooth what the fusion already ranks.
    forest_trees: int = 8
    forest_samples: int = 64
    train_window: int = 4096
    train_stride: int = 4
    refit_every: int = 32_768
    # ... and at least this much event time since the last refit: a fit costs ~30 ms of the stream's
    # time, so at a million trades a second a count-only cadence would refit 30 times a second.
    refit_min_ms: int = 300_000
    swap_after: int = 4_096
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.flag_rarity <= 5:  # the calibration remembers ~290,000 trades: 1 in 10**5 is its limit
            raise ValueError(f"flag_rarity must be in (0, 5] (minus log10 of a share), got {self.flag_rarity}")
        if self.refit_every % self.block or self.swap_after % self.block or self.swap_after >= self.refit_every:
            raise ValueError("refit_every and swap_after must be multiples of block, swap_after < refit_every")
