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
ahead (`on_lost`, `on_write_failed`), and a consumer that must see only committed state (to
checkpoint it, say) calls `settle()` first.

Nothing an entry holds stops the runner: decoding refuses what breaks the rules, and should decoding or
processing a batch raise all the same, the consumer rebuilds the stream's state (`on_failed`), the batch is
handled again in halves down to the one entry that fails, and that entry is quarantined: dead-lettered
with its fields and the error, and acknowledged (`on_quarantine` lets the consumer note it, e.g. so that a
replay skips it). An entry delivered `max_deliveries` times without being acknowledged (its consumers died
on it) is quarantined when it is delivered again, unapplied.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
from redis.exceptions import ExecAbortError

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import (
    Decoded,
    RawEntry,
    Rejected,
    as_text,
    decode_entries,
    decode_rules,
    entry_fields,
)
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.producer import client_on_own_pool
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.retention import create_group, record_missed
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

log = logging.getLogger(__name__)

# process(stream, ticks, pipe): queue the batch's effects on `pipe` (a MULTI/EXEC transaction).
ProcessFn = Callable[[str, TickBatch, redis.client.Pipeline], None]
# guard(stream, first_id, pipe): before MULTI, WATCH whatever fences the batch whose first entry is
# `first_id` (e.g. a partition lease) and raise OwnershipLost if the stream is no longer ours, or
# OutOfOrder if the batch may not be applied yet; a WATCHed key that changes aborts the transaction.
GuardFn = Callable[[str, bytes, redis.client.Pipeline], None]


OWNERSHIP_ONLY = b"0-0"  # a guard's first_id that no entry precedes: fence on the stream's ownership alone


class OwnershipLost(Exception):  # noqa: N818 - a signal, not an error: another consumer now owns the stream
    """The stream (partition) now belongs to another consumer: drop it, leave its entries pending."""


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


class OutOfOrder(OwnershipLost):
    """Entries before the batch were delivered but never applied (they are still pending): applying the batch
    would move the stream's progress past them. Handled like a lost ownership: the stream is dropped with its
    entries pending, for the consumer to rebuild its state and re-read them in ID order."""


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


def _raw(response: Any, **_: Any) -> Any:
    return response


def raw_client(client: redis.Redis) -> redis.Redis:
    """A client on the same pool that returns stream replies unparsed (flat field lists: faster)."""
    raw = redis.Redis(connection_pool=client.connection_pool)
    for command in ("XREADGROUP", "XAUTOCLAIM", "XRANGE"):
        raw.set_response_callback(command, _raw)
    return raw


def stream_items(response: Any) -> Iterator[tuple[str, Sequence[RawEntry]]]:
    """(stream, entries) pairs of a raw XREAD/XREADGROUP reply, RESP2 array or RESP3 map alike."""
    if not response:
        return
    pairs = response.items() if isinstance(response, dict) else response  # RESP3 map or RESP2 array
    for stream, entries in pairs:
        yield stream.decode() if isinstance(stream, bytes) else stream, entries


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


def ensure_groups(client: redis.Redis, streams: Sequence[str], group: str) -> None:
    """Create the consumer group on every stream (and the stream itself) unless it exists."""
    for stream in streams:
        create_group(client, stream, group)


