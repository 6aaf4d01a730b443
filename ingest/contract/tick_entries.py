"""Wire codecs: per-tick stream entries and columnar micro-batch entries, both to `TickBatch`.

Per-tick entry: the public form, fields as in DESIGN.md (`symbol`, `price`, `size`, `ts`, ...).
Batch entry: the project's fast form, fields `batch` (an Arrow IPC stream holding one record batch
with the `TickBatch.to_arrow` columns), `rows` (its row count) and `format` (`arrow-ipc/1`).
Either form may declare its producer's event clock (`clock`, epoch ms: the project's simulator, whose
fast runs lead the wall clock), against which the trades' `ts` are checked instead of the entry ID's time.
Either may carry `producer` and `seq` (see `PRODUCER_FIELD`).

Decoding is total: whatever an entry holds, it becomes trades or rejected inputs with their reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import (
    MAX_TS_MS,
    OPTIONAL_TEXT_FIELDS,
    SIDE_NAMES,
    TickBatch,
    TickError,
    TimeWindow,
    check_rows,
    concat,
    normalise_symbol,
    row_fields,
)

BATCH_FORMAT = b"arrow-ipc/1"
CLOCK_FIELD = "clock"
# optional fields of either form: the writing producer's id and its sequence number for the entry, which
# let a producer find out after a lost connection which of its entries landed; consumers ignore them
PRODUCER_FIELD = "producer"
SEQ_FIELD = "seq"
RawEntry = tuple[bytes, Sequence[bytes]]  # (entry id, flat [field, value, field, value, ...])
# Per-tick field values longer than this are refused before parsing: fixed-width numpy byte arrays of the
# columns would otherwise take (longest value x entries) bytes, gigabytes for one megabyte-long value.
MAX_FIELD_BYTES = 256


@dataclass(frozen=True, slots=True)
class DecodeRules:
    """What an entry must meet beyond the field rules: the event-time window and the size of a batch entry.

    `window` None (the default of `decode_entries`) checks no event-time window; readers of the tick streams
    pass `decode_rules(settings)`, so that every reader refuses the same trades.
    """

    window: TimeWindow | None = None
    trust_declared_clock: bool = True
    max_entry_rows: int | None = None


def decode_rules(settings: Settings) -> DecodeRules:
    """The decoding rules the settings ask for (TICKERDASH_TICK_TS_*, TICKERDASH_MAX_ENTRY_ROWS)."""
    behind = settings.tick_ts_max_behind_s
    window = TimeWindow(
        earliest_ms=settings.tick_ts_earliest_ms,
        max_ahead_ms=int(settings.tick_ts_max_ahead_s * 1000),
        max_behind_ms=None if behind is None else int(behind * 1000),
    )
    return DecodeRules(window, settings.trust_declared_clock, settings.max_entry_rows)


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


def encode_ticks(batch: TickBatch, clock_ms: int | None = None) -> Iterator[dict[str, str | float | int]]:
    """Fields of one per-tick entry per trade (the public form); `clock_ms` declares the producer's event clock."""
    symbols = batch.symbols
    optional = [
        (name, getattr(batch, name).to_pylist()) for name in OPTIONAL_TEXT_FIELDS if getattr(batch, name) is not None
    ]
    sides = batch.side.tolist()
    for i, (code, price, size, ts) in enumerate(
        zip(batch.symbol_idx.tolist(), batch.price.tolist(), batch.size.tolist(), batch.ts.tolist(), strict=True)
    ):
        fields: dict[str, str | float | int] = {"symbol": symbols[code], "price": price, "size": size, "ts": ts}
        side = SIDE_NAMES.get(sides[i])
        if side:
            fields["side"] = side
        for name, values in optional:
            if values[i] is not None:
                fields[name] = values[i]
        if clock_ms is not None:
            fields[CLOCK_FIELD] = int(clock_ms)
        yield fields


# --- decoding -----------------------------------------------------------------------------------


def decode_entries(entries: Sequence[RawEntry], rules: DecodeRules | None = None) -> Decoded:
    """Decode stream entries of either form, in stream order, rejecting what breaks the rules."""
    rules = rules or DecodeRules()
    pieces: list[TickBatch] = []
    rejected: list[Rejected] = []
    ticks: list[RawEntry] = []
    batches: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entry in entries:
        flat = entry[1]
        if flat and (flat[0] == b"batch" or b"batch" in flat[2::2]):
            if ticks:
                pieces.append(_decode_tick_run(ticks, rejected, rules))
                ticks = []
            batches.append((entry[0], dict(zip(flat[0::2], flat[1::2], strict=False))))
        else:
            if batches:
                pieces.append(_decode_batch_run(batches, rejected, rules))
                batches = []
            ticks.append(entry)
    if ticks:
        pieces.append(_decode_tick_run(ticks, rejected, rules))
    if batches:
        pieces.append(_decode_batch_run(batches, rejected, rules))
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


def entry_fields(flat: Sequence[bytes] | None) -> dict[str, bytes | str]:
    """A raw entry's fields by name, as a dead letter keeps them (empty for an entry trimmed while pending)."""
    return _text_fields(dict(zip(flat[0::2], flat[1::2], strict=False))) if flat else {}


_CANONICAL = {
    "symbol": pa.dictionary(pa.int32(), pa.string()),
    "price": pa.float64(),
    "size": pa.float64(),
    "ts": pa.int64(),
    "side": pa.int8(),
    **{name: pa.string() for name in OPTIONAL_TEXT_FIELDS},
}


