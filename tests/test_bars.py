"""The bar stage: OHLCV bars in event time, closing by watermark plus grace, late trades, checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from real_trades import read_binance, read_lobster

from tickerdash.analytics.stages.bars import BarConfig, Bars, BarTable
from tickerdash.ingest.ticks import TickBatch

SECOND = BarConfig(intervals_ms=(1_000,), grace_ms=2_000)
COLUMNS = ("interval_ms", "start_ms", "open", "high", "low", "close", "volume", "vwap", "trades")


def batch(symbols: list[str], prices: list[float], sizes: list[float], ts: list[int]) -> TickBatch:
    """A batch from plain lists."""
    return TickBatch.from_columns(symbols, prices, sizes, ts)


def pieces(whole: TickBatch, cuts: list[int]) -> list[TickBatch]:
    """The batch cut into consecutive pieces at these row positions."""
    bounds = [0, *cuts, len(whole)]
    return [whole.take(np.arange(a, b)) for a, b in itertools.pairwise(bounds)]


def concat_tables(tables: list[BarTable]) -> pd.DataFrame:
    """Bars of several tables as one frame in canonical order (interval, symbol, start)."""
    frames = [pd.DataFrame(t.to_dict()) for t in tables if len(t)]
    if not frames:
        return pd.DataFrame(columns=["symbol", *COLUMNS])
    both = pd.concat(frames, ignore_index=True)
    return both.sort_values(["interval_ms", "symbol", "start_ms"], kind="stable").reset_index(drop=True)


class TestHandMade:
    def test_bar_has_open_high_low_close_volume_vwap_and_count(self) -> None:
        """A closed bar carries first, highest, lowest and last price, volume, VWAP and trade count."""
        stage = Bars(SECOND)
        stage.process(batch(["A"] * 4, [10.0, 12.0, 9.0, 11.0], [1.0, 2.0, 3.0, 4.0], [100, 200, 300, 999]))
        closed = stage.process(batch(["A"], [50.0], [1.0], [3_000])).closed
        assert len(closed) == 1
        bar = {name: values[0] for name, values in closed.to_dict().items()}
        assert (bar["symbol"], bar["start_ms"], bar["interval_ms"]) == ("A", 0, 1_000)
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (10.0, 12.0, 9.0, 11.0)
        assert bar["volume"] == 10.0
        assert bar["vwap"] == pytest.approx((10 + 24 + 27 + 44) / 10)
        assert bar["trades"] == 4

    def test_bar_stays_open_until_watermark_reaches_end_plus_grace(self) -> None:
        """Bar [0, 1000) stays open at watermark 2999 and closes at 3000 (end 1000 + grace 2000)."""
        stage = Bars(SECOND)
        stage.process(batch(["A"], [1.0], [1.0], [0]))
        assert len(stage.process(batch(["A"], [1.0], [1.0], [2_999])).closed) == 0
        closed = stage.process(batch(["A"], [1.0], [1.0], [3_000])).closed
        assert closed.start_ms.tolist() == [0]

    def test_late_trade_inside_grace_still_counts(self) -> None:
        """A trade for bar [0, 1000) arriving at watermark 2500 is inside grace and joins its bar."""
        stage = Bars(SECOND)
        stage.process(batch(["A", "A"], [1.0, 2.0], [1.0, 1.0], [0, 2_500]))
        output = stage.process(batch(["A"], [7.0], [1.0], [900]))
        assert len(output.late_rows) == 0
        flushed = stage.flush()
        first = flushed.take(flushed.start_ms == 0)
        assert (first.trades[0], first.high[0], first.close[0]) == (2, 7.0, 7.0)

    def test_trade_after_grace_is_late_and_counts_in_no_interval(self) -> None:
        """A trade whose 1s bar closed is returned as late and left out of its still-open 1m bar too."""
        stage = Bars(BarConfig(intervals_ms=(1_000, 60_000), grace_ms=2_000))
        stage.process(batch(["A", "A"], [1.0, 2.0], [1.0, 1.0], [0, 5_000]))
        output = stage.process(batch(["A", "A", "A"], [3.0, 99.0, 4.0], [1.0] * 3, [5_100, 500, 5_200]))
        assert output.late_rows.tolist() == [1]
        minute = stage.flush()
        minute = minute.take(minute.interval_ms == 60_000)
        assert (minute.trades[0], minute.high[0]) == (4, 4.0)

    def test_watermark_is_per_symbol(self) -> None:
        """One symbol's later trades neither close another's bars nor make its trades late."""
        stage = Bars(SECOND)
        stage.process(batch(["A"], [1.0], [1.0], [0]))
        output = stage.process(batch(["B", "A"], [1.0, 2.0], [1.0, 1.0], [60_000, 100]))
        assert len(output.closed) == 0
        assert len(output.late_rows) == 0

    def test_close_all_closes_bars_up_to_a_time_and_flush_closes_the_rest(self) -> None:
        """`close_all(t)` closes bars whose end + grace <= t; `flush()` closes every other open bar."""
        stage = Bars(SECOND)
        stage.process(batch(["A", "B"], [1.0, 2.0], [1.0, 1.0], [0, 5_000]))
        assert len(stage.open_view()) == 2
        assert stage.close_all(4_000).symbol.tolist() == ["A"]
        assert stage.flush().symbol.tolist() == ["B"]
        assert len(stage.open_view()) == 0

    def test_open_view_shows_the_bar_being_built(self) -> None:
        """The open bar of the live snapshot already holds the trades so far."""
        stage = Bars(SECOND)
        stage.process(batch(["A", "A"], [5.0, 6.0], [1.0, 1.0], [10, 20]))
        view = stage.open_view()
        assert (view.open[0], view.close[0], view.trades[0]) == (5.0, 6.0, 2)

    def test_intervals_must_nest_in_the_finest(self) -> None:
        """Intervals that are not multiples of the finest are refused (lateness would be ambiguous)."""
        with pytest.raises(ValueError, match="multiple"):
            BarConfig(intervals_ms=(1_000, 1_500))


@st.composite
def trade_sequences(draw: st.DrawFn) -> tuple[TickBatch, list[int]]:
    """A few symbols with jittery event times (some trades late, some within grace), and split points."""
    n = draw(st.integers(1, 150))
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(0.01, 1e4), min_size=n, max_size=n))
    sizes = draw(st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(-4_000, 1_500), min_size=n, max_size=n))
    ts = np.maximum(np.cumsum(steps) + 100_000, 0)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=6))))
    return batch(symbols, prices, sizes, ts.tolist()), cuts


THREE = BarConfig(intervals_ms=(1_000, 5_000, 60_000), grace_ms=2_000)


class TestBatchIndependence:
    @settings(max_examples=150, deadline=None)
    @given(trade_sequences())
    def test_split_and_restored_run_equals_one_run_bit_for_bit(self, case: tuple[TickBatch, list[int]]) -> None:
        """Any split into batches, with a checkpoint/restore between each, closes the same bars, bit for bit."""
        whole, cuts = case
        stage = Bars(THREE)
        one = stage.process(whole)
        one_bars = concat_tables([one.closed, stage.flush()])
        stage, offset, tables, late = Bars(THREE), 0, [], []
        for piece in pieces(whole, cuts):
            output = stage.process(piece)
            tables.append(output.closed)
            late.append(output.late_rows + offset)
            offset += len(piece)
            stage = Bars.from_bytes(stage.to_bytes())
        split_bars = concat_tables([*tables, stage.flush()])
        assert np.concatenate(late).tolist() == one.late_rows.tolist()
        assert split_bars["symbol"].tolist() == one_bars["symbol"].tolist()
        for name in COLUMNS:
            assert split_bars[name].to_numpy().tobytes() == one_bars[name].to_numpy().tobytes(), name

    @settings(max_examples=60, deadline=None)
    @given(trade_sequences())
    def test_coarse_bars_aggregate_the_fine_ones(self, case: tuple[TickBatch, list[int]]) -> None:
        """Every 5s bar has the trades, volume, high and low of the 1s bars inside it."""
        whole, _ = case
        stage = Bars(THREE)
        bars = concat_tables([stage.process(whole).closed, stage.flush()])
        fine = bars[bars["interval_ms"] == 1_000].assign(start_ms=lambda f: f["start_ms"] // 5_000 * 5_000)
        coarse = bars[bars["interval_ms"] == 5_000].set_index(["symbol", "start_ms"]).sort_index()
        rolled = fine.groupby(["symbol", "start_ms"]).agg(
            trades=("trades", "sum"), volume=("volume", "sum"), high=("high", "max"), low=("low", "min")
        )
        assert rolled["trades"].tolist() == coarse["trades"].tolist()
        np.testing.assert_allclose(rolled["volume"], coarse["volume"], rtol=1e-12)
        assert rolled["high"].tolist() == coarse["high"].tolist()
        assert rolled["low"].tolist() == coarse["low"].tolist()


def pandas_bars(frame: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """Independent reference: group trades by symbol and floored event time with pandas."""
    frame = frame.assign(start_ms=frame["ts"] // interval_ms * interval_ms, notional=frame["price"] * frame["size"])
    grouped = frame.groupby(["symbol", "start_ms"], sort=True)
    bars = grouped.agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("size", "sum"),
        notional=("notional", "sum"),
        trades=("price", "size"),
    )
    bars["vwap"] = bars["notional"] / bars["volume"]
    return bars.reset_index()


def assert_bars_match_pandas(frame: pd.DataFrame) -> None:
    """Our 1s and 1m bars (no late trades in file order) equal pandas' to 1e-9 relative."""
    stage = Bars(BarConfig(intervals_ms=(1_000, 60_000)))
    trades = batch(frame["symbol"].tolist(), frame["price"].tolist(), frame["size"].tolist(), frame["ts"].tolist())
    output = stage.process(trades)
    assert len(output.late_rows) == 0
    ours = concat_tables([output.closed, stage.flush()])
    for interval in (1_000, 60_000):
        mine = ours[ours["interval_ms"] == interval].reset_index(drop=True)
        want = pandas_bars(frame, interval)
        assert mine["symbol"].tolist() == want["symbol"].tolist()
        assert mine["start_ms"].tolist() == want["start_ms"].tolist()
        assert mine["trades"].tolist() == want["trades"].tolist()
        for name in ("open", "high", "low", "close", "volume", "vwap"):
            np.testing.assert_allclose(mine[name], want[name], rtol=1e-9, err_msg=f"{interval} {name}")


@pytest.mark.realdata
class TestAgainstPandasOnRealTrades:
    def test_lobster_bars(self, shared_data: Path) -> None:
        """All 58,087 LOBSTER trades: 1s and 1m bars equal a pandas groupby on floored time."""
        assert_bars_match_pandas(read_lobster(shared_data))

    def test_binance_bars(self, shared_data: Path) -> None:
        """The Binance BTCUSDT trades: 1s and 1m bars equal a pandas groupby on floored time."""
        assert_bars_match_pandas(read_binance(shared_data))
