"""Anomaly scores for every trade: rules, per-feature tail probabilities and an IsolationForest, fused.

Scorers (each gives a *surprise*, minus log10 of how rare a normal trade that extreme is, plus reasons;
each in its own module):

- rules: an off-market print (price beyond `offmarket_sigma` robust sigmas from both the weighted VWAP
  and the previous trade, in the same direction); the wash pattern (the same account pair trading the
  opposite legs at the same size within the window); a self-trade (buyer == seller).
- tails: every feature's empirical tail probability against the recent history of that feature
  (a decayed histogram per feature); the strongest counts fully, the second half.
- forest: scikit-learn's IsolationForest on the (sign-log compressed) feature vector, refitted on a
  recent window of unflagged trades, with its anomaly score calibrated by the same kind of histogram.

Fusion: the largest surprise plus a quarter of the others (corroboration). Taking the largest of
several surprises inflates it (an ordinary trade passes a fused surprise of 4 about once in 60, not once
in 10,000), so the fused surprise is calibrated in its turn: its *rarity* is minus log10 of the share of
recent trades whose fused surprise was at least as high (a decayed histogram, like every calibration).
A trade is flagged when its rarity reaches `flag_rarity` (4.5 by default: about one ordinary trade in
30,000) and its fused surprise passes `min_surprise`. A threshold rather than a share of trades: a quiet
market gives few flags, and an episode, whose trades are rarer than anything recent, gives several. The
published score is `rarity / (rarity + 3)`, in [0, 1): a 1-in-1,000 trade scores 0.5, the default flag
threshold (1 in 30,000) 0.6, 1 in 400,000 0.65.

Determinism (exactly-once): the output depends only on the checkpointed state and the input. Rows
are taken in stream order in blocks of `block` trades of the stage's own trade count. Within a block,
every calibration and the forest are frozen (each trade is scored against the state
before its block, and the block is learnt once it is complete); a block cut by a batch boundary waits
in the state. The forest is refitted in a background thread, on a copy of the training window, when
the trade count crosses a multiple of `refit_every` and at least `refit_min_ms` of event time has passed
since the last refit (both read off the stream, so a replay decides alike), with a seed derived from the
count, and is swapped in exactly `swap_after` trades later. Only if the fit is still running then (a
replay or catch-up far faster than real time) does the stream wait for it. `to_bytes` waits for a running fit too, and
stores the pending forest, so a restored stage swaps the same forest at the same trade.

Limits: no trade is flagged before the calibration has learnt `10**flag_rarity` trades (and at least
`2 * block`): a 1-in-30,000 level cannot be told from fewer; a pattern that keeps breaking a rule stays
flagged (learning caps it at the flag level); a symbol is
`warming_up` (statistical scorers silent, account rules active) for its first `warmup` trades; a
causal scorer cannot tell an off-market print from the first trade after real news (both are far
from everything before them); the tail and forest scorers learn from a window that includes any
unlabelled manipulation, so a manipulation that persists for the whole window becomes normal.
"""

from __future__ import annotations

import functools
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tickerdash.analytics.engine.segments import pack_state, unpack_state
from tickerdash.analytics.stages.anomaly.calibration import Calibrator
from tickerdash.analytics.stages.anomaly.features import FEATURES, FeatureFrame
from tickerdash.analytics.stages.anomaly.forest import PARALLEL_MIN_ROWS, ForestArrays, fit_forest, forest_inputs
from tickerdash.analytics.stages.anomaly.rules import rule_surprises
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.scores import Scores
from tickerdash.analytics.stages.anomaly.tails import TAIL_FEATURES, TailScorer

# Flagged trades are learnt at most this far above the flag level: far enough that the level follows a
# market whose surprises all rise (a volatility regime) within a few blocks, near enough that an
# episode's extreme trades do not make its later ones look ordinary. A cap in the level's own bin let
# the level climb one bin a block, and flagged 2.4x the nominal share through a regime.
CAP_ABOVE_LEVEL = 1.0
NEVER_MS = -(2**62)  # an event time before any trade: the first refit is never held back
WALK_AHEAD_MIN_ROWS = PARALLEL_MIN_ROWS  # batches from which the walk starts before the tails and rules


