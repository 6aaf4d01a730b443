"""The live view's column-built JSON says exactly what the generic encoding of a SymbolUpdate says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.live import SymbolUpdate, encode_update_rows, json_numbers

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(deadline=None)  # the first example pays for importing pyarrow.compute
@given(st.lists(finite, max_size=50))
def test_numbers_parse_back_to_the_same_doubles(values: list[float]) -> None:
    """Arrow's shortest form may read differently from repr, but it is the same double, bit for bit."""
    text = json_numbers(np.array(values, dtype=np.float64))
    assert len(text) == len(values)
    for written, value in zip(text, values, strict=True):
        parsed = json.loads(written)
        assert float(parsed) == value and math.copysign(1.0, float(written)) == math.copysign(1.0, value)


def test_nan_is_null_only_where_allowed_and_infinity_never() -> None:
    """JSON has no NaN or infinity: NaN indicators are null; anything else non-finite is refused."""
    assert json_numbers(np.array([1.5, math.nan]), nan_as_null=True) == ["1.5", "null"]
    for bad, nan_ok in ((math.nan, False), (math.inf, False), (-math.inf, True)):
        with pytest.raises(ValueError, match="not JSON compliant"):
            json_numbers(np.array([1.0, bad]), nan_as_null=nan_ok)


@settings(deadline=None)
@given(data=st.data(), rows=st.integers(1, 5),
       names=st.lists(st.text(min_size=1, max_size=8), max_size=6, unique=True),
       intervals=st.sampled_from([(), ("1s",), ("1s", "1m")]))  # fmt: skip
def test_rows_encoded_column_wise_are_the_dataclass_json(
    data: st.DataObject, rows: int, names: list[str], intervals: tuple[str, ...]
) -> None:
    """Each row decodes to its SymbolUpdate.to_dict(), key order included; a bar not open is left out."""
    updates, numbers, present = [], [], []
    for _ in range(rows):
        indicators = {name: data.draw(st.one_of(finite, st.just(math.nan))) for name in names}
        has = [data.draw(st.booleans()) for _ in intervals]
        is_open = dict(zip(intervals, has, strict=True))
        bars = {name: data.draw(st.lists(finite, min_size=6, max_size=6)) for name in intervals}
        update = SymbolUpdate(symbol=data.draw(st.text(min_size=1, max_size=12)), ts=data.draw(st.integers(0, 2**42)),
                              price=data.draw(finite), change_pct=data.draw(finite),
                              trades=data.draw(st.integers(0, 2**40)), volume=data.draw(finite), indicators=indicators,
                              bars={name: bars[name] for name in intervals if is_open[name]})  # fmt: skip
        updates.append(update)
        bar_values = [x if is_open[name] else math.nan for name in intervals for x in bars[name]]
        numbers.append([update.price, update.change_pct, update.volume, *indicators.values(), *bar_values])
        present.append(has)
    written = encode_update_rows(
        [json.dumps(u.symbol) for u in updates], np.array([u.ts for u in updates]),
        np.array([u.trades for u in updates]), np.array(numbers, dtype=np.float64).reshape(rows, -1),
        np.array(present, dtype=bool).reshape(rows, len(intervals)), names, intervals,
    )  # fmt: skip
    for text, update in zip(written, updates, strict=True):
        decoded = json.loads(text)
        assert decoded == update.to_dict()
        assert list(decoded) == list(update.to_dict()) and list(decoded["indicators"]) == names
        assert list(decoded["bars"]) == list(update.bars)
        assert SymbolUpdate.from_dict(decoded).to_dict() == update.to_dict()


def test_a_non_finite_price_or_open_bar_is_refused() -> None:
    """Only an indicator may be null: a NaN price or open-bar value is a bug upstream, not a null."""
    ok = np.array([[1.0, 0.0, 2.0, math.nan, 5.0, 1.0, 1.0, 1.0, 1.0, 3.0]])
    assert json.loads(encode_update_rows(['"A"'], np.array([1]), np.array([1]), ok, np.array([[True]]), ["sma"],
                                         ["1s"])[0])["indicators"] == {"sma": None}  # fmt: skip
    for column in (0, 5):
        bad = ok.copy()
        bad[0, column] = math.nan
        with pytest.raises(ValueError, match="not JSON compliant"):
            encode_update_rows(['"A"'], np.array([1]), np.array([1]), bad, np.array([[True]]), ["sma"], ["1s"])


def test_open_bar_columns_show_the_latest_open_bar_of_each_interval_and_mark_missing_ones() -> None:
    """Two open 1s bars (one in its grace period): the later shows; a symbol with no open 1m bar has none."""
    from analytics.bars import BarTable
    from analytics.worker import open_bar_columns

    def column(*values: float) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    opened = BarTable(symbols=("AAPL", "MSFT", "IBM"), symbol_idx=np.array([0, 0, 0, 1], np.int64),
                      interval_ms=np.array([1_000, 60_000, 1_000, 1_000], np.int64),
                      start_ms=np.array([5_000, 0, 4_000, 5_000], np.int64), open=column(1, 2, 3, 4),
                      high=column(1, 2, 3, 4), low=column(1, 2, 3, 4), close=column(1, 2, 3, 4),
                      volume=column(10, 20, 30, 40), vwap=column(1, 2, 3, 4),
                      trades=np.array([1, 2, 3, 4], np.int64))  # fmt: skip
    names, values, present = open_bar_columns(opened, ["MSFT", "AAPL", "TSLA"])
    assert names == ("1s", "1m")
    assert present.tolist() == [[True, False], [True, True], [False, False]]
    assert values[1, :6].tolist() == [5_000.0, 1.0, 1.0, 1.0, 1.0, 10.0]  # AAPL's 1s bar at 5 s, not 4 s
    assert values[1, 6:].tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 20.0]
    assert values[0, :6].tolist() == [5_000.0, 4.0, 4.0, 4.0, 4.0, 40.0] and np.isnan(values[0, 6:]).all()
