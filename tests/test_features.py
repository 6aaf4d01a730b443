"""Anomaly features: each one on small hand-made tapes, causality, and batch-split/restore invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.analytics.stages.anomaly import feature_config
from tickerdash.analytics.stages.anomaly.feature_config import FeatureConfig, bias_table
from tickerdash.analytics.stages.anomaly.features import EMAS, F, Features
from tickerdash.ingest.field_rules import SIDE_BUY, SIDE_SELL
from tickerdash.ingest.ticks import TickBatch, concat

START = 1_767_225_600_000


def tape(n: int, seed: int = 0, symbols: int = 2, accounts: bool = True) -> TickBatch:
    """n ordinary trades: small random-walk prices, round-lot sizes, one trade every ~100 ms."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, symbols, n)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n))), 2)
    size = rng.integers(1, 5, n) * 100.0
    ts = START + np.cumsum(rng.integers(50, 150, n))
    names = [f"T{i}" for i in rng.integers(0, 200, 2 * n)]
    return TickBatch.from_columns(
        [f"S{i}" for i in idx],
        price,
        size,
        ts,
        rng.choice([SIDE_BUY, SIDE_SELL], n),
        buyer=names[:n] if accounts else None,
        seller=names[n:] if accounts else None,
    )


def single(
    prices: list[float],
    sizes: list[float] | None = None,
    gaps_ms: list[int] | None = None,
    buyers: list[str] | None = None,
    sellers: list[str] | None = None,
    sides: list[int] | None = None,
) -> TickBatch:
    """A one-symbol tape from plain lists."""
    n = len(prices)
    ts = START + np.cumsum([0, *(gaps_ms or [100] * (n - 1))])
    return TickBatch.from_columns(
        ["X"] * n, prices, sizes or [100.0] * n, ts, sides or [SIDE_BUY] * n, buyer=buyers, seller=sellers
    )


def jitter(n: int, seed: int = 1) -> list[float]:
    """n prices wobbling one tick around 100."""
    return list(100 + np.random.default_rng(seed).choice([-0.01, 0.0, 0.01], n))


class TestPriceFeatures:
    def test_off_market_print_is_many_sigmas_from_vwap_and_from_the_last_trade(self) -> None:
        """A print 5% away after 200 calm trades is far beyond 10 robust sigmas on both price features."""
        values = Features().process(single([*jitter(200), 105.0])).values
        assert values[-1, F["price_z"]] > 10 and values[-1, F["jump_z"]] > 10
        assert abs(values[-2, F["price_z"]]) < 5

    def test_the_trade_after_a_spike_is_back_near_vwap(self) -> None:
        """After one off-market print the next trade at the market is close to the VWAP again."""
        values = Features().process(single([*jitter(200), 105.0, 100.0])).values
        assert abs(values[-1, F["price_z"]]) < abs(values[-2, F["price_z"]]) / 5

    def test_momentum_grows_along_a_steady_climb(self) -> None:
        """A run of up-ticks gives a larger momentum z at its end than at its start."""
        climb = [100 + 0.05 * k for k in range(1, 16)]
        values = Features().process(single([*jitter(200), *climb])).values
        assert values[-1, F["momentum_z"]] > values[-15, F["momentum_z"]] > 0
        assert values[-1, F["momentum_z"]] > 5

    def test_a_first_move_after_a_flat_run_is_a_few_sigmas_not_millions(self) -> None:
        """A symbol that has not moved for 300 trades has no return scale of its own: its first one-cent
        move on $100 (1 bp) is a few sigmas, while a 5% print is still far past the off-market rule."""
        values = Features().process(single([100.0] * 300 + [100.01, 100.0] + [100.0] * 50 + [105.0])).values
        assert abs(values[300, F["jump_z"]]) <= 10 and abs(values[300, F["price_z"]]) <= 10
        assert values[-1, F["jump_z"]] >= 100 and values[-1, F["price_z"]] >= 100

    def test_a_coarse_price_grid_does_not_make_each_tick_a_spike(self) -> None:
        """On $80 a cent is 1.25 bp and most trades do not move the price; a one-tick move after a run of
        unmoved trades stays within a few sigmas of the symbol's mean move."""
        rng = np.random.default_rng(4)
        steps = rng.choice([0.0, 0.01, -0.01], size=3_000, p=[0.93, 0.035, 0.035])
        prices = list(np.round(80 + np.cumsum(steps), 2))
        values = Features().process(single(prices)).values[500:]  # past the warm-up
        moved = np.diff(prices)[499:] != 0
        assert np.abs(values[moved, F["jump_z"]]).max() <= 5


