"""Consumer-group runner: reads tick streams in batches, hands them to a processing function, and
acknowledges each batch in the same MULTI/EXEC transaction as its effects, so that a consumer killed
at any point leaves either all of a batch's effects or none (and the entries stay pending).

While a batch is handled, the next read is already on its way (Redis spends ~1 us of its thread per
per-tick entry building a reply), and the cyclic GC is paused (the reply's many short-lived lists
would otherwise trigger full passes over every long-lived object).

With `defer_commit`, a batch's transaction is sent and its replies are read only once the next batch
has been processed (or before the runner waits for entries): Redis applies one batch on its core while
the consumer computes the next on its own. The consumer's in-memory state is then one batch ahead of
what Redis confirmed, so a failure that the replies report later drops every stream whose state ran
ahead (the consumer's `dropped`), and a consumer that must see only committed state (to checkpoint it,
say) calls `settle()` first. What the runner calls on its consumer, and when, is `ingest.consumer.Consumer`.

Nothing an entry holds stops the runner: decoding refuses what breaks the rules, and should decoding or
processing a batch raise all the same, the consumer rebuilds the stream's state (`rebuild`), the batch is
handled again in halves down to the one entry that fails, and that entry is quarantined: dead-lettered
with its fields and the error, and acknowledged (`quarantined` lets the consumer note it, e.g. so that a
replay skips it). An entry delivered `max_deliveries` times without being acknowledged (its consumers died
on it) is quarantined when it is delivered again, unapplied.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis

from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis, node_name, refresh_slot_map
from tickerdash.ingest.consumer import OWNERSHIP_ONLY, Consumer, FunctionConsumer, OutOfOrder, OwnershipLost, ProcessFn
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import (
    Decoded,
    RawEntry,
    Rejected,
    decode_entries,
    decode_rules,
    entry_fields,
)
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.group_reads import GroupReads, RunnerStats, ensure_groups, gc_paused
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.redis_adapter import (
    PerNode,
    abandon_transaction,
    client_on_own_pool,
    confirm_transaction,
    execute_transaction,
    raw_client,
    send_transaction,
    stream_items,
)
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stop_flag import StopFlag
from tickerdash.ingest.ticks import TickBatch

# re-exported: what callers of the runner use with it
__all__ = [
    "OWNERSHIP_ONLY",
    "Consumer",
    "FunctionConsumer",
    "OutOfOrder",
    "OwnershipLost",
    "RunnerStats",
    "StopFlag",
    "StreamRunner",
    "ensure_groups",
    "gc_paused",
    "raw_client",
    "stream_items",
]

log = logging.getLogger(__name__)


class _ApplyFailed(Exception):  # noqa: N818 - carries the error that decoding or processing a batch raised
    """Decoding or processing a batch raised: some entry of it cannot be applied (see `StreamRunner.handle`)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


@contextlib.contextmanager
def _applying() -> Iterator[None]:
    """Turn an error of the consumer's own code into _ApplyFailed; Redis errors and signals pass as they are."""
    try:
        yield
    except (redis.RedisError, OwnershipLost, _ApplyFailed):
        raise
    except Exception as exc:
        raise _ApplyFailed(exc) from exc


TARGET_ROWS_PER_READ = 100_000  # bounds memory when entries are batches of thousands of ticks
GAP_CHECK_EVERY_S = 1.0  # how often the runner counts entries trimmed before its group read them
FIRST_READ_COUNT = 16


@dataclass(slots=True)
class _Transaction:
    """One batch's transaction: what it holds, for the stats once Redis confirms it."""

    stream: str
    pipe: redis.client.Pipeline
    entries: int
    ticks: int
    rejected: int


