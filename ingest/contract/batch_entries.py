"""Batch entries: the project's fast form of tick entries, many trades in one entry.

Fields `batch` (an Arrow IPC stream holding one record batch with the `TickBatch.to_arrow` columns),
`rows` (its row count) and `format` (`BATCH_FORMAT`), plus the optional fields of either form (`tick_rules`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tickerdash.ingest.contract.tick_rules import (
    BATCH_FORMAT,
    CLOCK_FIELD,
    DecodeRules,
    Rejected,
    declared_clock,
    text_fields_of,
)
from tickerdash.ingest.field_rules import OPTIONAL_TEXT_FIELDS, TickError, check_rows
from tickerdash.ingest.ticks import TickBatch, concat, row_fields


def encode_batch(batch: TickBatch, clock_ms: int | None = None) -> dict[str, memoryview | int | bytes]:
    """Fields of one batch entry holding every trade of `batch` (the payload as a view: no copy to bytes);
    `clock_ms` declares the producer's event clock."""
    record = batch.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    fields: dict[str, memoryview | int | bytes] = {
        "batch": memoryview(sink.getvalue()),
        "rows": len(batch),
        "format": BATCH_FORMAT,
    }
    if clock_ms is not None:
        fields[CLOCK_FIELD] = int(clock_ms)
    return fields


_CANONICAL = {
    "symbol": pa.dictionary(pa.int32(), pa.string()),
    "price": pa.float64(),
    "size": pa.float64(),
    "ts": pa.int64(),
    "side": pa.int8(),
    **{name: pa.string() for name in OPTIONAL_TEXT_FIELDS},
}


def _check_codes(symbol: pa.DictionaryArray) -> None:
    """Dictionary codes must lie inside the dictionary (Arrow IPC does not check them)."""
    codes = symbol.indices.to_numpy(zero_copy_only=False)
    if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(symbol.dictionary)):
        raise TickError(
            f"symbol: dictionary codes must lie in [0, {len(symbol.dictionary)}), the batch has "
            f"{int(codes.min())} to {int(codes.max())}"
        )


def _read_batch_payload(fields: dict[bytes, bytes], rules: DecodeRules) -> pa.Table:
    """One batch entry's Arrow table, with every known column in its canonical type and valid Arrow data."""
    if fields.get(b"format", BATCH_FORMAT) != BATCH_FORMAT:
        raise TickError(f"format: unknown batch format {fields[b'format'][:40]!r}")
    table = pa.ipc.open_stream(pa.py_buffer(fields[b"batch"])).read_all()  # views of the payload: no copy yet
    if rules.max_entry_rows is not None and table.num_rows > rules.max_entry_rows:
        raise TickError(
            f"rows: the entry holds {table.num_rows} trades, more than the {rules.max_entry_rows} one "
            "entry may hold (TICKERDASH_MAX_ENTRY_ROWS): split it into smaller entries"
        )
    for required in ("symbol", "price", "size", "ts"):
        if required not in table.column_names:
            raise TickError(f"{required}: column missing from batch")
    if b"rows" in fields and int(fields[b"rows"]) != table.num_rows:
        raise TickError(f"rows: says {int(fields[b'rows'])} but the batch holds {table.num_rows}")
    try:  # Arrow IPC reads buffers unchecked: their sizes, then offsets and UTF-8 of the text (not the numbers)
        table.validate()
        for name in ("trade_id", "buyer", "seller", "symbol"):
            if name in table.column_names:
                for chunk in table.column(name).chunks:
                    if pa.types.is_dictionary(chunk.type):
                        chunk.dictionary.validate(full=True)
                        _check_codes(chunk)
                    else:
                        chunk.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise TickError(f"batch: invalid Arrow data ({str(exc)[:200]})") from exc
    keep = [name for name in table.column_names if name in _CANONICAL]
    table = table.select(keep)
    if any(table.schema.field(name).type != _CANONICAL[name] for name in keep):
        try:
            table = table.cast(pa.schema([(name, _CANONICAL[name]) for name in keep]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TickError(f"batch: a column has the wrong type ({exc})") from exc
    for name in keep:
        column = table.column(name)
        if column.null_count and name in ("symbol", "price", "size", "ts", "side"):
            raise TickError(f"{name}: null in batch")
        if name == "symbol" and any(chunk.dictionary.null_count for chunk in column.chunks):
            raise TickError("symbol: null in the batch's symbol dictionary")
    return table


def decode_batch_run(
    run: list[tuple[bytes, dict[bytes, bytes]]], rejected: list[Rejected], rules: DecodeRules
) -> TickBatch:
    """Consecutive batch entries, decoded as one Arrow table (per-entry work is only reading the payload)."""
    tables: list[pa.Table] = []
    ids: list[str] = []
    clocks: list[int] = []
    for entry_id, fields in run:
        eid = entry_id.decode()
        try:
            clock = declared_clock(fields.get(CLOCK_FIELD.encode()) if rules.trust_declared_clock else None, entry_id)
            tables.append(_read_batch_payload(fields, rules))
            ids.append(eid)
            clocks.append(clock)
        except Exception as exc:  # whatever one entry holds is that entry's problem alone
            reason = str(exc) if isinstance(exc, TickError) else f"batch: undecodable ({type(exc).__name__}: {exc})"
            rejected.append(Rejected(eid, text_fields_of(fields), reason[:500]))
    if not tables:
        return TickBatch.empty()
    try:
        batch = TickBatch.from_arrow(pa.concat_tables(tables, promote_options="default"))
    except TickError:  # each entry was checked alone: decode one at a time, each rejected on its own
        if len(tables) == 1:
            rejected.append(Rejected(ids[0], text_fields_of(dict(run)[ids[0].encode()]), "batch: undecodable"))
            return TickBatch.empty()
        return concat([decode_batch_run([item], rejected, rules) for item in run])
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    entry_of = np.repeat(np.arange(len(tables), dtype=np.int32), counts)
    row_in_entry = np.arange(len(batch), dtype=np.int32)
    row_in_entry -= (np.cumsum(counts) - counts).astype(np.int32)[entry_of]
    batch = batch.with_origin(tuple(ids), entry_of, row_in_entry)
    clock_ms = None
    window = rules.window
    if (
        window is not None
        and len(batch)
        and not (  # each row against its entry's clock only when some may fail
            int(batch.ts.max()) <= min(clocks) + window.max_ahead_ms
            and (window.max_behind_ms is None or int(batch.ts.min()) >= max(clocks) - window.max_behind_ms)
        )
    ):
        clock_ms = np.asarray(clocks, np.int64)[entry_of]
    keep, reasons = check_rows(batch, clock_ms=clock_ms, window=rules.window)
    if not keep.all():
        for row, reason in zip(np.flatnonzero(~keep).tolist(), reasons, strict=True):
            rejected.append(Rejected(batch.tick_id(row), dict(row_fields(batch, row)), reason))
        batch = batch.take(keep)
    return batch


def both_forms(batch: TickBatch) -> tuple[TickBatch, TickBatch]:
    """The batch as built in memory and as a reader decodes it from one batch entry (its columns read-only
    views of the payload): numba types the two apart, so a compiled loop is warmed on both."""
    return batch, as_decoded(batch)


def as_decoded(batch: TickBatch) -> TickBatch:
    """The batch as a reader decodes it from one batch entry (its columns are read-only views of the payload)."""
    fields = {
        name.encode(): bytes(value) if isinstance(value, memoryview | bytes) else str(value).encode()
        for name, value in encode_batch(batch).items()
    }
    return decode_batch_run([(b"0-1", fields)], [], DecodeRules())
