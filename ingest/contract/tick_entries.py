"""Wire codecs: per-tick stream entries and columnar micro-batch entries, both to `TickBatch`.

Per-tick entry: the public form, fields as in docs/design.md (`symbol`, `price`, `size`, `ts`, ...).
Batch entry: the project's fast form, fields `batch` (an Arrow IPC stream holding one record batch
with the `TickBatch.to_arrow` columns), `rows` (its row count) and `format` (`arrow-ipc/1`).
Either form may declare its producer's event clock (`clock`, epoch ms: the project's simulator, whose
fast runs lead the wall clock), against which the trades' `ts` are checked instead of the entry ID's time.
Either may carry `producer` and `seq` (see `PRODUCER_FIELD`). The batch form is in `batch_entries`, the
rules and rejected inputs in `tick_rules`; this module decodes a stream of both forms, and the per-tick one.

Decoding is total: whatever an entry holds, it becomes trades or rejected inputs with their reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from tickerdash.ingest.contract.batch_entries import decode_batch_run, encode_batch
from tickerdash.ingest.contract.tick_rules import (
    BATCH_FORMAT,
    CLOCK_FIELD,
    MAX_FIELD_BYTES,
    PRODUCER_FIELD,
    SEQ_FIELD,
    Decoded,
    DecodeRules,
    RawEntry,
    Rejected,
    as_text,
    decode_rules,
    entry_clock_ms,
    entry_fields,
    text_fields_of,
)
from tickerdash.ingest.field_rules import (
    MAX_TS_MS,
    OPTIONAL_TEXT_FIELDS,
    SIDE_NAMES,
    TickError,
    TimeWindow,
    check_rows,
    normalise_symbol,
)
from tickerdash.ingest.ticks import TickBatch, concat

# re-exported: every tick-entry name is importable from here
__all__ = [
    "BATCH_FORMAT",
    "CLOCK_FIELD",
    "MAX_FIELD_BYTES",
    "PRODUCER_FIELD",
    "SEQ_FIELD",
    "DecodeRules",
    "Decoded",
    "RawEntry",
    "Rejected",
    "as_text",
    "decode_entries",
    "decode_rules",
    "encode_batch",
    "encode_ticks",
    "entry_fields",
    "iter_chunks",
]


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
                pieces.append(decode_batch_run(batches, rejected, rules))
                batches = []
            ticks.append(entry)
    if ticks:
        pieces.append(_decode_tick_run(ticks, rejected, rules))
    if batches:
        pieces.append(decode_batch_run(batches, rejected, rules))
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
        first, last = entry_clock_ms(ids[0]), entry_clock_ms(ids[-1])
        if int(ts.max()) <= first + window.max_ahead_ms and (
            window.max_behind_ms is None or int(ts.min()) >= last - window.max_behind_ms
        ):
            return None
        declared = None
    clock_ms = np.fromiter(map(entry_clock_ms, ids), np.int64, len(ids))
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
        rejected.append(Rejected(batch.entry_ids[row], text_fields_of(original), why))
    return batch.take(keep)


def iter_chunks(batch: TickBatch, rows: int) -> Iterable[TickBatch]:
    """Split a batch into pieces of at most `rows` trades."""
    for start in range(0, len(batch), rows):
        yield batch.slice(start, start + rows)
