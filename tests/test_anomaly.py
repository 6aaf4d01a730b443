"""Anomaly scorers: calibration, rules, the numpy forest against sklearn, the flag rarity, determinism, the stage."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from effects_tools import entries
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest
from test_features import START, jitter, single, tape

from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.stages.anomaly import forest as forest_module
from tickerdash.analytics.stages.anomaly import scorer as scorer_module
from tickerdash.analytics.stages.anomaly.calibration import Calibrator
from tickerdash.analytics.stages.anomaly.features import FEATURES, F, FeatureFrame
from tickerdash.analytics.stages.anomaly.forest import ForestArrays, average_path_length
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.stage import AnomalyDetector, AnomalyStage
from tickerdash.analytics.stages.anomaly.surprise_kernel import tail_surprises
from tickerdash.analytics.stages.anomaly.tails import top_two_sum
from tickerdash.ingest.field_rules import SIDE_BUY
from tickerdash.ingest.ticks import TickBatch

SMALL = ScorerConfig(  # flags from 100 trades learnt on: short tapes still flag (the default needs 31,623)
    block=64,
    refit_every=512,
    swap_after=128,
    forest_samples=64,
    train_window=256,
    train_stride=2,
    forest_trees=10,
    flag_rarity=2.0,
)


def frame_of(rows: list[dict[str, float]], warming: bool = False, self_trade: bool = False) -> FeatureFrame:
    """A feature frame from rows of named feature values (the rest zero)."""
    values = np.zeros((len(rows), len(FEATURES)))
    for i, row in enumerate(rows):
        for name, value in row.items():
            values[i, F[name]] = value
    n = len(rows)
    return FeatureFrame(values, np.full(n, warming), np.full(n, self_trade), True)


class TestCalibrator:
    def test_surprise_is_minus_log10_of_the_share_at_or_above(self) -> None:
        """With 1,000 values spread evenly, the value at the 99th percentile is about 1 in 100 (surprise 2)."""
        calibrator = Calibrator(bins=1000, high=1.0, half_life=1e9)
        calibrator.learn((np.arange(1000) + 0.5) / 1000)
        assert abs(calibrator.surprise(np.array([0.99]))[0] - 2.0) < 0.05
        assert calibrator.surprise(np.array([0.0]))[0] < 0.01

    def test_beyond_anything_seen_the_surprise_keeps_rising(self) -> None:
        """Values past the largest learnt value stay ordered instead of tying at the floor."""
        calibrator = Calibrator(bins=100, high=10.0, half_life=1e9)
        calibrator.learn(np.random.default_rng(0).uniform(0, 2, 500))
        s = calibrator.surprise(np.array([3.0, 4.0, 5.0]))
        assert s[0] < s[1] < s[2]

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.lists(st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.5]), min_size=8, max_size=8), min_size=1, max_size=3),
        st.lists(st.one_of(st.floats(-0.5, 3.0), st.integers(0, 12).map(lambda k: k * 0.25)), min_size=1, max_size=12),
    )
    def test_calibrators_and_the_tail_scorer_read_surprises_as_a_value_by_value_computation(
        self, tables: list[list[float]], values: list[float]
    ) -> None:
        """Every value against every table, as the docstring says, including values past the highest bin in use,
        at bin edges, beyond the histogram and against empty tables: through `Calibrator.surprise` (one table)
        and the tail scorer's pass (every table at once, no block completed)."""
        counts, width, bins = np.array(tables), 0.25, 8
        u = np.array(values)[:, None].repeat(len(tables), axis=1)  # each value against each table
        one_by_one = []
        for table in counts:
            calibrator = Calibrator(bins, bins * width, 1e9)
            calibrator.counts[0] = table
            one_by_one.append(calibrator.surprise(u[:, 0]))
        no_learning = 10**9  # a block the rows do not complete
        bounds = np.array([0, len(values)])
        earlier = np.zeros((0, len(tables)))
        learnt = np.ones(len(values), bool)
        compiled = tail_surprises(u, learnt, bounds, 0, no_learning, counts.copy(), 0.5, width, earlier)
        for (r, t), value in np.ndenumerate(u):
            table = counts[t]
            b = min(max(int(value / width), 0), bins - 1)
            place = min(max(value / width - b, 0.0), 1.0)
            above = float(table[b + 1 :].sum())
            total = float(table.sum()) + 1.0
            expected = -np.log10((table[b] * (1 - place) + above + 0.5) / total)
            used = np.flatnonzero(table)
            top = (used[-1] + 1) * width if len(used) else bins * width
            if above == 0.0 and value > top:
                expected = np.log10(total / 0.5) + (value - top)
            expected = 0.0 if total == 1.0 else max(expected, 0.0)
            assert one_by_one[t][r] == pytest.approx(expected, rel=1e-9, abs=1e-12), (r, t, value)
            assert compiled[r, t] == pytest.approx(expected, rel=1e-9, abs=1e-12), (r, t, value)

    def test_the_compiled_tails_learn_each_completed_block_as_a_calibrator_learns_it(self) -> None:
        """Each block the batch completes learns its learnt rows (with the first block's rows from earlier
        batches) as `Calibrator.learn` does, after its rows are scored; an incomplete last block learns nothing."""
        rng = np.random.default_rng(3)
        block, seen, rows = 100, 40, 290  # parts of 60 (completing a block begun earlier), 100, 100 and 30 rows
        u = rng.uniform(-0.5, 8.5, (rows, 3))
        learnt = rng.random(rows) < 0.8
        earlier = rng.uniform(0, 8, (25, 3))  # the first block's learnt rows from earlier batches
        bounds = np.array([0, 60, 160, 260, rows])
        reference = Calibrator(80, 8.0, 1_000.0, histograms=3)
        counts = reference.counts.copy()
        tail_surprises(u, learnt, bounds, seen, block, counts, reference.decay_per_trade, reference.width, earlier)
        reference.learn(np.concatenate([earlier, u[0:60][learnt[0:60]]]))
        for lo, hi in ((60, 160), (160, 260)):
            reference.learn(u[lo:hi][learnt[lo:hi]])
        assert np.allclose(counts, reference.counts, rtol=1e-12, atol=0) and counts.sum() > 0

    def test_quantile_splits_the_learnt_values(self) -> None:
        """The 0.9 quantile of 0..1 uniform values is 0.9 to bin resolution."""
        calibrator = Calibrator(bins=100, high=1.0, half_life=1e9)
        calibrator.learn(np.random.default_rng(1).uniform(0, 1, 100_000))
        assert abs(calibrator.quantile(0.9) - 0.9) <= 0.02


