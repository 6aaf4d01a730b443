"""Producer: publishes trades onto the tick streams, routed by symbol, pipelined, with retention that never
drops an entry a consumer group still needs (ingest/retention.py).

A producer rides out a Redis restart without losing or repeating an entry: each entry it writes carries
its producer id and a sequence number (`PRODUCER_FIELD`, `SEQ_FIELD`), and when a connection dies under a
pipeline, the producer waits for Redis, reads back the streams' tails to find which of its entries
landed, and sends only the rest. Its clients never retry a command on their own (a resent XADD that
Redis had applied would be a duplicate).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import PRODUCER_FIELD, SEQ_FIELD, encode_batch, encode_ticks, iter_chunks
from tickerdash.ingest.reconnect import REDIS_DOWN, Outage, wait_out
from tickerdash.ingest.redis_adapter import bulk_client, client_on_own_pool
from tickerdash.ingest.retention import Retention
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 1_000  # commands per round trip: big enough to hide latency, small enough for memory
TAIL_PAGE = 256  # most entries per XREVRANGE when looking for what landed before a connection died
CLOCK_MARGIN_MS = 1_000
PRODUCER_KEY, SEQ_KEY = PRODUCER_FIELD.encode(), SEQ_FIELD.encode()  # as they come back from Redis
Entry = tuple[str, dict[str, Any]]  # (stream, fields) of one XADD
Stamped = tuple[str, dict[str, Any], int]  # (stream, fields, sequence number)


def new_producer_id() -> str:
    """A name no other producer uses: host, pid and random bits (a restarted process gets a new one)."""
    return f"{os.uname().nodename[:24]}-{os.getpid()}-{os.urandom(4).hex()}"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one publish call wrote."""

    ticks: int
    entries: int


