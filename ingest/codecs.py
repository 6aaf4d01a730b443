"""Wire codecs: per-tick stream entries and columnar micro-batch entries, both to `TickBatch`.

Per-tick entry: the public form, fields as in DESIGN.md (`symbol`, `price`, `size`, `ts`, ...).
Batch entry: the project's fast form, fields `batch` (an Arrow IPC stream holding one record batch
with the `TickBatch.to_arrow` columns), `rows` (its row count) and `format` (`arrow-ipc/1`).
Either may carry `producer` and `seq` (see `PRODUCER_FIELD`).
"""

from __future__ import annotations

import functools
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
# optional fields of either form: the writing producer's id and its sequence number for the entry, which
# let a producer find out after a lost connection which of its entries landed; consumers ignore them
PRODUCER_FIELD = "producer"
SEQ_FIELD = "seq"
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


def as_text(value: bytes | str) -> str:
    """A Redis reply value as str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else value


# --- encoding -----------------------------------------------------------------------------------


def encode_batch(batch: TickBatch) -> dict[str, memoryview | int | bytes]:
    """Fields of one batch entry holding every trade of `batch` (the payload as a view: no copy to bytes)."""
    record = batch.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    return {"batch": memoryview(sink.getvalue()), "rows": len(batch), "format": BATCH_FORMAT}


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
    ticks: list[RawEntry] = []
    batches: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entry in entries:
        flat = entry[1]
        if flat and (flat[0] == b"batch" or b"batch" in flat[2::2]):
            if ticks:
                pieces.append(_decode_tick_run(ticks, rejected))
                ticks = []
            batches.append((entry[0], dict(zip(flat[0::2], flat[1::2], strict=False))))
        else:
            if batches:
                pieces.append(_decode_batch_run(batches, rejected))
                batches = []
            ticks.append(entry)
    if ticks:
        pieces.append(_decode_tick_run(ticks, rejected))
    if batches:
        pieces.append(_decode_batch_run(batches, rejected))
    return Decoded(concat(pieces), rejected)


def _columns(flats: Sequence[Sequence[bytes]]) -> dict[bytes, Sequence[bytes | None]]:
    """Field columns of per-tick entries; fast when every entry has the same fields in the same order."""
    widths = set(map(len, flats))
    if len(widths) == 1 and (width := widths.pop()) % 2 == 0:
        cols = list(zip(*flats, strict=True))
        names = [cols[j][0] for j in range(0, width, 2)]
        if len(set(names)) == len(names) and all(cols[j].count(cols[j][0]) == len(flats) for j in range(0, width, 2)):
            return {name: cols[2 * k + 1] for k, name in enumerate(names)}
    dicts = [dict(zip(f[0::2], f[1::2], strict=False)) for f in flats]  # mixed layouts: the slow, general way
    names = list(dict.fromkeys(name for d in dicts for name in d))
    return {name: [d.get(name) for d in dicts] for name in names}


def _text_fields(fields: dict[bytes, bytes]) -> dict[str, bytes | str]:
    return {k.decode(errors="replace"): v for k, v in fields.items()}


_CANONICAL = {
    "symbol": pa.dictionary(pa.int32(), pa.string()),
    "price": pa.float64(),
    "size": pa.float64(),
    "ts": pa.int64(),
    "side": pa.int8(),
    **{name: pa.string() for name in OPTIONAL_TEXT_FIELDS},
}


def _read_batch_payload(fields: dict[bytes, bytes]) -> pa.Table:
    """One batch entry's Arrow table, with every known column in its canonical type."""
    if fields.get(b"format", BATCH_FORMAT) != BATCH_FORMAT:
        raise TickError(f"format: unknown batch format {fields[b'format'][:40]!r}")
    table = pa.ipc.open_stream(pa.py_buffer(fields[b"batch"])).read_all()
    for required in ("symbol", "price", "size", "ts"):
        if required not in table.column_names:
            raise TickError(f"{required}: column missing from batch")
    if b"rows" in fields and int(fields[b"rows"]) != table.num_rows:
        raise TickError(f"rows: says {int(fields[b'rows'])} but the batch holds {table.num_rows}")
    keep = [name for name in table.column_names if name in _CANONICAL]
    table = table.select(keep)
    if any(table.schema.field(name).type != _CANONICAL[name] for name in keep):
        try:
            table = table.cast(pa.schema([(name, _CANONICAL[name]) for name in keep]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TickError(f"batch: a column has the wrong type ({exc})") from exc
    return table


def _decode_batch_run(run: list[tuple[bytes, dict[bytes, bytes]]], rejected: list[Rejected]) -> TickBatch:
    """Consecutive batch entries, decoded as one Arrow table (per-entry work is only reading the payload)."""
    tables: list[pa.Table] = []
    ids: list[str] = []
    for entry_id, fields in run:
        eid = entry_id.decode()
        try:
            tables.append(_read_batch_payload(fields))
            ids.append(eid)
        except (TickError, pa.ArrowException, ValueError, OSError, KeyError) as exc:
            reason = str(exc) if isinstance(exc, TickError) else f"batch: undecodable ({type(exc).__name__}: {exc})"
            rejected.append(Rejected(eid, _text_fields(fields), reason[:500]))
    if not tables:
        return TickBatch.empty()
    try:
        batch = TickBatch.from_arrow(pa.concat_tables(tables, promote_options="default"))
    except TickError:  # a null somewhere: find its entry by decoding one at a time
        if len(tables) == 1:
            rejected.append(Rejected(ids[0], _text_fields(dict(run)[ids[0].encode()]), "batch: null values"))
            return TickBatch.empty()
        return concat([_decode_batch_run([item], rejected) for item in run])
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    entry_of = np.repeat(np.arange(len(tables), dtype=np.int32), counts)
    row_in_entry = np.arange(len(batch), dtype=np.int32)
    row_in_entry -= (np.cumsum(counts) - counts).astype(np.int32)[entry_of]
    batch = batch.with_origin(tuple(ids), entry_of, row_in_entry)
    keep, reasons = check_rows(batch)
    if not keep.all():
        for row, reason in zip(np.flatnonzero(~keep).tolist(), reasons, strict=True):
            rejected.append(Rejected(batch.tick_id(row), dict(row_fields(batch, row)), reason))
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


@functools.lru_cache(maxsize=65_536)
def _clean_symbol(raw: bytes) -> tuple[str, str | None]:
    """(normalised symbol, None) or ("", what is wrong with it); cached, as the same tickers recur."""
    if not raw:
        return "", "symbol: missing"
    try:
        return normalise_symbol(raw.decode()), None
    except UnicodeDecodeError:
        return "", "symbol: not UTF-8"
    except TickError as exc:
        return "", str(exc)


def _decode_tick_run(run: list[RawEntry], rejected: list[Rejected]) -> TickBatch:
    n = len(run)
    reason = np.full(n, "", dtype=object)
    ids = [eid for eid, _ in run]
    columns = _columns([flat for _, flat in run])
    blank: Sequence[bytes | None] = [b""] * n

    def column(name: bytes) -> list[bytes]:
        values = columns.get(name, blank)
        return [b"" if v is None else v for v in values] if None in values else list(values)  # type: ignore[arg-type]

    raw_symbol = column(b"symbol")
    price = _parse_numbers(column(b"price"), np.float64, "price", reason)
    size = _parse_numbers(column(b"size"), np.float64, "size", reason)
    raw_ts = list(columns.get(b"ts", [None] * n))
    if None in raw_ts:  # missing ts: the entry ID's time
        raw_ts = [eid.split(b"-", 1)[0] if t is None else t for eid, t in zip(ids, raw_ts, strict=True)]
    ts = _parse_numbers(raw_ts, np.int64, "ts", reason)  # type: ignore[arg-type]

    names, symbol_idx = np.unique(np.array(raw_symbol, dtype=np.bytes_), return_inverse=True)
    clean_names: list[str] = []
    for code, raw in enumerate(names.tolist()):
        name, problem = _clean_symbol(raw)
        clean_names.append(name)
        if problem:
            reason[(symbol_idx == code) & (reason == "")] = problem
    # upper-casing can merge names ('aapl' and 'AAPL'): re-index onto the distinct clean names
    symbols, remap = np.unique(np.array(clean_names, dtype=object).astype(str), return_inverse=True)
    row_symbol = remap.astype(np.int32)[symbol_idx]

    side_raw = np.array(column(b"side"), dtype=np.bytes_)
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
        values = list(columns.get(name.encode(), [None] * n))
        if values.count(None) == n:
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
        entry_ids=tuple(b"\n".join(ids).decode().split("\n")),
        entry_of=np.arange(n, dtype=np.int32),
        row_in_entry=np.full(n, -1, np.int32),
        **texts,
    )
    keep, reasons = check_rows(batch, reason)
    if keep.all():
        return batch
    for row, why in zip(np.flatnonzero(~keep).tolist(), reasons, strict=True):
        flat = run[row][1]
        original = dict(zip(flat[0::2], flat[1::2], strict=False))
        rejected.append(Rejected(batch.entry_ids[row], _text_fields(original), why))
    return batch.take(keep)


def iter_chunks(batch: TickBatch, rows: int) -> Iterable[TickBatch]:
    """Split a batch into pieces of at most `rows` trades."""
    for start in range(0, len(batch), rows):
        yield batch.slice(start, start + rows)