class StopFlag:
    """Set by SIGTERM/SIGINT (or by code); the loop drains the batch in hand and exits."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: object) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def install(self) -> StopFlag:
        """Route SIGTERM and SIGINT here (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: draining the batch in hand, then stopping", signal.Signals(signum).name)
            self.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        return self


class StreamRunner:
    """Reads `streams` as one consumer of `settings.group` and applies `process` exactly once per entry."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        streams: Sequence[str],
        process: ProcessFn,
        *,
        source: str = "analytics",
        housekeeping: Callable[[], None] | None = None,
        stop: StopFlag | None = None,
        guard: GuardFn | None = None,
        on_lost: Callable[[str], None] | None = None,
        on_write_failed: Callable[[str], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_quarantine: Callable[[str, list[str], redis.client.Pipeline], None] | None = None,
        defer_commit: bool = False,
    ) -> None:
        # reads, claims and transactions on a pool of the runner's own that never re-sends a command (see
        # `no_silent_retries`): after a failed connection the runner re-reads its pending entries itself
        self.client = client_on_own_pool(client)
        self.raw = raw_client(self.client)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.streams = list(streams)
        self.process = process
        self.source = source
        self.housekeeping = housekeeping
        self.guard = guard
        self.on_lost = on_lost
        # called when a batch's transaction may not have been applied (the connection failed under it):
        # a consumer whose in-memory state already took the batch must rebuild it from Redis
        self.on_write_failed = on_write_failed
        # called when processing a batch raised, its stages having run part of it: rebuild the stream's state
        self.on_failed = on_failed
        # called with a quarantine's transaction: the consumer may note the entries (they were never applied)
        self.on_quarantine = on_quarantine
        self.rules = decode_rules(settings)
        self.stop = stop or StopFlag()
        self.stats = RunnerStats()
        self._count = min(settings.read_count, FIRST_READ_COUNT)  # grows once rows per entry are known
        self._last_claim = 0.0
        self._last_gap_check = 0.0
        # read-ahead: the connection on which the next XREADGROUP was sent while a batch was handled, its
        # reply not read yet (Redis builds it meanwhile: ~1 us per entry of its single thread)
        self._ahead: redis.connection.Connection | None = None
        self._ahead_sent = False
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
        if self.on_failed:
            self.on_failed(stream)
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
        pipe = self.client.pipeline(transaction=True)
        try:
            if self.guard:  # ownership only: quarantined entries move no progress, so earlier ones may be pending
                self.guard(stream, OWNERSHIP_ONLY, pipe)
            pipe.multi()
            add_rejected(pipe, self.keys.deadletter, rejected, f"{self.source}:{stream}")
            if self.on_quarantine:
                self.on_quarantine(stream, [eid.decode() for eid in ids], pipe)
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

    def _without_worn_out(self, stream: str, entries: Sequence[RawEntry]) -> Sequence[RawEntry]:
        """Redelivered entries, less those delivered more than max_deliveries times: quarantined instead."""
        limit = self.settings.max_deliveries
        pending = self.client.xpending_range(
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
            stream, self.client.pipeline(transaction=True), len(entries), len(decoded.ticks), len(rejected)
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
                if self.guard:
                    self.guard(stream, ids[0], pipe)
                self._send(batch)
                self._in_flight = batch
                return
            if self.guard:
                self.guard(stream, ids[0], pipe)
            pipe.multi()
            self._queue(batch, decoded.ticks, rejected, ids)
            with self._timing_transactions():
                pipe.execute()
        except (redis.WatchError, OwnershipLost) as exc:
            pipe.reset()
            self._ownership_lost(batch, exc)
            return
        except (redis.ConnectionError, redis.TimeoutError):
            self._abandon(batch)  # a transaction may be half sent on its connection
            if self.on_write_failed:
                self.on_write_failed(stream)
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
                self.process(batch.stream, ticks, batch.pipe)
        if rejected:
            add_rejected(batch.pipe, self.keys.deadletter, rejected, f"{self.source}:{batch.stream}")
        batch.pipe.xack(batch.stream, self.settings.group, *ids)

    def _send(self, batch: _Transaction) -> None:
        """Send MULTI, the queued commands and EXEC on the pipeline's connection, without reading the replies."""
        pipe = batch.pipe
        with self._timing_transactions():
            if pipe.scripts:
                pipe.load_scripts()
            if pipe.connection is None:
                pipe.connection = pipe.connection_pool.get_connection()
            commands = [("MULTI",), *(args for args, _ in pipe.command_stack), ("EXEC",)]
            pipe.connection.send_packed_command(pipe.connection.pack_commands(commands))

    def _confirm(self, batch: _Transaction) -> None:
        """Read the replies of a sent transaction; raise WatchError if it was not applied, or its first error."""
        pipe, connection = batch.pipe, batch.pipe.connection
        assert connection is not None
        errors: list[redis.ResponseError] = []
        for _ in range(len(pipe.command_stack) + 1):  # MULTI's OK, then QUEUED for each command
            try:
                pipe.parse_response(connection, "_")
            except redis.ResponseError as exc:
                errors.append(exc)
        try:
            replies = pipe.parse_response(connection, "_")
        except ExecAbortError:
            raise errors[0] if errors else ExecAbortError("transaction discarded") from None
        pipe.watching = False  # EXEC ends the WATCH
        if replies is None:
            raise redis.WatchError("Watched variable changed.")
        failed = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
        if errors or failed:
            raise (errors or failed)[0]

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
            if self.on_write_failed:  # (`handle` rebuilds the stream of a batch processed since, if any)
                self.on_write_failed(batch.stream)
            raise
        batch.pipe.reset()
        self._committed(batch)

    @staticmethod
    def _abandon(batch: _Transaction) -> None:
        """Give back a transaction's connection with its replies unread (closed: they would be read as the next
        command's)."""
        if batch.pipe.connection is not None:
            batch.pipe.connection.disconnect()
        batch.pipe.watching = False  # a closed connection watches nothing: no UNWATCH to send
        batch.pipe.reset()

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
        if self.on_lost:
            self.on_lost(stream)

    def add_stream(self, stream: str) -> None:
        """Start reading a stream (after its ownership was acquired and its state restored)."""
        if stream not in self.streams:
            self.streams.append(stream)
            self._last_gap_check = 0.0  # count what was trimmed before this group read it, before reading it

    def check_gaps(self) -> int:
        """Count, record and log the entries of our streams that were trimmed or deleted before our group read
        them (an operator's XTRIM, an outside producer's MAXLEN); returns how many were newly found."""
        self._last_gap_check = time.monotonic()
        found = 0
        for stream in list(self.streams):
            missed, total = record_missed(self.client, self.keys, self.settings.group, stream)
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
                response = self.raw.execute_command(
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
                next_cursor, entries, *deleted = self.raw.execute_command(
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
                    pipe = self.client.pipeline(transaction=True)
                    add_rejected(pipe, self.keys.deadletter, lost, f"{self.source}:{stream}")
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
            response = self.raw.execute_command(*self._read_new_command(block=True))
        return self._handle_response(response, read_ahead=True)

    def _read_new_command(self, *, block: bool) -> list[Any]:
        """XREADGROUP of new entries on every stream (blocking up to block_ms for them, or not at all)."""
        blocking = ["BLOCK", self.settings.block_ms] if block else []
        return [
            "XREADGROUP",
            "GROUP",
            self.settings.group,
            self.settings.consumer,
            "COUNT",
            self._count,
            *blocking,
            "STREAMS",
            *self.streams,
            *([">"] * len(self.streams)),
        ]

    def _handle_response(self, response: Any, read_ahead: bool = False) -> int:
        items = [(stream, entries) for stream, entries in stream_items(response) if entries]
        if items and read_ahead and not self.stop.is_set():
            self._send_ahead()
        done = 0
        for stream, entries in items:
            if stream in self.streams:  # a stream dropped since the read: its entries stay pending for the new owner
                self.handle(stream, entries)
                done += len(entries)
        return done

    def _send_ahead(self) -> None:
        """Send the next (non-blocking) XREADGROUP of new entries without waiting for its reply."""
        if self._ahead is None:
            self._ahead = self.raw.connection_pool.get_connection()
        try:
            self._ahead.send_command(*self._read_new_command(block=False))
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
            return self._ahead.read_response()
        except BaseException:
            self._discard_ahead()
            raise

    def _discard_ahead(self) -> None:
        """Drop the read-ahead connection with any unread reply: its entries stay pending for this consumer
        (`read_pending` handles them after a reconnect; another consumer claims them once they are stale)."""
        if self._ahead is not None:
            self._ahead.disconnect()
            self.raw.connection_pool.release(self._ahead)
        self._ahead = None
        self._ahead_sent = False

    def _finish_ahead(self) -> None:
        """At the end of the run: handle the entries read ahead (a batch in hand), then give the connection back."""
        try:
            if self._ahead_sent:
                self._handle_response(self._take_ahead())
            self.settle()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unavailable (%s): entries read ahead stay pending", exc)
        finally:
            if self._ahead is not None:
                self.raw.connection_pool.release(self._ahead)
                self._ahead = None

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
                        ensure_groups(self.client, self.streams, self.settings.group)
                        self.check_gaps()
                        self.read_pending()
                        self.claim_stale()
                        recovering = False
                    elif time.monotonic() - self._last_claim > max(self.settings.claim_idle_ms / 2000, 0.05):
                        self.claim_stale()
                if self.housekeeping:
                    self.housekeeping()  # with the GC on: whatever cycles the batches left are collected here
                if time.monotonic() - self._last_gap_check > GAP_CHECK_EVERY_S:
                    self.check_gaps()  # after housekeeping: a stream it added is checked before it is read
                with gc_paused():
                    handled = self.read_new()
                outage.recovered()
                idle = 0 if handled else idle + 1
                if max_idle_reads is not None and idle >= max_idle_reads:
                    break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._discard_ahead()
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    self.settle()  # a batch in flight is confirmed, or its stream rebuilt
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
