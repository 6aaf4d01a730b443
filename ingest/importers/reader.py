"""The trade reader: one file (or stdin) streamed as chunks of ticks and the rows rejected on the way.

A `TradeReader` picks the format (flag, extension, else sniffed), resolves the column mapping from the
header or schema, then reads block by block (Parquet: batch by batch) and converts every chunk.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.importers.blocks import MIN_BLOCK_BYTES, LineStream, RawChunk, line_numbers
from tickerdash.ingest.importers.columns import ColumnMapping
from tickerdash.ingest.importers.convert import ChunkConverter
from tickerdash.ingest.importers.csv_format import csv_rows
from tickerdash.ingest.importers.errors import ImportOptionError
from tickerdash.ingest.importers.ndjson_format import ndjson_rows
from tickerdash.ingest.ticks import TickBatch

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
DEFAULT_CHUNK_ROWS = 50_000
BYTES_PER_ROW_GUESS = 64  # sizes a read block so one block holds about one chunk of rows


def sniff_format(head: bytes) -> str:
    """Format of a stream from its first bytes: Parquet magic, a JSON object, else CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    return "ndjson" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"


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
        self._parquet: pq.ParquetFile | None = None
        self._delimiter = ","
        self._next_line = 1  # line number of the next line the stream hands out
        self.lines_at: tuple[int, int] | None = None  # the lines of the text block being read, for errors
        self.name, raw = self._open(source)
        self.stream = LineStream(raw)
        try:
            self.format = self._pick_format(fmt, source)
            self.columns = self._read_columns()
            self.resolved = self.mapping.resolve(self.columns, self.name)
        except BaseException:
            self.close()
            raise
        self._converter = ChunkConverter(self.resolved, "row" if self.format == "parquet" else "line")

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
        return self._converter.ts_unit

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
                ticks, rejected = self._converter.convert(raw.table.slice(start, stop - start), raw.origin[start:stop])
                self.rows_read += stop - start
                if start == 0:
                    rejected = raw.rejected + rejected
                if len(ticks) or rejected:
                    yield ticks, rejected

    def _csv_chunks(self) -> Iterator[RawChunk]:
        wanted = self.resolved.source_columns
        while block := self.stream.read_lines(self.block_bytes):
            first_line = self._next_line
            lines, blank = line_numbers(block, first_line)
            self._next_line = first_line + len(lines)
            self.lines_at = (first_line, self._next_line - 1)
            yield csv_rows(block, lines, blank, self.columns, wanted, self._delimiter)

    def _ndjson_chunks(self) -> Iterator[RawChunk]:
        wanted = self.resolved.source_columns
        while block := self.stream.read_lines(self.block_bytes):
            lines, blank = line_numbers(block, self._next_line)
            self._next_line += len(lines)
            self.lines_at = (int(lines[0]), int(lines[-1]))
            yield ndjson_rows(block, lines, blank, wanted)

    def _parquet_chunks(self) -> Iterator[RawChunk]:
        assert self._parquet is not None
        row = 1
        for batch in self._parquet.iter_batches(batch_size=self.chunk_rows, columns=self.resolved.source_columns):
            yield RawChunk(pa.Table.from_batches([batch]), np.arange(row, row + batch.num_rows), [])
            row += batch.num_rows


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
