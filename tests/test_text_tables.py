"""Text tables: numbers formatted a table at a time into bytes are the `repr`s the contract writes, and rows
joined from tables are the texts joined one by one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.ingest.contract.bars import bar_entry_id, bar_entry_ids, float_reprs, float_texts
from tickerdash.ingest.contract.text_tables import TextTable, int_texts


def columns_of(table: TextTable) -> list[list[str | None]]:
    """Every column's texts."""
    return [table.column(j) for j in range(table.width)]


def test_float_texts_are_float_reprs_column_by_column_with_nans_left_out_where_asked() -> None:
    """Values in and out of the range orjson spells as `repr` (tiny, huge, infinite, NaN, negative zero)
    come out as `repr`; in a column flagged `nan_absent` a NaN is an absent text, elsewhere it is 'nan'."""
    rng = np.random.default_rng(3)
    prices = np.round(rng.uniform(0, 5_000, 1_000), 2)
    odd = np.array([1e-5, 1e17, np.inf, -np.inf, np.nan, -0.0, 0.0, 5e-324])
    mixed = prices.copy()
    mixed[rng.choice(len(mixed), len(odd), replace=False)] = odd
    with_nans = np.where(rng.random(len(prices)) < 0.2, np.nan, prices)
    for columns in ([prices, with_nans], [mixed, with_nans], [prices, mixed]):
        table = float_texts(columns, nan_absent=[False, True])
        expected_first = float_reprs(columns[0])
        expected_second = [
            None if v != v else text for v, text in zip(columns[1], float_reprs(columns[1]), strict=True)
        ]
        assert columns_of(table) == [expected_first, expected_second]
    assert len(float_texts([np.zeros(0)])) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**62), max_size=300))
def test_bar_entry_ids_and_int_texts_are_formatted_as_one_by_one(starts: list[int]) -> None:
    """An ID column is `bar_entry_id` of each start; an integer column is `str` of each."""
    values = np.array(starts, np.int64)
    assert bar_entry_ids(values).column(0) == [bar_entry_id(s) for s in starts]
    assert int_texts(values).column(0) == [str(s) for s in starts]
