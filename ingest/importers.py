"""Importers of external trade files: CSV, NDJSON and Parquet to `TickBatch` chunks in bounded memory.

Reading only (no Redis): a `TradeReader` streams a file (or stdin) block by block, maps its columns
onto the tick fields with a `ColumnMapping`, converts timestamps to epoch ms and yields, per chunk,
the valid trades and the rejected rows with their reasons. Rows keep file order (ties in `ts` are
common in exchange data). Conversion is columnar (Arrow compute and numpy); a Python loop per row
only runs on a chunk that holds a value Arrow cannot parse, to find which rows are bad.

A CSV record is one line: no value of a trade spans lines, so a quote left open is an error of its
own line, never a reason to join the following lines to it. Arrow parses each block of lines and its
record count is checked against the block's lines. Lines Arrow cannot take are set apart first and
rejected with their number and what to fix: a last line without a line end (a truncated file: never
published), lines with a quote left open (counted only when Arrow's count shows one), lines that are
not UTF-8 (their values checked by the csv module); a block Arrow still cannot read line for line is
read one line at a time with the csv module. The rest of every block is read.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.ticks import MAX_TS_MS, SIDE_BUY, SIDE_SELL, TickBatch, TickError, check_rows, normalise_symbol

FORMATS = ("csv", "ndjson", "parquet")
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}
TS_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
DEFAULT_CHUNK_ROWS = 50_000
MIN_BLOCK_BYTES = 64 * 1024
BYTES_PER_ROW_GUESS = 64  # sizes a read block so one block holds about one chunk of rows
TS_SAMPLE_ROWS = 1_000  # values looked at to tell epoch numbers from ISO-8601 text
MAX_REJECTED_TEXT = 1_000  # a malformed line is kept in the dead-letter stream up to this many characters

# Column names recognised when no explicit column is given, in order of preference (case-insensitive).
AUTO_COLUMNS: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "price": ("price", "px"),
    "size": ("size", "qty", "quantity", "amount", "volume"),
    "ts": ("ts", "timestamp", "time", "ts_ns", "ts_us", "ts_ms", "datetime"),
    "side": ("side",),
    "trade_id": ("trade_id", "id", "tid"),
    "buyer": ("buyer",),
    "seller": ("seller",),
}
FLAG_OF_FIELD = {field: f"--{field.replace('_', '-')}-col" for field in AUTO_COLUMNS}

SIDE_WORDS = {"buy": SIDE_BUY, "b": SIDE_BUY, "1": SIDE_BUY, "sell": SIDE_SELL, "s": SIDE_SELL, "-1": SIDE_SELL}
MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
INT_MS_DIVISOR = {"us": 1_000, "ns": 1_000_000}  # exact integer floor division for sub-ms units


class ImportOptionError(ValueError):
    """The file and the options cannot work together; the message says what to fix."""


# --- column mapping -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which file column feeds each tick field; None means auto-detect from common names.

    `symbol` is a fixed ticker for single-symbol files (it wins over any symbol column);
    `ts_unit` is `auto` (by magnitude, or ISO-8601 for text), or one of s, ms, us, ns, iso.
    """

    symbol_col: str | None = None
    price_col: str | None = None
    size_col: str | None = None
    ts_col: str | None = None
    side_col: str | None = None
    trade_id_col: str | None = None
    buyer_col: str | None = None
    seller_col: str | None = None
    symbol: str | None = None
    ts_unit: str = "auto"

    def __post_init__(self) -> None:
        unit = "us" if self.ts_unit == "µs" else self.ts_unit
        if unit not in TS_UNITS:
            raise ImportOptionError(f"--ts-unit {self.ts_unit!r} is not a unit: use one of {', '.join(TS_UNITS)}")
        object.__setattr__(self, "ts_unit", unit)
        if self.symbol is not None:
            try:
                object.__setattr__(self, "symbol", normalise_symbol(self.symbol))
            except TickError as exc:
                raise ImportOptionError(f"--symbol: {exc}") from exc

    def resolve(self, columns: Sequence[str], source_name: str = "the file") -> ResolvedColumns:
        """Pick the file column of every tick field; raises ImportOptionError naming the flag to pass."""
        listing = ", ".join(columns) if columns else "(none)"
        by_lower: dict[str, str] = {}
        for name in columns:
            by_lower.setdefault(name.lower(), name)
        chosen: dict[str, str | None] = {}
        for field, candidates in AUTO_COLUMNS.items():
            explicit = getattr(self, f"{field}_col")
            if explicit is not None:
                found = explicit if explicit in columns else by_lower.get(explicit.lower())
                if found is None:
                    raise ImportOptionError(
                        f"{FLAG_OF_FIELD[field]} {explicit!r} is not a column of {source_name}; "
                        f"its columns are: {listing}"
                    )
                chosen[field] = found
            else:
                chosen[field] = next((by_lower[c] for c in candidates if c in by_lower), None)
        if self.symbol is not None:
            chosen["symbol"] = None
        for field in ("price", "size", "ts"):
            if chosen[field] is None:
                raise ImportOptionError(
                    f"no {field} column in {source_name} (looked for {', '.join(AUTO_COLUMNS[field])}): "
                    f"pass {FLAG_OF_FIELD[field]} NAME; its columns are: {listing}"
                )
        if chosen["symbol"] is None and self.symbol is None:
            raise ImportOptionError(
                f"no symbol column in {source_name} (looked for {', '.join(AUTO_COLUMNS['symbol'])}): "
                f"pass --symbol-col NAME, or --symbol TICKER for a single-symbol file; its columns are: {listing}"
            )
        return ResolvedColumns(fixed_symbol=self.symbol, ts_unit=self.ts_unit, **chosen)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ResolvedColumns:
    """The file column behind each tick field (None: the file has none), after auto-detection."""

    symbol: str | None
    price: str
    size: str
    ts: str
    side: str | None
    trade_id: str | None
    buyer: str | None
    seller: str | None
    fixed_symbol: str | None
    ts_unit: str

    @property
    def fields(self) -> dict[str, str]:
        """Tick field -> file column, for the fields the file provides."""
        return {f: c for f in AUTO_COLUMNS if (c := getattr(self, f)) is not None}

    @property
    def source_columns(self) -> list[str]:
        """The distinct file columns to read, in field order."""
        return list(dict.fromkeys(self.fields.values()))