class TestRules:
    def test_off_market_print_breaks_the_rule_only_when_far_from_vwap_and_last_trade(self) -> None:
        """12 sigma from both references breaks the off-market rule; 12 from VWAP alone (news drift) does not."""
        detector = AnomalyDetector(scorer=SMALL)
        scores = detector.scorer.process(frame_of([{"price_z": 12, "jump_z": 12}, {"price_z": 12, "jump_z": 1}]))
        assert scores.rule_hits[:, 0].tolist() == [True, False]

    def test_wash_rule_needs_a_third_trade_or_an_uncommon_size(self) -> None:
        """One reversed leg at a common size is chance; with a third trade of the pair it is the wash pattern."""
        detector = AnomalyDetector(scorer=SMALL)
        scores = detector.scorer.process(
            frame_of(
                [
                    {"round_trips": 1, "same_pair": 1},
                    {"round_trips": 1, "same_pair": 2},
                    {"round_trips": 1, "same_pair": 1, "size_z": 3},
                ]
            )
        )
        assert scores.rule_hits[:, 1].tolist() == [False, True, True]

    def test_self_trade_breaks_its_rule_even_while_warming_up(self) -> None:
        """A self-trade is a rule hit with a high surprise, whatever the symbol's history."""
        scores = AnomalyDetector(scorer=SMALL).scorer.process(frame_of([{}], warming=True, self_trade=True))
        assert scores.rule_hits[0, 2] and scores.parts[0, 0] >= 6


