"""The live view's binary updates carry exactly the SymbolUpdate the worker meant, and refuse garbage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.ingest.contract.live import (
    SymbolUpdate,
    UpdateLayout,
    decode_updates,
    encode_update_rows,
    encode_updates,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
names = st.lists(st.text(min_size=1, max_size=8), max_size=6, unique=True)


@st.composite
def updates(draw: st.DrawFn) -> SymbolUpdate:
    """An update with any indicators (NaN ones too) and any open bars."""
    indicators = {name: draw(st.one_of(finite, st.just(math.nan))) for name in draw(names)}
    bars = {
        name: draw(st.lists(finite, min_size=6, max_size=6))
        for name in draw(st.sampled_from([(), ("1s",), ("1s", "1m")]))
    }
    return SymbolUpdate(
        symbol=draw(st.text(min_size=1, max_size=12)),
        ts=draw(st.integers(0, 2**42)),
        price=draw(finite),
        change_pct=draw(finite),
        trades=draw(st.integers(0, 2**40)),
        volume=draw(finite),
        indicators=indicators,
        bars=bars,
    )


@settings(deadline=None)
@given(st.lists(updates(), max_size=5))
def test_updates_round_trip_bit_for_bit(written: list[SymbolUpdate]) -> None:
    """A feed entry decodes to the same updates, in order, every number the same double, key order kept."""
    read = decode_updates(encode_updates(written))
    assert [u.to_dict() for u in read] == [u.to_dict() for u in written]
    for before, after in zip(written, read, strict=True):
        assert list(after.indicators) == list(before.indicators) and list(after.bars) == list(before.bars)
        for x, y in zip(before.indicators.values(), after.indicators.values(), strict=True):
            assert math.copysign(1.0, x) == math.copysign(1.0, y)  # -0.0 stays -0.0
        assert json.loads(json.dumps(after.to_dict())) == after.to_dict()  # what the gateway sends browsers


def test_rows_as_the_worker_writes_them_leave_out_bars_that_are_not_open() -> None:
    """A NaN bar start means no open bar of that interval: the update has no entry for it."""
    layout = UpdateLayout(("sma_20",), ("1s", "1m"))
    rows = np.array(
        [
            [1_000, 10.0, 0.5, 3, 30.0, math.nan, 1_000, 10, 11, 9, 10, 30, *[math.nan] * 6],
            [2_000, 20.0, -1.0, 1, 5.0, 19.5, *[math.nan] * 6, 0, 20, 20, 20, 20, 5],
        ]
    )
    values = encode_update_rows(layout, ["AAPL", "MSFT"], rows)
    aapl, msft = (decode_updates(value)[0] for value in values)
    assert aapl.to_dict() == {
        "symbol": "AAPL",
        "ts": 1_000,
        "price": 10.0,
        "change_pct": 0.5,
        "trades": 3,
        "volume": 30.0,
        "indicators": {"sma_20": None},
        "bars": {"1s": [1_000.0, 10.0, 11.0, 9.0, 10.0, 30.0]},
    }
    assert msft.bars == {"1m": [0.0, 20.0, 20.0, 20.0, 20.0, 5.0]} and msft.indicators == {"sma_20": 19.5}
    assert [u.symbol for u in decode_updates(b"".join(values))] == ["AAPL", "MSFT"]
    with pytest.raises(ValueError, match="do not match"):
        encode_update_rows(layout, ["AAPL"], rows)


def test_json_written_by_older_workers_still_decodes() -> None:
    """A Redis that still holds JSON snapshot values and feed entries is read, not refused."""
    update = SymbolUpdate("AAPL", 1_000, 10.0, 0.5, 3, 30.0, {"sma_20": 9.5}, {"1s": [1_000.0, 10, 11, 9, 10, 30]})
    assert decode_updates(json.dumps(update.to_dict()).encode()) == [update]
    assert decode_updates(json.dumps([update.to_dict()] * 2)) == [update, update]


def test_garbage_and_truncated_payloads_are_refused_with_a_reason() -> None:
    """The gateway logs and skips what it cannot read; it never gets half an update."""
    whole = encode_updates([SymbolUpdate("AAPL", 1_000, 10.0, 0.5, 3, 30.0, {"sma_20": 9.5})])
    for bad in (b"garbage!", whole[:-3], whole + b"xx", whole[:6]):
        with pytest.raises(ValueError, match="live update"):
            decode_updates(bad)


def test_open_bar_columns_show_the_latest_open_bar_of_each_interval_and_mark_missing_ones() -> None:
    """Two open 1s bars (one in its grace period): the later shows; a symbol with no open 1m bar has none."""
    from tickerdash.analytics.engine.live_view import open_bar_columns
    from tickerdash.analytics.stages.bars import BarTable

    def column(*values: float) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    opened = BarTable(
        symbols=("AAPL", "MSFT", "IBM"),
        symbol_idx=np.array([0, 0, 0, 1], np.int64),
        interval_ms=np.array([1_000, 60_000, 1_000, 1_000], np.int64),
        start_ms=np.array([5_000, 0, 4_000, 5_000], np.int64),
        open=column(1, 2, 3, 4),
        high=column(1, 2, 3, 4),
        low=column(1, 2, 3, 4),
        close=column(1, 2, 3, 4),
        volume=column(10, 20, 30, 40),
        vwap=column(1, 2, 3, 4),
        trades=np.array([1, 2, 3, 4], np.int64),
    )
    names, values = open_bar_columns(opened, ["MSFT", "AAPL", "TSLA"], [60_000, 1_000])
    assert names == ("1s", "1m")
    assert (~np.isnan(values[:, ::6])).tolist() == [[True, False], [True, True], [False, False]]
    assert values[1, :6].tolist() == [5_000.0, 1.0, 1.0, 1.0, 1.0, 10.0]  # AAPL's 1s bar at 5 s, not 4 s
    assert values[1, 6:].tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 20.0]
    assert values[0, :6].tolist() == [5_000.0, 4.0, 4.0, 4.0, 4.0, 40.0] and np.isnan(values[0, 6:]).all()
