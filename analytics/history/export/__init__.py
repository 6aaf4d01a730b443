"""Export: bars from the archive and Redis as one table, rolled up to the interval asked, to Parquet or CSV.

The work is cut into chunks of one day (UTC; with `--interval 1d`, a day in the requested time zone)
and a group of symbols small enough to bound memory (`CHUNK_ROWS` source bars). For each chunk the
archived bars and the Redis bars are merged and deduplicated by (symbol, start) (the two overlap:
Redis keeps the recent bars the archive also has), rolled up from the finer source interval when
needed, and appended to a writer that streams into a hidden temporary file; the file is renamed to
the requested path only when every chunk is written, so a reader never sees a partial export.

Rows come day by day; within a day by symbol, then start. `--interval 1d` rows add `return` (close
over the previous exported day's close, minus 1; empty on a symbol's first day), `realized_volatility`
(square root of the summed squared log returns between consecutive source-bar closes of the day, not
annualised) and `max_drawdown` (the largest fall of a source-bar close below the day's running peak
close, as a fraction).

The package's modules, in the order an export runs: `request` (what is asked, checked), `bar_reader`
(reading the archive and Redis), `plan` (chunks), `rollup`, `table_writer` (the file), `streams` (alerts,
anomalies and trades beside the bars), and `bars`, which drives them.
"""

from tickerdash.analytics.history.export.bar_reader import BarReader, first_in_order, missing_ranges, parse_bar_entries
from tickerdash.analytics.history.export.bars import choose_source, export_bars, export_bytes
from tickerdash.analytics.history.export.request import (
    FORMATS,
    INCLUDES,
    INTERVAL_MS,
    SOURCES,
    ExportError,
    ExportRequest,
    ExportResult,
    NoDataError,
    parse_time,
    validate,
)
from tickerdash.analytics.history.export.streams import export_stream
from tickerdash.analytics.history.export.table_writer import PARQUET_COMPRESSION, TableWriter, neutralise_formulas

__all__ = [
    "FORMATS",
    "INCLUDES",
    "INTERVAL_MS",
    "PARQUET_COMPRESSION",
    "SOURCES",
    "BarReader",
    "ExportError",
    "ExportRequest",
    "ExportResult",
    "NoDataError",
    "TableWriter",
    "choose_source",
    "export_bars",
    "export_bytes",
    "export_stream",
    "first_in_order",
    "missing_ranges",
    "neutralise_formulas",
    "parse_bar_entries",
    "parse_time",
    "validate",
]
