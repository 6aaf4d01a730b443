"""The archiver: closed bars from Redis into a hive-partitioned Parquet dataset, exactly once per bar.

Redis keeps recent bars (each bar stream is capped by MAXLEN); the archive keeps the rest. The
archiver is consumer group `archive` on the closed-bars feed (`bars_feed_key`), which the analytics
worker writes in the same transaction as the bar streams, so every closed bar reaches the feed.

Layout: `<data_dir>/archive/interval=<1s|1m|1h>/date=<YYYY-MM-DD>/part-<first id>-<last id>.parquet`
(date of the bar start in UTC), each file sorted by symbol and start. A batch of feed entries is
written to a hidden temporary file, renamed into place, and only then acknowledged. The file name
comes from the batch's first and last entry IDs: a batch re-read after a crash between the rename
and the XACK gets the same name and overwrites the file with identical content, so no bar is
archived twice. `compact` merges a day's part files into one file whose row groups are symbol
ranges (fast symbol-filtered reads), again by temporary file and rename.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import redis

from tickerdash.analytics.stages.bars_stage import bars_feed_key, decode_bar_table
from tickerdash.analytics.stages.indicators import window_name
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.group_reads import ensure_groups
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.redis_adapter import raw_client, stream_items
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stop_flag import StopFlag

log = logging.getLogger(__name__)

ARCHIVE_GROUP = "archive"
READ_COUNT = 500  # feed entries per read
MAX_BATCH_ROWS = 500_000  # bars gathered (still pending) before they are written: bounds memory
ROW_GROUP_ROWS = 100_000
DAY_MS = 86_400_000

PRICE_UNIT = {b"unit": b"quote currency per share/unit"}
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
    ],
    metadata={b"tickerdash.units": b"prices in quote currency, volume in shares/units, start in ms UTC"},
)
PARTITIONING = ds.partitioning(pa.schema([("interval", pa.string()), ("date", pa.string())]), flavor="hive")


def archive_root(settings: Settings) -> Path:
    """Where the archive dataset lives: `<data_dir>/archive`."""
    return Path(settings.data_dir) / "archive"


def partition_dir(root: Path, interval: str, date: str) -> Path:
    """The directory of one (interval, UTC date) partition."""
    return root / f"interval={interval}" / f"date={date}"


def utc_date(ms: int) -> str:
    """The UTC calendar date of an epoch-ms instant, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def to_archive_table(feed: pa.Table) -> pa.Table:
    """Feed columns (symbol, interval_ms, start_ms, open ... trades) as archive rows, sorted by symbol and start."""
    columns: dict[str, Any] = {
        "symbol": feed["symbol"].cast(pa.string()),
        "start": feed["start_ms"].cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        columns[name] = feed[name].cast(pa.float64())
    columns["trades"] = feed["trades"].cast(pa.int64())
    table = pa.table(columns).cast(ARCHIVE_SCHEMA)
    return table.sort_by([("symbol", "ascending"), ("start", "ascending")])


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


def split_partitions(feed: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """(interval name, UTC date, archive rows) for every partition the feed rows fall in."""
    interval_ms = feed["interval_ms"].to_numpy()
    day = feed["start_ms"].to_numpy() // DAY_MS
    for interval in np.unique(interval_ms).tolist():
        for day_number in np.unique(day[interval_ms == interval]).tolist():
            rows = np.flatnonzero((interval_ms == interval) & (day == day_number))
            yield window_name(int(interval)), utc_date(int(day_number) * DAY_MS), to_archive_table(feed.take(rows))


def file_metadata(interval: str) -> dict[bytes, bytes]:
    """Schema metadata of an archive file: the units and the interval (a file read alone still says it)."""
    return {**(ARCHIVE_SCHEMA.metadata or {}), b"tickerdash.interval": interval.encode()}


@dataclass(slots=True)
class ArchiveStats:
    """Running totals, for logs and tests."""

    entries: int = 0
    bars: int = 0
    files: int = 0
    trimmed: int = 0


class Archiver:
    """Consumer `consumer` of group `archive` on the closed-bars feed; writes each bar to Parquet once."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        root: Path | None = None,
        stop: StopFlag | None = None,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self.client = client
        self.raw = raw_client(client)
        self.settings = settings
        self.feed = bars_feed_key(Keys(settings.prefix, settings.partitions))
        self.root = root or archive_root(settings)
        self.stop = stop or StopFlag()
        self.max_batch_rows = max_batch_rows
        self.stats = ArchiveStats()
        self._carry: list[Any] = []  # entries read but not yet in a written batch
        self._cursor = "0-0"  # the last pending entry read back
        self._outage = Outage(log)

    def write_batch(self, entries: Sequence[tuple[bytes, dict[bytes, bytes] | list[bytes] | None]]) -> list[Path]:
        """Write the bars of these feed entries (one file per partition), then XACK them; the files written."""
        ids = [eid.decode() if isinstance(eid, bytes) else str(eid) for eid, _ in entries]
        tables = []
        for eid, fields in entries:
            if fields is None:  # trimmed from the feed while pending: those bars exist only in the bar streams
                log.error("feed entry %s was trimmed before it was archived", eid)
                self.stats.trimmed += 1
                continue
            mapping = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
            tables.append(decode_bar_table(mapping[b"bars"]))
        written: list[Path] = []
        if tables:
            feed = pa.concat_tables(tables, promote_options="permissive")
            name = f"part-{ids[0]}-{ids[-1]}.parquet"
            for interval, date, table in split_partitions(feed):
                path = partition_dir(self.root, interval, date) / name
                write_atomically(table.replace_schema_metadata(file_metadata(interval)), path)
                written.append(path)
                self.stats.bars += table.num_rows
        self.client.xack(self.feed, ARCHIVE_GROUP, *ids)  # only after every rename: a crash re-reads the batch
        self.stats.entries += len(ids)
        self.stats.files += len(written)
        return written

    def _read(self, start: str, block_ms: int | None) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", ARCHIVE_GROUP, self.settings.consumer, "COUNT", READ_COUNT]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        response = self.raw.execute_command(*args, "STREAMS", self.feed, start)
        return [entry for _, entries in stream_items(response) for entry in entries]

    def _next_batch(self, pending: bool, block_ms: int | None) -> list[Any]:
        """Entries from the first unwritten one until they hold max_batch_rows bars (or nothing more is there).

        Where a batch ends depends only on the entries, counted from the first unacknowledged one, so
        the batch re-read after a crash is the same batch and its files get the same names.
        """
        batch, self._carry = self._carry, []
        while sum(_rows(fields) for _, fields in batch) < self.max_batch_rows and not self.stop.is_set():
            more = self._read(self._cursor if pending else ">", None if batch else block_ms)
            if not more:
                break
            batch.extend(more)
            if pending:
                self._cursor = more[-1][0].decode()
        rows = np.cumsum([_rows(fields) for _, fields in batch])
        cut = int(np.searchsorted(rows, self.max_batch_rows)) + 1 if len(rows) else 0
        batch, self._carry = batch[:cut], batch[cut:]  # the rest is read (pending) and goes first next time
        return batch

    def adopt_orphans(self) -> int:
        """Take over entries another archiver consumer read but never acknowledged (say, a container that
        was replaced and came back under a new name), once they are idle for claim_idle_ms."""
        cursor, adopted = "0-0", 0
        while True:
            reply = self.raw.execute_command(
                "XAUTOCLAIM",
                self.feed,
                ARCHIVE_GROUP,
                self.settings.consumer,
                self.settings.claim_idle_ms,
                cursor,
                "COUNT",
                1000,
                "JUSTID",
            )
            next_cursor, ids = reply[0], reply[1]
            adopted += len(ids)
            cursor = next_cursor.decode() if isinstance(next_cursor, bytes) else str(next_cursor)
            if cursor == "0-0":
                break
        if adopted:
            log.warning("adopted %d feed entries another archiver left unacknowledged", adopted)
        return adopted

    def run(self, once: bool = False) -> ArchiveStats:
        """Archive until stopped; with `once`, stop when the feed has nothing new (tests, cron).

        First the entries an earlier life of this consumer (or an abandoned one) read but never
        acknowledged, then new ones. A lost Redis connection is retried with backoff: whatever was read
        and not yet acknowledged is pending and is read again first.
        """
        while not self.stop.is_set():
            try:
                self._archive(once)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                wait_out(self._outage, exc, self.stop)
        log.info(
            "archived %d bars from %d feed entries into %d files", self.stats.bars, self.stats.entries, self.stats.files
        )
        return self.stats

    def _archive(self, once: bool) -> None:
        ensure_groups(self.client, [self.feed], ARCHIVE_GROUP)
        self.adopt_orphans()
        self._outage.recovered()
        self._carry, self._cursor = [], "0-0"
        while not self.stop.is_set():
            batch = self._next_batch(pending=True, block_ms=None)
            if not batch:
                break
            self.write_batch(batch)
        while not self.stop.is_set():
            batch = self._next_batch(pending=False, block_ms=None if once else self.settings.block_ms)
            if batch:
                self.write_batch(batch)
            elif once:
                break


def _rows(fields: Any) -> int:
    if fields is None:
        return 0
    mapping = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
    return int(mapping.get(b"rows", 0))


# --- reading and compaction ----------------------------------------------------------------


def partition_files(root: Path, interval: str, dates: Sequence[str]) -> list[Path]:
    """The visible Parquet files of these (interval, date) partitions, in name order."""
    files: list[Path] = []
    for date in dates:
        folder = partition_dir(root, interval, date)
        if folder.is_dir():
            files.extend(sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))))
    return files


def archived_intervals(root: Path) -> list[str]:
    """The intervals that have an archive partition."""
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.glob("interval=*") if p.is_dir())


def dates_between(root: Path, interval: str, lo_ms: int, hi_ms: int) -> list[str]:
    """The archived UTC dates of an interval that [lo_ms, hi_ms) touches (from the directories present)."""
    folder = root / f"interval={interval}"
    if hi_ms <= lo_ms or not folder.is_dir():
        return []
    first, last = utc_date(lo_ms), utc_date(min(hi_ms - 1, 253_402_300_799_000))  # at most 9999-12-31
    present = (p.name.split("=", 1)[1] for p in folder.glob("date=*"))
    return sorted(d for d in present if first <= d <= last)


# archive rows as read: the symbol as dictionary codes, not a string per row
CODED_SCHEMA = pa.schema(
    [pa.field("symbol", pa.dictionary(pa.int32(), pa.string())), *(f for f in ARCHIVE_SCHEMA if f.name != "symbol")]
)


@dataclass(frozen=True, slots=True)
class RowGroup:
    """One row group of an archive file, with what its footer statistics prove (None: no usable statistics)."""

    path: Path
    index: int
    rows: int
    symbols: tuple[str, str] | None  # the least and the greatest symbol
    starts: tuple[int, int] | None  # the least and the greatest bar start, epoch ms

    def may_hold(self, lo_ms: int, hi_ms: int, names: Sequence[str] | None = None) -> bool:
        """False where the statistics prove no row has start in [lo_ms, hi_ms) and a symbol of `names` (sorted)."""
        if self.rows == 0 or (self.starts is not None and (self.starts[1] < lo_ms or self.starts[0] >= hi_ms)):
            return False
        if names is None or self.symbols is None:
            return True
        at = bisect.bisect_left(names, self.symbols[0])
        return at < len(names) and names[at] <= self.symbols[1]

    def within(self, lo_ms: int, hi_ms: int) -> bool:
        """True where the statistics prove every row's start lies in [lo_ms, hi_ms)."""
        return self.starts is not None and lo_ms <= self.starts[0] and self.starts[1] < hi_ms


def row_groups(root: Path, interval: str, lo_ms: int, hi_ms: int) -> list[RowGroup]:
    """The row groups of the archive files that [lo_ms, hi_ms) touches, in file order, from the footers alone."""
    groups = []
    for path in partition_files(root, interval, dates_between(root, interval, lo_ms, hi_ms)):
        meta = pq.read_metadata(path)
        at = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            symbol, start = group.column(at["symbol"]).statistics, group.column(at["start"]).statistics
            groups.append(RowGroup(path, index, group.num_rows, _text_range(symbol), _ms_range(start)))
    return groups


def _text_range(stats: pq.Statistics | None) -> tuple[str, str] | None:
    # pyarrow writes string min/max whole (a value too long for statistics gets none): symbols are <= 16 chars
    if stats is None or not stats.has_min_max or stats.physical_type != "BYTE_ARRAY":
        return None
    return str(stats.min), str(stats.max)


def _ms_range(stats: pq.Statistics | None) -> tuple[int, int] | None:
    if stats is None or not stats.has_min_max or stats.physical_type != "INT64":
        return None
    if json.loads(stats.logical_type.to_json()).get("timeUnit") != "milliseconds":
        return None
    return int(stats.min_raw), int(stats.max_raw)


def _read_groups(
    groups: Sequence[RowGroup], columns: Sequence[str] | None = None
) -> Iterator[tuple[list[RowGroup], pa.Table]]:
    """The rows of these row groups, file by file in order, cast to the archive's types, `symbol` as a dictionary."""
    for path, same_file in itertools.groupby(groups, key=lambda g: g.path):
        chosen = list(same_file)
        table = pq.ParquetFile(path, read_dictionary=["symbol"]).read_row_groups(
            [g.index for g in chosen], columns=columns
        )
        names = CODED_SCHEMA.names if columns is None else list(columns)
        yield chosen, table.select(names).cast(pa.schema([CODED_SCHEMA.field(name) for name in names]))


def symbol_codes(column: pa.ChunkedArray, names: Sequence[str]) -> np.ndarray:
    """Each row's symbol as its index in `names` (-1 for others), from a dictionary column without a string per row."""
    value_set = pa.array(names, pa.string())
    parts = [np.empty(0, np.int32)]
    for chunk in column.chunks:
        lookup = pc.index_in(chunk.dictionary, value_set=value_set).fill_null(-1).to_numpy().astype(np.int32)
        parts.append(lookup[chunk.indices.to_numpy()])
    return np.concatenate(parts)


def symbol_column(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """The strings `names[codes]` as one Arrow string array (the inverse of `symbol_codes`).

    Rows come grouped by symbol, so the column is built run by run: one copy of each name per row
    straight into the buffers. Codes that change often (no long runs) go through a dictionary take.
    """
    if len(codes) == 0:
        return pa.array([], pa.string())
    run_starts = np.flatnonzero(np.diff(codes, prepend=codes[0] - 1))
    encoded = [name.encode() for name in names]
    if len(run_starts) * 64 > len(codes):
        dictionary = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))
        return dictionary.cast(pa.string())
    runs = codes[run_starts]
    lengths = np.diff(np.append(run_starts, len(codes)))
    data = b"".join(encoded[code] * length for code, length in zip(runs.tolist(), lengths.tolist(), strict=True))
    widths = np.fromiter((len(e) for e in encoded), np.int32, len(encoded))[runs]
    if (widths == widths[0]).all():  # tickers of one length: the offsets are a plain range
        offsets = np.arange(len(codes) + 1, dtype=np.int32) * widths[0]
    else:
        offsets = np.zeros(len(codes) + 1, np.int32)
        np.cumsum(np.repeat(widths, lengths), out=offsets[1:])
    return pa.StringArray.from_buffers(len(codes), pa.py_buffer(offsets), pa.py_buffer(data))


def read_coded(root: Path, interval: str, lo_ms: int, hi_ms: int, names: Sequence[str]) -> tuple[pa.Table, np.ndarray]:
    """Archived bars of the symbols `names` (sorted) with start in [lo_ms, hi_ms), in file order: the columns after
    `symbol` (archive schema), and each row's symbol as its index in `names`.

    Only the row groups whose statistics allow a match are read, and the symbols as dictionary codes:
    no string is made per row (the caller builds the column it writes from the codes).
    """
    tables, codes = [], []
    wanted = [g for g in row_groups(root, interval, lo_ms, hi_ms) if g.may_hold(lo_ms, hi_ms, names)]
    for _, table in _read_groups(wanted):
        code = symbol_codes(table["symbol"], names)
        start = table["start"].cast(pa.int64()).to_numpy()
        keep = (code >= 0) & (start >= lo_ms) & (start < hi_ms)
        table = table.drop_columns(["symbol"])
        if not keep.all():
            table, code = table.filter(pa.array(keep)), code[keep]
        tables.append(table)
        codes.append(code)
    if not tables:
        return CODED_SCHEMA.empty_table().drop_columns(["symbol"]), np.empty(0, np.int32)
    return pa.concat_tables(tables), np.concatenate(codes)


def archived_span(
    root: Path, interval: str, lo_ms: int, hi_ms: int, symbols: Sequence[str] | None = None
) -> tuple[set[str], tuple[int, int] | None]:
    """The symbols with archived bars of this interval in [lo_ms, hi_ms) (of `symbols`, if given), and the first and
    last start of those bars (None: no bar).

    The footers settle a row group that holds one symbol with every start in range. One with every
    start in range but several symbols needs only its symbol codes read (cheap: no string per row)
    when all its symbols are wanted; only a row group that the range cuts, or that mixes wanted and
    unwanted symbols, has its starts read. A compacted day asked for whole costs no start read.
    """
    names = sorted(symbols) if symbols is not None else None
    found: set[str] = set()
    firsts: list[int] = []
    lasts: list[int] = []
    by_symbols: list[RowGroup] = []  # wholly in range, several symbols: which ones?
    by_rows: list[RowGroup] = []  # cut by the range (or no statistics): which rows?
    for group in row_groups(root, interval, lo_ms, hi_ms):
        if not group.may_hold(lo_ms, hi_ms, names):
            continue
        if not group.within(lo_ms, hi_ms) or group.symbols is None or group.starts is None:
            by_rows.append(group)
        elif group.symbols[0] != group.symbols[1]:
            by_symbols.append(group)
        else:  # one symbol, wanted (may_hold says so), every start in range
            found.add(group.symbols[0])
            firsts.append(group.starts[0])
            lasts.append(group.starts[1])
    for groups, table in _read_groups(by_symbols, ["symbol"]):
        present = set(_present(table["symbol"]))
        if names is not None and not present <= set(names):
            by_rows.extend(groups)  # unwanted symbols too: the statistics' span may be theirs
            continue
        found |= present
        spans = [g.starts for g in groups if g.starts is not None]  # every one (within)
        firsts.append(min(first for first, _ in spans))
        lasts.append(max(last for _, last in spans))
    for _, table in _read_groups(by_rows, ["symbol", "start"]):
        symbol = table["symbol"].unify_dictionaries().combine_chunks()
        present = symbol.dictionary.to_pylist()
        code = symbol_codes(pa.chunked_array([symbol]), names if names is not None else present)
        start = table["start"].cast(pa.int64()).to_numpy()
        keep = (code >= 0) & (start >= lo_ms) & (start < hi_ms)
        if keep.any():
            found.update(np.asarray(names if names is not None else present, dtype=object)[np.unique(code[keep])])
            firsts.append(int(start[keep].min()))
            lasts.append(int(start[keep].max()))
    return found, ((min(firsts), max(lasts)) if firsts else None)


def _present(column: pa.ChunkedArray) -> list[str]:
    """The values that occur in a dictionary column (a dictionary may hold values no row uses)."""
    found: list[str] = []
    for chunk in column.chunks:
        used = np.bincount(chunk.indices.to_numpy(), minlength=len(chunk.dictionary)) > 0
        found += chunk.dictionary.filter(pa.array(used)).to_pylist()
    return found


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