def _entry_ms(entry_id: bytes | str) -> int:
    """The time part of a stream entry ID, in epoch ms (capped where ts stops being valid anyway)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return min(int(text.partition("-")[0]), MAX_TS_MS)


def _declared_clock(raw: bytes | None, entry_id: bytes) -> int:
    """The event clock an entry declares (epoch ms), or its ID's time when it declares none."""
    if raw is None:
        return _entry_ms(entry_id)
    try:
        clock = int(raw)
    except ValueError:
        raise TickError(f"clock: {raw[:40]!r} must be the producer's event clock in epoch ms") from None
    if not 0 <= clock < MAX_TS_MS:
        raise TickError("clock: must be epoch milliseconds in [0, 2^42)")
    return clock


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


def _decode_batch_run(
    run: list[tuple[bytes, dict[bytes, bytes]]], rejected: list[Rejected], rules: DecodeRules
) -> TickBatch:
    """Consecutive batch entries, decoded as one Arrow table (per-entry work is only reading the payload)."""
    tables: list[pa.Table] = []
    ids: list[str] = []
    clocks: list[int] = []
    for entry_id, fields in run:
        eid = entry_id.decode()
        try:
            clock = _declared_clock(fields.get(CLOCK_FIELD.encode()) if rules.trust_declared_clock else None, entry_id)
            tables.append(_read_batch_payload(fields, rules))
            ids.append(eid)
            clocks.append(clock)
        except Exception as exc:  # whatever one entry holds is that entry's problem alone
            reason = str(exc) if isinstance(exc, TickError) else f"batch: undecodable ({type(exc).__name__}: {exc})"
            rejected.append(Rejected(eid, _text_fields(fields), reason[:500]))
    if not tables:
        return TickBatch.empty()
    try:
        batch = TickBatch.from_arrow(pa.concat_tables(tables, promote_options="default"))
    except TickError:  # each entry was checked alone: decode one at a time, each rejected on its own
        if len(tables) == 1:
            rejected.append(Rejected(ids[0], _text_fields(dict(run)[ids[0].encode()]), "batch: undecodable"))
            return TickBatch.empty()
        return concat([_decode_batch_run([item], rejected, rules) for item in run])
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


def _refuse_long(values: list[bytes], field: str, reason: np.ndarray) -> list[bytes]:
    """The values with any longer than MAX_FIELD_BYTES blanked (their rows refused): parsing stays small."""
    if not values or max(map(len, values)) <= MAX_FIELD_BYTES:
        return values
    out = list(values)
    for i, value in enumerate(values):
        if len(value) > MAX_FIELD_BYTES:
            out[i] = b""
            if reason[i] == "":
                reason[i] = f"{field}: longer than {MAX_FIELD_BYTES} bytes"
    return out


def _parse_numbers(
    values: list[bytes], dtype: type, field: str, reason: np.ndarray, missing: bytes = b""
) -> np.ndarray:
    """Vectorised parse; only when that fails, find the bad rows one by one and give each a reason."""
    values = _refuse_long(values, field, reason)
    try:
        return np.array(values, dtype=np.bytes_).astype(dtype)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond int64
        pass
    out: np.ndarray = np.zeros(len(values), dtype=dtype)
    convert = float if dtype is np.float64 else int
    kind = "a number" if dtype is np.float64 else "an integer (epoch ms)"
    for i, raw in enumerate(values):
        try:
            out[i] = convert(raw)
        except ValueError:
            if reason[i] == "":
                reason[i] = f"{field}: missing" if raw == missing else f"{field}: {raw[:40]!r} is not {kind}"
        except OverflowError:
            if reason[i] == "":
                reason[i] = f"{field}: {raw[:40]!r} is out of range"
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


def _tick_clocks(
    ids: list[bytes], declared: Sequence[bytes | None] | None, ts: np.ndarray, window: TimeWindow, reason: np.ndarray
) -> np.ndarray | None:
    """Each per-tick entry's clock: the one it declares, or its ID's time. None when no entry declares one and
    every ts lies within the window around the first and last entry's time (IDs only grow): the hot path."""
    if declared is None or declared.count(None) == len(declared):
        first, last = _entry_ms(ids[0]), _entry_ms(ids[-1])
        if int(ts.max()) <= first + window.max_ahead_ms and (
            window.max_behind_ms is None or int(ts.min()) >= last - window.max_behind_ms
        ):
            return None
        declared = None
    clock_ms = np.fromiter(map(_entry_ms, ids), np.int64, len(ids))
    if declared is not None:
        given = np.asarray([i for i, v in enumerate(declared) if v is not None], np.int64)
        why = reason[given]
        clock = _parse_numbers([declared[i] for i in given.tolist()], np.int64, "clock", why)
        why[((clock < 0) | (clock >= MAX_TS_MS)) & (why == "")] = "clock: must be epoch milliseconds in [0, 2^42)"
        reason[given] = why
        clock_ms[given] = np.clip(clock, 0, MAX_TS_MS)
    return clock_ms


def _decode_tick_run(run: list[RawEntry], rejected: list[Rejected], rules: DecodeRules) -> TickBatch:
    n = len(run)
    reason = np.full(n, "", dtype=object)
    ids = [eid for eid, _ in run]
    columns = _columns([flat for _, flat in run])
    blank: Sequence[bytes | None] = [b""] * n

    def column(name: bytes) -> list[bytes]:
        values = columns.get(name, blank)
        return [b"" if v is None else v for v in values] if None in values else list(values)  # type: ignore[arg-type]

    raw_symbol = _refuse_long(column(b"symbol"), "symbol", reason)
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

    side_raw = np.array(_refuse_long(column(b"side"), "side", reason), dtype=np.bytes_)
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
    clock_ms = None
    if rules.window is not None:
        declared = columns.get(CLOCK_FIELD.encode()) if rules.trust_declared_clock else None
        clock_ms = _tick_clocks(ids, declared, ts, rules.window, reason)
    keep, reasons = check_rows(batch, reason, clock_ms, rules.window)
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
