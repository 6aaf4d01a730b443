"""Compaction: a day's part files merged into one file whose row groups are symbol ranges, by temporary
file and rename (fast symbol-filtered reads afterwards)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tickerdash.analytics.history.archive_layout import ARCHIVE_SCHEMA, ROW_GROUP_ROWS, file_metadata
from tickerdash.analytics.history.archive_read import partition_files


def compact(root: Path, interval: str, date: str, group_symbols: int = 64) -> Path | None:
    """Merge one partition's files into one, deduplicated, with row groups by symbol range; the new file.

    Reads the partition symbol group by symbol group (bounded memory), writes a temporary file,
    renames it, then deletes the merged files. A crash before the deletes leaves the same bars in two
    files; readers deduplicate by (symbol, start), and the next compaction merges them again.
    """
    files = partition_files(root, interval, [date])
    if len(files) <= 1:
        return files[0] if files else None
    dataset = ds.dataset([str(f) for f in files], schema=ARCHIVE_SCHEMA, format="parquet")
    symbols = sorted(pc.unique(dataset.to_table(columns=["symbol"])["symbol"]).to_pylist())
    target = files[0].with_name(f"compact-{files[0].stem.split('-', 1)[1]}-{len(files)}.parquet")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    schema = ARCHIVE_SCHEMA.with_metadata(file_metadata(interval))
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for at in range(0, len(symbols), group_symbols):
                group = symbols[at : at + group_symbols]
                part = dataset.to_table(filter=ds.field("symbol").isin(group))
                writer.write_table(dedupe_sorted(part).cast(schema), row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    for f in files:
        if f != target:
            f.unlink()
    return target


def dedupe_sorted(table: pa.Table) -> pa.Table:
    """Rows sorted by (symbol, start), one per (symbol, start): the first of any duplicates."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by([("symbol", "ascending"), ("start", "ascending")])
    symbol = ordered["symbol"].to_numpy(zero_copy_only=False)
    start = ordered["start"].cast(pa.int64()).to_numpy()
    keep = np.ones(len(start), bool)
    keep[1:] = (symbol[1:] != symbol[:-1]) | (start[1:] != start[:-1])
    return ordered if keep.all() else ordered.filter(pa.array(keep))
