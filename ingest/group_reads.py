"""The reading half of `StreamRunner`: its own pending entries, stale entries of others, new entries.

Whenever a read brings entries, the next read is sent before they are handled (read-ahead), so that
Redis builds its reply (~1 us of its thread per per-tick entry) while the consumer computes. Every
entry read is handed to `handle` (the runner's transaction half), except redelivered ones delivered
more than `max_deliveries` times, which go to `quarantine`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis, is_cluster, node_client, node_name
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import RawEntry, Rejected, as_text
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.group_progress import create_group, record_missed
from tickerdash.ingest.redis_adapter import (
    PerNode,
    read_reply,
    release_connection,
    send_command,
    stream_items,
    take_connection,
)
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stop_flag import StopFlag

log = logging.getLogger(__name__)
ACTIVE_BLOCK_MS = 10  # on a cluster, the longest a read blocks on one partition while entries keep coming


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC inside: for reading and handling a batch, whose many short-lived lists (hiredis builds
    a list per entry and per field list) would otherwise trigger collections that promote them, and then
    full passes over every long-lived object; they are freed by reference counting when the batch is done."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def ensure_groups(client: AnyRedis, streams: Sequence[str], group: str) -> None:
    """Create the consumer group on every stream (and the stream itself) unless it exists."""
    for stream in streams:
        create_group(node_client(client, stream), stream, group)


@dataclass(slots=True)
class RunnerStats:
    """Running totals, for logs, `status` and benchmarks."""

    entries: int = 0
    ticks: int = 0
    rejected: int = 0
    batches: int = 0
    reclaimed: int = 0
    reconnects: int = 0
    quarantined: int = 0
    started: float = field(default_factory=time.monotonic)
    last_batch_at: float = 0.0  # time.monotonic() when the last batch committed
    transactions_s: float = 0.0  # spent sending batch transactions and waiting for their replies


class GroupReads:
    """Reads a consumer group's streams as one consumer; `handle` and `settle` are the runner's."""

    client: AnyRedis
    node: PerNode  # the client of the primary that holds a stream (the runner's own client when standalone)
    raw_node: PerNode  # its twin whose stream replies are unparsed
    settings: Settings
    keys: Keys
    streams: list[str]
    source: str
    stop: StopFlag
    _count: int
    _last_claim: float
    _last_gap_check: float
    _ahead: redis.connection.Connection | None
    _ahead_client: redis.Redis | None  # whose pool `_ahead` came from
    _ahead_sent: bool
    _turn: int  # on a cluster, the stream the next read is for (one XREADGROUP reads one slot)
    _home: dict[str, str]  # on a cluster, the primary (host:port) each stream was on when it was taken
    _busy_at: float = 0.0  # time.monotonic() of the last read that brought entries
    stats: RunnerStats

    def handle(self, stream: str, entries: Sequence[RawEntry]) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        raise NotImplementedError

    def quarantine(self, stream: str, entries: Sequence[RawEntry], reason: str) -> None:
        raise NotImplementedError

    def _without_worn_out(self, stream: str, entries: Sequence[RawEntry]) -> Sequence[RawEntry]:
        """Redelivered entries, less those delivered more than max_deliveries times: quarantined instead."""
        limit = self.settings.max_deliveries
        pending = self.node(stream).xpending_range(
            stream,
            self.settings.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries),
            consumername=self.settings.consumer,
        )
        worn = {
            as_text(item["message_id"]).encode(): int(item["times_delivered"])  # type: ignore[arg-type]
            for item in pending
            if int(item["times_delivered"]) > limit
        }
        if not worn:
            return entries
        worn_out = [entry for entry in entries if entry[0] in worn]
        log.error(
            "%d entries of %s were delivered more than %d times without being processed: quarantined",
            len(worn_out),
            stream,
            limit,
        )
        self.quarantine(
            stream,
            worn_out,
            f"poison: delivered {max(worn.values())} times without being processed "
            "(its consumers died on it, TICKERDASH_MAX_DELIVERIES); kept here with "
            "its fields: report it as a bug",
        )
        return [entry for entry in entries if entry[0] not in worn]

    def drop_stream(self, stream: str) -> None:
        raise NotImplementedError

    def drop_moved_streams(self) -> None:
        """Drop the streams whose slot another primary serves since they were taken (a failover, a resharding),
        for their consumer to take them again from what the new primary holds.

        Replication is asynchronous: a promoted replica may lack the last transactions its primary confirmed,
        so a state in memory may be ahead of what Redis holds. It is rebuilt from the new primary's checkpoint
        and progress marker, which its effects always match (each batch's transaction replicates whole).
        """
        for stream in list(self.streams):
            now = node_name(self.client, stream)
            home = self._home.setdefault(stream, now)
            if now != home:
                log.warning(
                    "%s moved from %s to %s (a failover or a slot move): its state is rebuilt there", stream, home, now
                )
                del self._home[stream]
                self.drop_stream(stream)

    def check_gaps(self) -> int:
        """Count, record and log the entries of our streams that were trimmed or deleted before our group read
        them (an operator's XTRIM, an outside producer's MAXLEN); returns how many were newly found."""
        self._last_gap_check = time.monotonic()
        found = 0
        for stream in list(self.streams):
            missed, total = record_missed(self.node(stream), self.keys, self.settings.group, stream)
            if missed:
                log.warning(
                    "lost %s entries of %s: trimmed or deleted before group %s read them (%s lost in all)",
                    f"{missed:,}",
                    stream,
                    self.settings.group,
                    f"{total:,}",
                )
                found += missed
        return found

    def read_pending(self) -> int:
        """Process this consumer's own pending entries (left by an earlier life under the same name)."""
        done = 0
        for stream in list(self.streams):
            start = "0-0"
            while not self.stop.is_set() and stream in self.streams:
                response = self.raw_node(stream).execute_command(
                    "XREADGROUP",
                    "GROUP",
                    self.settings.group,
                    self.settings.consumer,
                    "COUNT",
                    self._count,
                    "STREAMS",
                    stream,
                    start,
                )
                entries = [e for _, es in stream_items(response) for e in es]
                if not entries:
                    break
                start = entries[-1][0].decode()
                done += len(entries)
                fresh = self._without_worn_out(stream, entries)
                if fresh:
                    self.handle(stream, fresh)
        return done

    def claim_stale(self, streams: Sequence[str] | None = None, min_idle_ms: int | None = None) -> int:
        """Take over and process entries other consumers left pending for longer than claim_idle_ms."""
        self._last_claim = time.monotonic()
        idle = self.settings.claim_idle_ms if min_idle_ms is None else min_idle_ms
        done = 0
        for stream in list(self.streams if streams is None else streams):
            cursor = "0-0"
            while not self.stop.is_set():
                next_cursor, entries, *deleted = self.raw_node(stream).execute_command(
                    "XAUTOCLAIM",
                    stream,
                    self.settings.group,
                    self.settings.consumer,
                    idle,
                    cursor,
                    "COUNT",
                    self._count,
                )
                if deleted and deleted[0]:  # Redis 7 drops trimmed ids from the PEL itself: record them
                    lost = [
                        Rejected(d.decode(), {}, "trimmed: entry deleted before it was processed") for d in deleted[0]
                    ]
                    pipe = self.node(stream).pipeline(transaction=True)
                    add_rejected(pipe, self.keys.deadletter_of(stream), lost, f"{self.source}:{stream}")
                    pipe.execute()
                if entries:
                    log.warning("reclaimed %d pending entries of %s", len(entries), stream)
                    done += len(entries)
                    fresh = self._without_worn_out(stream, entries)
                    if fresh:
                        self.handle(stream, fresh)
                    if stream not in self.streams:
                        break
                cursor = next_cursor.decode() if isinstance(next_cursor, bytes) else str(next_cursor)
                if cursor == "0-0":
                    break
        self.stats.reclaimed += done
        return done

    def read_new(self) -> int:
        """Process new entries of every stream (blocking for them when none is there); returns entries handled.

        Whenever a read brings entries, the next read is sent before they are handled, so that Redis
        prepares it meanwhile (read-ahead); its entries are handled by the next call.
        """
        if not self.streams:  # nothing owned right now (a standby worker): wait, then let housekeeping retry
            self._take_ahead()  # what was read ahead is no longer ours: pending, for the streams' new owners
            self.stop.wait(self.settings.block_ms / 1000)
            return 0
        response = self._take_ahead()
        if not any(entries for _, entries in stream_items(response)):
            self.settle()  # nothing to compute meanwhile: confirm the last batch before waiting for entries
            if not self.streams:
                return 0
            response = self._read_round() if is_cluster(self.client) else self._read(self.streams, block=True)
        return self._handle_response(response, read_ahead=True)

    def _read(self, streams: list[str], *, block: bool, block_ms: int | None = None) -> Any:
        """One XREADGROUP of new entries (on the primary that holds the streams' slot)."""
        command = self._read_new_command(streams, block=block, block_ms=block_ms)
        return self.raw_node(streams[0]).execute_command(*command)

    def _read_round(self) -> Any:
        """On a cluster, where one XREADGROUP reads one partition's slot: read each stream in turn without
        blocking until one has entries; when none has, block on the next one for a share of block_ms, at
        most ACTIVE_BLOCK_MS while entries came within the last second (what arrives meanwhile on another
        partition waits that long at most)."""
        for _ in range(len(self.streams)):
            stream = self._next_stream()
            response = self._read([stream], block=False)
            if any(entries for _, entries in stream_items(response)):
                return response
        share = max(1, self.settings.block_ms // len(self.streams))
        if time.monotonic() - self._busy_at < 1.0:
            share = min(share, ACTIVE_BLOCK_MS)
        return self._read([self._next_stream()], block=True, block_ms=share)

    def _next_stream(self) -> str:
        """The stream whose turn it is to be read (on a cluster); the turn moves on."""
        self._turn = (self._turn + 1) % len(self.streams)
        return self.streams[self._turn]

    def _read_new_command(self, streams: list[str], *, block: bool, block_ms: int | None = None) -> list[Any]:
        """XREADGROUP of new entries on `streams` (blocking up to block_ms for them, or not at all)."""
        blocking = ["BLOCK", block_ms or self.settings.block_ms] if block else []
        return [
            "XREADGROUP",
            "GROUP",
            self.settings.group,
            self.settings.consumer,
            "COUNT",
            self._count,
            *blocking,
            "STREAMS",
            *streams,
            *([">"] * len(streams)),
        ]

    def _handle_response(self, response: Any, read_ahead: bool = False) -> int:
        items = [(stream, entries) for stream, entries in stream_items(response) if entries]
        if items:
            self._busy_at = time.monotonic()
        if items and read_ahead and not self.stop.is_set():
            self._send_ahead()
        done = 0
        for stream, entries in items:
            if stream in self.streams:  # a stream dropped since the read: its entries stay pending for the new owner
                self.handle(stream, entries)
                done += len(entries)
        return done

    def _send_ahead(self) -> None:
        """Send the next (non-blocking) XREADGROUP of new entries without waiting for its reply (on a cluster,
        of the next stream's)."""
        streams = [self._next_stream()] if is_cluster(self.client) else self.streams
        raw = self.raw_node(streams[0])
        if self._ahead is not None and self._ahead_client is not raw:  # another primary: its reply was read
            release_connection(self._ahead_client or raw, self._ahead)
            self._ahead = None
        if self._ahead is None:
            self._ahead, self._ahead_client = take_connection(raw), raw
        try:
            send_command(self._ahead, self._read_new_command(streams, block=False))
        except BaseException:
            self._discard_ahead()
            raise
        self._ahead_sent = True

    def _take_ahead(self) -> Any:
        """The reply of the read sent ahead (None if none was sent)."""
        if not self._ahead_sent or self._ahead is None:
            return None
        self._ahead_sent = False
        try:
            return read_reply(self._ahead)
        except BaseException:
            self._discard_ahead()
            raise

    def _discard_ahead(self) -> None:
        """Drop the read-ahead connection with any unread reply: its entries stay pending for this consumer
        (`read_pending` handles them after a reconnect; another consumer claims them once they are stale)."""
        if self._ahead is not None and self._ahead_client is not None:
            release_connection(self._ahead_client, self._ahead, close=True)
        self._ahead = self._ahead_client = None
        self._ahead_sent = False

    def _finish_ahead(self) -> None:
        """At the end of the run: handle the entries read ahead (a batch in hand), then give the connection back."""
        try:
            if self._ahead_sent:
                self._handle_response(self._take_ahead())
            self.settle()
        except UNAVAILABLE as exc:
            log.warning("redis unavailable (%s): entries read ahead stay pending", exc)
        finally:
            if self._ahead is not None and self._ahead_client is not None:
                release_connection(self._ahead_client, self._ahead)
            self._ahead = self._ahead_client = None
