"""Writing an export's table: its schema and metadata, Parquet or CSV (formulas neutralised), atomically."""

from __future__ import annotations

import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tickerdash.analytics.history.archive_layout import ARCHIVE_SCHEMA, OVERLAY_COLUMNS, PRICE_UNIT
from tickerdash.analytics.history.export.request import (
    Format,
)
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys

PARQUET_COMPRESSION = "snappy"  # pyarrow's default: fast to write and read; the benchmark's reference uses it too


def output_schema(interval: str, tz: str, meta: dict[str, Any]) -> pa.Schema:
    """Columns of an export (the bar, its overlays, daily trend columns with `1d`), with units, and the export's
    metadata."""
    fields = [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("interval", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field(
            "start",
            pa.timestamp("ms", tz=tz),
            nullable=False,
            metadata={b"description": b"bar covers [start, start + interval)"},
        ),
        *(
            pa.field(name, pa.float64(), nullable=False, metadata=PRICE_UNIT)
            for name in ("open", "high", "low", "close")
        ),
        pa.field("volume", pa.float64(), nullable=False, metadata={b"unit": b"shares/units traded"}),
        pa.field("vwap", pa.float64(), metadata=PRICE_UNIT),
        pa.field("trades", pa.int64(), nullable=False, metadata={b"unit": b"count of trades"}),
        *(field for field in ARCHIVE_SCHEMA if field.name in OVERLAY_COLUMNS),
    ]
    if interval == "1d":
        fields += [
            pa.field("return", pa.float64(), metadata={b"unit": b"fraction: close / previous day's close - 1"}),
            pa.field(
                "realized_volatility",
                pa.float64(),
                metadata={b"unit": b"sqrt(sum of squared log returns of the day's source bars), not annualised"},
            ),
            pa.field("max_drawdown", pa.float64(), metadata={b"unit": b"fraction below the day's running peak close"}),
        ]
    return pa.schema(
        fields, metadata={b"tickerdash": json.dumps(meta, sort_keys=True).encode(), **(ARCHIVE_SCHEMA.metadata or {})}
    )


def describe_run(client: AnyRedis | None, keys: Keys) -> dict[str, Any]:
    """Version, rules version and simulator seed (where Redis knows them) for the metadata."""
    try:
        version = importlib_metadata.version("tickerdash")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    out: dict[str, Any] = {"tickerdash_version": version}
    if client is not None:
        rules_version = client.get(keys.rules_version)
        out["rules_version"] = int(rules_version) if rules_version is not None else 0
        seed = client.hget(keys.simulator_run, "seed")  # written by a simulator that records its run
        if seed is not None:
            out["simulator_seed"] = int(seed)
    return out


# A text cell starting with one of these is run as a formula by spreadsheets (OWASP, "CSV Injection").
FORMULA_START = "^([=+\\-@\t\r])"


def neutralise_formulas(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text cells a spreadsheet would run as a formula, prefixed with a single quote; other columns as given.

    Only text (string, or dictionary of strings) is changed: a negative number stays a number. The
    CSV writer quotes every text cell, so a prefixed cell cannot be split or unquoted.
    """
    typ = column.type
    if pa.types.is_dictionary(typ) and _is_text(typ.value_type):
        chunks = [
            pa.DictionaryArray.from_arrays(chunk.indices, _prefix_formulas(chunk.dictionary), ordered=typ.ordered)
            for chunk in column.chunks
        ]
        return pa.chunked_array(chunks, typ)
    return _prefix_formulas(column) if _is_text(typ) else column


def _is_text(typ: pa.DataType) -> bool:
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))


def _prefix_formulas(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.replace_substring_regex(text, pattern=FORMULA_START, replacement="'\\1", max_replacements=1)


class TableWriter:
    """Streams tables into a hidden temporary file beside `path` and renames it into place on `commit`.

    CSV text cells that would be spreadsheet formulas are prefixed with `'` (`neutralise_formulas`);
    Parquet keeps every value as it is.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: Format) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.schema = schema
        self.format = fmt
        self.rows = 0
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if fmt == "parquet":
            self._writer = pq.ParquetWriter(self.tmp, schema, compression=PARQUET_COMPRESSION)
        else:
            self._writer = pacsv.CSVWriter(self.tmp, schema)
        self._fd = os.open(self.tmp, os.O_RDONLY)  # for the early writeback and the fsync

    def write(self, table: pa.Table) -> None:
        """Append rows (already in the schema's columns), and start writing them to disk in the background."""
        if table.num_rows:
            table = table.cast(self.schema)
            if self.format == "csv":
                table = pa.table([neutralise_formulas(column) for column in table.columns], schema=self.schema)
            self._writer.write_table(table)
            self.rows += table.num_rows
            start_writeback(self._fd)

    def commit(self) -> Path:
        """Close, flush to disk and rename into place."""
        self._writer.close()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._writer.close()
        finally:
            os.close(self._fd)
            self.tmp.unlink(missing_ok=True)


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages to disk now, without waiting for it.

    On Linux, POSIX_FADV_DONTNEED starts the writeback of dirty pages (and drops only pages already
    clean), so while the next chunk is encoded the disk takes this one, and the fsync at `commit`
    waits for the last chunk only, not for the whole file. Durability is the fsync's, as before.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
