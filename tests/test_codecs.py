"""Tick codecs: both wire forms round-trip to the same columnar trades, and garbage is rejected, never fatal."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.ingest.contract.tick_entries import decode_entries, encode_batch, encode_ticks
from tickerdash.ingest.ticks import TickBatch, concat

SYMBOL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./-_"
symbols = st.text(SYMBOL_ALPHABET, min_size=1, max_size=16)
prices = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)
texts = st.none() | st.text(min_size=0, max_size=64)


@st.composite
def tick_batches(draw: st.DrawFn) -> TickBatch:
    """Random valid trades, with optional fields present or absent."""
    n = draw(st.integers(0, 40))
    with_ids = draw(st.booleans())
    return TickBatch.from_columns(
        symbol=draw(st.lists(symbols, min_size=n, max_size=n)),
        price=draw(st.lists(prices, min_size=n, max_size=n)),
        size=draw(st.lists(prices, min_size=n, max_size=n)),
        ts=draw(st.lists(st.integers(0, 2**42 - 1), min_size=n, max_size=n)),
        side=draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)),
        trade_id=draw(st.lists(texts, min_size=n, max_size=n)) if with_ids else None,
        buyer=draw(st.lists(texts, min_size=n, max_size=n)) if with_ids else None,
    )


def as_wire(fields: dict[str, object]) -> list[bytes]:
    """Flatten fields the way Redis returns them: every value as bytes."""
    flat: list[bytes] = []
    for key, value in fields.items():
        flat.append(key.encode())
        text = repr(value) if isinstance(value, float) else str(value)
        flat.append(bytes(value) if isinstance(value, bytes | memoryview) else text.encode())
    return flat


def same_trades(a: TickBatch, b: TickBatch) -> None:
    """Assert two batches hold the same trades, field by field."""
    assert list(a.symbol) == list(b.symbol)
    np.testing.assert_array_equal(a.price, b.price)
    np.testing.assert_array_equal(a.size, b.size)
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.side, b.side)
    for name in ("trade_id", "buyer", "seller"):
        left, right = getattr(a, name), getattr(b, name)
        left_values = [None] * len(a) if left is None else left.to_pylist()
        right_values = [None] * len(b) if right is None else right.to_pylist()
        # the per-tick form cannot tell an absent field from an empty one: both mean "none given"
        assert [v or None for v in left_values] == [v or None for v in right_values]


class TestRoundTrip:
    @settings(max_examples=150, deadline=None)
    @given(tick_batches())
    def test_batch_entry_round_trips(self, batch: TickBatch) -> None:
        """A batch entry decodes to exactly the trades that were encoded."""
        decoded = decode_entries([(b"1-0", as_wire(encode_batch(batch)))])
        assert decoded.rejected == []
        same_trades(decoded.ticks, batch)
        assert [decoded.ticks.tick_id(i) for i in range(len(batch))] == [f"1-0#{i}" for i in range(len(batch))]

    @settings(max_examples=150, deadline=None)
    @given(tick_batches())
    def test_per_tick_entries_round_trip(self, batch: TickBatch) -> None:
        """Per-tick entries decode to the same trades as the batch they came from."""
        entries = [(f"{i + 1}-0".encode(), as_wire(f)) for i, f in enumerate(encode_ticks(batch))]
        decoded = decode_entries(entries)
        assert decoded.rejected == []
        same_trades(decoded.ticks, batch)

    @settings(max_examples=50, deadline=None)
    @given(tick_batches(), tick_batches())
    def test_mixed_forms_keep_stream_order(self, first: TickBatch, second: TickBatch) -> None:
        """Per-tick entries followed by a batch entry decode in stream order."""
        entries = [(f"{i + 1}-0".encode(), as_wire(f)) for i, f in enumerate(encode_ticks(first))]
        entries.append((b"999-0", as_wire(encode_batch(second))))
        same_trades(decode_entries(entries).ticks, concat([first, second]))


field_names = st.sampled_from(
    [b"symbol", b"price", b"size", b"ts", b"side", b"trade_id", b"batch", b"rows", b"format", b"x"]
)
garbage_entries = st.lists(
    st.tuples(st.just(b"1-0"), st.lists(st.tuples(field_names, st.binary(max_size=30)), max_size=8)), max_size=10
)


class TestGarbage:
    @settings(max_examples=300, deadline=None)
    @given(garbage_entries)
    def test_random_garbage_never_crashes_the_decoder(self, raw: list[tuple[bytes, list[tuple[bytes, bytes]]]]) -> None:
        """Any bytes at all either decode to valid trades or are rejected with a reason naming a field."""
        entries = [(eid, [x for pair in pairs for x in pair]) for eid, pairs in raw]
        decoded = decode_entries(entries)
        assert len(decoded.ticks) + len(decoded.rejected) >= sum(1 for _, pairs in raw if b"batch" not in dict(pairs))
        for item in decoded.rejected:
            assert ":" in item.reason and item.reason.split(":")[0].strip()
        assert np.all(decoded.ticks.price > 0) and np.all(np.isfinite(decoded.ticks.price))
        assert np.all(decoded.ticks.size > 0)

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=200))
    def test_corrupt_arrow_payload_is_rejected_with_a_reason(self, payload: bytes) -> None:
        """A batch field that is not a valid Arrow stream is rejected, not raised."""
        decoded = decode_entries([(b"7-0", [b"batch", payload])])
        assert len(decoded.ticks) == 0
        assert len(decoded.rejected) == 1 and decoded.rejected[0].reason.startswith(
            ("batch", "symbol", "price", "size", "ts", "rows")
        )


class TestRules:
    def test_each_rule_is_named_in_its_reason(self) -> None:
        """Every tick rule of docs/design.md rejects with a reason that names the field to fix."""
        cases = {
            "symbol": {b"symbol": b"TOO-LONG-SYMBOL-NAME", b"price": b"1", b"size": b"1"},
            "price": {b"symbol": b"A", b"price": b"nan", b"size": b"1"},
            "size": {b"symbol": b"A", b"price": b"1", b"size": b"0"},
            "ts": {b"symbol": b"A", b"price": b"1", b"size": b"1", b"ts": b"12.5"},
            "side": {b"symbol": b"A", b"price": b"1", b"size": b"1", b"side": b"X"},
            "trade_id": {b"symbol": b"A", b"price": b"1", b"size": b"1", b"trade_id": b"x" * 65},
        }
        for field, fields in cases.items():
            decoded = decode_entries([(b"5-0", [x for kv in fields.items() for x in kv])])
            assert len(decoded.ticks) == 0, field
            assert decoded.rejected[0].reason.startswith(f"{field}:"), (field, decoded.rejected[0].reason)

    def test_missing_ts_takes_the_entry_time_and_symbols_are_upper_cased(self) -> None:
        """ts defaults to the entry ID's milliseconds; symbols are normalised to upper case."""
        decoded = decode_entries([(b"1700000000123-4", [b"symbol", b"brk.b", b"price", b"1.5", b"size", b"0.25"])])
        assert decoded.ticks.ts.tolist() == [1700000000123]
        assert list(decoded.ticks.symbol) == ["BRK.B"]
        assert decoded.ticks.size.tolist() == [0.25]

    def test_lower_case_symbols_in_a_batch_entry_are_rejected(self) -> None:
        """The fast form must carry normalised symbols; a row that does not is dead-lettered, its neighbours kept."""
        batch = TickBatch.from_columns(["aapl", "MSFT"], [1.0, 2.0], [1.0, 1.0], [1, 2])
        decoded = decode_entries([(b"9-0", as_wire(encode_batch(batch)))])
        assert list(decoded.ticks.symbol) == ["MSFT"]
        assert decoded.rejected[0].entry_id == "9-0#0" and "upper case" in decoded.rejected[0].reason

    def test_arrow_schema_is_columnar_with_dictionary_symbols(self) -> None:
        """The batch form carries symbols dictionary-encoded, so a batch of one symbol stores its name once."""
        record = TickBatch.from_columns(["AAPL"] * 1000, np.ones(1000), np.ones(1000), np.arange(1000)).to_arrow()
        assert pa.types.is_dictionary(record.schema.field("symbol").type)
        assert len(record.column(0).dictionary) == 1


class TestSlice:
    @settings(max_examples=50, deadline=None)
    @given(tick_batches(), st.integers(0, 45), st.integers(0, 45))
    def test_slice_equals_take_of_the_same_rows(self, batch: TickBatch, start: int, stop: int) -> None:
        """A zero-copy slice holds exactly the rows that take() of that range copies."""
        rows = np.arange(min(start, len(batch)), min(max(start, stop), len(batch)))
        same_trades(batch.slice(start, max(start, stop)), batch.take(rows))