class TestForestArrays:
    def test_average_path_length_is_sklearns(self) -> None:
        """c(n) gives scikit-learn's normaliser bit for bit, small n (0, 1, 2) included."""
        from sklearn.ensemble._iforest import _average_path_length  # the reference, never used in production

        samples = np.array([0, 1, 2, 3, 4, 7, 64, 128, 255, 256, 1000, 10**6])
        assert np.array_equal(average_path_length(samples), _average_path_length(samples))
        assert np.array_equal(average_path_length([64]), _average_path_length([64]))
        assert average_path_length([1, 2]).tolist() == [0.0, 1.0]

    def test_forest_scores_bit_for_bit_as_when_laid_out_with_sklearns_normaliser(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Leaves and normaliser built with our c(n) score exactly as with sklearn's own function."""
        from sklearn.ensemble._iforest import _average_path_length

        rng = np.random.default_rng(12)
        forest = IsolationForest(n_estimators=8, max_samples=64, random_state=2).fit(rng.standard_t(3, (1000, 6)))
        test = rng.standard_t(3, (500, 6))
        ours = ForestArrays.from_sklearn(forest)
        monkeypatch.setattr(forest_module, "average_path_length", _average_path_length)
        theirs = ForestArrays.from_sklearn(forest)
        assert np.array_equal(ours.path_length, theirs.path_length) and ours.normaliser == theirs.normaliser
        assert np.array_equal(ours.score(test), theirs.score(test))

    def test_numpy_scoring_equals_sklearn(self) -> None:
        """The complete-tree numpy traversal gives sklearn's -score_samples on fresh data."""
        rng = np.random.default_rng(4)
        train = rng.standard_t(3, (2000, len(FEATURES)))
        forest = IsolationForest(n_estimators=30, max_samples=256, random_state=3).fit(train)
        test = np.vstack([rng.standard_t(3, (3000, len(FEATURES))), rng.normal(0, 20, (50, len(FEATURES)))])
        ours = ForestArrays.from_sklearn(forest).score(test)
        assert np.allclose(ours, -forest.score_samples(test), rtol=1e-12, atol=0)

    def test_a_large_batch_split_over_threads_scores_as_one_thread_and_as_sklearn(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rows are independent: the threaded walk of a big batch equals the single-threaded one, and sklearn."""
        rng = np.random.default_rng(6)
        forest = IsolationForest(n_estimators=25, max_samples=128, random_state=1).fit(rng.normal(size=(2000, 5)))
        arrays = ForestArrays.from_sklearn(forest)
        rows = rng.standard_t(3, (4 * forest_module.PARALLEL_MIN_ROWS + 17, 5))
        monkeypatch.setattr(forest_module, "SCORE_THREADS", 1)
        alone = arrays.score(rows)
        monkeypatch.setattr(forest_module, "SCORE_THREADS", 2)
        split = arrays.score(rows)
        assert np.array_equal(split, alone)
        assert np.allclose(split, -forest.score_samples(rows), rtol=1e-12, atol=0)

    def test_checkpointed_forest_scores_the_same(self) -> None:
        """A forest written to arrays and read back scores bit for bit the same."""
        train = np.random.default_rng(5).normal(size=(500, 4))
        forest = ForestArrays.from_sklearn(IsolationForest(n_estimators=5, random_state=0).fit(train))
        again = ForestArrays.from_arrays(forest.to_arrays("f_"), "f_")
        assert again is not None and np.array_equal(again.score(train), forest.score(train))


class TestScorer:
    def test_the_flag_rarity_sets_the_share_of_ordinary_trades_flagged(self) -> None:
        """On a tape with nothing injected, a flag rarity of 2 flags about 1 trade in 100 (never twice that),
        and the default of 4.5 about 1 in 30,000: a quiet market gives few flags."""
        ordinary = tape(60_000, seed=8, symbols=5)
        _, loose = AnomalyDetector(scorer=ScorerConfig(flag_rarity=2.0, block=256)).process(ordinary)
        _, default = AnomalyDetector(scorer=ScorerConfig(block=256)).process(ordinary)
        assert 0 < loose.flagged.mean() <= 0.02
        assert default.flagged.sum() <= 10  # 1 expected at 1 in 30,000 after 31,623 learnt; the rest is learning
        assert np.all(default.score[default.flagged] >= 0.6)  # rarity 4.5: score 4.5 / (4.5 + 3)
        assert np.all(default.score[~default.flagged] < 0.6)

    def test_an_episode_in_a_quiet_market_is_flagged_trade_by_trade(self) -> None:
        """Five prints 5% off a calm market, a few seconds apart: each is rarer than anything recent, and
        the episode's first prints do not make the later ones look ordinary."""
        calm = tape(150_000, seed=8, symbols=3, accounts=False)
        spikes = np.flatnonzero(calm.symbol_idx == 0)[[40_000, 40_040, 40_080, 40_120, 40_160]]  # ~120,000th
        price = calm.price.copy()
        price[spikes] *= 1.05
        _, quiet = AnomalyDetector(scorer=ScorerConfig(block=256)).process(calm)
        _, episode = AnomalyDetector(scorer=ScorerConfig(block=256)).process(replace(calm, price=price))
        assert quiet.flagged.sum() <= 10  # about 4 expected: 1 in 30,000 of the ~120,000 after the warm-up
        assert episode.flagged[spikes].all()
        assert episode.flagged.sum() - len(spikes) <= quiet.flagged.sum() + len(spikes)  # at most a trade back each

    def test_an_off_market_print_is_flagged_with_its_reason(self) -> None:
        """A 5% print in a calm symbol is flagged, and its reasons name the off-market rule."""
        stage = AnomalyStage(scorer=ScorerConfig(block=64, flag_rarity=2.0))
        prices = [*jitter(400), 105.0, *jitter(20)]
        batch = single(prices, buyers=["A"] * 421, sellers=["B"] * 421)
        effects = Effects(batch)
        stage.process(batch, effects)
        flagged = [e for e in entries(effects, "anomalies") if e["price"] == "105.0"]
        assert flagged and "off-market" in flagged[0]["reasons"]
        assert 0.5 < float(flagged[0]["score"]) < 1
        assert set(flagged[0]) == {"symbol", "ts", "price", "size", "trade_id", "tick_id", "score", "reasons"}

    def test_the_forest_is_refitted_and_swapped_at_a_fixed_trade_count(self) -> None:
        """With refits every 512 trades, the forest scores trades from number 512 + 128 on (0-based)."""
        detector = AnomalyDetector(scorer=SMALL)
        detector.process(tape(640, seed=9))
        assert detector.scorer.forest is None
        detector.process(tape(1, seed=10))
        assert detector.scorer.forest is not None


def scored_in_pieces(
    batch: TickBatch, cuts: list[int], restore_at: set[int], config: ScorerConfig = SMALL
) -> tuple[np.ndarray, np.ndarray]:
    """Fused surprises and flags of a tape fed in pieces, restoring from a checkpoint after chosen pieces."""
    stage = AnomalyStage(scorer=config)
    bounds = [0, *sorted(set(cuts)), len(batch)]
    fused, flagged = [], []
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        _, scores = stage.detector.process(batch.take(np.arange(lo, hi)))
        fused.append(scores.fused)
        flagged.append(scores.flagged)
        if k in restore_at:
            restored = AnomalyStage(scorer=config)
            restored.load(stage.to_bytes())
            stage = restored
    return np.concatenate(fused), np.concatenate(flagged)


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 1999), max_size=5), restore=st.sets(st.integers(0, 5), max_size=3))
def test_scores_do_not_depend_on_batches_or_restores(cuts: list[int], restore: set[int]) -> None:
    """Any split of the stream, with checkpoint/restore (forest refits included), gives the same scores."""
    batch = tape(2000, seed=11, symbols=3)
    whole = scored_in_pieces(batch, [], set())
    pieces = scored_in_pieces(batch, cuts, restore)
    assert np.array_equal(whole[0], pieces[0]) and np.array_equal(whole[1], pieces[1])


