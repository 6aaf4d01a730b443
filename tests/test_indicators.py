"""The indicator stage: per-symbol SMA, EMA, rolling and session VWAP, counts, on plain arrays."""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from real_trades import read_binance, read_lobster

from tickerdash.analytics.engine.segments import RaggedScan, pack_state, unpack_state
from tickerdash.analytics.stages.indicators import IndicatorConfig, Indicators, window_name
from tickerdash.analytics.stages.window_history import MIN_RING, RING_SHRINK, WindowHistory
from tickerdash.ingest.ticks import TickBatch

SMALL = IndicatorConfig(sma_periods=(2, 3), ema_periods=(3,), vwap_windows_ms=(1_000,))


def batch(symbols: list[str], prices: list[float], sizes: list[float], ts: list[int]) -> TickBatch:
    """A batch from plain lists."""
    return TickBatch.from_columns(symbols, prices, sizes, ts)


class TestHandMade:
    def test_sma_is_mean_of_last_n_trades_and_nan_before_n(self) -> None:
        """The SMA of N trades is NaN until N trades exist, then the mean of the last N prices."""
        prices = [10.0, 11.0, 13.0, 16.0]
        frame = Indicators(SMALL).process(batch(["A"] * 4, prices, [1.0] * 4, [0, 1, 2, 3]))
        expected_2 = [np.nan] + [(prices[i - 1] + prices[i]) / 2 for i in range(1, 4)]
        np.testing.assert_allclose(frame.columns["sma_2"], expected_2, rtol=1e-15)
        assert np.isnan(frame.columns["sma_3"][:2]).all()
        assert frame.columns["sma_3"][3] == pytest.approx(sum(prices[1:]) / 3)

    def test_ema_starts_at_first_price_and_follows_the_recursion(self) -> None:
        """The EMA equals the first price on the first trade, then alpha*price + (1-alpha)*previous."""
        prices = [10.0, 12.0, 9.0]
        frame = Indicators(SMALL).process(batch(["A"] * 3, prices, [1.0] * 3, [0, 1, 2]))
        alpha = 2 / (3 + 1)
        expected = [prices[0]]
        for p in prices[1:]:
            expected.append(alpha * p + (1 - alpha) * expected[-1])
        np.testing.assert_allclose(frame.columns["ema_3"], expected, rtol=1e-15)

    def test_rolling_vwap_window_excludes_the_trade_exactly_w_earlier(self) -> None:
        """The rolling VWAP covers (t - W, t]: a trade exactly W ms before t is out of the window."""
        prices, sizes = [10.0, 20.0, 30.0], [1.0, 3.0, 2.0]
        frame = Indicators(SMALL).process(batch(["A"] * 3, prices, sizes, [0, 500, 1_000]))
        vwap = frame.columns["vwap_1s"]
        assert vwap[1] == pytest.approx((10 * 1 + 20 * 3) / 4)
        assert vwap[2] == pytest.approx((20 * 3 + 30 * 2) / 5)

    def test_session_vwap_count_and_volume_accumulate(self) -> None:
        """Session VWAP, trade count and volume cover every trade of the symbol so far."""
        stage = Indicators(SMALL)
        stage.process(batch(["A", "A"], [10.0, 20.0], [1.0, 1.0], [0, 1]))
        frame = stage.process(batch(["A"], [40.0], [2.0], [5_000]))
        assert frame.columns["session_vwap"][0] == pytest.approx((10 + 20 + 80) / 4)
        assert frame.columns["trades"][0] == 3
        assert frame.columns["volume"][0] == pytest.approx(4.0)

    def test_symbols_are_independent_even_when_interleaved(self) -> None:
        """Interleaved symbols give each the values it would have alone."""
        together = Indicators(SMALL).process(
            batch(["A", "B", "A", "B", "A"], [1.0, 100.0, 2.0, 200.0, 3.0], [1.0] * 5, [0, 0, 1, 1, 2])
        )
        alone = Indicators(SMALL).process(batch(["A"] * 3, [1.0, 2.0, 3.0], [1.0] * 3, [0, 1, 2]))
        for name in SMALL.columns():
            np.testing.assert_array_equal(together.columns[name][[0, 2, 4]], alone.columns[name])

    def test_latest_points_at_each_symbols_last_row(self) -> None:
        """`latest()` holds, per symbol of the batch, the values of its last trade in the batch."""
        frame = Indicators(SMALL).process(batch(["B", "A", "B"], [5.0, 7.0, 6.0], [1.0] * 3, [0, 0, 1]))
        latest = frame.latest()
        assert latest["B"]["price"] == 6.0
        assert latest["A"]["price"] == 7.0
        assert latest["B"]["trades"] == 2

    def test_out_of_order_trade_counts_at_the_symbols_latest_time(self) -> None:
        """A trade older than the symbol's clock stays in the window as if it happened at that clock."""
        frame = Indicators(SMALL).process(batch(["A"] * 3, [10.0, 20.0, 30.0], [1.0] * 3, [0, 5_000, 100]))
        assert frame.columns["vwap_1s"][2] == pytest.approx((20 + 30) / 2)

    def test_rejects_negative_event_time(self) -> None:
        """Event times must be epoch milliseconds >= 0."""
        with pytest.raises(ValueError, match="ts must be"):
            Indicators(SMALL).process(batch(["A"], [1.0], [1.0], [-5]))