class TestSizeAndTime:
    def test_a_fat_finger_size_has_a_large_size_z(self) -> None:
        """A trade 100x the usual size scores a large positive size z; usual sizes stay small."""
        sizes = list(np.random.default_rng(2).integers(1, 4, 200) * 100.0)
        values = Features().process(single(jitter(201), [*sizes, 20_000.0])).values
        assert values[-1, F["size_z"]] > 5
        assert np.abs(values[40:-1, F["size_z"]]).max() < 4

    def test_log_gap_is_the_log_of_the_wait(self) -> None:
        """log_gap is log1p of the milliseconds since the symbol's previous trade."""
        values = Features().process(single(jitter(50), gaps_ms=[100] * 48 + [5_000])).values
        assert np.isclose(values[-1, F["log_gap"]], np.log1p(5_000))

    def test_burst_rises_when_trades_come_much_faster_than_usual(self) -> None:
        """Gaps dropping from 1 s to 10 ms push the burst ratio well above its calm level."""
        gaps = [1_000] * 200 + [10] * 30
        values = Features().process(single(jitter(231), gaps_ms=gaps)).values
        assert values[-1, F["burst"]] > 2 > abs(values[199, F["burst"]])

    def test_new_symbols_are_warming_up(self) -> None:
        """A symbol's first `warmup` trades are warming up and carry zero statistical features."""
        frame = Features(FeatureConfig(warmup=10)).process(single(jitter(15)))
        assert frame.warming_up.tolist() == [True] * 10 + [False] * 5
        assert not frame.values[:10, : F["burst"] + 1].any()


class TestAccountFeatures:
    def test_wash_legs_count_round_trips_of_the_same_pair_at_the_same_size(self) -> None:
        """A and B swapping 700 shares back and forth: each leg after the first matches the reversed ones."""
        buyers = ["A", "B", "A", "B"]
        sellers = ["B", "A", "B", "A"]
        batch = single([100.0] * 4, [700.0] * 4, buyers=buyers, sellers=sellers)
        values = Features().process(batch).values
        assert values[:, F["round_trips"]].tolist() == [0, 1, 1, 2]
        assert values[:, F["same_pair"]].tolist() == [0, 1, 2, 3]

    def test_round_trips_need_the_same_size_and_the_window(self) -> None:
        """Reversed legs at another size, or after the wash window, are not round trips."""
        batch = single(
            [100.0] * 3, [700.0, 300.0, 700.0], gaps_ms=[100, 120_000], buyers=["A", "B", "B"], sellers=["B", "A", "A"]
        )
        values = Features(FeatureConfig(wash_window_ms=60_000)).process(batch).values
        assert values[:, F["round_trips"]].tolist() == [0, 0, 0]

    def test_aggressor_share_is_the_accounts_part_of_recent_volume(self) -> None:
        """An account that bought half the recent volume as aggressor has a share of one half."""
        buyers = ["P", "Q", "P", "Q", "P"]
        batch = single([100.0] * 5, [100.0] * 5, buyers=buyers, sellers=["M"] * 5, sides=[SIDE_BUY] * 5)
        values = Features().process(batch).values
        assert values[4, F["aggressor_share"]] == 0.5
        assert values[4, F["passive_share"]] == 1.0

    def test_self_trade_is_flagged(self) -> None:
        """Buyer equal to seller is a self-trade; a missing account is not."""
        batch = single([100.0] * 3, buyers=["A", None, "A"], sellers=["A", None, "B"])  # type: ignore[list-item]
        assert Features().process(batch).self_trade.tolist() == [True, False, False]

    def test_account_features_are_zero_without_accounts(self) -> None:
        """On a public tape (no buyer/seller) the account features are all zero."""
        values = Features().process(tape(300, accounts=False)).values
        assert not values[:, F["aggressor_share"] :].any()

    def test_account_features_equal_a_trade_by_trade_reference(self) -> None:
        """Shares, round trips and pairs of 3,000 trades of few accounts (some missing) equal a plain loop over
        each symbol's last `ring` trades, in batches of any size."""
        rng = np.random.default_rng(8)
        n, pool, config = 3000, ["A", "B", "C", "D", None], FeatureConfig(ring=8, wash_window_ms=5_000)
        batch = TickBatch.from_columns(
            [f"S{i}" for i in rng.integers(0, 3, n)],
            np.full(n, 100.0),
            rng.choice([100.0, 200.0, 300.0], n),
            START + np.cumsum(rng.integers(50, 3000, n)),
            rng.choice([SIDE_BUY, SIDE_SELL], n),
            buyer=list(rng.choice(pool, n)),
            seller=list(rng.choice(pool, n)),
        )
        want = np.zeros((n, 4))
        rings: dict[str, list[tuple[object, object, object, float, int]]] = {}
        assert batch.buyer is not None and batch.seller is not None
        buyers, sellers = batch.buyer.to_pylist(), batch.seller.to_pylist()
        for row in range(n):
            symbol, buyer, seller = batch.symbol[row], buyers[row], sellers[row]
            size, ts, sells = float(batch.size[row]), int(batch.ts[row]), batch.side[row] == SIDE_SELL
            aggressor, passive = (seller, buyer) if sells else (buyer, seller)
            ring = rings.setdefault(symbol, [])
            if buyer is not None or seller is not None:
                recent = sum(e[3] for e in ring)
                if aggressor is not None and recent:
                    want[row, 0] = sum(e[3] for e in ring if e[2] == aggressor) / recent
                if passive is not None and recent:
                    want[row, 1] = sum(e[3] for e in ring if passive in (e[0], e[1])) / recent
                for e_buyer, e_seller, _, e_size, e_ts in ring:
                    same_pair = (e_buyer, e_seller) in ((buyer, seller), (seller, buyer))
                    if same_pair and None not in (buyer, seller) and ts - e_ts <= config.wash_window_ms:
                        want[row, 3] += 1
                        want[row, 2] += e_buyer == seller and e_size == size
            ring.append((buyer, seller, aggressor, size, ts))
            del ring[: -config.ring]
        assert want[:, 2].sum() > 20  # the tape has round trips to find
        for cuts in ([], [1, 17, 900, 2_999]):
            features = Features(config)
            got = np.concatenate([features.process(part).values for part in pieces(batch, cuts)])
            np.testing.assert_allclose(got[:, F["aggressor_share"] :], want, rtol=1e-12)


