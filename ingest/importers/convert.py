"""Source columns to tick columns: numbers, timestamps (epoch in any unit, or ISO-8601) and sides.

Conversion is columnar (Arrow compute and numpy); a Python loop per row only runs on a chunk that holds
a value Arrow cannot parse, to find which rows are bad. Every rejected row keeps the first reason found.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.field_rules import MAX_TS_MS, SIDE_BUY, SIDE_SELL, check_rows
from tickerdash.ingest.importers.columns import ResolvedColumns
from tickerdash.ingest.ticks import TickBatch

TS_SAMPLE_ROWS = 1_000  # values looked at to tell epoch numbers from ISO-8601 text
SIDE_WORDS = {"buy": SIDE_BUY, "b": SIDE_BUY, "1": SIDE_BUY, "sell": SIDE_SELL, "s": SIDE_SELL, "-1": SIDE_SELL}
MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
INT_MS_DIVISOR = {"us": 1_000, "ns": 1_000_000}  # exact integer floor division for sub-ms units


def detect_ts_unit(values: np.ndarray) -> str:
    """Guess the unit of epoch numbers by their magnitude (s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns)."""
    finite = np.abs(values[np.isfinite(values)]) if values.dtype.kind == "f" else np.abs(values)
    if finite.size == 0:
        return "ms"
    typical = float(np.median(finite))
    if typical < 1e11:
        return "s"
    if typical < 1e14:
        return "ms"
    if typical < 1e17:
        return "us"
    return "ns"


def epoch_to_ms(values: np.ndarray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers in `unit` to int64 epoch ms (floor), and a mask of values out of range."""
    if values.dtype.kind in "iu":
        values = values.astype(np.int64, copy=False)
        if unit in INT_MS_DIVISOR:
            return values // INT_MS_DIVISOR[unit], np.zeros(values.shape, bool)
        factor = int(MS_PER_UNIT[unit])
        out_of_range = np.abs(values) >= MAX_TS_MS // factor
        return np.where(out_of_range, 0, values) * factor, out_of_range
    scaled = np.floor(values.astype(np.float64, copy=False) * MS_PER_UNIT[unit])
    out_of_range = ~np.isfinite(scaled) | (np.abs(scaled) >= MAX_TS_MS)
    return np.where(out_of_range, 0, scaled).astype(np.int64), out_of_range


