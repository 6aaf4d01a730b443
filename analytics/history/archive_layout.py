"""The archive's layout on disk: where a partition lives, the bar schema, and writing a file atomically.

`<data_dir>/archive/interval=<1s|1m|1h>/date=<YYYY-MM-DD>/part-<first id>-<last id>.parquet` (date of
the bar start in UTC); every file has `ARCHIVE_SCHEMA` and says its interval in its metadata. The schema
is the bar's contract fields, then one nullable column per overlay line (`OVERLAY_COLUMNS`, null where the
overlay is not defined yet); a file without the overlay columns reads as nulls there (`conform`).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tickerdash.analytics.stages.overlays.base import OverlayLine
from tickerdash.analytics.stages.overlays.registry import overlay_lines
from tickerdash.ingest.settings import Settings

ROW_GROUP_ROWS = 100_000
DAY_MS = 86_400_000

PRICE_UNIT = {b"unit": b"quote currency per share/unit"}
OVERLAY_COLUMNS = tuple(line.field for line in overlay_lines())  # after the contract fields, in field order


def overlay_field(line: OverlayLine) -> pa.Field:
    """The nullable float64 column of one overlay line, with what it is and its unit."""
    scale = line.panel.y_range  # a panel of its own with a fixed range holds an index, not a price
    unit = {b"unit": f"index, {scale[0]:g} to {scale[1]:g}".encode()} if scale else PRICE_UNIT
    return pa.field(line.field, pa.float64(), metadata={**unit, b"description": line.label.encode()})


ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False, metadata={b"description": b"ticker, upper case"}),
        pa.field(
            "start",
            pa.timestamp("ms", tz="UTC"),
            nullable=False,
            metadata={b"unit": b"ms since the epoch, UTC", b"description": b"bar covers [start, start + interval)"},
        ),
        pa.field("open", pa.float64(), nullable=False, metadata=PRICE_UNIT),
        pa.field("high", pa.float64(), nullable=False, metadata=PRICE_UNIT),
        pa.field("low", pa.float64(), nullable=False, metadata=PRICE_UNIT),
        pa.field("close", pa.float64(), nullable=False, metadata=PRICE_UNIT),
        pa.field("volume", pa.float64(), nullable=False, metadata={b"unit": b"shares/units traded"}),
        pa.field("vwap", pa.float64(), nullable=False, metadata=PRICE_UNIT),
        pa.field("trades", pa.int64(), nullable=False, metadata={b"unit": b"count of trades"}),
        *(overlay_field(line) for line in overlay_lines()),
    ],
    metadata={b"tickerdash.units": b"prices in quote currency, volume in shares/units, start in ms UTC"},
)
PARTITIONING = ds.partitioning(pa.schema([("interval", pa.string()), ("date", pa.string())]), flavor="hive")
# the whole archive as one pyarrow dataset: every file's columns (nulls where an older file lacks one), then the
# partition keys; without it the dataset takes the first file's columns, whichever file that is
DATASET_SCHEMA = pa.unify_schemas([ARCHIVE_SCHEMA, PARTITIONING.schema])


def archive_root(settings: Settings) -> Path:
    """Where the archive dataset lives: `<data_dir>/archive`."""
    return Path(settings.data_dir) / "archive"


def partition_dir(root: Path, interval: str, date: str) -> Path:
    """The directory of one (interval, UTC date) partition."""
    return root / f"interval={interval}" / f"date={date}"


def utc_date(ms: int) -> str:
    """The UTC calendar date of an epoch-ms instant, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def write_atomically(table: pa.Table, path: Path, **options: Any) -> None:
    """Write a Parquet file under a hidden temporary name, fsync it, and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # '.' prefix: dataset discovery skips it
    try:
        pq.write_table(table, tmp, row_group_size=options.pop("row_group_size", ROW_GROUP_ROWS), **options)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_metadata(interval: str) -> dict[bytes, bytes]:
    """Schema metadata of an archive file: the units and the interval (a file read alone still says it)."""
    return {**(ARCHIVE_SCHEMA.metadata or {}), b"tickerdash.interval": interval.encode()}


def overlay_values(values: np.ndarray) -> pa.Array:
    """An overlay column's values as Arrow, NaN (the overlay not defined yet at that bar) as null."""
    return pa.array(values, pa.float64(), from_pandas=True)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with the schema's columns in its order and types; a column it lacks (an overlay column of a
    file written before that overlay existed) is all null."""
    columns = [
        table[field.name] if field.name in table.column_names else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)