@st.composite
def trade_sequences(draw: st.DrawFn) -> tuple[TickBatch, list[int]]:
    """A few symbols, mostly increasing event times with some out of order, and split points."""
    n = draw(st.integers(1, 120))
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(0.01, 1e4), min_size=n, max_size=n))
    sizes = draw(st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(-300, 900), min_size=n, max_size=n))
    ts = np.maximum(np.cumsum(steps) + 10_000, 0)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=6))))
    return batch(symbols, prices, sizes, ts.tolist()), cuts


def pieces(whole: TickBatch, cuts: list[int]) -> list[TickBatch]:
    """The batch cut into consecutive pieces at these row positions."""
    bounds = [0, *cuts, len(whole)]
    return [whole.take(np.arange(a, b)) for a, b in itertools.pairwise(bounds)]


class TestBatchIndependence:
    @settings(max_examples=150, deadline=None)
    @given(trade_sequences())
    def test_split_and_restored_run_equals_one_run_bit_for_bit(self, case: tuple[TickBatch, list[int]]) -> None:
        """Any split into batches, with a checkpoint/restore between each, gives the same bits as one batch."""
        whole, cuts = case
        one = Indicators(SMALL).process(whole).columns
        stage = Indicators(SMALL)
        parts = []
        for piece in pieces(whole, cuts):
            parts.append(stage.process(piece).columns)
            stage = Indicators.from_bytes(stage.to_bytes())
        for name in SMALL.columns():
            joined = np.concatenate([p[name] for p in parts])
            assert joined.tobytes() == one[name].tobytes(), name

    def test_checkpoint_round_trip_keeps_config_and_state(self) -> None:
        """A restored stage has the same config and serialises to the same bytes."""
        stage = Indicators(SMALL)
        stage.process(batch(["A", "B"], [1.0, 2.0], [1.0, 1.0], [0, 0]))
        restored = Indicators.from_bytes(stage.to_bytes())
        assert restored.config == SMALL
        assert restored.to_bytes() == stage.to_bytes()


def reference_sma_vwap(whole: TickBatch, config: IndicatorConfig) -> dict[str, np.ndarray]:
    """Trade by trade in plain Python: running sums added in order, window starts found by bisection.

    Bit-for-bit the arithmetic the stage must do: an SMA or window sum is a difference of two
    running sums, the earlier one taken at the last trade with clock <= t - W (zero before any).
    """
    out = {name: np.full(len(whole), np.nan) for name in config.columns() if name.startswith(("sma_", "vwap_"))}
    clocks: dict[int, list[int]] = {}
    sums: dict[int, list[tuple[float, float, float]]] = {}
    for row, (sym, price, size, ts) in enumerate(
        zip(whole.symbol_idx.tolist(), whole.price.tolist(), whole.size.tolist(), whole.ts.tolist(), strict=True)
    ):
        times = clocks.setdefault(sym, [-1])
        kept = sums.setdefault(sym, [(0.0, 0.0, 0.0)])
        p, v, n = kept[-1]
        kept.append((p + price, v + size, n + price * size))
        times.append(max(times[-1], ts))
        p, v, n = kept[-1]
        for period in config.sma_periods:
            if len(kept) - 1 >= period:
                out[f"sma_{period}"][row] = (p - kept[-1 - period][0]) / period
        for window in config.vwap_windows_ms:
            _, v0, n0 = kept[bisect.bisect_right(times, max(times[-1] - window, -1)) - 1]
            out[f"vwap_{window_name(window)}"][row] = (n - n0) / (v - v0)
    return out