class Producer:
    """Writes `TickBatch`es as batch entries (fast) or per-tick entries (interoperable)."""

    def __init__(self, client: redis.Redis, settings: Settings, *, producer_id: str | None = None) -> None:
        self.client = client
        # both write on pools of their own that never re-send an XADD (whatever the caller's client does)
        self.bulk = bulk_client(client)
        self.plain = client_on_own_pool(client, decode_responses=False)  # hiredis packs faster
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.retention = Retention(client, settings, self.keys)
        self.producer_id = producer_id or new_producer_id()
        self.seq = 0  # sequence number of the last entry handed to Redis
        self.last_landed: dict[str, str] = {}  # stream -> ID of this producer's newest entry Redis confirmed
        self.outage = Outage(log)

    def close(self) -> None:
        """Close the connections of the producer's own pools (the caller's client stays open)."""
        self.bulk.connection_pool.disconnect()
        self.plain.connection_pool.disconnect()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def split_by_partition(self, batch: TickBatch) -> list[tuple[int, TickBatch]]:
        """The batch's trades grouped by their partition, keeping each symbol's order."""
        if self.keys.partitions == 1:
            return [(0, batch)] if len(batch) else []
        part_of_symbol = np.array([self.keys.partition_of(s) for s in batch.symbols], dtype=np.int32)
        row_part = part_of_symbol[batch.symbol_idx] if len(batch.symbols) else np.zeros(0, np.int32)
        order = np.argsort(row_part, kind="stable")
        bounds = np.searchsorted(row_part[order], np.arange(self.keys.partitions + 1))
        return [
            (p, batch.take(order[bounds[p] : bounds[p + 1]]))
            for p in range(self.keys.partitions)
            if bounds[p + 1] > bounds[p]
        ]

    def publish(self, batch: TickBatch, *, per_tick: bool = False, clock_ms: int | None = None) -> PublishResult:
        """Write every trade of `batch`; entries per partition keep the batch's order.

        Waits while the streams' readers are a cap behind (backpressure). `clock_ms` declares the producer's
        event clock on every entry (a simulator running ahead of the wall clock): readers check the trades'
        `ts` against it instead of the entry IDs' time.
        """
        client, depth = (self.plain, PIPELINE_DEPTH) if per_tick else (self.bulk, PIPELINE_DEPTH // 10)
        depth = self.retention.most_per_write(depth)
        entries = 0
        queued: list[Entry] = []
        for partition, part in self.split_by_partition(batch):
            stream = self.keys.ticks(partition)
            if per_tick:
                pieces: Iterable[dict[str, Any]] = encode_ticks(part, clock_ms)
            else:
                pieces = (encode_batch(chunk, clock_ms) for chunk in iter_chunks(part, self.settings.batch_rows))
            for fields in pieces:
                queued.append((stream, fields))
                if len(queued) >= depth:
                    entries += self.send(queued, client)
                    queued = []
        if queued:
            entries += self.send(queued, client)
        return PublishResult(ticks=len(batch), entries=entries)

    def send(self, entries: Iterable[Entry], client: redis.Redis | None = None, *, trim: bool = True) -> int:
        """XADD the entries (their field dicts get this producer's id and next sequence number) in one
        pipeline, with the tick streams' retention unless not `trim`; through a Redis outage, wait and
        resend exactly those that did not land. Returns their count."""
        client = client or self.plain
        stamped: list[Stamped] = []
        for stream, fields in entries:
            self.seq += 1
            fields[PRODUCER_FIELD] = self.producer_id
            fields[SEQ_FIELD] = self.seq
            stamped.append((stream, fields, self.seq))
        todo, unsure, sent_at = stamped, False, time.monotonic()
        while todo:
            pipe = client.pipeline(transaction=False)
            try:
                if unsure:  # the last pipeline died: some of its entries may be on the streams already
                    todo, unsure = self._not_landed(todo, client, sent_at), False
                    if not todo:
                        break
                if trim:  # trims what every group has read; waits while the readers are a cap behind
                    incoming: dict[str, int] = {}
                    for stream, _, _ in todo:
                        incoming[stream] = incoming.get(stream, 0) + 1
                    self.retention.make_room(incoming)
                for stream, fields, _ in todo:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                ids = pipe.execute()
            except REDIS_DOWN as exc:
                pipe.reset()
                wait_out(self.outage, exc)
                unsure = True
                continue
            for (stream, _, _), entry_id in zip(todo, ids, strict=True):
                self.last_landed[stream] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            todo = []
        self.outage.recovered()
        return len(stamped)

    def _not_landed(self, sent: list[Stamped], client: redis.Redis, sent_at: float) -> list[Stamped]:
        """The entries of `sent` (first sent at `sent_at`, monotonic) that are not on their streams, found by
        reading the streams back from their tails (each stream's landed entries are a prefix of those sent
        to it: Redis applies a pipeline in order)."""
        seconds, micros = client.time()
        # an entry added with `*` gets an ID no older than the server's clock when it arrived
        oldest_ms = seconds * 1000 + micros // 1000 - int((time.monotonic() - sent_at) * 1000) - CLOCK_MARGIN_MS
        landed = {
            stream: self._last_seq_on(stream, client, max(oldest_ms, 0))
            for stream in dict.fromkeys(stream for stream, _, _ in sent)
        }
        rest = [entry for entry in sent if entry[2] > landed[entry[0]]]
        log.info(
            "%d of %d entries had landed before the connection died; sending the other %d",
            len(sent) - len(rest),
            len(sent),
            len(rest),
        )
        return rest

    def _last_seq_on(self, stream: str, client: redis.Redis, oldest_ms: int) -> int:
        """The sequence number of this producer's newest entry on `stream` newer than both `oldest_ms` and
        the last one Redis confirmed to it (0: none)."""
        confirmed = self.last_landed.get(stream)
        if confirmed is not None and int(confirmed.split("-", 1)[0]) >= oldest_ms:
            oldest = f"({confirmed}"
        else:
            oldest = f"{oldest_ms}-0"
        newest, count = "+", 4  # small pages first: batch entries are large, and ours is usually the last
        mine = self.producer_id.encode()
        while True:
            page: Any = client.xrevrange(stream, max=newest, min=oldest, count=count)
            for _, fields in page:
                if fields.get(PRODUCER_KEY) == mine:
                    return int(fields[SEQ_KEY])
            if len(page) < count:
                return 0
            newest = f"({page[-1][0].decode()}"
            count = min(count * 4, TAIL_PAGE)
