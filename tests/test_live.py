"""The live view's column-built JSON says exactly what the generic encoding of a SymbolUpdate says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.live import SymbolUpdate, json_numbers, update_template

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
@given(symbol=st.text(min_size=1, max_size=12), ts=st.integers(0, 2**42), price=finite, change_pct=finite,
       trades=st.integers(0, 2**40), volume=finite,
       indicators=st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(finite, st.just(math.nan)), max_size=6),
       bars=st.dictionaries(st.sampled_from(["1s", "1m"]), st.lists(finite, min_size=6, max_size=6), max_size=2))
def test_the_template_filled_with_formatted_columns_is_the_dataclass_json(
    symbol: str, ts: int, price: float, change_pct: float, trades: int, volume: float,
    indicators: dict[str, float], bars: dict[str, list[float]],
) -> None:  # fmt: skip
    """Filled as the worker fills it, the text decodes to SymbolUpdate.to_dict(), key order included."""
    names = list(indicators)
    texts = json_numbers(np.array(list(indicators.values()), dtype=np.float64), nan_as_null=True)
    bar_texts = [text for name in bars for text in json_numbers(np.array(bars[name]))]
    args = (json.dumps(symbol), ts, *json_numbers(np.array([price, change_pct])), trades,
            *json_numbers(np.array([volume])), *texts, *bar_texts)  # fmt: skip
    written = update_template(names, list(bars)) % args
    update = SymbolUpdate(symbol=symbol, ts=ts, price=price, change_pct=change_pct, trades=trades, volume=volume,
                          indicators=indicators, bars=bars)  # fmt: skip
    decoded = json.loads(written)
    assert decoded == update.to_dict()
    assert list(decoded) == list(update.to_dict()) and list(decoded["indicators"]) == names
    assert SymbolUpdate.from_dict(decoded).to_dict() == update.to_dict()


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
