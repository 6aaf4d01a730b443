"""The isolation forest: fitted by scikit-learn, laid out in flat arrays and walked with numpy.

Scoring from our own arrays instead of `score_samples` walks all trees together a level at a time over
chunks of rows (and over threads for a large batch), and gives sklearn's scores to the last bit.
"""

from __future__ import annotations

import functools
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tickerdash.analytics.engine.segments import exclusive_cumsum

SCORE_CHUNK = 2048  # rows per forest pass: the (rows, trees) index arrays stay in the CPU cache
SCORE_THREADS = min(2, os.cpu_count() or 1)  # threads for one large forest walk
PARALLEL_MIN_ROWS = 4 * SCORE_CHUNK  # smaller walks are not worth a thread hand-off


def average_path_length(samples: np.ndarray | list[int]) -> np.ndarray:
    """c(n), the mean depth at which an isolation tree of n samples isolates one: the forest's normaliser.

    2 * H(n - 1) - 2 * (n - 1) / n with H(i) ~ ln(i) + Euler's gamma (the expected path length of an
    unsuccessful search in a binary search tree of n keys), 1 for n = 2 and 0 for n <= 1: scikit-learn's
    definition, written out so the leaves and the normaliser match its `score_samples` to the bit.
    """
    n = np.asarray(samples)
    out = np.zeros(n.shape)
    two = n == 2
    more = n > 2
    out[two] = 1.0
    out[more] = 2.0 * (np.log(n[more] - 1.0) + np.euler_gamma) - 2.0 * (n[more] - 1.0) / n[more]
    return out


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
            [tree.compute_node_depths() + average_path_length(tree.n_node_samples) - 1.0 for tree in trees]
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
        normaliser = len(trees) * float(average_path_length([forest.max_samples_])[0])  # type: ignore[attr-defined]
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


def fit_forest(train: np.ndarray, trees: int, samples: int, seed: int) -> ForestArrays:
    """Fit an IsolationForest on the training rows (single-threaded, seeded: the same data gives the same forest)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(
        n_estimators=trees,
        max_samples=min(samples, len(train)),
        random_state=seed,
        n_jobs=1,
    )
    forest.fit(train)
    return ForestArrays.from_sklearn(forest)