RINGS = IndicatorConfig(sma_periods=(1, 4), ema_periods=(2,), vwap_windows_ms=(37, 400))


@st.composite
def busy_sequences(draw: st.DrawFn) -> tuple[TickBatch, list[int]]:
    """Many trades on few ms (so rings overflow and move), quiet spells, clocks going back, splits."""
    n = draw(st.integers(1, 600))
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(0.01, 1e4), min_size=n, max_size=n))
    sizes = draw(st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n))
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 2, 3, 5, 8, -4, 40, 500]), min_size=n, max_size=n))
    ts = np.maximum(np.cumsum(steps) + 100, 0)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=8))))
    return batch(symbols, prices, sizes, ts.tolist()), cuts


class TestWindowHistory:
    @settings(max_examples=100, deadline=None)
    @given(busy_sequences())
    def test_sma_and_vwap_equal_a_trade_by_trade_reference_bit_for_bit(self, case: tuple[TickBatch, list[int]]) -> None:
        """Split, checkpointed runs whose rings move and evict give the reference's exact bits."""
        whole, cuts = case
        want = reference_sma_vwap(whole, RINGS)
        stage = Indicators(RINGS)
        parts = []
        for piece in pieces(whole, cuts):
            parts.append(stage.process(piece).columns)
            stage = Indicators.from_bytes(stage.to_bytes())
        for name, values in want.items():
            assert np.concatenate([p[name] for p in parts]).tobytes() == values.tobytes(), name

    def test_long_run_moves_rings_and_compacts_the_pool_without_changing_a_bit(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Thousands of batches without restore: rings grow and move, the pool compacts, values stay exact."""
        calls = {"_compact": 0, "reserve": 0}
        for name in calls:
            original = getattr(WindowHistory, name)

            def counted(*args: object, _original: object = original, _name: str = name) -> None:
                calls[_name] += 1
                _original(*args)  # type: ignore[operator]

            monkeypatch.setattr(WindowHistory, name, counted)
        rng = np.random.default_rng(5)
        n = 30_000
        # symbol 0 trades a few times per ms, the others ever more rarely; time jumps now and then
        symbols = [f"S{i}" for i in np.minimum(rng.geometric(0.3, n) - 1, 11)]
        steps = rng.choice([0, 0, 1, 1, 2, 7, -3, 300], n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.04, 0.01])
        ts = np.maximum(np.cumsum(steps) + 1_000, 0)
        whole = batch(symbols, rng.uniform(1, 100, n).tolist(), rng.uniform(1, 10, n).tolist(), ts.tolist())
        want = reference_sma_vwap(whole, RINGS)
        stage = Indicators(RINGS)
        cuts = sorted(set(rng.integers(0, n, 3_000).tolist()))
        parts = [stage.process(piece).columns for piece in pieces(whole, cuts)]
        for name, values in want.items():
            assert np.concatenate([p[name] for p in parts]).tobytes() == values.tobytes(), name
        assert calls["_compact"] > 0
        assert (stage.history.capacity > 16).any()

    def test_after_a_burst_passes_the_rings_shrink_and_the_pool_gives_memory_back_without_changing_a_bit(
        self,
    ) -> None:
        """A burst of one point per ms fills 1 s windows; once trades are seconds apart, rings and pool shrink."""
        config = IndicatorConfig(sma_periods=(3,), ema_periods=(2,), vwap_windows_ms=(250, 1_000))
        n_burst, n_quiet, symbols = 20_000, 2_000, 20
        rng = np.random.default_rng(9)
        burst_ts = np.repeat(np.arange(n_burst // symbols), symbols)  # every symbol, every ms
        quiet_ts = n_burst // symbols + 2_000 * (1 + np.arange(n_quiet) // symbols)  # every symbol, every 2 s
        ts = np.concatenate([burst_ts, quiet_ts]).tolist()
        names = [f"S{i % symbols}" for i in range(len(ts))]
        whole = batch(names, rng.uniform(1, 100, len(ts)).tolist(), rng.uniform(1, 10, len(ts)).tolist(), ts)
        want = reference_sma_vwap(whole, config)
        stage = Indicators(config)
        cuts = list(range(500, len(ts), 500))
        parts, peak_pool, peak_capacity = [], 0, 0
        for piece in pieces(whole, cuts):
            parts.append(stage.process(piece).columns)
            peak_pool = max(peak_pool, len(stage.history.ts))
            peak_capacity = max(peak_capacity, int(stage.history.capacity.max()))
        for name, values in want.items():
            assert np.concatenate([p[name] for p in parts]).tobytes() == values.tobytes(), name
        assert peak_capacity >= 1_000  # the burst: a point per ms of a 1 s window
        assert int(stage.history.capacity.max()) <= RING_SHRINK * MIN_RING  # quiet: rings back near their minimum
        assert len(stage.history.ts) * 4 < peak_pool  # and the pool returned most of its memory

    def test_trades_in_one_ms_keep_one_point_and_a_checkpoint_only_the_live_window(self) -> None:
        """Three trades per ms for 10 s keep 1,001 points under a 1 s window: the floor and 1,000 ms."""
        config = IndicatorConfig(sma_periods=(2,), ema_periods=(2,), vwap_windows_ms=(500, 1_000))
        stage = Indicators(config)
        ms = np.repeat(np.arange(10_000), 3)
        for chunk in np.array_split(np.arange(len(ms)), 7):  # batch edges fall inside a ms, too
            stage.process(batch(["A"] * len(chunk), [10.0] * len(chunk), [1.0] * len(chunk), ms[chunk].tolist()))
        _, arrays = unpack_state(stage.to_bytes())
        assert arrays["history_offsets"].tolist() == [0, 1_001]
        assert arrays["history_ts"].tolist() == list(range(8_999, 10_000))
        assert arrays["history_volume"][-1] == 30_000.0

    def test_quiet_symbol_window_holds_only_its_new_trade(self) -> None:
        """A symbol silent for longer than the window starts again from its new trade alone."""
        stage = Indicators(SMALL)
        stage.process(batch(["Q", "Q"], [10.0, 20.0], [1.0, 1.0], [0, 10]))
        stage.process(batch(["A"] * 500, [1.0] * 500, [1.0] * 500, list(range(0, 50_000, 100))))
        frame = stage.process(batch(["Q"], [40.0], [2.0], [60_000]))
        assert frame.columns["vwap_1s"][0] == 40.0
        assert frame.columns["sma_2"][0] == (20.0 + 40.0) / 2

    def test_restoring_an_older_checkpoint_layout_is_refused(self) -> None:
        """A checkpoint without the ms-point history layout is rejected rather than misread."""
        stage = Indicators(SMALL)
        stage.process(batch(["A"], [1.0], [1.0], [0]))
        meta, arrays = unpack_state(stage.to_bytes())
        del meta["layout"]
        with pytest.raises(ValueError, match="older state layout"):
            Indicators.from_bytes(pack_state(meta, arrays))


def pandas_indicators(frame: pd.DataFrame, config: IndicatorConfig) -> dict[str, np.ndarray]:
    """Independent reference per row: pandas rolling/ewm per symbol, in file order."""
    out = {name: np.full(len(frame), np.nan) for name in config.columns()}
    frame = frame.assign(when=pd.to_datetime(frame["ts"], unit="ms"), notional=frame["price"] * frame["size"])
    for _, trades in frame.groupby("symbol", sort=False):
        rows = trades.index.to_numpy()
        for n in config.sma_periods:
            out[f"sma_{n}"][rows] = trades["price"].rolling(n).mean().to_numpy()
        for n in config.ema_periods:
            out[f"ema_{n}"][rows] = trades["price"].ewm(span=n, adjust=False).mean().to_numpy()
        timed = trades.set_index("when")
        for w in config.vwap_windows_ms:
            window = timed[["notional", "size"]].rolling(f"{w}ms", closed="right").sum()
            out[f"vwap_{w // 60_000}m"][rows] = (window["notional"] / window["size"]).to_numpy()
    return out


def assert_matches_pandas(frame: pd.DataFrame) -> None:
    """Our per-row SMA, EMA and rolling VWAP equal pandas' to 1e-9 relative on every row."""
    config = IndicatorConfig()
    got = Indicators(config).process(
        batch(frame["symbol"].tolist(), frame["price"].tolist(), frame["size"].tolist(), frame["ts"].tolist())
    )
    want = pandas_indicators(frame, config)
    compared = [c for c in config.columns() if c.startswith(("sma_", "ema_", "vwap_"))]
    assert len(compared) == 6
    for name in compared:
        np.testing.assert_array_equal(np.isnan(got.columns[name]), np.isnan(want[name]), err_msg=name)
        np.testing.assert_allclose(got.columns[name], want[name], rtol=1e-9, err_msg=name)


@pytest.mark.realdata
class TestAgainstPandasOnRealTrades:
    def test_lobster_nasdaq_trades(self, shared_data: Path) -> None:
        """All 58,087 LOBSTER trades: SMA, EMA and 1m/5m VWAP equal pandas to 1e-9 relative."""
        frame = read_lobster(shared_data)
        assert len(frame) == 58_087
        assert_matches_pandas(frame)

    def test_binance_btcusdt_trades(self, shared_data: Path) -> None:
        """The Binance BTCUSDT trades: SMA, EMA and 1m/5m VWAP equal pandas to 1e-9 relative."""
        assert_matches_pandas(read_binance(shared_data))

    def test_lobster_in_small_batches_equals_one_batch(self, shared_data: Path) -> None:
        """Replaying LOBSTER in 1,000-trade batches gives the same bits as one batch."""
        frame = read_lobster(shared_data)
        whole = batch(frame["symbol"].tolist(), frame["price"].tolist(), frame["size"].tolist(), frame["ts"].tolist())
        one = Indicators().process(whole).columns
        stage = Indicators()
        parts = [stage.process(p).columns for p in pieces(whole, list(range(1_000, len(whole), 1_000)))]
        for name, values in one.items():
            assert np.concatenate([p[name] for p in parts]).tobytes() == values.tobytes(), name


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    period=st.integers(1, 60),
)
def test_ragged_ema_is_the_plain_recursion_bit_for_bit(lengths: list[int], seed: int, period: int) -> None:
    """Narrow blocks (a column at a time) and wide ones (lfilter) both give y = alpha*x + decay*y_prev exactly."""
    rng = np.random.default_rng(seed)
    values = rng.normal(100, 5, sum(lengths)) * rng.choice([1e-3, 1.0, 1e3])
    previous = rng.normal(100, 5, len(lengths))
    alpha = 2.0 / (period + 1)
    got, finals = RaggedScan(np.array(lengths)).ema(values, alpha, previous)
    want, want_finals, row = np.empty_like(values), previous.copy(), 0
    for k, length in enumerate(lengths):
        y = previous[k]
        for _ in range(length):
            y = alpha * values[row] + (1.0 - alpha) * y
            want[row] = y
            row += 1
        want_finals[k] = y
    assert got.tobytes() == want.tobytes() and finals.tobytes() == want_finals.tobytes()


def test_a_batch_is_grouped_once_for_every_stage_and_the_grouping_is_read_only() -> None:
    """The same symbol_idx array gets the same grouping back; an equal new array is grouped on its own."""
    from tickerdash.analytics.engine.segments import Grouping

    idx = np.array([2, 0, 2, 1, 0], np.int32)
    first = Grouping.of(idx, 3)
    assert Grouping.of(idx, 3) is first
    assert first.order.tolist() == [1, 4, 3, 0, 2] and first.lengths.tolist() == [2, 1, 2]
    again = Grouping.of(idx.copy(), 3)
    assert again is not first and again.order.tolist() == first.order.tolist()
    with pytest.raises(ValueError, match="read-only"):
        first.order[0] = 7
