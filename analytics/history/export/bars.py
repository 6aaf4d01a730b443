"""The export of bars: choose the source interval, read and roll up chunk by chunk, write one file."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tickerdash.analytics.history.archive_layout import OVERLAY_COLUMNS, overlay_values
from tickerdash.analytics.history.export.bar_reader import (
    BarReader,
)
from tickerdash.analytics.history.export.plan import (
    Chunk,
    aligned_range,
    ceil_bucket,
    floor_bucket,
    plan,
)
from tickerdash.analytics.history.export.request import (
    INTERVAL_MS,
    SOURCES,
    ExportError,
    ExportRequest,
    ExportResult,
    NoDataError,
    ProgressFn,
    Stopwatch,
    check_output,
    iso_ms,
    span_text,
    validate,
)
from tickerdash.analytics.history.export.rollup import daily_statistics, rolled_overlays, rollup
from tickerdash.analytics.history.export.streams import (
    export_stream,
)
from tickerdash.analytics.history.export.table_writer import (
    TableWriter,
    describe_run,
    output_schema,
)
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.bars import BAR_FIELDS
from tickerdash.ingest.settings import Settings

OVERLAYS_STORED = "as the worker stored them with each bar (null: not defined yet at that bar)"
OVERLAYS_ROLLED = "computed over the exported bars from the first one (null until an overlay has enough bars)"


def choose_source(
    reader: BarReader, request: ExportRequest, lo_ms: int, hi_ms: int
) -> tuple[str, list[str], tuple[int, int]]:
    """The stored interval to build from (the first in SOURCES with data), the symbols to export, and their span."""
    for source in SOURCES[request.interval]:
        survey = reader.survey(source, request.symbols, lo_ms, hi_ms)
        if not survey.symbols and request.symbols is None:
            continue
        if request.symbols is None:
            return source, sorted(survey.symbols), survey.span
        missing = sorted(set(request.symbols) - survey.symbols)
        if missing:
            available = reader.symbols(source, lo_ms, hi_ms)  # all of them, to say what could be asked
            if not available:
                continue
            shown = ", ".join(sorted(available)[:20]) + (" ..." if len(available) > 20 else "")
            raise ExportError(
                f"--symbols: no {source} bars for {', '.join(missing)} in {span_text(lo_ms, hi_ms)} "
                "(unknown symbol, or no data in this range); "
                f"symbols with data there: {shown}"
            )
        return source, sorted(set(request.symbols)), survey.span
    raise NoDataError(
        f"no bars in {span_text(lo_ms, hi_ms)} at {'/'.join(SOURCES[request.interval])} in Redis or "
        f"the archive; widen --start/--end (nothing was written)"
    )


def export_chunks(
    reader: BarReader, request: ExportRequest, source: str, chunks: Sequence[Chunk], schema: pa.Schema
) -> Iterator[pa.Table]:
    """The output rows of every chunk, in order (pure apart from the reads)."""
    step = INTERVAL_MS[request.interval]
    last_close: dict[str, float] = {}
    overlays = OverlayStage()  # rolled-up bars' overlays: each symbol's series runs on from chunk to chunk
    for chunk in chunks:
        bars = reader.read(source, chunk.symbols, chunk.lo_ms, chunk.hi_ms)
        if bars.num_rows == 0:
            yield schema.empty_table()
            continue
        start = bars["start"].cast(pa.int64()).to_numpy()
        if source == request.interval:
            table = bars.select(["symbol", "start", *BAR_FIELDS, *OVERLAY_COLUMNS])
            yield _with_interval(table, request.interval, schema)
            continue
        # a 1d chunk is exactly one day in the request's zone; other buckets are UTC-aligned
        bucket = np.full(len(start), chunk.lo_ms, np.int64) if request.interval == "1d" else start - start % step
        rolled = rollup(bars, bucket)
        symbols = bars["symbol"].take(pa.array(rolled["first"]))
        columns: dict[str, Any] = {"symbol": symbols, "start": pa.array(rolled["start"], pa.timestamp("ms", tz="UTC"))}
        columns.update({name: rolled[name] for name in BAR_FIELDS})
        values = rolled_overlays(overlays, symbols, rolled, step)
        columns.update({name: overlay_values(value) for name, value in values.items()})
        if request.interval == "1d":
            groups = len(rolled["first"])
            realized, drawdown = daily_statistics(bars["close"].to_numpy(), rolled["group"], groups)
            names = symbols.to_pylist()  # one per symbol-day, not per bar
            previous = np.array([last_close.get(s, np.nan) for s in names])
            columns["return"] = rolled["close"] / previous - 1
            columns["realized_volatility"] = realized
            columns["max_drawdown"] = drawdown
            last_close.update(zip(names, rolled["close"].tolist(), strict=True))
        yield _with_interval(pa.table(columns), request.interval, schema)


def _with_interval(table: pa.Table, interval: str, schema: pa.Schema) -> pa.Table:
    constant = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, np.int8)), pa.array([interval]))
    table = table.add_column(1, "interval", constant)
    return table.select(schema.names).cast(schema)


def export_bars(
    client: AnyRedis | None,
    settings: Settings,
    request: ExportRequest,
    out: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write the requested bars (and any `include`d streams beside them) to `out`; raise ExportError if bad.

    `client` may be None to read the archive alone. Nothing is written when the range holds no bars
    (NoDataError). The file appears complete or not at all.
    """
    began = time.perf_counter()
    watch = Stopwatch()
    validate(request)
    out = Path(out)
    check_output(out)
    reader = BarReader(client, settings)
    lo_ms, hi_ms = aligned_range(request)
    if lo_ms >= hi_ms:
        raise ExportError(f"{span_text(lo_ms, hi_ms)} holds no whole {request.interval} bar; widen --start/--end")
    # plan only the days that hold data (an open range would otherwise plan every day since 1970)
    source, symbols, (span_lo, span_hi) = choose_source(reader, request, lo_ms, hi_ms)
    span_lo = max(lo_ms, floor_bucket(span_lo, request.interval, request.tz))
    span_hi = min(hi_ms, ceil_bucket(span_hi, request.interval, request.tz))
    chunks = plan(span_lo, span_hi, symbols, source, request.tz)
    meta = {
        **describe_run(client, reader.keys),
        "query": request.describe(),
        "source_interval": source,
        "overlays": OVERLAYS_STORED if source == request.interval else OVERLAYS_ROLLED,
        "row_order": "day, then symbol, then start",
        "created_at": iso_ms(int(time.time() * 1000)),
    }
    schema = output_schema(request.interval, request.tz, meta)
    writer = TableWriter(out, schema, request.format)
    watch.lap("plan")
    try:
        for done, table in enumerate(export_chunks(reader, request, source, chunks, schema), start=1):
            watch.lap("read")
            writer.write(table)
            watch.lap("write")
            if on_progress:
                on_progress(done, len(chunks), writer.rows)
        if writer.rows == 0:
            raise NoDataError(
                f"no {request.interval} bars for {', '.join(symbols[:10])} in {span_text(lo_ms, hi_ms)}; "
                "nothing was written"
            )
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    watch.lap("sync")
    extra = {
        name: export_stream(client, reader.keys, name, request, symbols, lo_ms, hi_ms, out) for name in request.include
    }
    return ExportResult(out, writer.rows, source, tuple(symbols), extra, time.perf_counter() - began, watch.seconds)


def export_bytes(client: AnyRedis | None, settings: Settings, request: ExportRequest) -> tuple[bytes, str]:
    """The export as file contents and a file name, for downloads (the dashboard); `include` is ignored."""
    import tempfile

    suffix = "parquet" if request.format == "parquet" else "csv"
    name = f"tickerdash_{request.interval}.{suffix}"
    with tempfile.TemporaryDirectory(prefix="tickerdash-export-") as folder:
        path = Path(folder) / name
        plain = ExportRequest(
            request.symbols, request.interval, request.start_ms, request.end_ms, request.tz, request.format, ()
        )
        export_bars(client, settings, plain, path)
        return path.read_bytes(), name
