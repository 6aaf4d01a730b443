"""Trade ticks in the columnar form every consumer works on (the field rules are in `field_rules`).

A `TickBatch` holds many trades as numpy arrays (one per field) with the symbols dictionary-encoded,
so hot paths never build a Python object per trade. Both wire forms (one entry per tick, and a
columnar micro-batch per entry) decode to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tickerdash.ingest.contract.tick_ids import tick_id
from tickerdash.ingest.field_rules import OPTIONAL_TEXT_FIELDS, SIDE_NAMES, TickError


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Columnar trades: row i is one trade; `symbols[symbol_idx[i]]` is its ticker.

    `trade_id`, `buyer`, `seller` are Arrow string arrays (nulls where absent) or None when no
    trade of the batch has them. `entry_ids`/`entry_of`/`row_in_entry` say where each trade came
    from on the stream (empty before a batch is published).
    """

    symbols: tuple[str, ...]
    symbol_idx: np.ndarray  # int32, index into symbols
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    ts: np.ndarray  # int64 epoch ms
    side: np.ndarray  # int8: 1 buy, -1 sell, 0 unknown
    trade_id: pa.Array | None = None
    buyer: pa.Array | None = None
    seller: pa.Array | None = None
    entry_ids: tuple[str, ...] = ()
    entry_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    row_in_entry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.price.shape[0])

    @classmethod
    def empty(cls) -> TickBatch:
        """A batch with no trades."""
        return cls.from_columns([], [], [], [])

    @classmethod
    def from_columns(
        cls,
        symbol: Sequence[str] | np.ndarray,
        price: Sequence[float] | np.ndarray,
        size: Sequence[float] | np.ndarray,
        ts: Sequence[int] | np.ndarray,
        side: Sequence[int] | np.ndarray | None = None,
        trade_id: Sequence[str | None] | pa.Array | None = None,
        buyer: Sequence[str | None] | pa.Array | None = None,
        seller: Sequence[str | None] | pa.Array | None = None,
    ) -> TickBatch:
        """Build a batch from plain columns (symbols as strings); convenient, not for hot paths."""
        names, idx = np.unique(np.asarray(symbol, dtype=object).astype(str), return_inverse=True)
        n = len(idx)
        return cls(
            symbols=tuple(str(s) for s in names),
            symbol_idx=idx.astype(np.int32).reshape(n),
            price=np.asarray(price, dtype=np.float64).reshape(n),
            size=np.asarray(size, dtype=np.float64).reshape(n),
            ts=np.asarray(ts, dtype=np.int64).reshape(n),
            side=np.zeros(n, np.int8) if side is None else np.asarray(side, dtype=np.int8).reshape(n),
            trade_id=_text(trade_id),
            buyer=_text(buyer),
            seller=_text(seller),
        )

    @property
    def symbol(self) -> np.ndarray:
        """The ticker of every row as an object array (materialises strings: not for hot paths)."""
        return np.asarray(self.symbols, dtype=object)[self.symbol_idx] if self.symbols else np.zeros(0, object)

    def take(self, rows: np.ndarray) -> TickBatch:
        """The trades at these row indices (or boolean mask), in that order."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64, copy=False)
        arrow_rows = pa.array(rows, type=pa.int64())
        has_origin = self.entry_of.shape[0] == len(self)
        return TickBatch(
            symbols=self.symbols,
            symbol_idx=self.symbol_idx[rows],
            price=self.price[rows],
            size=self.size[rows],
            ts=self.ts[rows],
            side=self.side[rows],
            trade_id=None if self.trade_id is None else self.trade_id.take(arrow_rows),
            buyer=None if self.buyer is None else self.buyer.take(arrow_rows),
            seller=None if self.seller is None else self.seller.take(arrow_rows),
            entry_ids=self.entry_ids,
            entry_of=self.entry_of[rows] if has_origin else self.entry_of,
            row_in_entry=self.row_in_entry[rows] if has_origin else self.row_in_entry,
        )

    def slice(self, start: int, stop: int) -> TickBatch:
        """Rows start..stop-1 as views of this batch's arrays (no copy: for chunking on hot paths)."""
        length = max(0, min(stop, len(self)) - start)
        has_origin = self.entry_of.shape[0] == len(self)
        return TickBatch(
            symbols=self.symbols,
            symbol_idx=self.symbol_idx[start:stop],
            price=self.price[start:stop],
            size=self.size[start:stop],
            ts=self.ts[start:stop],
            side=self.side[start:stop],
            trade_id=None if self.trade_id is None else self.trade_id.slice(start, length),
            buyer=None if self.buyer is None else self.buyer.slice(start, length),
            seller=None if self.seller is None else self.seller.slice(start, length),
            entry_ids=self.entry_ids,
            entry_of=self.entry_of[start:stop] if has_origin else self.entry_of,
            row_in_entry=self.row_in_entry[start:stop] if has_origin else self.row_in_entry,
        )

    def tick_id(self, row: int) -> str:
        """Stream ID of one trade: the entry ID, plus `#<row>` inside a batch entry."""
        return tick_id(self.entry_ids[int(self.entry_of[row])], int(self.row_in_entry[row]))

    def with_origin(self, entry_ids: tuple[str, ...], entry_of: np.ndarray, row_in_entry: np.ndarray) -> TickBatch:
        """The same trades, tagged with the stream entries they were read from."""
        return TickBatch(
            self.symbols,
            self.symbol_idx,
            self.price,
            self.size,
            self.ts,
            self.side,
            self.trade_id,
            self.buyer,
            self.seller,
            entry_ids,
            entry_of,
            row_in_entry,
        )

    def to_arrow(self) -> pa.RecordBatch:
        """The trades as an Arrow record batch (symbol dictionary-encoded, side as int8)."""
        n = len(self)
        symbol = pa.DictionaryArray.from_arrays(
            pa.array(self.symbol_idx, type=pa.int32()), pa.array(list(self.symbols), type=pa.string())
        )
        cols: dict[str, pa.Array] = {
            "symbol": symbol,
            "price": pa.array(self.price, type=pa.float64()),
            "size": pa.array(self.size, type=pa.float64()),
            "ts": pa.array(self.ts, type=pa.int64()),
            "side": pa.array(self.side, type=pa.int8()),
        }
        for name in OPTIONAL_TEXT_FIELDS:
            column = getattr(self, name)
            if column is not None:
                cols[name] = column
        assert all(len(c) == n for c in cols.values())
        return pa.RecordBatch.from_pydict(cols)

    @classmethod
    def from_arrow(cls, table: pa.RecordBatch | pa.Table) -> TickBatch:
        """Read the columns of `to_arrow` back; raises TickError naming a missing or mistyped column."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        names = set(table.column_names)
        for required in ("symbol", "price", "size", "ts"):
            if required not in names:
                raise TickError(f"{required}: column missing from batch")
        symbol = table.column("symbol").combine_chunks()
        if not pa.types.is_dictionary(symbol.type):
            symbol = symbol.cast(pa.string()).dictionary_encode()
        if symbol.null_count:
            raise TickError("symbol: null in batch")
        if symbol.dictionary.null_count:
            raise TickError("symbol: null in the batch's symbol dictionary")
        dictionary = symbol.dictionary.cast(pa.string()).to_pylist()
        codes = symbol.indices.to_numpy(zero_copy_only=False)
        # Arrow IPC does not check dictionary codes: one outside the dictionary would index past its end
        if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(dictionary)):
            raise TickError(
                f"symbol: dictionary codes must lie in [0, {len(dictionary)}), the batch has "
                f"{int(codes.min())} to {int(codes.max())}"
            )
        try:
            price = _numeric(table, "price", pa.float64())
            size = _numeric(table, "size", pa.float64())
            ts = _numeric(table, "ts", pa.int64())
            side = _numeric(table, "side", pa.int8()) if "side" in names else np.zeros(len(price), np.int8)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TickError(f"batch column has the wrong type: {exc}") from exc

        def text(name: str) -> pa.Array | None:
            return table.column(name).combine_chunks().cast(pa.string()) if name in names else None

        return cls(
            symbols=tuple(dictionary),
            symbol_idx=codes.astype(np.int32, copy=False),
            price=price,
            size=size,
            ts=ts,
            side=side,
            trade_id=text("trade_id"),
            buyer=text("buyer"),
            seller=text("seller"),
        )


def _numeric(table: pa.Table, name: str, typ: pa.DataType) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise TickError(f"{name}: null in batch")
    return column.cast(typ).to_numpy(zero_copy_only=False)


def _text(values: Sequence[str | None] | pa.Array | None) -> pa.Array | None:
    if values is None:
        return None
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(list(values), type=pa.string())


def concat(batches: Sequence[TickBatch]) -> TickBatch:
    """One batch with the rows of all, in order; symbol dictionaries are merged (per entry, not per row)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return TickBatch.empty()
    if len(batches) == 1:
        return batches[0]
    all_names = sorted({s for b in batches for s in b.symbols})
    position = {s: i for i, s in enumerate(all_names)}
    idx = [np.asarray([position[s] for s in b.symbols], np.int32)[b.symbol_idx] for b in batches]
    entry_ids: list[str] = []
    entry_of, row_in_entry = [], []
    with_origin = all(b.entry_of.shape[0] == len(b) for b in batches)
    for b in batches:
        if with_origin:
            entry_of.append(b.entry_of + len(entry_ids))
            row_in_entry.append(b.row_in_entry)
            entry_ids.extend(b.entry_ids)

    def text(name: str) -> pa.Array | None:
        if all(getattr(b, name) is None for b in batches):
            return None
        parts = [getattr(b, name) if getattr(b, name) is not None else pa.nulls(len(b), pa.string()) for b in batches]
        return pa.concat_arrays(parts)

    return TickBatch(
        symbols=tuple(all_names),
        symbol_idx=np.concatenate(idx),
        price=np.concatenate([b.price for b in batches]),
        size=np.concatenate([b.size for b in batches]),
        ts=np.concatenate([b.ts for b in batches]),
        side=np.concatenate([b.side for b in batches]),
        trade_id=text("trade_id"),
        buyer=text("buyer"),
        seller=text("seller"),
        entry_ids=tuple(entry_ids),
        entry_of=np.concatenate(entry_of) if with_origin else np.zeros(0, np.int32),
        row_in_entry=np.concatenate(row_in_entry) if with_origin else np.zeros(0, np.int32),
    )


def row_fields(batch: TickBatch, row: int) -> dict[str, str]:
    """One trade in the per-tick wire form (strings), e.g. for the dead-letter stream."""
    fields = {
        "symbol": batch.symbols[int(batch.symbol_idx[row])],
        "price": repr(float(batch.price[row])),
        "size": repr(float(batch.size[row])),
        "ts": str(int(batch.ts[row])),
    }
    side = SIDE_NAMES.get(int(batch.side[row]))
    if side:
        fields["side"] = side
    for name in OPTIONAL_TEXT_FIELDS:
        column = getattr(batch, name)
        if column is not None and column[row].is_valid:
            fields[name] = column[row].as_py()
    return fields