class StreamRunner(GroupReads):
    """Reads `streams` as one consumer of `settings.group` and applies its consumer exactly once per entry.

    `consumer` is a `Consumer`, or a plain process function (`FunctionConsumer`). The consumer may call
    back `settle()` at any time, and `add_stream`, `drop_stream` and `claim_stale` from `housekeeping`.
    """

    def __init__(
        self,
        client: AnyRedis,
        settings: Settings,
        streams: Sequence[str],
        consumer: Consumer | ProcessFn,
        *,
        source: str = "analytics",
        stop: StopFlag | None = None,
        defer_commit: bool = False,
    ) -> None:
        # reads, claims and transactions on a pool of the runner's own (a cluster's node clients) that never
        # re-sends a command (`no_silent_retries`): after a failed connection it re-reads its pending entries
        self.client = client if isinstance(client, redis.RedisCluster) else client_on_own_pool(client)
        self.node = PerNode(self.client, lambda node: node)
        self.raw_node = PerNode(self.client, raw_client)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.streams = list(streams)
        self.consumer: Consumer = FunctionConsumer(consumer) if callable(consumer) else consumer
        self.source = source
        self.rules = decode_rules(settings)
        self.stop = stop or StopFlag()
        self.stats = RunnerStats()
        self._count = min(settings.read_count, FIRST_READ_COUNT)  # grows once rows per entry are known
        self._last_claim = 0.0
        self._last_gap_check = 0.0
        # read-ahead: the connection on which the next XREADGROUP was sent while a batch was handled, its
        # reply not read yet (Redis builds it meanwhile: ~1 us per entry of its single thread)
        self._ahead: redis.connection.Connection | None = None
        self._ahead_client: redis.Redis | None = None
        self._ahead_sent = False
        self._turn = 0
        self._home: dict[str, str] = {}
        self.defer_commit = defer_commit
        self._in_flight: _Transaction | None = None  # sent, its replies not read yet (defer_commit)

    # --- one step ---------------------------------------------------------------------------

    def handle(self, stream: str, entries: Sequence[RawEntry]) -> None:
        """Decode, process and acknowledge one batch of entries of one stream, atomically; an entry that
        cannot be applied is found (by halving the batch) and quarantined."""
        try:
            self._handle_batch(stream, entries)
        except _ApplyFailed as failure:
            self._isolate(stream, entries, failure)

    def _isolate(self, stream: str, entries: Sequence[RawEntry], failure: _ApplyFailed) -> None:
        """Handle a failed batch again in halves, each on its own, down to the entry that fails: quarantined."""
        self.settle()  # the state to rebuild is what Redis confirmed
        if stream not in self.streams:
            return  # its entries stay pending for the stream's next owner
        self.consumer.rebuild(stream)
        if len(entries) == 1:
            log.error("entry %s of %s cannot be applied (%s): quarantined", entries[0][0].decode(), stream, failure)
            self.quarantine(
                stream,
                entries,
                f"error: the entry could not be applied ({str(failure)[:300]}); "
                "it is kept here with its fields: report it as a bug",
            )
            return
        log.warning("a batch of %d entries of %s failed (%s): handling it in halves", len(entries), stream, failure)
        half = len(entries) // 2
        self.handle(stream, entries[:half])
        if stream in self.streams:
            self.handle(stream, entries[half:])

    def quarantine(self, stream: str, entries: Sequence[RawEntry], reason: str) -> None:
        """Dead-letter entries unapplied (their fields and `reason`) and acknowledge them, in one transaction."""
        self.settle()
        if stream not in self.streams:
            return
        ids = [eid for eid, _ in entries]
        rejected = [Rejected(eid.decode(), entry_fields(flat), reason) for eid, flat in entries]
        pipe = self.node(stream).pipeline(transaction=True)
        try:
            # ownership only: quarantined entries move no progress, so earlier ones may be pending
            self.consumer.fence(stream, OWNERSHIP_ONLY, pipe)
            pipe.multi()
            add_rejected(pipe, self.keys.deadletter_of(stream), rejected, f"{self.source}:{stream}")
            self.consumer.quarantined(stream, [eid.decode() for eid in ids], pipe)
            pipe.xack(stream, self.settings.group, *ids)
            pipe.execute()
        except (redis.WatchError, OwnershipLost):
            log.warning("lost ownership of %s: its %d entries stay pending for the new owner", stream, len(ids))
            self.drop_stream(stream)
            return
        finally:
            pipe.reset()
        self.stats.quarantined += len(ids)
        self.stats.rejected += len(ids)
        self.stats.entries += len(ids)

    def _handle_batch(self, stream: str, entries: Sequence[RawEntry]) -> None:
        ids = [eid for eid, _ in entries]
        gone = [eid for eid, fields in entries if fields is None]  # trimmed while pending (Redis 6.2)
        alive = [(eid, fields) for eid, fields in entries if fields is not None] if gone else entries
        with _applying():
            decoded: Decoded = decode_entries(alive, self.rules)
        rejected = list(decoded.rejected)
        rejected += [Rejected(eid.decode(), {}, "trimmed: entry deleted before it was processed") for eid in gone]
        if alive:
            rows_per_entry = max(1, (len(decoded.ticks) + len(rejected)) // len(alive))
            self._count = max(1, min(self.settings.read_count, TARGET_ROWS_PER_READ // rows_per_entry))
        batch = _Transaction(
            stream, self.node(stream).pipeline(transaction=True), len(entries), len(decoded.ticks), len(rejected)
        )
        pipe = batch.pipe
        try:
            if self.defer_commit:
                # processed while Redis applies the previous batch; fenced only after that one's replies,
                # as its PEXPIRE of a lease would otherwise trip this batch's WATCH of it
                self._queue(batch, decoded.ticks, rejected, ids)
                self.settle()
                if stream not in self.streams:  # the previous batch's failure dropped it: this one stays pending
                    pipe.reset()
                    return
                self.consumer.fence(stream, ids[0], pipe)
                self._send(batch)
                self._in_flight = batch
                return
            self.consumer.fence(stream, ids[0], pipe)
            pipe.multi()
            self._queue(batch, decoded.ticks, rejected, ids)
            with self._timing_transactions():
                execute_transaction(pipe)  # (redis-py's `execute` cannot send commands a consumer packed itself)
        except (redis.WatchError, OwnershipLost) as exc:
            pipe.reset()
            self._ownership_lost(batch, exc)
            return
        except UNAVAILABLE:  # (on a cluster also: redirected, not applied)
            self._abandon(batch)  # a transaction may be half sent on its connection
            self._write_failed(stream)
            raise
        except BaseException:
            self._abandon(batch)
            raise
        pipe.reset()
        self._committed(batch)

    @contextlib.contextmanager
    def _timing_transactions(self) -> Iterator[None]:
        """Add the time of the block (sending a transaction, or waiting for its replies) to the stats."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stats.transactions_s += time.perf_counter() - started

    def _queue(self, batch: _Transaction, ticks: TickBatch, rejected: list[Rejected], ids: list[bytes]) -> None:
        """Queue the batch's effects, its dead letters and its acknowledgement on its transaction."""
        if len(ticks):
            with _applying():
                self.consumer.process(batch.stream, ticks, batch.pipe)
        if rejected:
            add_rejected(batch.pipe, self.keys.deadletter_of(batch.stream), rejected, f"{self.source}:{batch.stream}")
        batch.pipe.xack(batch.stream, self.settings.group, *ids)

    def _send(self, batch: _Transaction) -> None:
        """Send the batch's transaction without reading its replies (`settle` reads them)."""
        with self._timing_transactions():
            send_transaction(batch.pipe, background=True)  # written to the socket while the next batch computes

    def _confirm(self, batch: _Transaction) -> None:
        """Read the replies of a sent transaction; raise WatchError if it was not applied, or its first error."""
        confirm_transaction(batch.pipe)

    def settle(self) -> None:
        """Read the replies of the transaction in flight (defer_commit): count it, or drop its stream."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return
        try:
            with self._timing_transactions():
                self._confirm(batch)
        except redis.WatchError:
            batch.pipe.reset()
            self._ownership_lost(batch)
            return
        except BaseException:  # the connection failed (or we were interrupted) with the outcome unknown
            self._abandon(batch)
            self._write_failed(batch.stream)  # (`handle` rebuilds the stream of a batch processed since, if any)
            raise
        batch.pipe.reset()
        self._committed(batch)

    @staticmethod
    def _abandon(batch: _Transaction) -> None:
        abandon_transaction(batch.pipe)

    def _write_failed(self, stream: str) -> None:
        """A batch's transaction may or may not have been applied (the connection failed under it): a consumer
        whose state took the batch has the stream dropped, to rebuild it from Redis before it is read again."""
        if self.consumer.keeps_state:
            log.warning("write to Redis failed for %s: its state will be restored from the checkpoint", stream)
            self.drop_stream(stream)

    def _ownership_lost(self, batch: _Transaction, reason: Exception | None = None) -> None:
        if isinstance(reason, OutOfOrder):
            log.warning(
                "%s: entries before this batch of %d are still unapplied: dropped for a rebuild, its "
                "entries stay pending",
                batch.stream,
                batch.entries,
            )
        else:
            log.warning(
                "lost ownership of %s: its %d entries stay pending for the new owner", batch.stream, batch.entries
            )
        self.drop_stream(batch.stream)

    def _committed(self, batch: _Transaction) -> None:
        self.stats.entries += batch.entries
        self.stats.ticks += batch.ticks
        self.stats.rejected += batch.rejected
        self.stats.batches += 1
        self.stats.last_batch_at = time.monotonic()

    def drop_stream(self, stream: str) -> None:
        """Stop reading a stream (its ownership moved elsewhere)."""
        if stream in self.streams:
            self.streams.remove(stream)
        self.consumer.dropped(stream)

    def add_stream(self, stream: str) -> None:
        """Start reading a stream (after its ownership was acquired and its state restored)."""
        if stream not in self.streams:
            self.streams.append(stream)
            self._home[stream] = node_name(self.client, stream)
            self._last_gap_check = 0.0  # count what was trimmed before this group read it, before reading it

    # --- the loop ---------------------------------------------------------------------------

    def run(self, max_idle_reads: int | None = None) -> RunnerStats:
        """Run until stopped (or, for tests and benchmarks, until `max_idle_reads` empty reads in a row)."""
        outage = Outage(log)
        recovering = True
        idle = 0
        while not self.stop.is_set():
            try:
                with gc_paused():
                    if recovering:
                        self.drop_moved_streams()
                        ensure_groups(self.client, self.streams, self.settings.group)
                        self.check_gaps()
                        self.read_pending()
                        self.claim_stale()
                        recovering = False
                    elif time.monotonic() - self._last_claim > max(self.settings.claim_idle_ms / 2000, 0.05):
                        self.claim_stale()
                self.consumer.housekeeping()  # with the GC on: whatever cycles the batches left are collected here
                if time.monotonic() - self._last_gap_check > GAP_CHECK_EVERY_S:
                    self.check_gaps()  # after housekeeping: a stream it added is checked before it is read
                with gc_paused():
                    handled = self.read_new()
                outage.recovered()
                idle = 0 if handled else idle + 1
                if max_idle_reads is not None and idle >= max_idle_reads:
                    break
            except UNAVAILABLE as exc:  # an outage, a failover
                self._discard_ahead()
                with contextlib.suppress(*UNAVAILABLE):
                    self.settle()  # a batch in flight is confirmed, or its stream rebuilt
                refresh_slot_map(self.client)  # a partition's slot may be served by a promoted replica now
                self.stats.reconnects += 1
                wait_out(outage, exc, self.stop)
                recovering = True  # whatever was read but not acknowledged is still pending for us
            except BaseException:  # not ours to handle: leave what was read ahead pending, as after a crash
                self._discard_ahead()
                with contextlib.suppress(redis.RedisError):
                    self.settle()  # what was sent is confirmed (or its stream dropped) before the caller goes on
                raise
        with gc_paused():
            self._finish_ahead()
        log.info(
            "stopped: %d ticks from %d entries, %d rejected", self.stats.ticks, self.stats.entries, self.stats.rejected
        )
        return self.stats
