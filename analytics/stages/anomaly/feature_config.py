"""`FeatureConfig`: the feature extractor's settings, and the bias corrections its averages' weights imply."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Half-lives (in the symbol's trades) of the averages, warm-up length, account ring and wash window."""

    vwap_half_life: float = 50.0
    scale_half_life: float = 200.0
    momentum_half_life: float = 8.0
    size_half_life: float = 500.0
    gap_short_half_life: float = 8.0
    gap_long_half_life: float = 500.0
    warmup: int = 32
    ring: int = 32
    wash_window_ms: int = 60_000

    def alpha(self, ema: str) -> float:
        """Weight of the newest value in one of the averages (`features.EMAS`)."""
        half_life = {
            "notional": self.vwap_half_life,
            "volume": self.vwap_half_life,
            "dev_abs": self.scale_half_life,
            "ret_abs": self.scale_half_life,
            "moves": self.scale_half_life,
            "momentum": self.momentum_half_life,
            "size_mean": self.size_half_life,
            "size_abs": self.size_half_life,
            "gap_short": self.gap_short_half_life,
            "gap_long": self.gap_long_half_life,
        }[ema]
        return float(1.0 - 0.5 ** (1.0 / half_life))


BIAS_TABLE_MAX = 1 << 20  # entries (8 MiB): half-lives up to ~19,000 trades are looked up, longer ones computed


@functools.lru_cache(maxsize=64)
def bias_table(decay: float) -> np.ndarray | None:
    """1 - decay**c for c = 0, 1, ... up to the first c where it is exactly 1.0, as it is for every larger c
    (None if that table would be longer than BIAS_TABLE_MAX).

    The same powers as the feature loop computes per row (`feature_kernel.powers`), so the bias corrections
    keep their bits; decay**c falls below 2**-55 after 55 half-lives, where 1 - it rounds to 1.0 (a
    half-life of 500 trades: 27,500 entries).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    length = int(np.ceil(56.0 / -np.log2(decay))) + 2 if decay > 0.0 else 2
    if length > BIAS_TABLE_MAX:
        return None
    # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
    from tickerdash.analytics.stages.anomaly.feature_kernel import powers as kernel_powers

    powers = kernel_powers(decay, length)
    table = 1.0 - powers
    done = np.flatnonzero((table == 1.0) & (powers < 2.0**-55))
    return table[: done[0] + 1]


def config_dict(config: FeatureConfig) -> dict[str, float | int]:
    """The settings as a checkpoint stores them, in field order."""
    return {name: getattr(config, name) for name in FeatureConfig.__dataclass_fields__}
