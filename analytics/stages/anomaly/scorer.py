"""Anomaly scores for every trade: rules, per-feature tail probabilities and an IsolationForest, fused.

Scorers (each gives a *surprise*, minus log10 of how rare a normal trade that extreme is, plus reasons):

- rules: an off-market print (price beyond `offmarket_sigma` robust sigmas from both the weighted VWAP
  and the previous trade, in the same direction); the wash pattern (the same account pair trading the
  opposite legs at the same size within the window); a self-trade (buyer == seller).
- tail: every feature's empirical tail probability against the recent history of that feature
  (a decayed histogram per feature); the strongest counts fully, the second half.
- forest: scikit-learn's IsolationForest on the (sign-log compressed) feature vector, refitted on a
  recent window of unflagged trades, with its anomaly score calibrated by the same kind of histogram.

Fusion: the largest surprise plus a quarter of the others (corroboration). A trade is flagged when
its fused surprise passes the (1 - budget) quantile of recent fused surprises (never below
`min_surprise`), so about `budget` of trades are flagged: 5 per 1,000 by default. The published score
is `fused / (fused + 3)`, in [0, 1): a 1-in-1,000 surprise scores 0.5.

Determinism (exactly-once): the output depends only on the checkpointed state and the input. Rows
are taken in stream order in blocks of `block` trades of the stage's own trade count. Within a block,
every calibration, the threshold and the forest are frozen (each trade is scored against the state
before its block, and the block is learnt once it is complete); a block cut by a batch boundary waits
in the state. The forest is refitted in a background thread, on a copy of the training window, when
the trade count crosses a multiple of `refit_every` and at least `refit_min_ms` of event time has passed
since the last refit (both read off the stream, so a replay decides alike), with a seed derived from the
count, and is swapped in exactly `swap_after` trades later. Only if the fit is still running then (a
replay or catch-up far faster than real time) does the stream wait for it. `to_bytes` waits for a running fit too, and
stores the pending forest, so a restored stage swaps the same forest at the same trade.

Limits: the first `2 * block` trades are never flagged (nothing to calibrate against); a symbol is
`warming_up` (statistical scorers silent, account rules active) for its first `warmup` trades; a
causal scorer cannot tell an off-market print from the first trade after real news (both are far
from everything before them); the tail and forest scorers learn from a window that includes any
unlabelled manipulation, so a manipulation that persists for the whole window becomes normal.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tickerdash.analytics.engine.segments import exclusive_cumsum, pack_state, unpack_state
from tickerdash.analytics.engine.stage import AppendMany, Effects
from tickerdash.analytics.stages.anomaly.features import FEATURES, F, FeatureConfig, FeatureFrame, Features
from tickerdash.ingest.ticks import TickBatch

if TYPE_CHECKING:  # the pure core never imports the worker (and so never Redis) at run time
    import redis

    from tickerdash.ingest.contract.keys import Keys

MINUS_LOG10_E = -1.0 / float(np.log(10.0))
HALF_SCORE_SURPRISE = 3.0  # a trade this surprising (1 in 1,000) gets score 0.5
RULE_SURPRISE = 6.0  # a broken rule is strong evidence on its own: above any budget threshold seen in tuning

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
NEVER_MS = -(2**62)  # an event time before any trade: the first refit is never held back


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Budget, rule thresholds, calibration and forest settings."""

    budget: float = 0.005  # share of trades flagged (5 per 1,000)
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
        if not 0 < self.budget < 1:
            raise ValueError(f"budget must be a share of trades in (0, 1), got {self.budget}")
        if self.refit_every % self.block or self.swap_after % self.block or self.swap_after >= self.refit_every:
            raise ValueError("refit_every and swap_after must be multiples of block, swap_after < refit_every")


