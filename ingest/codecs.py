"""Wire codecs: per-tick stream entries and columnar micro-batch entries, both to `TickBatch`.

Per-tick entry: the public form, fields as in DESIGN.md (`symbol`, `price`, `size`, `ts`, ...).
Batch entry: the project's fast form, fields `batch` (an Arrow IPC stream holding one record batch
with the `TickBatch.to_arrow` columns), `rows` (its row count) and `format` (`arrow-ipc/1`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ingest.ticks import (
    OPTIONAL_TEXT_FIELDS,
    SIDE_NAMES,
    TickBatch,
    TickError,
    check_rows,
    concat,
    normalise_symbol,
    row_fields,
)

BATCH_FORMAT = b"arrow-ipc/1"
RawEntry = tuple[bytes, Sequence[bytes]]  # (entry id, flat [field, value, field, value, ...])


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that broke the rules: what it was, where it came from, and why."""

    entry_id: str
    fields: dict[str, bytes | str]
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """The valid trades of some stream entries, plus every rejected input with its reason."""

    ticks: TickBatch
    rejected: list[Rejected]


# --- encoding -----------------------------------------------------------------------------------


def encode_batch(batch: TickBatch) -> dict[str, bytes | int]:
    """Fields of one batch entry holding every trade of `batch`."""
    record = batch.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    return {"batch": sink.getvalue().to_pybytes(), "rows": len(batch), "format": BATCH_FORMAT}


def encode_ticks(batch: TickBatch) -> Iterator[dict[str, str | float | int]]:
    """Fields of one per-tick entry per trade (the public form)."""
    symbols = batch.symbols
    optional = [(name, getattr(batch, name).to_pylist()) for name in OPTIONAL_TEXT_FIELDS
                if getattr(batch, name) is not None]  # fmt: skip
    sides = batch.side.tolist()
    for i, (code, price, size, ts) in enumerate(
        zip(batch.symbol_idx.tolist(), batch.price.tolist(), batch.size.tolist(), batch.ts.tolist(),
            strict=True)
    ):  # fmt: skip
        fields: dict[str, str | float | int] = {"symbol": symbols[code], "price": price, "size": size, "ts": ts}
        side = SIDE_NAMES.get(sides[i])
        if side:
            fields["side"] = side
        for name, values in optional:
            if values[i] is not None:
                fields[name] = values[i]
        yield fields


# --- decoding -----------------------------------------------------------------------------------


def decode_entries(entries: Sequence[RawEntry]) -> Decoded:
    """Decode stream entries of either form, in stream order, rejecting what breaks the rules."""
    pieces: list[TickBatch] = []
    rejected: list[Rejected] = []
    run: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entry_id, flat in entries:
        fields = dict(zip(flat[0::2], flat[1::2], strict=False))
        if b"batch" in fields:
            if run:
                pieces.append(_decode_tick_run(run, rejected))
                run = []
            pieces.append(_decode_batch_entry(entry_id, fields, rejected))
        else:
            run.append((entry_id, fields))
    if run:
        pieces.append(_decode_tick_run(run, rejected))
    return Decoded(concat(pieces), rejected)


def _text_fields(fields: dict[bytes, bytes]) -> dict[str, bytes | str]:
    return {k.decode(errors="replace"): v for k, v in fields.items()}


def _decode_batch_entry(entry_id: bytes, fields: dict[bytes, bytes], rejected: list[Rejected]) -> TickBatch:
    eid = entry_id.decode()
    try:
        if fields.get(b"format", BATCH_FORMAT) != BATCH_FORMAT:
            raise TickError(f"format: unknown batch format {fields[b'format'][:40]!r}")
        table = pa.ipc.open_stream(pa.py_buffer(fields[b"batch"])).read_all()
        batch = TickBatch.from_arrow(table)
        if b"rows" in fields and int(fields[b"rows"]) != len(batch):
            raise TickError(f"rows: says {int(fields[b'rows'])} but the batch holds {len(batch)}")
    except (TickError, pa.ArrowException, ValueError, OSError, KeyError) as exc:
        reason = str(exc) if isinstance(exc, TickError) else f"batch: undecodable ({type(exc).__name__}: {exc})"
        rejected.append(Rejected(eid, _text_fields(fields), reason[:500]))
        return TickBatch.empty()
    n = len(batch)
    batch = batch.with_origin((eid,), np.zeros(n, np.int32), np.arange(n, dtype=np.int32))
    keep, reasons = check_rows(batch)
    if not keep.all():
        for row, reason in zip(np.flatnonzero(~keep).tolist(), reasons, strict=True):
            rejected.append(Rejected(f"{eid}#{row}", dict(row_fields(batch, row)), reason))
        batch = batch.take(keep)
    return batch


