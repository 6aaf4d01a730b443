"""Importers of external trade files: CSV, NDJSON and Parquet to `TickBatch` chunks in bounded memory.

Reading only (no Redis): a `TradeReader` streams a file (or stdin) block by block, maps its columns
onto the tick fields with a `ColumnMapping`, converts timestamps to epoch ms and yields, per chunk,
the valid trades and the rejected rows with their reasons. Rows keep file order (ties in `ts` are
common in exchange data). The modules: `reader` (formats, the reader), `columns` (the mapping),
`blocks` (whole-line blocks of a stream), `csv_format` and `ndjson_format` (a block's rows),
`convert` (source columns to tick columns), `errors`.
"""

from tickerdash.ingest.importers.columns import ColumnMapping, ResolvedColumns
from tickerdash.ingest.importers.convert import detect_ts_unit, epoch_to_ms
from tickerdash.ingest.importers.errors import ImportOptionError
from tickerdash.ingest.importers.reader import (
    DEFAULT_CHUNK_ROWS,
    FORMATS,
    TradeReader,
    read_trades,
    sniff_format,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FORMATS",
    "ColumnMapping",
    "ImportOptionError",
    "ResolvedColumns",
    "TradeReader",
    "detect_ts_unit",
    "epoch_to_ms",
    "read_trades",
    "sniff_format",
]