@functools.cache
def _walk_ahead_pool() -> ThreadPoolExecutor:
    """The thread that starts a batch's forest walk while the scorer computes its tails and rules."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="anomaly-walk-ahead")


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
        self.tails = TailScorer(c.bins, c.calibration_half_life, c.block)
        self.forest_calibrator = Calibrator(c.bins, 1.0, c.calibration_half_life)
        self.fused_calibrator = Calibrator(c.bins, 30.0, c.calibration_half_life)
        # the training window: the newest `train_window` rows of these parts, oldest first (trimmed lazily)
        self._train_parts: list[np.ndarray] = [np.zeros((0, len(FEATURES)), np.float64)]
        self._train_rows = 0
        self.forest: ForestArrays | None = None
        self.pending_forest: ForestArrays | None = None
        self.swap_at = -1  # trade count at which the pending forest takes over
        self.flag_level = float("inf")  # the fused surprise of rarity `flag_rarity` (learning caps values here)
        self.clock_ms = NEVER_MS  # the latest event time taken
        self.last_refit_ms = NEVER_MS  # event time of the last refit
        self._fit_thread: threading.Thread | None = None
        self._fit_result: list[ForestArrays] = []
        self._pending = _Pending()

    # -- scoring --

    def process(self, frame: FeatureFrame, ts: np.ndarray | None = None) -> Scores:
        """Score every row against the state before its block, then learn each completed block.

        What a row's block learns never depends on the row's score for the tail calibrations, so those
        are read for the whole batch at once; only the forest calibration, the fused calibration and the
        training window follow the flags, and they take a few small numpy calls per block.
        """
        n = len(frame)
        c = self.config
        values, warming = frame.values, frame.warming_up
        if n == 0:
            return Scores(
                np.zeros(0),
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
        tail_parts, tail = self.tails.score(values, learnt, warming, bounds, self.seen)
        rules, hits = rule_surprises(values, frame.self_trade, warming, c.offmarket_sigma)
        # the fused score is max + a quarter of the rest over (rules, tail, forest): the first two are known
        known_max = np.maximum(rules, tail)
        known_sum = rules + tail
        fused = np.zeros(n)
        rarity = np.zeros(n)
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
            if self.flag_level < np.inf:  # enough trades learnt to tell a 1-in-10**flag_rarity one
                candidates = lo + np.flatnonzero(fused[lo:hi] > c.min_surprise)  # few: the rest are not rare
                rarity[candidates] = self.fused_calibrator.surprise(fused[candidates])
                flagged[candidates] = rarity[candidates] >= c.flag_rarity
            self._remember(lo, hi, values, learnt[lo:hi] & ~flagged[lo:hi], forest_u, fused)
            self.seen += hi - lo
            if ts is not None and hi > lo:
                self.clock_ms = max(self.clock_ms, int(ts[lo:hi].max()))
            if self.seen % c.block == 0:
                self._learn_block()
        return Scores(fused, rarity, flagged, np.stack([rules, tail, forest], axis=1), tail_parts, hits)

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

    def _remember(
        self,
        lo: int,
        hi: int,
        values: np.ndarray,
        usable: np.ndarray,
        forest_u: np.ndarray,
        fused: np.ndarray,
    ) -> None:
        """Keep a block part's unflagged learnt rows (`usable`, rows lo:hi) for the forest calibration and
        training window, and its fused surprises, capped at the flag level: a flagged trade counts as one
        more trade at the threshold (which keeps the threshold where it is) and never as evidence that what
        is beyond it is ordinary (which would make the rest of its episode look so)."""
        pending = self._pending
        if self.forest is not None:
            pending.forest_u.append(forest_u[lo:hi][usable])
        pending.fused.append(np.minimum(fused[lo:hi], self.flag_level + CAP_ABOVE_LEVEL))
        eligible = np.flatnonzero(usable)
        stride = self.config.train_stride  # every stride-th eligible row, counting across blocks
        pick = eligible[-self.eligible % stride :: stride]
        self.eligible += len(eligible)
        pending.train.append(values[lo + pick])

    def _learn_block(self) -> None:
        """Fold the completed block into the forest and fused calibrations and the training window."""
        pending, self._pending = self._pending, _Pending()
        if pending.forest_u:
            self.forest_calibrator.learn(np.concatenate(pending.forest_u))
        self.fused_calibrator.learn(np.concatenate(pending.fused))
        rare = 10.0**-self.config.flag_rarity
        if self.seen >= 2 * self.config.block and self.fused_calibrator.total * rare >= 1.0:
            self.flag_level = self.fused_calibrator.quantile(1.0 - rare)
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
            result.append(fit_forest(data, self.config.forest_trees, self.config.forest_samples, seed))

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
            "flag_level": self.flag_level,
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
        for k, counts in enumerate(self.tails.calibrator.counts):
            arrays[f"tail_counts_{k}"] = counts
        pending = self._pending
        width = len(TAIL_FEATURES)
        pending_tail = self.tails.pending
        arrays["pending_tail_u"] = np.concatenate(pending_tail) if pending_tail else np.zeros((0, width))
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
        known = ScorerConfig.__dataclass_fields__  # a setting the code no longer has (e.g. a budget) is dropped
        scorer = cls(ScorerConfig(**{k: v for k, v in meta["config"].items() if k in known}))
        scorer.seen, scorer.eligible = int(meta["seen"]), int(meta["eligible"])
        scorer.swap_at = int(meta["swap_at"])
        scorer.flag_level = float(meta.get("flag_level", meta.get("threshold", float("inf"))))
        scorer.clock_ms, scorer.last_refit_ms = int(meta["clock_ms"]), int(meta["last_refit_ms"])
        scorer.train = arrays["train"]
        scorer.forest_calibrator.counts = arrays["forest_counts"][None, :]
        scorer.fused_calibrator.counts = arrays["fused_counts"][None, :]
        scorer.tails.calibrator.counts = np.stack([arrays[f"tail_counts_{k}"] for k in range(len(TAIL_FEATURES))])
        scorer.forest = ForestArrays.from_arrays(arrays, "forest_")
        scorer.pending_forest = ForestArrays.from_arrays(arrays, "next_forest_")
        pending = scorer._pending
        if len(arrays["pending_fused"]):
            scorer.tails.pending = [arrays["pending_tail_u"]]
            pending.fused = [arrays["pending_fused"]]
            pending.train = [arrays["pending_train"]]
            if bool(arrays["pending_has_forest"][0]):
                pending.forest_u = [arrays["pending_forest_u"]]
        return scorer
