"""Chart overlays per bar series: each against a brute-force reference over the whole close series,
and the stage's values independent of batch splits and of checkpoint/restore."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tickerdash.analytics.engine.segments import pack_state, unpack_state
from tickerdash.analytics.engine.worker import PartitionState, WorkerConfig
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.overlays.registry import OVERLAYS, overlay_lines
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.ticks import TickBatch

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
INTERVALS = (1_000, 60_000)


def bar_series(n: int, seed: int = 3) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """n closed bars of every (interval, symbol) series: a random walk of closes, volumes, vwaps."""
    rng = np.random.default_rng(seed)
    out = {}
    for interval in INTERVALS:
        for symbol in SYMBOLS:
            close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
            volume = rng.integers(0, 500, n).astype(float)  # some bars of zero volume
            vwap = close * (1 + rng.normal(0, 0.001, n))
            start = 1_700_000_000_000 + interval * np.arange(n, dtype=np.int64)
            out[(interval, symbol)] = {"start": start, "close": close, "volume": volume, "vwap": vwap}
    return out


def table(series: dict[tuple[int, str], dict[str, np.ndarray]], pieces: dict[tuple[int, str], slice]) -> BarTable:
    """A BarTable of the chosen slice of each series, the series interleaved as the bar stage would mix them."""
    parts = []
    for (interval, symbol), columns in series.items():
        rows = pieces[(interval, symbol)]
        length = len(columns["start"][rows])
        parts.append((SYMBOLS.index(symbol), interval, {k: v[rows] for k, v in columns.items()}, length))
    symbol_idx = np.concatenate([np.full(n, code, np.int64) for code, _, _, n in parts])
    interval_ms = np.concatenate([np.full(n, interval, np.int64) for _, interval, _, n in parts])

    def column(name: str) -> np.ndarray:
        return np.concatenate([c[name] for _, _, c, _ in parts])

    mix = np.random.default_rng(len(symbol_idx)).permutation(len(symbol_idx))  # order within a batch is free
    close = column("close")
    return BarTable(
        symbols=SYMBOLS,
        symbol_idx=symbol_idx[mix],
        interval_ms=interval_ms[mix],
        start_ms=column("start")[mix],
        open=close[mix],
        high=close[mix],
        low=close[mix],
        close=close[mix],
        volume=column("volume")[mix],
        vwap=column("vwap")[mix],
        trades=np.ones(len(mix), np.int64),
    )


def per_series(bars: BarTable, values: dict[str, np.ndarray]) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """A stage's output regrouped by series, in bar start order."""
    out: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for interval in INTERVALS:
        for code, symbol in enumerate(SYMBOLS):
            rows = np.flatnonzero((bars.interval_ms == interval) & (bars.symbol_idx == code))
            rows = rows[np.argsort(bars.start_ms[rows])]
            out[(interval, symbol)] = {name: column[rows] for name, column in values.items()}
    return out


def run_in_batches(series: dict[tuple[int, str], dict[str, np.ndarray]], cuts: list[int], stage: OverlayStage) -> dict:
    """Feed every series in batches cut at `cuts` (bar counts), concatenating each field per series."""
    n = len(next(iter(series.values()))["start"])
    edges = [0, *cuts, n]
    got: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}
    for lo, hi in itertools.pairwise(edges):
        bars = table(series, {key: slice(lo, hi) for key in series})
        for key, columns in per_series(bars, stage.update(bars)).items():
            for name, values in columns.items():
                got.setdefault(key, {}).setdefault(name, []).append(values)
    return {key: {name: np.concatenate(parts) for name, parts in columns.items()} for key, columns in got.items()}