class Calibrator:
    """Empirical tail surprise of a value against a decayed histogram of recent values.

    `surprise(u)` is -log10 P(U >= u) with linear interpolation inside a bin; past the largest value
    seen it goes on rising one decade per unit of u (the raw values are log-scaled, so this is a
    power-law tail), which keeps the most extreme trades ordered instead of tied at the floor.
    `counts` may hold several histograms of the same bins as rows (one per feature).
    """

    __slots__ = ("counts", "decay_per_trade", "high", "width")

    def __init__(self, bins: int, high: float, half_life: float, histograms: int = 1) -> None:
        self.counts = np.zeros((histograms, bins), np.float64)
        self.high = high
        self.width = high / bins
        self.decay_per_trade = 0.5 ** (1.0 / half_life)

    @property
    def total(self) -> float:
        """Decayed number of values learnt (by the first histogram)."""
        return float(self.counts[0].sum())

    def learn(self, u: np.ndarray) -> None:
        """Age the histograms by len(u) trades, then add the values (u is (m,) or (m, histograms))."""
        bins = self.counts.shape[1]
        self.counts *= self.decay_per_trade ** len(u)
        at = self._bin(u.reshape(len(u), len(self.counts)))
        if len(self.counts) > 1:
            at += np.arange(len(self.counts)) * bins
        self.counts += np.bincount(at.reshape(-1), minlength=self.counts.size).reshape(self.counts.shape)

    def _bin(self, u: np.ndarray) -> np.ndarray:
        return self._bin_of_scaled(u / self.width)

    def _bin_of_scaled(self, scaled: np.ndarray) -> np.ndarray:
        at = scaled.astype(np.int64)
        np.maximum(at, 0, out=at)  # two ufuncs: np.clip's Python wrapper costs more than both on a block
        return np.minimum(at, self.counts.shape[1] - 1, out=at)

    def surprise(self, u: np.ndarray) -> np.ndarray:
        """-log10 of the share of learnt values at or above each u (first histogram; 0 before any learning)."""
        at, inside = self.locate(u)
        return table_surprise(self.counts[:1], at, inside, u, self.width)

    def locate(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each value's bin (clipped to the histogram) and its place inside it, in [0, 1]."""
        scaled = u / self.width
        at = self._bin_of_scaled(scaled)
        inside = np.subtract(scaled, at, out=scaled)
        np.maximum(inside, 0.0, out=inside)
        return at, np.minimum(inside, 1.0, out=inside)

    def quantile(self, q: float) -> float:
        """The value below which a share q of the learnt values lies (first histogram, bin resolution)."""
        total = self.total
        if total <= 0:
            return float("inf")
        below = np.cumsum(self.counts[0])
        return float((np.searchsorted(below, q * total) + 1) * self.width)


NEAR_UPPER_EDGE = 1e-3  # of a bin's width: a value this close to its bin's upper edge may lie past it


def table_surprise(
    tables: np.ndarray,
    at: np.ndarray,
    inside: np.ndarray,
    u: np.ndarray,
    width: float,
    row_of_table: np.ndarray | None = None,
) -> np.ndarray:
    """-log10 of the share of a histogram's weight at or above each value (see `Calibrator`).

    `tables` holds histograms as rows; `at` is each value's place in them, flat (its table's row times
    the bins plus its bin), `inside` its place within the bin. With `row_of_table`, values are (rows,
    tables per row) and row r uses tables row_of_table[r] * tables-per-row + its column (the tail
    scorer's calibrations before each block); without, every value uses the one table. The weight at
    or above a value is linear inside its bin; half a value is added on top and below (a floor), so an
    unseen value has a finite surprise; past the highest bin in use it goes on rising one decade per
    unit of u; a table with nothing learnt gives 0 (no evidence either way).
    """
    bins = tables.shape[1]
    above = np.empty_like(tables)  # the weight of the strictly higher bins
    above[:, -1] = 0.0
    if len(tables) == 1:  # a 1-D cumsum: the per-block call is mostly call overhead
        np.cumsum(tables[0, :0:-1], out=above[0, -2::-1])
    else:
        np.cumsum(tables[:, :0:-1], axis=1, out=above[:, -2::-1])
    total = tables.sum(axis=1)
    floor = 0.5
    tail = tables.take(at)
    empty_bin = tail == 0.0
    tail *= np.subtract(1.0, inside, out=inside)
    above_at = above.take(at)
    tail += above_at
    tail += floor
    value_total = (
        float(total[0]) + 1.0 if row_of_table is None else (total + 1.0).reshape(-1, at.shape[1])[row_of_table]
    )
    tail /= value_total
    surprise = np.log(tail, out=tail)  # numpy vectorises log, not log10: -log10 is -log times 1/ln(10)
    surprise *= MINUS_LOG10_E
    # past the highest bin in use (rare): one more decade per unit of u. Such a u has no weight above
    # its bin, and either none in it (the highest bin in use is lower) or it is at its bin's upper edge
    # (the last bin's values beyond the histogram; a rounding of u / width): only those are checked. A
    # column of zeros (the account share on a public tape) then costs nothing here.
    np.logical_or(empty_bin, inside < NEAR_UPPER_EDGE, out=empty_bin)  # `inside` holds 1 - the place now
    maybe = np.flatnonzero(np.logical_and(above_at == 0.0, empty_bin, out=empty_bin))
    if len(maybe):
        maybe_table = at.take(maybe) // bins
        # the upper edge of the highest bin in use: of each checked value's table when they are fewer
        # than the tables, else of every table, then looked up
        per_value = len(maybe) < len(tables)
        checked = tables.take(maybe_table, axis=0) if per_value else tables
        top = (bins - np.argmax(checked[:, ::-1] != 0, axis=1)) * width
        top_of_maybe = top if per_value else top.take(maybe_table)
        flat_u = u.reshape(-1)
        beyond_in_maybe = flat_u.take(maybe) > top_of_maybe
        beyond = maybe[beyond_in_maybe]
        if len(beyond):
            beyond_top = top_of_maybe[beyond_in_maybe]
            beyond_total = np.broadcast_to(value_total, surprise.shape).reshape(-1).take(beyond)
            surprise.reshape(-1)[beyond] = np.log10(beyond_total / floor) + (flat_u.take(beyond) - beyond_top)
    np.maximum(surprise, 0.0, out=surprise)
    if float(total.min()) <= 0:
        empty = total <= 0
        surprise[empty.take(at // bins)] = 0.0
    return surprise


# --- the forest, scored from its arrays ----------------------------------------------------------

SCORE_CHUNK = 2048  # rows per forest pass: the (rows, trees) index arrays stay in the CPU cache
SCORE_THREADS = min(2, os.cpu_count() or 1)  # threads for one large forest walk
PARALLEL_MIN_ROWS = 4 * SCORE_CHUNK  # smaller walks are not worth a thread hand-off
WALK_AHEAD_MIN_ROWS = PARALLEL_MIN_ROWS  # batches from which the walk starts before the tails and rules


def float32_at_or_below(x: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64, so `x32 > it` is exactly `float64(x32) > x` (sklearn's test)."""
    out = x.astype(np.float32)
    rounded_up = out.astype(np.float64) > x
    out[rounded_up] = np.nextafter(out[rounded_up], np.float32(-np.inf))
    return out


@dataclass(frozen=True, slots=True)
class ForestArrays:
    """An isolation forest as complete binary trees of depth `depth` in flat arrays.

    Node i of tree t is at t * nodes + i with children 2i+1 (x <= threshold) and 2i+2; a leaf above the
    last level is padded with always-left nodes, so every sample takes exactly `depth` steps and the
    path length (depth of the leaf plus the expected depth of its unsplit samples) sits at the bottom.
    """

    feature: np.ndarray  # int64 (trees * nodes,)
    threshold: np.ndarray  # float64
    path_length: np.ndarray  # float64 (trees, 2**depth): per bottom slot
    depth: int
    normaliser: float  # trees * c(max_samples)
    # per level, one int64 per node (tree-major) packing its float32 threshold and int32 feature, so a
    # step of the traversal reads each node with one gather: derived, not checkpointed
    levels: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        trees = self.trees
        nodes = 2 ** (self.depth + 1) - 1
        feature = self.feature.reshape(trees, nodes)
        threshold = float32_at_or_below(self.threshold.reshape(trees, nodes))
        levels = []
        for level in range(self.depth):
            at = slice(2**level - 1, 2 ** (level + 1) - 1)
            packed = np.empty(trees * 2**level, np.int64)
            halves = packed.view(np.int32).reshape(-1, 2)
            halves[:, 0] = threshold[:, at].reshape(-1).view(np.int32)
            halves[:, 1] = feature[:, at].reshape(-1)
            levels.append(packed)
        object.__setattr__(self, "levels", tuple(levels))

    @property
    def trees(self) -> int:
        """Number of trees."""
        return int(self.path_length.shape[0])

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The forest as named arrays for a checkpoint."""
        return {
            f"{prefix}feature": self.feature,
            f"{prefix}threshold": self.threshold,
            f"{prefix}path_length": self.path_length,
            f"{prefix}shape": np.array([self.depth], np.int64),
            f"{prefix}normaliser": np.array([self.normaliser]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> ForestArrays | None:
        """The forest stored under `prefix`, or None if there is none."""
        if f"{prefix}feature" not in arrays:
            return None
        return cls(
            arrays[f"{prefix}feature"],
            arrays[f"{prefix}threshold"],
            arrays[f"{prefix}path_length"],
            int(arrays[f"{prefix}shape"][0]),
            float(arrays[f"{prefix}normaliser"][0]),
        )

    @classmethod
    def from_sklearn(cls, forest: object) -> ForestArrays:
        """Lay out a fitted sklearn IsolationForest (all features per tree) as complete trees."""
        from sklearn.ensemble._iforest import _average_path_length

        trees = [e.tree_ for e in forest.estimators_]  # type: ignore[attr-defined]
        depth = max(int(tree.max_depth) for tree in trees)
        nodes = 2 ** (depth + 1) - 1
        feature = np.zeros((len(trees), nodes), np.int64)
        threshold = np.full((len(trees), nodes), np.inf)
        bottom = np.zeros((len(trees), 2**depth), np.float64)
        # every tree's nodes in one array (ids offset per tree), walked level by level for all trees at once
        first_node = exclusive_cumsum(np.array([tree.node_count for tree in trees]))

        def global_ids(children: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([c + (c >= 0) * k for c, k in zip(children, first_node, strict=True)])

        left = global_ids([tree.children_left for tree in trees])
        right = global_ids([tree.children_right for tree in trees])
        split_feature = np.concatenate([tree.feature for tree in trees]).astype(np.int64)
        split_threshold = np.concatenate([tree.threshold for tree in trees])
        leaf_value = np.concatenate(
            [tree.compute_node_depths() + _average_path_length(tree.n_node_samples) - 1.0 for tree in trees]
        )
        node = first_node.astype(np.int64)  # the roots
        tree_of = np.arange(len(trees))
        position = np.zeros(len(trees), np.int64)  # place within the level of the complete tree
        for level in range(depth + 1):
            split = left[node] >= 0
            at = 2**level - 1 + position[split]
            feature[tree_of[split], at] = split_feature[node[split]]
            threshold[tree_of[split], at] = split_threshold[node[split]]
            # a leaf: every bottom slot under it carries its value (the padding below it goes left)
            span = 2 ** (depth - level)
            leaf = ~split
            slots = (position[leaf] * span)[:, None] + np.arange(span)[None, :]
            bottom[tree_of[leaf][:, None], slots] = leaf_value[node[leaf]][:, None]
            node = np.concatenate([left[node[split]], right[node[split]]])
            tree_of = np.concatenate([tree_of[split], tree_of[split]])
            position = np.concatenate([2 * position[split], 2 * position[split] + 1])
        normaliser = len(trees) * float(_average_path_length([forest.max_samples_])[0])  # type: ignore[attr-defined]
        return cls(feature.reshape(-1), threshold.reshape(-1), bottom, depth, normaliser)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score 2**(-mean path length / c(max_samples)) of each row, as sklearn's -score_samples.

        All trees step together, one level at a time, over chunks of rows: the position of a sample in
        level L of tree t is t * 2**L + p, and its child is twice that plus (x > threshold). numpy
        releases the GIL in each step, so a large batch is split over `SCORE_THREADS` threads; rows are
        independent, so the result does not depend on the split.
        """
        n = len(x)
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # sklearn compares float32 features to the thresholds
        lengths = np.empty(n)
        parts = min(SCORE_THREADS, n // PARALLEL_MIN_ROWS)
        if parts > 1:
            bounds = [n * k // parts for k in range(parts + 1)]
            futures = [
                _score_pool().submit(self._path_lengths, x32, lengths, lo, hi)
                for lo, hi in itertools.pairwise(bounds[1:])
            ]
            self._path_lengths(x32, lengths, 0, bounds[1])
            for future in futures:
                future.result()
        else:
            self._path_lengths(x32, lengths, 0, n)
        return np.asarray(2.0 ** (-lengths / self.normaliser))

    def _path_lengths(self, x32: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        """Summed path lengths over all trees of rows lo:hi, into out[lo:hi]."""
        n_features = x32.shape[1] if x32.ndim == 2 else 0
        bottom = self.path_length.reshape(-1)
        start_positions = np.arange(self.trees, dtype=np.int64)
        # (rows, trees) buffers reused by every step of every chunk: the walk is a few thousand calls
        shape = (min(SCORE_CHUNK, hi - lo), self.trees)
        row_bases = (np.arange(shape[0], dtype=np.int64) * n_features)[:, None]
        at_buffer, node_buffer, index_buffer = (np.empty(shape, np.int64) for _ in range(3))
        value_buffer, right_buffer = np.empty(shape, np.float32), np.empty(shape, bool)
        for first in range(lo, hi, SCORE_CHUNK):
            chunk = x32[first : min(first + SCORE_CHUNK, hi)]
            rows = len(chunk)
            flat = chunk.reshape(-1)
            at, node, index = at_buffer[:rows], node_buffer[:rows], index_buffer[:rows]
            value, goes_right = value_buffer[:rows], right_buffer[:rows]
            at[:] = start_positions
            halves = node.view(np.int32)
            feature, threshold = halves[..., 1::2], halves[..., ::2].view(np.float32)
            for packed in self.levels:
                packed.take(at, out=node, mode="clip")
                np.add(feature, row_bases[:rows], out=index)
                flat.take(index, out=value, mode="clip")
                np.greater(value, threshold, out=goes_right)
                at += at
                at += goes_right
            out[first : first + rows] = bottom.take(at).sum(axis=1)


@functools.cache
def _walk_ahead_pool() -> ThreadPoolExecutor:
    """The thread that starts a batch's forest walk while the scorer computes its tails and rules."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="anomaly-walk-ahead")


@functools.cache
def _score_pool() -> ThreadPoolExecutor:
    """The threads that share large forest walks with the calling thread (made on first use)."""
    return ThreadPoolExecutor(max_workers=SCORE_THREADS - 1, thread_name_prefix="anomaly-forest")


def forest_inputs(values: np.ndarray) -> np.ndarray:
    """The feature vector as the forest sees it: sign * log(1 + |x|), so heavy tails do not eat every split.

    In float32, which is what sklearn's trees compare anyway, and with `log(1 + x)` rather than
    `log1p`: numpy vectorises float32 `log` and not `log1p` (5x faster here), and the two differ only far
    below any split's resolution. Fitting and scoring both go through here, so they see the same values.
    """
    x = np.asarray(values, dtype=np.float32)
    out = np.abs(x)
    out += np.float32(1.0)
    np.log(out, out=out)
    return np.copysign(out, x, out=out)


def fit_forest(train: np.ndarray, config: ScorerConfig, seed: int) -> ForestArrays:
    """Fit an IsolationForest on the training rows (single-threaded, seeded: the same data gives the same forest)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(
        n_estimators=config.forest_trees,
        max_samples=min(config.forest_samples, len(train)),
        random_state=seed,
        n_jobs=1,
    )
    forest.fit(train)
    return ForestArrays.from_sklearn(forest)


# --- the scorer ---------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Scores:
    """What the scorer made of each row (batch row order)."""

    fused: np.ndarray  # surprise, -log10 scale
    flagged: np.ndarray  # bool
    parts: np.ndarray  # (n, 3): rules, tail, forest surprises
    tail_parts: np.ndarray  # (n, len(TAIL_FEATURES)) per-feature surprises
    rule_hits: np.ndarray  # (n, 3) bool: off-market, wash, self-trade

    @property
    def score(self) -> np.ndarray:
        """The published score in [0, 1): fused / (fused + 3)."""
        return self.fused / (self.fused + HALF_SCORE_SURPRISE)


PART_NAMES = ("rules", "tail", "forest")
RULE_NAMES = ("off-market", "wash", "self-trade")


@dataclass
class _Pending:
    """Rows of the current, incomplete block: learnt when the block completes."""

    forest_u: list[np.ndarray] = field(default_factory=list)
    fused: list[np.ndarray] = field(default_factory=list)
    train: list[np.ndarray] = field(default_factory=list)


class AnomalyScorer:
    """Scores feature frames and learns from them, block by block (see the module docstring)."""

    def __init__(self, config: ScorerConfig | None = None) -> None:
        self.config = config or ScorerConfig()
        c = self.config
        self.seen = 0  # trades taken, all symbols, in stream order
        self.eligible = 0  # trades offered to the training window so far
        self.tail = Calibrator(c.bins, 8.0, c.calibration_half_life, histograms=len(TAIL_FEATURES))
        self.forest_calibrator = Calibrator(c.bins, 1.0, c.calibration_half_life)
        self.fused_calibrator = Calibrator(c.bins, 30.0, c.calibration_half_life)
        self.threshold = float("inf")
        # the training window: the newest `train_window` rows of these parts, oldest first (trimmed lazily)
        self._train_parts: list[np.ndarray] = [np.zeros((0, len(FEATURES)), np.float64)]
        self._train_rows = 0
        self.forest: ForestArrays | None = None
        self.pending_forest: ForestArrays | None = None
        self.swap_at = -1  # trade count at which the pending forest takes over
        self.clock_ms = NEVER_MS  # the latest event time taken
        self.last_refit_ms = NEVER_MS  # event time of the last refit
        self._fit_thread: threading.Thread | None = None
        self._fit_result: list[ForestArrays] = []
        self._pending = _Pending()
        self._pending_tail: list[np.ndarray] = []  # tail inputs of the incomplete block's learnt rows

    # -- scoring --

    def process(self, frame: FeatureFrame, ts: np.ndarray | None = None) -> Scores:
        """Score every row against the state before its block, then learn each completed block.

        What a row's block learns never depends on the row's score for the tail calibrations, so those
        are read for the whole batch at once; only the forest calibration, the fused threshold and the
        training window follow the flags, and they take a few small numpy calls per block.
        """
        n = len(frame)
        c = self.config
        values, warming = frame.values, frame.warming_up
        if n == 0:
            return Scores(
                np.zeros(0),
                np.zeros(0, bool),
                np.zeros((0, 3)),
                np.zeros((0, len(TAIL_FEATURES))),
                np.zeros((0, 3), bool),
            )
        learnt = ~warming
        # rows bounds[k]:bounds[k + 1] are the batch's part of one block (the first may finish a cut block)
        bounds = np.r_[0, np.arange(c.block - self.seen % c.block, n, c.block), n].tolist()
        # the forest's walk over the rows up to its next swap does not depend on the tails or the rules:
        # on a large batch it starts now, on its own thread, and the tails and rules are computed meanwhile
        ahead: tuple[Future[np.ndarray], np.ndarray, int] | None = None
        if self.forest is not None and self.seen != self.swap_at and n >= WALK_AHEAD_MIN_ROWS:
            until = self._rows_this_forest_scores(n, ts)
            rows = np.flatnonzero(learnt[:until])
            ahead = (_walk_ahead_pool().submit(self.forest.score, forest_inputs(values[rows])), rows, until)
        tail_u = self._tail_inputs(values)
        tail_parts = self._tail_surprises(tail_u, learnt, bounds)
        tail_parts *= TAIL_WEIGHTS
        tail_parts[warming] = 0.0
        tail = top_two_sum(tail_parts, TAIL_SECOND_WEIGHT)
        rules, hits = self._rules(values, frame.self_trade, warming)
        # the fused score is max + a quarter of the rest over (rules, tail, forest): the first two are known
        known_max = np.maximum(rules, tail)
        known_sum = rules + tail
        fused = np.zeros(n)
        flagged = np.zeros(n, bool)
        forest = np.zeros(n)
        forest_u = np.zeros(n)
        scored_by: ForestArrays | None = None
        scored_until = 0  # forest_u[lo:scored_until] holds the scores of `scored_by`
        for lo, hi in itertools.pairwise(bounds):
            if self.seen == self.swap_at:
                self._swap_forest()
            if self.forest is not None:
                if ahead is not None:  # lo == 0, and the forest is the one the walk started with
                    future, rows, scored_until = ahead
                    forest_u[rows] = future.result()
                    scored_by, ahead = self.forest, None
                if self.forest is not scored_by or hi > scored_until:
                    scored_by = self.forest
                    scored_until = lo + self._rows_this_forest_scores(n - lo, None if ts is None else ts[lo:])
                    rows = lo + np.flatnonzero(learnt[lo:scored_until])  # warming rows never use the forest
                    forest_u[rows] = self.forest.score(forest_inputs(values[rows]))
                forest[lo:hi] = self.forest_calibrator.surprise(forest_u[lo:hi])
                forest[lo:hi][warming[lo:hi]] = 0.0
            strongest = np.maximum(known_max[lo:hi], forest[lo:hi])
            fused[lo:hi] = strongest + 0.25 * ((known_sum[lo:hi] + forest[lo:hi]) - strongest)
            flagged[lo:hi] = fused[lo:hi] > max(self.threshold, c.min_surprise)
            self._remember(lo, hi, values, learnt[lo:hi] & ~flagged[lo:hi], forest_u, fused)
            self.seen += hi - lo
            if ts is not None and hi > lo:
                self.clock_ms = max(self.clock_ms, int(ts[lo:hi].max()))
            if self.seen % c.block == 0:
                self._learn_block()
        return Scores(fused, flagged, np.stack([rules, tail, forest], axis=1), tail_parts, hits)

    def _rows_this_forest_scores(self, n: int, ts: np.ndarray | None) -> int:
        """How many of the next n rows (event times `ts`) the current forest certainly scores: up to a
        pending swap, and, if a refit could start within them (their event time allows one), up to the swap
        after it. The walk started ahead and the walks within a batch both stop there."""
        until = n
        if self.swap_at > self.seen:
            until = min(until, self.swap_at - self.seen)
        clock = self.clock_ms if ts is None or not len(ts) else max(self.clock_ms, int(ts.max()))
        if ts is None or clock - self.last_refit_ms >= self.config.refit_min_ms:
            until = min(until, self._trades_to_next_swap())
        return until

    def _trades_to_next_swap(self) -> int:
        """Trades until the forest can next change: a pending swap, or the swap after the next refit."""
        c = self.config
        next_swap = (self.seen // c.refit_every + 1) * c.refit_every + c.swap_after
        if self.swap_at > self.seen:
            next_swap = min(next_swap, self.swap_at)
        return next_swap - self.seen

    def _tail_surprises(self, tail_u: np.ndarray, learnt: np.ndarray, bounds: list[int]) -> np.ndarray:
        """Each row's per-feature tail surprise against the calibration before its block; learns completed blocks.

        As `Calibrator.surprise`, on the calibrations before each block stacked as tables, with the bins
        found once for both the lookup and the learning: every learnt row is counted per block with
        one bincount, and only the decay and the addition of a block's (integer) counts run per block.
        """
        histograms = len(TAIL_FEATURES)
        calibrator = self.tail
        bins, width = calibrator.counts.shape[1], calibrator.width
        blocks = len(bounds) - 1
        sizes = np.diff(bounds)
        block_of_row = np.repeat(np.arange(blocks), sizes)
        at, inside = calibrator.locate(tail_u)  # the bin, then its place in the stack of tables
        at += np.arange(histograms) * bins
        at += (block_of_row * (histograms * bins))[:, None]
        learnt_at = at if learnt.all() else at[learnt]
        added = np.bincount(learnt_at.reshape(-1), minlength=blocks * histograms * bins)
        added = added.reshape(blocks, histograms, bins)
        learnt_per_block = np.add.reduceat(learnt, bounds[:-1], dtype=np.int64)  # process() never passes 0 rows
        counts = np.empty((blocks, histograms, bins))  # the calibrations before each block
        seen = self.seen
        for k in range(blocks):
            counts[k] = calibrator.counts
            seen += int(sizes[k])
            if seen % self.config.block == 0:
                learnt_count = int(learnt_per_block[k])
                block_counts = added[k]
                if self._pending_tail:  # the rows of this block taken in earlier batches
                    earlier = np.concatenate(self._pending_tail)
                    learnt_count += len(earlier)
                    earlier_at = calibrator._bin(earlier) + np.arange(histograms) * bins
                    block_counts = block_counts + np.bincount(
                        earlier_at.reshape(-1), minlength=histograms * bins
                    ).reshape(histograms, bins)
                    self._pending_tail = []
                calibrator.counts *= calibrator.decay_per_trade**learnt_count
                calibrator.counts += block_counts
            else:
                lo, hi = bounds[k], bounds[k + 1]
                self._pending_tail.append(tail_u[lo:hi][learnt[lo:hi]])
        tables = counts.reshape(blocks * histograms, bins)
        return table_surprise(tables, at, inside, tail_u, width, row_of_table=block_of_row)

    def _tail_inputs(self, values: np.ndarray) -> np.ndarray:
        """Each tail feature's extremeness on a log scale: log(1 + |z|), log(1 + max(z, 0)), log(1 + 20 * share).

        `log(1 + x)`, not `log1p`: numpy vectorises `log` only, and a histogram bin (0.013 wide) cannot tell them apart.
        """
        x = values[:, TAIL_COLUMNS]
        x[:, TAIL_TWO_SIDED] = np.abs(x[:, TAIL_TWO_SIDED])
        x[:, TAIL_SHARE] *= SHARE_SCALE
        np.maximum(x, 0.0, out=x)
        x += 1.0
        return np.log(x, out=x)

    def _rules(self, values: np.ndarray, self_trade: np.ndarray, warming: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rule surprise (RULE_SURPRISE plus how far past the rule) and which rules hit, per row."""
        price_z, jump_z = values[:, F["price_z"]], values[:, F["jump_z"]]
        same_way = np.sign(price_z) == np.sign(jump_z)
        offmarket_z = np.where(same_way, np.minimum(np.abs(price_z), np.abs(jump_z)), 0.0)
        offmarket = (offmarket_z >= self.config.offmarket_sigma) & ~warming
        round_trips = values[:, F["round_trips"]]
        # one reversed leg at a common size happens by chance (a busy trader and a market maker); a
        # third trade of the pair, or a match at an uncommon size, rarely does
        wash = (round_trips >= 1) & ((values[:, F["same_pair"]] >= 2) | (values[:, F["size_z"]] >= 1.5))
        past = np.log2(np.maximum(offmarket_z, 1.0) / self.config.offmarket_sigma)
        surprise = np.where(offmarket, RULE_SURPRISE + past, 0.0)
        surprise = np.maximum(surprise, np.where(wash, RULE_SURPRISE + 0.5 * round_trips, 0.0))
        surprise = np.maximum(surprise, np.where(self_trade, RULE_SURPRISE + 2.0, 0.0))
        return surprise, np.stack([offmarket, wash, self_trade], axis=1)

    # -- learning --

    def _remember(
        self, lo: int, hi: int, values: np.ndarray, usable: np.ndarray, forest_u: np.ndarray, fused: np.ndarray
    ) -> None:
        """Keep a block part's unflagged learnt rows (`usable`, rows lo:hi) for the forest calibration and
        training window, and its scores."""
        pending = self._pending
        if self.forest is not None:
            pending.forest_u.append(forest_u[lo:hi][usable])
        pending.fused.append(fused[lo:hi])
        eligible = np.flatnonzero(usable)
        stride = self.config.train_stride  # every stride-th eligible row, counting across blocks
        pick = eligible[-self.eligible % stride :: stride]
        self.eligible += len(eligible)
        pending.train.append(values[lo + pick])

    def _learn_block(self) -> None:
        """Fold the completed block into the forest calibration, the threshold and the training window."""
        pending, self._pending = self._pending, _Pending()
        if pending.forest_u:
            self.forest_calibrator.learn(np.concatenate(pending.forest_u))
        self.fused_calibrator.learn(np.concatenate(pending.fused))
        if self.seen >= 2 * self.config.block:
            self.threshold = self.fused_calibrator.quantile(1.0 - self.config.budget)
        if pending.train:
            # appended per block, joined only when the parts hold twice the window (or the window is read):
            # re-copying the whole window every block cost as much as scoring the block's forest
            self._train_parts.extend(pending.train)
            self._train_rows += sum(len(part) for part in pending.train)
            if self._train_rows > 2 * self.config.train_window:
                self._train_parts = [self.train]
                self._train_rows = len(self._train_parts[0])
        if (
            self.seen % self.config.refit_every == 0
            and self._train_rows >= self.config.forest_samples
            and self.clock_ms - self.last_refit_ms >= self.config.refit_min_ms
        ):
            self._start_fit()

    @property
    def train(self) -> np.ndarray:
        """The newest `train_window` unflagged rows taken (every `train_stride`-th), oldest first."""
        window = np.concatenate(self._train_parts)[-self.config.train_window :]
        self._train_parts, self._train_rows = [window], len(window)
        return window

    @train.setter
    def train(self, rows: np.ndarray) -> None:
        self._train_parts, self._train_rows = [rows], len(rows)

    def _start_fit(self) -> None:
        self._join_fit()
        data = forest_inputs(self.train)
        seed = (self.config.seed * 1_000_003 + self.seen // self.config.refit_every) % 2**32
        result: list[ForestArrays] = []

        def fit() -> None:
            result.append(fit_forest(data, self.config, seed))

        self._fit_result = result
        self._fit_thread = threading.Thread(target=fit, name="anomaly-forest-fit", daemon=True)
        self._fit_thread.start()
        self.swap_at = self.seen + self.config.swap_after
        self.last_refit_ms = self.clock_ms

    def _join_fit(self) -> None:
        """Wait for a running fit (rare: only when the stream outruns it) and keep its forest as pending."""
        if self._fit_thread is not None:
            self._fit_thread.join()
            self._fit_thread = None
            if not self._fit_result:
                raise RuntimeError("the background IsolationForest fit failed; see the log")
            self.pending_forest = self._fit_result[0]

    def _swap_forest(self) -> None:
        self._join_fit()
        if self.pending_forest is not None:
            self.forest, self.pending_forest = self.pending_forest, None
            self.forest_calibrator = Calibrator(self.config.bins, 1.0, self.config.calibration_half_life)
        self.swap_at = -1

    # -- checkpoint --

    def to_bytes(self) -> bytes:
        """The whole scorer as a checkpoint (waits for a running fit, so its forest is included)."""
        self._join_fit()
        c = self.config
        meta = {
            "kind": "anomaly-scorer",
            "config": {k: getattr(c, k) for k in ScorerConfig.__dataclass_fields__},
            "seen": self.seen,
            "eligible": self.eligible,
            "threshold": self.threshold,
            "swap_at": self.swap_at,
            "clock_ms": self.clock_ms,
            "last_refit_ms": self.last_refit_ms,
            "pending_rows": [len(x) for x in self._pending.fused],
        }
        arrays: dict[str, np.ndarray] = {
            "train": self.train,
            "forest_counts": self.forest_calibrator.counts[0],
            "fused_counts": self.fused_calibrator.counts[0],
        }
        for k, counts in enumerate(self.tail.counts):
            arrays[f"tail_counts_{k}"] = counts
        pending = self._pending
        width = len(TAIL_FEATURES)
        arrays["pending_tail_u"] = np.concatenate(self._pending_tail) if self._pending_tail else np.zeros((0, width))
        arrays["pending_forest_u"] = np.concatenate(pending.forest_u) if pending.forest_u else np.zeros(0)
        arrays["pending_has_forest"] = np.array([bool(pending.forest_u)])
        arrays["pending_fused"] = np.concatenate(pending.fused) if pending.fused else np.zeros(0)
        arrays["pending_train"] = np.concatenate(pending.train) if pending.train else np.zeros((0, len(FEATURES)))
        if self.forest is not None:
            arrays |= self.forest.to_arrays("forest_")
        if self.pending_forest is not None:
            arrays |= self.pending_forest.to_arrays("next_forest_")
        return pack_state(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnomalyScorer:
        """A scorer restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "anomaly-scorer":
            raise ValueError("checkpoint is not an anomaly scorer")
        scorer = cls(ScorerConfig(**meta["config"]))
        scorer.seen, scorer.eligible = int(meta["seen"]), int(meta["eligible"])
        scorer.threshold, scorer.swap_at = float(meta["threshold"]), int(meta["swap_at"])
        scorer.clock_ms, scorer.last_refit_ms = int(meta["clock_ms"]), int(meta["last_refit_ms"])
        scorer.train = arrays["train"]
        scorer.forest_calibrator.counts = arrays["forest_counts"][None, :]
        scorer.fused_calibrator.counts = arrays["fused_counts"][None, :]
        scorer.tail.counts = np.stack([arrays[f"tail_counts_{k}"] for k in range(len(TAIL_FEATURES))])
        scorer.forest = ForestArrays.from_arrays(arrays, "forest_")
        scorer.pending_forest = ForestArrays.from_arrays(arrays, "next_forest_")
        pending = scorer._pending
        if len(arrays["pending_fused"]):
            scorer._pending_tail = [arrays["pending_tail_u"]]
            pending.fused = [arrays["pending_fused"]]
            pending.train = [arrays["pending_train"]]
            if bool(arrays["pending_has_forest"][0]):
                pending.forest_u = [arrays["pending_forest_u"]]
        return scorer


def reasons(scores: Scores, frame: FeatureFrame, rows: np.ndarray) -> list[str]:
    """Why each of `rows` scored as it did: the rules it broke, then its most surprising features.

    Columns are pulled out for all rows at once, so a flagged trade costs a few string formats.
    """
    rows = np.asarray(rows, np.int64)
    values = frame.values[rows]
    price_z = values[:, F["price_z"]].tolist()
    round_trips = values[:, F["round_trips"]].tolist()
    hits = scores.rule_hits[rows].tolist()
    tail = scores.tail_parts[rows]
    top_two = np.argsort(-tail, axis=1)[:, :2].tolist()
    tail_rows, value_rows = tail.tolist(), values.tolist()
    forest = scores.parts[rows, 2].tolist()
    out = []
    for k in range(len(rows)):
        parts = []
        offmarket, wash, self_trade = hits[k]
        if offmarket:
            parts.append(f"off-market print {price_z[k]:+.1f} sigma from VWAP")
        if wash:
            parts.append(f"wash: {int(round_trips[k])} opposite legs, same pair and size")
        if self_trade:
            parts.append("self-trade: buyer is seller")
        for j in top_two[k]:
            surprise = tail_rows[k][j]
            if surprise >= 2.0:
                name = TAIL_FEATURES[j]
                parts.append(f"{name} {value_rows[k][F[name]]:+.2f} (1 in {10 ** min(surprise, 9.0):,.0f})")
        if forest[k] >= 2.0:
            parts.append(f"isolation forest (1 in {10 ** min(forest[k], 9.0):,.0f})")
        out.append("; ".join(parts) or "fused evidence")
    return out


# --- features and scorer together, and the worker stage ------------------------------------------


class AnomalyDetector:
    """Features then scores for a batch of trades (pure): what the stage and `tickerdash evaluate` run."""

    def __init__(self, features: FeatureConfig | None = None, scorer: ScorerConfig | None = None) -> None:
        self.features = Features(features)
        self.scorer = AnomalyScorer(scorer)

    def process(self, batch: TickBatch) -> tuple[FeatureFrame, Scores]:
        """Score every trade of the batch (each before it is learnt), then learn the batch."""
        frame = self.features.process(batch)
        return frame, self.scorer.process(frame, batch.ts)

    def to_bytes(self) -> bytes:
        """Both states as one checkpoint."""
        blobs = {"features": self.features.to_bytes(), "scorer": self.scorer.to_bytes()}
        return pack_state({"kind": "anomaly"}, {k: np.frombuffer(v, np.uint8) for k, v in blobs.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> AnomalyDetector:
        """A detector restored from `to_bytes`."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "anomaly":
            raise ValueError("checkpoint is not an anomaly detector")
        detector = cls()
        detector.features = Features.from_bytes(arrays["features"].tobytes())
        detector.scorer = AnomalyScorer.from_bytes(arrays["scorer"].tobytes())
        return detector


def anomaly_fields(batch: TickBatch, frame: FeatureFrame, scores: Scores) -> list[dict[str, str]]:
    """One `tickerdash:anomalies` entry (DESIGN.md fields, strings) per flagged trade, in batch order."""
    rows = np.flatnonzero(scores.flagged)
    if not len(rows):
        return []
    has_origin = len(batch.entry_ids) > 0 and batch.entry_of.shape[0] == len(batch)
    trade_ids = batch.trade_id.take(rows).to_pylist() if batch.trade_id is not None else [None] * len(rows)
    columns = zip(
        rows.tolist(),
        batch.symbol_idx[rows].tolist(),
        batch.ts[rows].tolist(),
        batch.price[rows].tolist(),
        batch.size[rows].tolist(),
        scores.score[rows].tolist(),
        trade_ids,
        reasons(scores, frame, rows),
        strict=True,
    )
    return [
        {
            "symbol": batch.symbols[code],
            "ts": str(ts),
            "price": repr(price),
            "size": repr(size),
            "trade_id": trade_id or "",
            "tick_id": batch.tick_id(row) if has_origin else "",
            "score": f"{score:.6f}",
            "reasons": why,
        }
        for row, code, ts, price, size, score, trade_id, why in columns
    ]


def anomaly_entries_json(batch: TickBatch, frame: FeatureFrame, scores: Scores) -> list[str]:
    """`anomaly_fields` as JSON arrays `[field, value, ...]` (what the engine's AppendMany writes)."""
    return [json.dumps([x for pair in fields.items() for x in pair]) for fields in anomaly_fields(batch, frame, scores)]


class AnomalyStage:
    """Worker stage `anomaly`: scores every trade and adds an anomalies entry per flagged one."""

    name = "anomaly"
    outputs = ("anomalies",)
    concurrent = True  # reads only the batch

    def __init__(self, features: FeatureConfig | None = None, scorer: ScorerConfig | None = None) -> None:
        self.detector = AnomalyDetector(features, scorer)
        self.preload()

    @staticmethod
    def preload() -> None:
        """Import scikit-learn's forest now: the first fit runs on a thread a few thousand trades in, and
        importing it there (~0.5 s, mostly holding the GIL) would stall the stream."""
        import sklearn.ensemble  # noqa: F401

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Add one `tickerdash:anomalies` entry per flagged trade of the batch."""
        frame, scores = self.detector.process(batch)
        if scores.flagged.any():
            entries = functools.partial(anomaly_entries_json, batch, frame, scores)
            effects.outputs.append(AppendMany("anomalies", lambda keys: keys.anomalies, entries))

    def to_bytes(self) -> bytes:
        """The stage's checkpoint (features, calibrations, training window, forests)."""
        return self.detector.to_bytes()

    def load(self, data: bytes) -> None:
        """Restore a checkpoint."""
        self.detector = AnomalyDetector.from_bytes(data)

    def refresh(self, client: redis.Redis, keys: Keys) -> None:
        """Nothing outside the stream changes the scores."""