def _parse_numbers(
    values: list[bytes], dtype: type, field: str, reason: np.ndarray, missing: bytes = b""
) -> np.ndarray:
    """Vectorised parse; only when that fails, find the bad rows one by one and give each a reason."""
    try:
        return np.array(values, dtype=np.bytes_).astype(dtype)
    except ValueError:
        pass
    out: np.ndarray = np.zeros(len(values), dtype=dtype)
    convert = float if dtype is np.float64 else int
    kind = "a number" if dtype is np.float64 else "an integer (epoch ms)"
    for i, raw in enumerate(values):
        try:
            out[i] = convert(raw)
        except (ValueError, OverflowError):
            if reason[i] == "":
                reason[i] = f"{field}: missing" if raw == missing else f"{field}: {raw[:40]!r} is not {kind}"
    return out


def _decode_tick_run(run: list[tuple[bytes, dict[bytes, bytes]]], rejected: list[Rejected]) -> TickBatch:
    n = len(run)
    reason = np.full(n, "", dtype=object)
    ids = [eid for eid, _ in run]
    raw_symbol = [f.get(b"symbol", b"") for _, f in run]
    price = _parse_numbers([f.get(b"price", b"") for _, f in run], np.float64, "price", reason)
    size = _parse_numbers([f.get(b"size", b"") for _, f in run], np.float64, "size", reason)
    raw_ts = [f.get(b"ts") for _, f in run]
    if any(t is None for t in raw_ts):  # missing ts: the entry ID's time
        raw_ts = [eid.split(b"-", 1)[0] if t is None else t for eid, t in zip(ids, raw_ts, strict=True)]
    ts = _parse_numbers(raw_ts, np.int64, "ts", reason)  # type: ignore[arg-type]

    names, symbol_idx = np.unique(np.array(raw_symbol, dtype=np.bytes_), return_inverse=True)
    clean_names: list[str] = []
    for code, raw in enumerate(names.tolist()):
        try:
            clean_names.append(normalise_symbol(raw.decode()) if raw else "")
            if not raw:
                reason[(symbol_idx == code) & (reason == "")] = "symbol: missing"
        except (TickError, UnicodeDecodeError) as exc:
            clean_names.append("")
            why = str(exc) if isinstance(exc, TickError) else "symbol: not UTF-8"
            reason[(symbol_idx == code) & (reason == "")] = why
    # upper-casing can merge names ('aapl' and 'AAPL'): re-index onto the distinct clean names
    symbols, remap = np.unique(np.array(clean_names, dtype=object).astype(str), return_inverse=True)
    row_symbol = remap.astype(np.int32)[symbol_idx]

    side_raw = np.array([f.get(b"side", b"") for _, f in run], dtype=np.bytes_)
    side = np.zeros(n, np.int8)
    for value in np.unique(side_raw).tolist():
        rows = side_raw == value
        side_code = {b"": 0, b"B": 1, b"S": -1}.get(value.upper())
        if side_code is None:
            reason[rows & (reason == "")] = f"side: {value[:20]!r} must be B or S"
        else:
            side[rows] = side_code

    texts: dict[str, pa.Array | None] = {}
    for name in OPTIONAL_TEXT_FIELDS:
        key = name.encode()
        values = [f.get(key) for _, f in run]
        if all(v is None for v in values):
            texts[name] = None
            continue
        try:
            texts[name] = pa.array(values, type=pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            decoded = []
            for i, v in enumerate(values):
                try:
                    decoded.append(None if v is None else v.decode())
                except UnicodeDecodeError:
                    decoded.append(None)
                    if reason[i] == "":
                        reason[i] = f"{name}: not UTF-8"
            texts[name] = pa.array(decoded, type=pa.string())

    batch = TickBatch(
        symbols=tuple(str(s) for s in symbols),
        symbol_idx=row_symbol,
        price=price,
        size=size,
        ts=ts,
        side=side,
        entry_ids=tuple(i.decode() for i in ids),
        entry_of=np.arange(n, dtype=np.int32),
        row_in_entry=np.full(n, -1, np.int32),
        **texts,
    )
    keep, reasons = check_rows(batch, reason)
    if keep.all():
        return batch
    for row, why in zip(np.flatnonzero(~keep).tolist(), reasons, strict=True):
        rejected.append(Rejected(batch.entry_ids[row], _text_fields(run[row][1]), why))
    return batch.take(keep)


def iter_chunks(batch: TickBatch, rows: int) -> Iterable[TickBatch]:
    """Split a batch into pieces of at most `rows` trades."""
    for start in range(0, len(batch), rows):
        yield batch.take(np.arange(start, min(start + rows, len(batch))))