class TestCausality:
    def test_a_trade_does_not_see_itself_or_later_trades(self) -> None:
        """Changing the last trade changes no feature of the trades before it."""
        base = tape(400, seed=3)
        changed = TickBatch.from_columns(
            base.symbol,
            base.price * np.r_[np.ones(399), 1.5],
            base.size,
            base.ts,
            base.side,
            buyer=base.buyer,
            seller=base.seller,
        )
        a, b = Features().process(base).values, Features().process(changed).values
        assert np.array_equal(a[:-1], b[:-1]) and not np.array_equal(a[-1], b[-1])


def pieces(batch: TickBatch, cuts: list[int]) -> list[TickBatch]:
    """The batch cut into consecutive pieces at these row positions."""
    bounds = [0, *cuts, len(batch)]
    return [batch.take(np.arange(lo, hi)) for lo, hi in itertools.pairwise(bounds)]


def split_run(batch: TickBatch, cuts: list[int], restore_at: set[int]) -> tuple[np.ndarray, bytes]:
    """Features of a batch fed in pieces, restoring from a checkpoint after the chosen pieces."""
    features = Features()
    bounds = [0, *sorted(set(cuts)), len(batch)]
    out = []
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        out.append(features.process(batch.take(np.arange(lo, hi))).values)
        if k in restore_at:
            features = Features.from_bytes(features.to_bytes())
    return np.concatenate(out), features.to_bytes()


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 599), max_size=6), restore=st.sets(st.integers(0, 6), max_size=3))
def test_batch_boundaries_and_restores_change_nothing(cuts: list[int], restore: set[int]) -> None:
    """Any split of the tape, with checkpoint/restore between pieces, gives the same bits as one batch."""
    batch = concat([tape(600, seed=5, symbols=3)])
    whole_values, whole_state = split_run(batch, [], set())
    values, state = split_run(batch, cuts, restore)
    assert np.array_equal(values, whole_values)
    assert state == whole_state


@given(st.sampled_from(EMAS), st.lists(st.integers(0, 10**9), min_size=1, max_size=50))
def test_bias_table_gives_the_bits_of_a_pow_per_count(ema: str, counts: list[int]) -> None:
    """A bias table holds, per count, the bits of 1 - C's pow (Python's float `**`, the feature loop's pow), up
    to where that is 1.0 for good; numpy's vectorised power may differ from it in the last bit."""
    decay = 1.0 - FeatureConfig().alpha(ema)
    table = bias_table(decay)
    assert table is not None
    spread = range(0, len(table) + 5, max(1, len(table) // 2000))
    at = np.array([*counts, *spread, *range(max(0, len(table) - 50), len(table) + 5)], np.int64)
    looked_up = table.take(np.minimum(at, len(table) - 1))
    per_count = np.array([1.0 - decay ** float(c) for c in at.tolist()])
    assert np.array_equal(looked_up.view(np.int64), per_count.view(np.int64))
    assert table[0] == 0.0 and table[-1] == 1.0 and (np.diff(table) >= 0).all()


def test_a_long_half_life_computed_per_row_gives_the_bits_of_a_bias_table(monkeypatch: pytest.MonkeyPatch) -> None:
    long = FeatureConfig(size_half_life=25_000.0)  # 55 half-lives: 1.4M entries, past BIAS_TABLE_MAX
    batch = tape(400, seed=3)
    bias_table.cache_clear()
    assert bias_table(1.0 - long.alpha("size_mean")) is None
    computed = Features(long).process(batch).values
    monkeypatch.setattr(feature_config, "BIAS_TABLE_MAX", 1 << 21)
    bias_table.cache_clear()
    looked_up = Features(long).process(batch).values
    bias_table.cache_clear()
    assert np.array_equal(computed.view(np.int64), looked_up.view(np.int64))