def test_stage_without_stream_origin_leaves_tick_id_empty() -> None:
    """A batch that was never on a stream (no entry ids) still gives entries, with an empty tick_id."""
    stage = AnomalyStage(scorer=ScorerConfig(block=64, flag_rarity=2.0))
    n = 300
    batch = TickBatch.from_columns(
        ["X"] * n,
        [100.0] * (n - 1) + [150.0],
        [100.0] * n,
        START + np.arange(n) * 100,
        [SIDE_BUY] * n,
        buyer=["A"] * n,
        seller=["A"] * n,
    )
    effects = Effects(batch)
    stage.process(batch, effects)
    assert entries(effects, "anomalies") and all(e["tick_id"] == "" for e in entries(effects, "anomalies"))


@pytest.mark.parametrize("refit_min_ms", [0, 60_000, 10**9], ids=["refit every 512", "event-time bound", "once"])
def test_a_forest_walk_started_ahead_scores_as_one_started_in_turn(
    monkeypatch: pytest.MonkeyPatch, refit_min_ms: int
) -> None:
    """On large batches the walk starts before the tails and rules, over the rows the current forest is sure
    to score (up to a swap that is pending, or that a refit in the batch could bring): same scores."""
    batch = tape(6000, seed=5, symbols=3)
    cuts = [1500, 3100, 4700]  # pieces that span forest swaps (refits every 512 trades, swaps 128 later)
    monkeypatch.setattr(forest_module, "PARALLEL_MIN_ROWS", 128)  # walks split over threads too
    monkeypatch.setattr(scorer_module, "WALK_AHEAD_MIN_ROWS", 10**9)
    in_turn = scored_in_pieces(batch, cuts, set(), replace(SMALL, refit_min_ms=refit_min_ms))
    monkeypatch.setattr(scorer_module, "WALK_AHEAD_MIN_ROWS", 128)
    ahead = scored_in_pieces(batch, cuts, set(), replace(SMALL, refit_min_ms=refit_min_ms))
    assert np.array_equal(in_turn[0], ahead[0]) and np.array_equal(in_turn[1], ahead[1])
    assert ahead[1].any()


@given(st.lists(st.lists(st.floats(0.0, 50.0), min_size=6, max_size=6), min_size=1, max_size=40))
def test_top_two_sum_is_the_sum_of_the_two_largest_of_each_row(rows: list[list[float]]) -> None:
    parts = np.array(rows)
    ranked = np.sort(parts, axis=1)
    assert np.array_equal(top_two_sum(parts, 0.5), ranked[:, -1] + 0.5 * ranked[:, -2])
