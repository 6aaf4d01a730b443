"""The archiver: closed bars from Redis into a hive-partitioned Parquet dataset, exactly once per bar.

Redis keeps recent bars (each bar stream is capped by MAXLEN); the archive keeps the rest. The
archiver is consumer group `archive` on the closed-bars feed of each partition (`Keys.closed_bars`), which
the analytics worker writes in the same transaction as the bar streams, so every closed bar reaches a feed.

Layout: `<data_dir>/archive/interval=<1s|1m|1h>/date=<YYYY-MM-DD>/part-<first id>-<last id>.parquet`
(`part-p<partition>-<first id>-<last id>.parquet` with P > 1; date of the bar start in UTC), each file
sorted by symbol and start. A batch of feed entries is
written to a hidden temporary file, renamed into place, and only then acknowledged. The file name
comes from the batch's first and last entry IDs: a batch re-read after a crash between the rename
and the XACK gets the same name and overwrites the file with identical content, so no bar is
archived twice. On a Redis Cluster each partition's archiver talks to the primary that holds its feed (its
feed, group and acknowledgements share the partition's slot), and finds that primary anew after a failover
or a slot move. `archive_compact.compact` merges a day's part files into one file whose row groups are symbol
ranges (fast symbol-filtered reads), again by temporary file and rename.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from tickerdash.analytics.history.archive_layout import (
    ARCHIVE_SCHEMA,
    DAY_MS,
    OVERLAY_COLUMNS,
    archive_root,
    conform,
    file_metadata,
    overlay_values,
    partition_dir,
    utc_date,
    write_atomically,
)
from tickerdash.analytics.stages.indicators import window_name
from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis, node_client, refresh_slot_map
from tickerdash.ingest.contract.bars import BAR_FLOAT_FIELDS, feed_entry_rows, feed_entry_table
from tickerdash.ingest.contract.keys import ARCHIVE_GROUP, Keys
from tickerdash.ingest.group_reads import ensure_groups
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.redis_adapter import raw_client, stream_items
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stop_flag import StopFlag

log = logging.getLogger(__name__)

READ_COUNT = 500  # feed entries per read
MAX_BATCH_ROWS = 500_000  # bars gathered (still pending) before they are written: bounds memory


def to_archive_table(feed: pa.Table) -> pa.Table:
    """Feed columns (symbol, interval_ms, start_ms, open ... trades, overlay fields) as archive rows, sorted by
    symbol and start; an overlay value the feed has as NaN (not defined yet) is null, as its bar entry omits it."""
    columns: dict[str, Any] = {
        "symbol": feed["symbol"].cast(pa.string()),
        "start": feed["start_ms"].cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    for name in BAR_FLOAT_FIELDS:
        columns[name] = feed[name].cast(pa.float64())
    columns["trades"] = feed["trades"].cast(pa.int64())
    for name in OVERLAY_COLUMNS:
        if name in feed.column_names:
            columns[name] = overlay_values(feed[name].to_numpy())
    table = conform(pa.table(columns), ARCHIVE_SCHEMA)
    return table.sort_by([("symbol", "ascending"), ("start", "ascending")])


def split_partitions(feed: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """(interval name, UTC date, archive rows) for every partition the feed rows fall in."""
    interval_ms = feed["interval_ms"].to_numpy()
    day = feed["start_ms"].to_numpy() // DAY_MS
    for interval in np.unique(interval_ms).tolist():
        for day_number in np.unique(day[interval_ms == interval]).tolist():
            rows = np.flatnonzero((interval_ms == interval) & (day == day_number))
            yield window_name(int(interval)), utc_date(int(day_number) * DAY_MS), to_archive_table(feed.take(rows))


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
        client: AnyRedis,
        settings: Settings,
        *,
        root: Path | None = None,
        stop: StopFlag | None = None,
        partition: int = 0,
        outage: Outage | None = None,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self.source = client  # on a cluster, what finds the node of the feed's slot
        self.settings = settings
        self.feed = Keys(settings.prefix, settings.partitions).closed_bars(partition)
        self.client, self.raw = self._node_clients()
        # entry IDs of two partitions' feeds can coincide: with P > 1 a file name says whose entries it holds
        self.file_prefix = "part-" if settings.partitions == 1 else f"part-p{partition}-"
        self.root = root or archive_root(settings)
        self.stop = stop or StopFlag()
        self.max_batch_rows = max_batch_rows
        self.stats = ArchiveStats()
        self._carry: list[Any] = []  # entries read but not yet in a written batch
        self._cursor = "0-0"  # the last pending entry read back
        self._outage = outage or Outage(log)

    def _node_clients(self) -> tuple[redis.Redis, redis.Redis]:
        """A client on the primary that holds the feed (the given client on a standalone server), and its raw
        twin (`raw_client`)."""
        client = node_client(self.source, self.feed)
        return client, raw_client(client)

    def write_batch(self, entries: Sequence[tuple[bytes, dict[bytes, bytes] | list[bytes] | None]]) -> list[Path]:
        """Write the bars of these feed entries (one file per partition), then XACK them; the files written."""
        ids = [eid.decode() if isinstance(eid, bytes) else str(eid) for eid, _ in entries]
        tables = []
        for eid, fields in entries:
            if fields is None:  # trimmed from the feed while pending: those bars exist only in the bar streams
                log.error("feed entry %s was trimmed before it was archived", eid)
                self.stats.trimmed += 1
                continue
            tables.append(feed_entry_table(fields))
        written: list[Path] = []
        if tables:
            feed = pa.concat_tables(tables, promote_options="permissive")
            name = f"{self.file_prefix}{ids[0]}-{ids[-1]}.parquet"
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
        while sum(feed_entry_rows(fields) for _, fields in batch) < self.max_batch_rows and not self.stop.is_set():
            more = self._read(self._cursor if pending else ">", None if batch else block_ms)
            if not more:
                break
            batch.extend(more)
            if pending:
                self._cursor = more[-1][0].decode()
        rows = np.cumsum([feed_entry_rows(fields) for _, fields in batch])
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
        and not yet acknowledged is pending and is read again first. On a cluster, a failover or a slot move
        is waited out the same way, and the archiver goes on with the primary that holds the feed's slot then.
        """
        while not self.stop.is_set():
            try:
                self.client, self.raw = self._node_clients()
                self._archive(once)
                break
            except UNAVAILABLE as exc:
                refresh_slot_map(self.source)
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


def archive_every_partition(
    client: AnyRedis, settings: Settings, stop: StopFlag, once: bool = False, root: Path | None = None
) -> ArchiveStats:
    """Run an archiver on every partition's feed (each on a thread of its own when P > 1) until stopped; a Redis
    outage is logged once for all of them."""
    outage = Outage(log)
    archivers = [
        Archiver(client, settings, root=root, stop=stop, partition=p, outage=outage) for p in range(settings.partitions)
    ]
    if len(archivers) == 1:
        return archivers[0].run(once=once)
    threads = [
        threading.Thread(target=archiver.run, kwargs={"once": once}, name=f"archive-{p}", daemon=True)
        for p, archiver in enumerate(archivers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = ArchiveStats()
    for archiver in archivers:
        for stat in dataclasses.fields(ArchiveStats):
            setattr(total, stat.name, getattr(total, stat.name) + getattr(archiver.stats, stat.name))
    return total