# --- timestamps ---------------------------------------------------------------------------------


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


# --- sources ------------------------------------------------------------------------------------


class _LineStream:
    """A binary stream read in whole lines, with a peek for sniffing, counting the bytes it consumed."""

    __slots__ = ("bytes_read", "eof", "pending", "raw")

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pending = b""
        self.bytes_read = 0
        self.eof = False

    def _fill(self, want: int) -> bool:
        if self.eof:
            return False
        read1 = getattr(self.raw, "read1", None)
        data = read1(want) if read1 is not None else self.raw.read(want)
        if not data:
            self.eof = True
            return False
        self.bytes_read += len(data)
        self.pending += data
        return True

    def peek_line(self) -> bytes:
        """The first line (with its newline) without consuming it."""
        while b"\n" not in self.pending and self._fill(MIN_BLOCK_BYTES):
            pass
        end = self.pending.find(b"\n")
        return self.pending if end < 0 else self.pending[: end + 1]

    def peek(self, size: int) -> bytes:
        """The first `size` bytes (fewer at the end) without consuming them."""
        while len(self.pending) < size and self._fill(size - len(self.pending)):
            pass
        return self.pending[:size]

    def skip(self, size: int) -> None:
        """Consume `size` bytes that were peeked."""
        self.pending = self.pending[size:]

    def read_lines(self, size: int) -> bytes:
        """About `size` bytes of whole lines (the last line may lack its newline at the end of input)."""
        while len(self.pending) < size and self._fill(size - len(self.pending)):
            pass
        cut = self.pending.rfind(b"\n")
        while cut < 0 and self._fill(MIN_BLOCK_BYTES):
            cut = self.pending.rfind(b"\n")
        if cut < 0 or (self.eof and len(self.pending) <= size):
            block, self.pending = self.pending, b""
        else:
            block, self.pending = self.pending[: cut + 1], self.pending[cut + 1 :]
        return block

    def read_all(self) -> bytes:
        """Everything left."""
        while self._fill(1 << 22):
            pass
        block, self.pending = self.pending, b""
        return block


def sniff_format(head: bytes) -> str:
    """Format of a stream from its first bytes: Parquet magic, a JSON object, else CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    return "ndjson" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"


def _line_bounds(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before the newline) of each line of a block's bytes."""
    ends = np.flatnonzero(data == ord("\n"))
    if not len(data) or data[-1] != ord("\n"):
        ends = np.append(ends, len(data))
    return np.concatenate(([0], ends[:-1] + 1)), ends