def _iso_to_ms(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ISO-8601 strings (zone offset or naive = UTC) to epoch ms, and a mask of unparsable ones."""
    for typ in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
        with contextlib.suppress(pa.ArrowInvalid):
            parsed = text.cast(typ)
            ns = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            return ns // 1_000_000, np.zeros(len(text), bool)
    # some value does not parse (or offsets and naive times are mixed): one by one, on this chunk only
    ms = np.zeros(len(text), np.int64)
    bad = np.zeros(len(text), bool)
    for i, value in enumerate(text.to_pylist()):
        for typ in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
            try:
                ms[i] = pa.scalar(value, pa.string()).cast(typ).cast(pa.int64()).as_py() // 1_000_000
                break
            except (pa.ArrowInvalid, TypeError):
                continue
        else:
            bad[i] = True
    return ms, bad


# --- column conversion --------------------------------------------------------------------------


def _clean_text(column: pa.Array) -> pa.Array:
    """Any column as trimmed strings, with empty strings as nulls."""
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    column = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _missing(column: pa.Array) -> np.ndarray:
    """Rows with no value: null, or empty (or blank) text."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _clean_text(column)
    return column.is_null().to_numpy(zero_copy_only=False)


def _parse_numbers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of a numeric or text column (int64 when all are integers, else float64) and a bad mask.

    Nulls come back as bad too; callers tell missing from malformed with the column's null mask.
    """
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        typ = pa.int64() if pa.types.is_integer(column.type) else pa.float64()
        values = column.cast(typ).fill_null(0).to_numpy(zero_copy_only=False)
        return values, column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(column.type) or pa.types.is_temporal(column.type):
        return np.zeros(len(column), np.float64), np.ones(len(column), bool)
    text = _clean_text(column)
    missing = text.is_null().to_numpy(zero_copy_only=False)
    for typ in (pa.int64(), pa.float64()):
        with contextlib.suppress(pa.ArrowInvalid):
            return text.cast(typ).fill_null(0).to_numpy(zero_copy_only=False), missing
    # some value is not a number: find which, one by one, on this chunk only
    values = np.zeros(len(text), np.float64)
    bad = missing.copy()
    for i, raw in enumerate(text.to_pylist()):
        if raw is None:
            continue
        try:
            values[i] = float(raw)
        except ValueError:
            bad[i] = True
    return values, bad


class _Reasons:
    """The first reason each row of a chunk is rejected for (empty string: no reason yet)."""

    __slots__ = ("why",)

    def __init__(self, rows: int) -> None:
        self.why = np.full(rows, "", dtype=object)

    def flag(self, bad: np.ndarray, reason: str) -> None:
        """Give `reason` to the bad rows that have none yet."""
        if bad.any():
            self.why[bad & (self.why == "")] = reason


class ChunkConverter:
    """Converts the raw chunks of one file; the timestamp unit is settled once, on the first values."""

    __slots__ = ("label", "resolved", "ts_unit")

    def __init__(self, resolved: ResolvedColumns, label: str) -> None:
        self.resolved = resolved
        self.label = label  # what a rejected row's origin counts: "line" (text formats) or "row" (Parquet)
        self.ts_unit: str | None = None if resolved.ts_unit == "auto" else resolved.ts_unit

    def convert(self, table: pa.Table, origin: np.ndarray) -> tuple[TickBatch, list[Rejected]]:
        """Source columns to tick columns; rows that break a rule are rejected with the field at fault."""
        n = table.num_rows
        cols = self.resolved
        reasons = _Reasons(n)

        def column(name: str) -> pa.Array:
            return table.column(name).combine_chunks()

        if cols.fixed_symbol is not None:
            symbols: tuple[str, ...] = (cols.fixed_symbol,)
            symbol_idx = np.zeros(n, np.int32)
        else:
            assert cols.symbol is not None
            text = pc.utf8_upper(_clean_text(column(cols.symbol)))
            reasons.flag(text.is_null().to_numpy(zero_copy_only=False), "symbol: missing")
            encoded = text.fill_null("").dictionary_encode()
            symbols = tuple(encoded.dictionary.to_pylist())
            symbol_idx = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)

        quantities = {}
        for field in ("price", "size"):
            values, bad = _parse_numbers(column(getattr(cols, field)))
            reasons.flag(_missing(column(getattr(cols, field))), f"{field}: missing")
            reasons.flag(bad, f"{field}: not a number")
            quantities[field] = np.where(bad, np.nan, values).astype(np.float64)

        ts = self._timestamps(column(cols.ts), reasons)
        side = self._sides(column(cols.side), reasons) if cols.side else np.zeros(n, np.int8)
        trade_id, buyer, seller = (
            _clean_text(column(name)) if name else None for name in (cols.trade_id, cols.buyer, cols.seller)
        )
        batch = TickBatch(
            symbols, symbol_idx, quantities["price"], quantities["size"], ts, side, trade_id, buyer, seller
        )
        keep, why = check_rows(batch, reasons.why)
        if keep.all():
            return batch, []
        bad_rows = np.flatnonzero(~keep)
        originals = table.take(pa.array(bad_rows)).to_pylist()
        rejected = [
            Rejected(f"{self.label}:{origin[row]}", {k: str(v) for k, v in fields.items() if v is not None}, reason)
            for row, fields, reason in zip(bad_rows.tolist(), originals, why, strict=True)
        ]
        return _compact_symbols(batch.take(keep)), rejected

    def _timestamps(self, column: pa.Array, reasons: _Reasons) -> np.ndarray:
        """Epoch ms of a timestamp column of any type; the unit is settled once, on the first values."""
        n = len(column)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            ns = column.cast(pa.timestamp("ns")).cast(pa.int64())
            reasons.flag(ns.is_null().to_numpy(zero_copy_only=False), "ts: missing")
            return ns.fill_null(0).to_numpy(zero_copy_only=False) // 1_000_000
        text_column = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        missing = _missing(column)
        reasons.flag(missing, "ts: missing")
        if self.ts_unit is None and text_column:  # numbers or ISO-8601 text? a sample of the first values tells
            sample = _clean_text(column).drop_null().slice(0, TS_SAMPLE_ROWS)
            if len(sample) and (~_iso_to_ms(sample)[1]).sum() > (~_parse_numbers(sample)[1]).sum():
                self.ts_unit = "iso"
        if self.ts_unit == "iso":
            if not text_column:
                reasons.flag(~missing, "ts: not an ISO-8601 time")
                return np.zeros(n, np.int64)
            iso_ms, bad_iso = _iso_to_ms(_clean_text(column))
            reasons.flag(bad_iso, "ts: not an ISO-8601 time")
            return iso_ms
        numbers, bad_numbers = _parse_numbers(column)
        reasons.flag(bad_numbers, "ts: not a timestamp")
        if self.ts_unit is None:
            valid = numbers[~bad_numbers]
            if valid.size == 0:
                return np.zeros(n, np.int64)  # every row is rejected; settle the unit on later rows
            self.ts_unit = detect_ts_unit(valid)
        ms, out_of_range = epoch_to_ms(numbers, self.ts_unit)
        reasons.flag(out_of_range, "ts: out of range")
        return ms

    @staticmethod
    def _sides(column: pa.Array, reasons: _Reasons) -> np.ndarray:
        """Aggressor side codes from words like buy/sell/B/S (empty: unknown)."""
        words = pc.utf8_lower(_clean_text(column))
        vocabulary = pa.array(list(SIDE_WORDS), pa.string())
        position = pc.index_in(words, value_set=vocabulary)
        codes = np.array([*SIDE_WORDS.values(), 0], np.int8)  # the last code: no side given
        index = position.fill_null(len(SIDE_WORDS)).to_numpy(zero_copy_only=False)
        unknown = pc.and_(position.is_null(), words.is_valid()).to_numpy(zero_copy_only=False)
        reasons.flag(unknown, "side: must be buy, sell, B or S")
        return codes[index]


def _compact_symbols(batch: TickBatch) -> TickBatch:
    """Drop dictionary entries that no row uses any more (e.g. the bad symbols of rejected rows)."""
    used = np.unique(batch.symbol_idx)
    if len(used) == len(batch.symbols):
        return batch
    remap = np.zeros(len(batch.symbols), np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return dataclasses.replace(
        batch, symbols=tuple(batch.symbols[i] for i in used.tolist()), symbol_idx=remap[batch.symbol_idx]
    )