def reference(close: np.ndarray, volume: np.ndarray, vwap: np.ndarray) -> dict[str, np.ndarray]:
    """The registered overlays' fields computed over the whole series at once (numpy, no state)."""
    n = len(close)
    sma = np.full(n, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(close, 20)
    sma[19:] = windows.mean(axis=1)
    ema = np.empty(n)
    ema[0] = close[0]
    for i in range(1, n):
        ema[i] = 2 / 21 * close[i] + (1 - 2 / 21) * ema[i - 1]
    notional = np.convolve(vwap * volume, np.ones(20))[:n]
    volume_sum = np.convolve(volume, np.ones(20))[:n]
    rolling_vwap = np.where(volume_sum > 0, notional / np.where(volume_sum > 0, volume_sum, 1), np.nan)
    middle, deviation = np.full(n, np.nan), np.full(n, np.nan)
    middle[19:], deviation[19:] = windows.mean(axis=1), windows.std(axis=1)  # population deviation (ddof 0)
    return {
        "sma20": sma,
        "ema20": ema,
        "vwap20": rolling_vwap,
        "rsi14": wilder_rsi(close, 14),
        "bb20_upper": middle + 2 * deviation,
        "bb20_lower": middle - 2 * deviation,
    }


def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """RSI as Wilder defined it, over the whole close series: seeded means, then his smoothing."""
    change = np.diff(close)
    gain, loss = np.maximum(change, 0), np.maximum(-change, 0)
    rsi = np.full(len(close), np.nan)
    average_gain, average_loss = gain[:period].mean(), loss[:period].mean()
    for i in range(period, len(close)):
        if i > period:
            average_gain = (average_gain * (period - 1) + gain[i - 1]) / period
            average_loss = (average_loss * (period - 1) + loss[i - 1]) / period
        rsi[i] = 100 - 100 / (1 + average_gain / average_loss) if average_loss > 0 else 100.0
    return rsi


class TestOverlays:
    def test_every_field_matches_its_reference_over_the_whole_close_series(self) -> None:
        """Each overlay's value at every bar equals the brute-force formula over the series up to that bar."""
        series = bar_series(120)
        got = run_in_batches(series, [], OverlayStage())
        for key, columns in series.items():
            expected = reference(columns["close"], columns["volume"], columns["vwap"])
            for name, values in expected.items():
                np.testing.assert_allclose(got[key][name], values, rtol=1e-10, err_msg=f"{name} of {key}")

    def test_an_sma_is_undefined_before_its_twentieth_bar(self) -> None:
        """NaN (no field on the wire) for the first 19 bars, a number from the 20th on."""
        got = run_in_batches(bar_series(25), [], OverlayStage())[(1_000, "AAA")]["sma20"]
        assert np.isnan(got[:19]).all() and np.isfinite(got[19:]).all()

    def test_rsi_is_defined_from_the_fifteenth_bar_and_stays_within_0_and_100(self) -> None:
        """14 changes need 15 bars; an RSI is 100 when closes only rose and is drawn on a 0-100 panel."""
        got = run_in_batches(bar_series(40), [], OverlayStage())[(1_000, "AAA")]["rsi14"]
        assert np.isnan(got[:14]).all() and ((got[14:] >= 0) & (got[14:] <= 100)).all()
        rising = {key: {**columns, "close": np.arange(1.0, 21.0)} for key, columns in bar_series(20).items()}
        assert (run_in_batches(rising, [5], OverlayStage())[(1_000, "AAA")]["rsi14"][14:] == 100).all()
        (line,) = next(o for o in OVERLAYS if o.name == "rsi14").lines
        assert line.panel.y_range == (0.0, 100.0) and line.panel.name != "price"

    def test_bollinger_bands_straddle_the_sma_on_the_price_panel(self) -> None:
        """Upper and lower are the SMA 20 +- the same distance, undefined before the 20th bar, drawn with prices."""
        got = run_in_batches(bar_series(40), [3, 21], OverlayStage())[(60_000, "CCC")]
        assert np.isnan(got["bb20_upper"][:19]).all() and np.isnan(got["bb20_lower"][:19]).all()
        np.testing.assert_allclose((got["bb20_upper"] + got["bb20_lower"])[19:] / 2, got["sma20"][19:], rtol=1e-12)
        assert (got["bb20_upper"][19:] > got["bb20_lower"][19:]).all()
        bands = next(o for o in OVERLAYS if o.name == "bb20")
        assert [line.panel.name for line in bands.lines] == ["price", "price"]

    def test_every_line_has_a_distinct_field_and_says_how_it_is_drawn(self) -> None:
        """The page builds its legend from these: field names are unique, each line has a label, colour, panel."""
        lines = overlay_lines()
        assert len({line.field for line in lines}) == len(lines)
        assert len({overlay.name for overlay in OVERLAYS}) == len(OVERLAYS)
        assert all(overlay.name.isidentifier() for overlay in OVERLAYS)  # travels in a comma-separated query
        for line in lines:
            drawn = line.to_dict()
            assert drawn["label"] and str(drawn["colour"]).startswith("#") and drawn["panel"]


class TestOverlayStage:
    @pytest.mark.parametrize("cuts", [[1], [7, 8, 9, 50], list(range(1, 60)), [19, 20, 21]])
    def test_values_are_the_same_bits_whatever_the_batch_split(self, cuts: list[int]) -> None:
        """One batch of 60 bars per series or many small ones: identical values, bit for bit."""
        series = bar_series(60)
        whole = run_in_batches(series, [], OverlayStage())
        split = run_in_batches(series, cuts, OverlayStage())
        for key in series:
            for name in whole[key]:
                np.testing.assert_array_equal(split[key][name], whole[key][name])

    def test_values_are_the_same_bits_when_each_series_is_cut_in_its_own_places(self) -> None:
        """Batches holding 0, 1 or many bars of each series, cut differently per series: identical values."""
        series = bar_series(80)
        whole = run_in_batches(series, [], OverlayStage())
        rng = np.random.default_rng(5)
        edges = {key: np.r_[0, np.sort(rng.integers(1, 80, 6)), 80] for key in series}  # repeats: empty pieces
        stage = OverlayStage()
        got = {key: {name: np.full(80, np.nan) for name in stage.fields} for key in series}
        for batch in range(7):
            bars = table(series, {key: slice(e[batch], e[batch + 1]) for key, e in edges.items()})
            for key, columns in per_series(bars, stage.update(bars)).items():
                for name, values in columns.items():
                    got[key][name][edges[key][batch] : edges[key][batch + 1]] = values
        for key in series:
            for name in stage.fields:
                np.testing.assert_array_equal(got[key][name], whole[key][name], err_msg=f"{name} of {key}")

    def test_a_checkpoint_restored_midway_continues_bit_for_bit(self) -> None:
        """to_bytes after 30 bars, load into a fresh stage, 30 more: as if never interrupted."""
        series = bar_series(60)
        whole = run_in_batches(series, [], OverlayStage())
        first = OverlayStage()
        first.update(table(series, {key: slice(0, 30) for key in series}))
        restored = OverlayStage()
        restored.load(first.to_bytes())
        assert restored.to_bytes() == first.to_bytes()
        bars = table(series, {key: slice(30, 60) for key in series})
        for key, columns in per_series(bars, restored.update(bars)).items():
            for name, values in columns.items():
                np.testing.assert_array_equal(values, whole[key][name][30:])

    def test_the_latest_closed_bar_of_each_series_is_kept_for_the_live_view(self) -> None:
        """`latest` gives each symbol's last closed start, closed count and values at an interval; NaN if unknown."""
        series = bar_series(30)
        stage = OverlayStage()
        whole = run_in_batches(series, [10], stage)
        rows = stage.latest(60_000, ["BBB", "ZZZ"])
        assert rows.shape == (2, 2 + len(stage.fields))
        assert rows[0, 0] == series[(60_000, "BBB")]["start"][-1] and rows[0, 1] == 30  # start, bars closed
        np.testing.assert_array_equal(rows[0, 2:], [whole[(60_000, "BBB")][name][-1] for name in stage.fields])
        assert np.isnan(rows[1]).all()

    def test_an_overlay_registered_after_the_checkpoint_starts_afresh(self) -> None:
        """A checkpoint of fewer overlays restores the ones it has; a new one begins with no history."""
        series = bar_series(40)
        before = OverlayStage(OVERLAYS[:1])
        before.update(table(series, {key: slice(0, 20) for key in series}))
        after = OverlayStage(OVERLAYS)
        after.load(before.to_bytes())
        assert len(after) == len(before)
        bars = table(series, {key: slice(20, 21) for key in series})
        values = after.update(bars)
        assert np.isfinite(values["sma20"]).all()  # carried on: its 21st bar
        np.testing.assert_allclose(values["ema20"], bars.close, rtol=1e-15)  # seeded afresh with that close


def test_a_partition_checkpoint_from_before_the_overlays_still_restores() -> None:
    """A partition state saved without an overlay stage loads; its overlays start afresh, the rest as saved."""
    state = PartitionState(WorkerConfig())
    ts = 1_700_000_000_000 + 250 * np.arange(400, dtype=np.int64)
    state.apply(TickBatch.from_columns(["AAA"] * 400, list(100 + np.sin(ts / 1e4)), [10.0] * 400, list(ts)))
    assert len(state.stage("overlays"))
    meta, arrays = unpack_state(state.to_bytes())
    del arrays["stage:overlays"]
    restored = PartitionState.from_bytes(pack_state(meta, arrays), WorkerConfig())
    assert len(restored.stage("overlays")) == 0
    assert restored.stage("bars").to_bytes() == state.stage("bars").to_bytes()
