"""The live view's column-built JSON says exactly what the generic encoding of a SymbolUpdate says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.live import SymbolUpdate, json_keys, json_numbers, update_template

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
    bars_json = "{" + ",".join(key + "[" + ",".join(json_numbers(np.array(bars[name]))) + "]"
                               for key, name in zip(json_keys(list(bars)), bars, strict=True)) + "}"  # fmt: skip
    args = (json.dumps(symbol), ts, *json_numbers(np.array([price, change_pct])), trades,
            *json_numbers(np.array([volume])), *texts, bars_json)  # fmt: skip
    written = update_template(names) % args
    update = SymbolUpdate(symbol=symbol, ts=ts, price=price, change_pct=change_pct, trades=trades, volume=volume,
                          indicators=indicators, bars=bars)  # fmt: skip
    decoded = json.loads(written)
    assert decoded == update.to_dict()
    assert list(decoded) == list(update.to_dict()) and list(decoded["indicators"]) == names
    assert SymbolUpdate.from_dict(decoded).to_dict() == update.to_dict()