def _line_numbers(block: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray]:
    """Line number of each line of `block`, and which lines are blank."""
    data = np.frombuffer(block, np.uint8)
    starts, ends = _line_bounds(data)
    lengths = ends - starts
    carriage = (lengths == 1) & (data[np.minimum(starts, max(len(data) - 1, 0))] == ord("\r"))
    blank = (lengths == 0) | carriage
    return np.arange(first_line, first_line + len(ends)), blank


def _blank_lines(block: bytes, count: int) -> np.ndarray:
    """Which of the `count` lines of `block` are blank."""
    return _line_numbers(block, 0)[1][:count] if block else np.zeros(0, bool)


def _odd_quote_lines(block: bytes) -> np.ndarray:
    """Which lines of `block` hold an odd number of double quotes: a quoted value that never closes.

    A quote inside a quoted value is written twice, so a well-formed line always holds an even number.
    """
    if b'"' not in block:
        return np.zeros(block.count(b"\n") + (not block.endswith(b"\n")), bool)
    data = np.frombuffer(block, np.uint8)
    starts, ends = _line_bounds(data)
    quotes = np.flatnonzero(data == ord('"'))
    return (np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts)) % 2 == 1


def _non_utf8_lines(block: bytes) -> np.ndarray:
    """Which lines of `block` hold bytes that are not UTF-8 (one decoding pass when there are none)."""
    bad = np.zeros(block.count(b"\n") + (not block.endswith(b"\n")), bool)
    view, position, starts = memoryview(block), 0, None
    while position < len(block):
        try:
            str(view[position:], "utf-8")
            break
        except UnicodeDecodeError as exc:
            starts = _line_bounds(np.frombuffer(block, np.uint8))[0] if starts is None else starts
            line = int(np.searchsorted(starts, position + exc.start, side="right")) - 1
            bad[line] = True
            position = int(starts[line + 1]) if line + 1 < len(starts) else len(block)
    return bad


def _arrow_reads_line_for_line(block: bytes) -> bool:
    """Whether Arrow's record count can tell that no quoted value ran into the next line: no carriage return
    that is not a line end (Arrow ends a record there), and no quote left open on the last line (where
    it would run into nothing and go unnoticed)."""
    if b'"' not in block:
        return True
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return False
    last = block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]
    return last.count(b'"') % 2 == 0


def _partition_lines(block: bytes, lines: np.ndarray, apart: np.ndarray) -> tuple[bytes, np.ndarray, bytes, np.ndarray]:
    """The lines of `block` not marked in `apart` (their bytes and numbers), then the marked ones."""
    if not apart.any():
        return block, lines, b"", lines[:0]
    data = np.frombuffer(block, np.uint8)
    starts, _ = _line_bounds(data)
    marked = np.repeat(apart, np.diff(np.append(starts, len(data))))  # each line with its newline
    return data[~marked].tobytes(), lines[~apart], data[marked].tobytes(), lines[apart]


def _reject_lines(block: bytes, lines: np.ndarray, reason: str) -> list[Rejected]:
    """Each line of `block` rejected for `reason`, under its number."""
    texts = (text.rstrip(b"\r")[:MAX_REJECTED_TEXT].decode("utf-8", "replace") for text in block.split(b"\n"))
    return [
        Rejected(f"line:{number}", {"line": text}, reason) for number, text in zip(lines.tolist(), texts, strict=False)
    ]


def _merge_rows(first: _RawChunk, second: _RawChunk) -> _RawChunk:
    """The rows of two chunks of the same block, back in line order."""
    if not len(second.origin):
        return dataclasses.replace(first, rejected=first.rejected + second.rejected)
    origin = np.concatenate([first.origin, second.origin])
    order = np.argsort(origin, kind="stable")
    table = pa.concat_tables([first.table, second.table]).take(pa.array(order))
    return _RawChunk(table, origin[order], first.rejected + second.rejected)


UNBALANCED_QUOTE = (
    'csv: unbalanced quote: a value opens with " and the line ends before it closes (write a " inside a value as "")'
)
STRAY_CARRIAGE_RETURN = "csv: a carriage return (\\r) inside the line splits it in two; remove it, or quote the value"
CUT_OFF = (
    "csv: the file ends inside this line (no line end after it), so it looks cut off; "
    "if the line is whole, end the file with a newline"
)


