"""CSV blocks: Arrow parses each block of whole lines; the lines it cannot take are set apart and rejected.

A CSV record is one line: no value of a trade spans lines, so a quote left open is an error of its
own line, never a reason to join the following lines to it. Arrow parses each block of lines and its
record count is checked against the block's lines. Lines Arrow cannot take are set apart first and
rejected with their number and what to fix: a last line without a line end (a truncated file: never
published), lines with a quote left open (counted only when Arrow's count shows one), lines that are
not UTF-8 (their values checked by the csv module); a block Arrow still cannot read line for line is
read one line at a time with the csv module. The rest of every block is read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.importers.blocks import (
    MAX_REJECTED_TEXT,
    RawChunk,
    blank_lines,
    line_bounds,
    partition_lines,
    reject_lines,
)

UNBALANCED_QUOTE = (
    'csv: unbalanced quote: a value opens with " and the line ends before it closes (write a " inside a value as "")'
)
STRAY_CARRIAGE_RETURN = "csv: a carriage return (\\r) inside the line splits it in two; remove it, or quote the value"
CUT_OFF = (
    "csv: the file ends inside this line (no line end after it), so it looks cut off; "
    "if the line is whole, end the file with a newline"
)


def csv_rows(
    block: bytes, lines: np.ndarray, blank: np.ndarray, columns: Sequence[str], wanted: Sequence[str], delimiter: str
) -> RawChunk:
    """The rows of one block of whole lines (numbered `lines`), every line Arrow cannot take set apart."""
    cut_off = np.zeros(len(lines), bool)
    cut_off[-1] = not block.endswith(b"\n") and not blank[-1]  # only the end of the input lacks a line end
    block, lines, tail, tail_lines = partition_lines(block, lines, cut_off)
    rejected = reject_lines(tail, tail_lines, CUT_OFF)
    block, lines, junk, junk_lines = partition_lines(block, lines, _non_utf8_lines(block))
    if len(tail_lines) or len(junk_lines):
        blank = blank_lines(block, len(lines))
    chunk = _csv_block(block, lines, blank, columns, wanted, delimiter) if _arrow_reads_line_for_line(block) else None
    if chunk is None:  # a quote left open somewhere: those lines apart, then Arrow again, else the csv module
        block, lines, open_quote, open_lines = partition_lines(block, lines, _odd_quote_lines(block))
        rejected += reject_lines(open_quote, open_lines, UNBALANCED_QUOTE)
        if len(open_lines):
            blank = blank_lines(block, len(lines))
        chunk = _csv_block(block, lines, blank, columns, wanted, delimiter)
        if chunk is None:
            chunk = _csv_line_by_line(block, lines, blank, columns, wanted, delimiter)
    if len(junk_lines):  # only their wanted values must be text: the csv module tells, line by line
        no_blank = np.zeros(len(junk_lines), bool)
        chunk = _merge_rows(chunk, _csv_line_by_line(junk, junk_lines, no_blank, columns, wanted, delimiter))
    rejected = sorted(chunk.rejected + rejected, key=lambda r: int(r.entry_id.partition(":")[2]))
    return dataclasses.replace(chunk, rejected=rejected)


def _csv_block(
    block: bytes, lines: np.ndarray, blank: np.ndarray, columns: Sequence[str], wanted: Sequence[str], delimiter: str
) -> RawChunk | None:
    """The fast path: Arrow parses the whole block; None when it cannot do so line for line."""
    if not len(lines):
        return RawChunk(pa.table({c: pa.array([], pa.string()) for c in wanted}), lines, [])
    malformed = _MalformedRows(lines)
    try:
        table = pa_csv.read_csv(
            io.BytesIO(block),
            read_options=pa_csv.ReadOptions(
                column_names=list(columns), use_threads=False, block_size=len(block) + 1
            ),  # one block: Arrow's own chunker never splits the lines we checked
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, ignore_empty_lines=False, invalid_row_handler=malformed
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
    return RawChunk(table, row_lines, malformed.rejected)


def _odd_quote_lines(block: bytes) -> np.ndarray:
    """Which lines of `block` hold an odd number of double quotes: a quoted value that never closes.

    A quote inside a quoted value is written twice, so a well-formed line always holds an even number.
    """
    if b'"' not in block:
        return np.zeros(block.count(b"\n") + (not block.endswith(b"\n")), bool)
    data = np.frombuffer(block, np.uint8)
    starts, ends = line_bounds(data)
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
            starts = line_bounds(np.frombuffer(block, np.uint8))[0] if starts is None else starts
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


def _merge_rows(first: RawChunk, second: RawChunk) -> RawChunk:
    """The rows of two chunks of the same block, back in line order."""
    if not len(second.origin):
        return dataclasses.replace(first, rejected=first.rejected + second.rejected)
    origin = np.concatenate([first.origin, second.origin])
    order = np.argsort(origin, kind="stable")
    table = pa.concat_tables([first.table, second.table]).take(pa.array(order))
    return RawChunk(table, origin[order], first.rejected + second.rejected)


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
) -> RawChunk:
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
    return RawChunk(table, np.array(kept, np.int64), rejected)


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
