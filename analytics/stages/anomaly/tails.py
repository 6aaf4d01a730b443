"""The tail scorer: each feature's empirical tail probability against the recent history of that feature.

A decayed histogram per feature (a `Calibrator` with one row per feature) reads how rare each trade's
extremeness is; the weighted surprises are fused per trade as the strongest plus the second (corroboration).
"""

from __future__ import annotations

import numpy as np

from tickerdash.analytics.stages.anomaly.calibration import Calibrator
from tickerdash.analytics.stages.anomaly.features import F

# how each feature's extremeness is read for its tail probability (one-sided where only one side matters)
TAIL_FEATURES = ("price_z", "jump_z", "momentum_z", "size_z", "burst", "aggressor_share")
# pair counts are left to the wash rule: they are small integers, and a count of one is common by chance
TWO_SIDED = {"price_z", "jump_z", "momentum_z"}
# how much each feature's surprise counts, tuned on seeds 0-4: a rare size says more about intent
# than an equally rare burst of activity, which whole markets have for innocent reasons
TAIL_WEIGHTS = np.array([1.0, 1.0, 0.8, 1.4, 0.5, 1.0])
TAIL_SECOND_WEIGHT = 1.0  # corroboration: the second most surprising feature counts this much
SHARE_SCALE = 20.0  # shares are multiplied by this before the log1p, so their bins are not all at 0
TAIL_COLUMNS = [F[name] for name in TAIL_FEATURES]
TAIL_TWO_SIDED = [k for k, name in enumerate(TAIL_FEATURES) if name in TWO_SIDED]
TAIL_SHARE = TAIL_FEATURES.index("aggressor_share")
TAIL_HIGH = 8.0  # the histograms' range on the log scale of `tail_inputs`
NO_ROWS = np.zeros((0, len(TAIL_FEATURES)))


def tail_inputs(values: np.ndarray) -> np.ndarray:
    """Each tail feature's extremeness on a log scale: log(1 + |z|), log(1 + max(z, 0)), log(1 + 20 * share).

    `log(1 + x)`, not `log1p`: numpy vectorises `log` only, and a histogram bin (0.013 wide) cannot tell them apart.
    """
    x = values[:, TAIL_COLUMNS]
    x[:, TAIL_TWO_SIDED] = np.abs(x[:, TAIL_TWO_SIDED])
    x[:, TAIL_SHARE] *= SHARE_SCALE
    np.maximum(x, 0.0, out=x)
    x += 1.0
    return np.log(x, out=x)


def top_two_sum(parts: np.ndarray, second_weight: float) -> np.ndarray:
    """Each row's largest value plus `second_weight` times its second largest (of at least two columns).

    A running top two over the columns, a few elementwise calls each: a third faster than sorting
    every row, and the same two values.
    """
    columns = np.ascontiguousarray(parts.T)
    top = np.maximum(columns[0], columns[1])
    second = np.minimum(columns[0], columns[1])
    lower = np.empty_like(top)
    for column in columns[2:]:
        np.minimum(top, column, out=lower)
        np.maximum(second, lower, out=second)
        np.maximum(top, column, out=top)
    second *= second_weight
    return np.add(top, second, out=top)


class TailScorer:
    """Per-feature tail surprises, each row against the histograms before its block; learnt block by block."""

    __slots__ = ("block", "calibrator", "pending")

    def __init__(self, bins: int, half_life: float, block: int) -> None:
        self.block = block
        self.calibrator = Calibrator(bins, TAIL_HIGH, half_life, histograms=len(TAIL_FEATURES))
        self.pending: list[np.ndarray] = []  # tail inputs of the incomplete block's learnt rows

    def score(
        self, values: np.ndarray, learnt: np.ndarray, warming: np.ndarray, bounds: list[int], seen: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted per-feature surprises (0 while warming up) and their fused tail surprise, per row.

        Rows bounds[k]:bounds[k + 1] are the batch's part of one block; `seen` is the trades taken
        before the batch. Completed blocks are learnt.
        """
        tail_u = tail_inputs(values)
        tail_parts = self._surprises(tail_u, learnt, bounds, seen)
        tail_parts *= TAIL_WEIGHTS
        tail_parts[warming] = 0.0
        return tail_parts, top_two_sum(tail_parts, TAIL_SECOND_WEIGHT)

    def _surprises(self, tail_u: np.ndarray, learnt: np.ndarray, bounds: list[int], seen: int) -> np.ndarray:
        """Each row's per-feature tail surprise against the calibration before its block; learns completed blocks.

        As `Calibrator.surprise` row by row, in one compiled pass (`surprise_kernel.tail_surprises`). The learnt rows of
        a block the batch leaves incomplete wait in `pending` for the batch that completes it.
        """
        # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
        from tickerdash.analytics.stages.anomaly.surprise_kernel import tail_surprises

        calibrator = self.calibrator
        first_completes = (seen + bounds[1]) % self.block == 0
        earlier = np.concatenate(self.pending) if self.pending and first_completes else NO_ROWS
        parts = tail_surprises(
            tail_u,
            learnt,
            np.asarray(bounds, np.int64),
            seen,
            self.block,
            calibrator.counts,
            calibrator.decay_per_trade,
            calibrator.width,
            earlier,
        )
        if first_completes:
            self.pending = []
        if (seen + bounds[-1]) % self.block:
            lo = bounds[-2]
            self.pending.append(tail_u[lo:][learnt[lo:]])
        return parts