def _count_reason(expected: int, actual: int) -> str:
    """Why a line with the wrong number of values is rejected, and the likely fix."""
    if actual < expected:
        hint = "a value is missing or the line is cut short"
    else:
        hint = "quote a value that holds the delimiter"
    return f"csv: expected {expected} values, got {actual} ({hint})"


def _not_utf8(name: str, value: str) -> str | None:
    """Why a value decoded with surrogateescape is not UTF-8 text (None when it is)."""
    junk = next((ch for ch in value if "\udc80" <= ch <= "\udcff"), None)
    if junk is None:
        return None
    return f"encoding: {name} is not UTF-8 text (byte 0x{ord(junk) - 0xDC00:02x}); save the file as UTF-8"


def _csv_line_by_line(
    block: bytes, lines: np.ndarray, blank: np.ndarray, columns: Sequence[str], wanted: Sequence[str], delimiter: str
) -> _RawChunk:
    """Slow path for a CSV block Arrow cannot parse line for line: each line parsed on its own with the csv
    module, bad lines rejected with their numbers and what to fix, the other rows kept as text."""
    position = {name: columns.index(name) for name in wanted}
    values: dict[str, list[str]] = {c: [] for c in wanted}
    kept: list[int] = []
    rejected: list[Rejected] = []
    for number, is_blank, raw in zip(lines.tolist(), blank.tolist(), block.split(b"\n"), strict=False):
        if is_blank:
            continue
        text = raw.removesuffix(b"\r").decode("utf-8", "surrogateescape")
        fields, reason = _split_line(text, delimiter)
        if reason is None and len(fields) != len(columns):
            reason = _count_reason(len(columns), len(fields))
        if reason is None:
            reason = next((why for c in wanted if (why := _not_utf8(c, fields[position[c]]))), None)
        if reason is not None:
            shown = text[:MAX_REJECTED_TEXT].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            rejected.append(Rejected(f"line:{number}", {"line": shown}, reason))
            continue
        kept.append(number)
        for c in wanted:
            values[c].append(fields[position[c]])
    table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
    return _RawChunk(table, np.array(kept, np.int64), rejected)


def _split_line(text: str, delimiter: str) -> tuple[list[str], str | None]:
    """The values of one CSV line, or the reason it cannot be read (a quote left open)."""
    if text.count('"') % 2:
        return [], UNBALANCED_QUOTE
    try:
        return next(csv.reader([text], delimiter=delimiter, strict=True)), None
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):  # a value opens with a quote that closes nowhere
            return [], UNBALANCED_QUOTE
    try:  # stray quotes inside a value ("x"y): read as Arrow reads them
        return next(csv.reader([text], delimiter=delimiter)), None
    except csv.Error as exc:
        if "new-line" in str(exc):
            return [], STRAY_CARRIAGE_RETURN
        return [], f"csv: {exc}"


class _MalformedRows:
    """Arrow's handler of CSV rows with the wrong number of values: notes each as rejected, skips it."""

    __slots__ = ("lines", "rejected")

    def __init__(self, lines: np.ndarray) -> None:
        self.lines = lines  # the number of each line of the block Arrow parses
        self.rejected: list[Rejected] = []

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        if not 1 <= (row.number or 0) <= len(self.lines):  # Arrow saw more records than lines: not line for line
            return "error"
        number = self.lines[row.number - 1]  # Arrow counts from 1 within the block
        reason = _count_reason(row.expected_columns, row.actual_columns)
        self.rejected.append(Rejected(f"line:{number}", {"line": row.text[:MAX_REJECTED_TEXT]}, reason))
        return "skip"


@dataclass(frozen=True, slots=True)
class _RawChunk:
    """Source columns of some rows, where each row came from, and rows rejected before conversion."""

    table: pa.Table
    origin: np.ndarray  # line (text formats) or row (Parquet) number of each row, 1-based
    rejected: list[Rejected]


class TradeReader:
    """Streams one trade file (or stdin) as `(TickBatch, list[Rejected])` chunks of at most `chunk_rows`.

    Opening reads only the header (or schema) and resolves the column mapping, so a bad option
    fails before anything is published. Iterate once; use as a context manager to close the file.
    """

    def __init__(
        self,
        source: str | Path | BinaryIO,
        mapping: ColumnMapping | None = None,
        *,
        fmt: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        block_bytes: int | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ImportOptionError("--chunk-rows must be at least 1")
        if fmt is not None and fmt.lower() not in FORMATS:
            raise ImportOptionError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.mapping = mapping or ColumnMapping()
        self.chunk_rows = chunk_rows
        self.block_bytes = block_bytes or max(MIN_BLOCK_BYTES, chunk_rows * BYTES_PER_ROW_GUESS)
        self.rows_read = 0
        self.total_bytes: int | None = None
        self._owned: BinaryIO | None = None
        self._ts_unit: str | None = None
        self._parquet: pq.ParquetFile | None = None
        self._delimiter = ","
        self._next_line = 1  # line number of the next line the stream hands out
        self.lines_at: tuple[int, int] | None = None  # the lines of the text block being read, for errors
        self.name, raw = self._open(source)
        self.stream = _LineStream(raw)
        try:
            self.format = self._pick_format(fmt, source)
            self.columns = self._read_columns()
            self.resolved = self.mapping.resolve(self.columns, self.name)
        except BaseException:
            self.close()
            raise
        if self.resolved.ts_unit != "auto":
            self._ts_unit = self.resolved.ts_unit

    # -- opening --

    def _open(self, source: str | Path | BinaryIO) -> tuple[str, BinaryIO]:
        if isinstance(source, str | Path):
            if str(source) == "-":
                return "stdin", sys.stdin.buffer
            path = Path(source)
            try:
                handle = path.open("rb")
                if not path.is_file():
                    handle.close()
                    raise ImportOptionError(f"cannot read {path}: not a regular file")
            except OSError as exc:
                raise ImportOptionError(f"cannot read {path}: {exc.strerror or exc}") from exc
            self._owned = handle
            self.total_bytes = os.fstat(handle.fileno()).st_size
            return path.name, handle
        return getattr(source, "name", None) or "stream", source

    def _pick_format(self, fmt: str | None, source: str | Path | BinaryIO) -> str:
        if fmt is not None:
            return fmt.lower()
        if isinstance(source, str | Path) and str(source) != "-":
            by_extension = EXTENSION_FORMATS.get(Path(source).suffix.lower())
            if by_extension:
                return by_extension
        return sniff_format(self.stream.peek(MIN_BLOCK_BYTES))

    def _read_columns(self) -> list[str]:
        if self.format == "parquet":
            data: BinaryIO | pa.BufferReader
            if self._owned is not None:
                self._owned.seek(0)  # a real file: Parquet seeks to its footer, no need to slurp it
                data = self._owned
            else:
                data = pa.BufferReader(self.stream.read_all())
            try:
                self._parquet = pq.ParquetFile(data)
            except (pa.ArrowInvalid, OSError) as exc:
                raise ImportOptionError(f"{self.name} is not a Parquet file ({exc}): pass --format") from exc
            return list(self._parquet.schema_arrow.names)
        header = self.stream.peek_line()
        if self.format == "csv":
            text = header.decode("utf-8-sig", errors="replace").rstrip("\r\n")
            self._delimiter = max(",\t;|", key=text.count) if text else ","
            names = next(csv.reader([text], delimiter=self._delimiter), [])
            self.stream.skip(len(header))
            self._next_line = 2
            return [n.strip() for n in names]
        self._next_line = 1
        while header and not header.strip():  # blank lines before the first object
            self.stream.skip(len(header))
            self._next_line += 1
            header = self.stream.peek_line()
        try:
            first = json.loads(header.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImportOptionError(f"{self.name}: line {self._next_line} is not JSON ({exc}): pass --format") from exc
        if not isinstance(first, dict):
            raise ImportOptionError(f"{self.name}: line {self._next_line} is not a JSON object: pass --format")
        return list(first)

    # -- progress and lifetime --

    @property
    def progress(self) -> tuple[int, int | None, str]:
        """(done, total or None, unit) for a progress bar: bytes for text files, rows for Parquet."""
        if self._parquet is not None:
            return self.rows_read, self._parquet.metadata.num_rows, "rows"
        if self.total_bytes is not None:
            return self.stream.bytes_read - len(self.stream.pending), self.total_bytes, "bytes"
        return self.rows_read, None, "rows"

    @property
    def ts_unit(self) -> str | None:
        """The timestamp unit in use (detected from the first values when `auto`), once known."""
        return self._ts_unit

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> TradeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    def __iter__(self) -> Iterator[tuple[TickBatch, list[Rejected]]]:
        raw_chunks = {"csv": self._csv_chunks, "ndjson": self._ndjson_chunks, "parquet": self._parquet_chunks}
        for raw in raw_chunks[self.format]():
            for start in range(0, max(raw.table.num_rows, 1), self.chunk_rows):
                stop = min(start + self.chunk_rows, raw.table.num_rows)
                ticks, rejected = self._convert(raw.table.slice(start, stop - start), raw.origin[start:stop])
                self.rows_read += stop - start
                if start == 0:
                    rejected = raw.rejected + rejected
                if len(ticks) or rejected:
                    yield ticks, rejected

    def _csv_chunks(self) -> Iterator[_RawChunk]:
        wanted = self.resolved.source_columns
        while block := self.stream.read_lines(self.block_bytes):
            first_line = self._next_line
            lines, blank = _line_numbers(block, first_line)
            self._next_line = first_line + len(lines)
            self.lines_at = (first_line, self._next_line - 1)
            yield self._csv_lines(block, lines, blank, wanted)

    def _csv_lines(self, block: bytes, lines: np.ndarray, blank: np.ndarray, wanted: list[str]) -> _RawChunk:
        """The rows of one block of whole lines (numbered `lines`), every line Arrow cannot take set apart."""
        cut_off = np.zeros(len(lines), bool)
        cut_off[-1] = not block.endswith(b"\n") and not blank[-1]  # only the end of the input lacks a line end
        block, lines, tail, tail_lines = _partition_lines(block, lines, cut_off)
        rejected = _reject_lines(tail, tail_lines, CUT_OFF)
        block, lines, junk, junk_lines = _partition_lines(block, lines, _non_utf8_lines(block))
        if len(tail_lines) or len(junk_lines):
            blank = _blank_lines(block, len(lines))
        chunk = self._csv_block(block, lines, blank, wanted) if _arrow_reads_line_for_line(block) else None
        if chunk is None:  # a quote left open somewhere: those lines apart, then Arrow again, else the csv module
            block, lines, open_quote, open_lines = _partition_lines(block, lines, _odd_quote_lines(block))
            rejected += _reject_lines(open_quote, open_lines, UNBALANCED_QUOTE)
            if len(open_lines):
                blank = _blank_lines(block, len(lines))
            chunk = self._csv_block(block, lines, blank, wanted)
            if chunk is None:
                chunk = _csv_line_by_line(block, lines, blank, self.columns, wanted, self._delimiter)
        if len(junk_lines):  # only their wanted values must be text: the csv module tells, line by line
            no_blank = np.zeros(len(junk_lines), bool)
            chunk = _merge_rows(
                chunk, _csv_line_by_line(junk, junk_lines, no_blank, self.columns, wanted, self._delimiter)
            )
        rejected = sorted(chunk.rejected + rejected, key=lambda r: int(r.entry_id.partition(":")[2]))
        return dataclasses.replace(chunk, rejected=rejected)

    def _csv_block(self, block: bytes, lines: np.ndarray, blank: np.ndarray, wanted: list[str]) -> _RawChunk | None:
        """The fast path: Arrow parses the whole block; None when it cannot do so line for line."""
        if not len(lines):
            return _RawChunk(pa.table({c: pa.array([], pa.string()) for c in wanted}), lines, [])
        malformed = _MalformedRows(lines)
        try:
            table = pa_csv.read_csv(
                io.BytesIO(block),
                read_options=pa_csv.ReadOptions(
                    column_names=self.columns, use_threads=False, block_size=len(block) + 1
                ),  # one block: Arrow's own chunker never splits the lines we checked
                parse_options=pa_csv.ParseOptions(
                    delimiter=self._delimiter, ignore_empty_lines=False, invalid_row_handler=malformed
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=wanted, column_types={c: pa.string() for c in wanted}, strings_can_be_null=False
                ),
            )
        except pa.ArrowInvalid:  # e.g. the handler gave up: Arrow counted more records than lines
            return None
        # with empty lines kept, every line is either a row or a malformed row: number them so
        bad_lines = np.array([m.entry_id.split(":")[1] for m in malformed.rejected], np.int64)
        keep_line = ~np.isin(lines, bad_lines)
        row_lines, row_blank = lines[keep_line], blank[keep_line]
        if len(row_lines) != table.num_rows:  # a quoted value ran into the next line
            return None
        if row_blank.any():
            table, row_lines = table.filter(pa.array(~row_blank)), row_lines[~row_blank]
        return _RawChunk(table, row_lines, malformed.rejected)

    def _ndjson_chunks(self) -> Iterator[_RawChunk]:
        wanted = self.resolved.source_columns
        while block := self.stream.read_lines(self.block_bytes):
            lines, blank = _line_numbers(block, self._next_line)
            self._next_line += len(lines)
            self.lines_at = (int(lines[0]), int(lines[-1]))
            row_lines = lines[~blank]
            try:
                table = pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(use_threads=False))
                if table.num_rows != len(row_lines):
                    raise ValueError("rows do not match lines")
            except (pa.ArrowInvalid, ValueError):
                yield self._ndjson_line_by_line(block, lines, blank, wanted)
                continue
            columns = {
                c: table.column(c).combine_chunks()
                if c in table.column_names
                else pa.nulls(table.num_rows, pa.string())
                for c in wanted
            }
            yield _RawChunk(pa.table(columns), row_lines, [])

    def _ndjson_line_by_line(self, block: bytes, lines: np.ndarray, blank: np.ndarray, wanted: list[str]) -> _RawChunk:
        """Slow path for a block Arrow cannot read whole: bad lines rejected, every value as text."""
        values: dict[str, list[str | None]] = {c: [] for c in wanted}
        kept: list[int] = []
        rejected: list[Rejected] = []
        for number, is_blank, text in zip(lines.tolist(), blank.tolist(), block.split(b"\n"), strict=False):
            if is_blank:
                continue
            try:
                record = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict):
                line: dict[str, bytes | str] = {"line": text[:MAX_REJECTED_TEXT]}
                rejected.append(Rejected(f"line:{number}", line, "json: not a JSON object"))
                continue
            kept.append(number)
            for c in wanted:
                value = record.get(c)
                values[c].append(None if value is None else value if isinstance(value, str) else json.dumps(value))
        table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
        return _RawChunk(table, np.array(kept, np.int64), rejected)

    def _parquet_chunks(self) -> Iterator[_RawChunk]:
        assert self._parquet is not None
        row = 1
        for batch in self._parquet.iter_batches(batch_size=self.chunk_rows, columns=self.resolved.source_columns):
            yield _RawChunk(pa.Table.from_batches([batch]), np.arange(row, row + batch.num_rows), [])
            row += batch.num_rows

    # -- conversion --

    def _convert(self, table: pa.Table, origin: np.ndarray) -> tuple[TickBatch, list[Rejected]]:
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
        label = "row" if self.format == "parquet" else "line"
        bad_rows = np.flatnonzero(~keep)
        originals = table.take(pa.array(bad_rows)).to_pylist()
        rejected = [
            Rejected(f"{label}:{origin[row]}", {k: str(v) for k, v in fields.items() if v is not None}, reason)
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
        if self._ts_unit is None and text_column:  # numbers or ISO-8601 text? a sample of the first values tells
            sample = _clean_text(column).drop_null().slice(0, TS_SAMPLE_ROWS)
            if len(sample) and (~_iso_to_ms(sample)[1]).sum() > (~_parse_numbers(sample)[1]).sum():
                self._ts_unit = "iso"
        if self._ts_unit == "iso":
            if not text_column:
                reasons.flag(~missing, "ts: not an ISO-8601 time")
                return np.zeros(n, np.int64)
            iso_ms, bad_iso = _iso_to_ms(_clean_text(column))
            reasons.flag(bad_iso, "ts: not an ISO-8601 time")
            return iso_ms
        numbers, bad_numbers = _parse_numbers(column)
        reasons.flag(bad_numbers, "ts: not a timestamp")
        if self._ts_unit is None:
            valid = numbers[~bad_numbers]
            if valid.size == 0:
                return np.zeros(n, np.int64)  # every row is rejected; settle the unit on later rows
            self._ts_unit = detect_ts_unit(valid)
        ms, out_of_range = epoch_to_ms(numbers, self._ts_unit)
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


def read_trades(
    source: str | Path | BinaryIO,
    mapping: ColumnMapping | None = None,
    *,
    fmt: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[tuple[TickBatch, list[Rejected]]]:
    """Read a whole trade file chunk by chunk (see `TradeReader`), closing it at the end."""
    with TradeReader(source, mapping, fmt=fmt, chunk_rows=chunk_rows) as reader:
        yield from reader
