"""Producer: publishes trades onto the tick streams, routed by symbol, pipelined, with retention that never
drops an entry a consumer group still needs (ingest/retention.py).

A producer rides out a Redis restart without losing or repeating an entry: each entry it writes carries
its producer id and a sequence number (`PRODUCER_FIELD`, `SEQ_FIELD`), and when a connection dies under a
pipeline, the producer waits for Redis, reads back the streams' tails to find which of its entries
landed, and sends only the rest. Its clients never retry a command on their own (a resent XADD that
Redis had applied would be a duplicate).

On a Redis Cluster each pipeline goes to one node: the entries are grouped by the primary that holds
their stream's slot. A redirect (MOVED after a resharding, CLUSTERDOWN or READONLY during a failover) is
handled like a dropped connection: the slot map is read again and the tails are read back from the
streams' current nodes, so what landed is never sent twice and what did not is sent there. Where the
primaries have replicas, a pipeline counts as written only once a replica holds it (WAIT): replication is
asynchronous, and a primary that dies takes with it what its promoted replica had not received.
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

from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis, by_node, is_cluster, refresh_slot_map
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import PRODUCER_FIELD, SEQ_FIELD, encode_batch, encode_ticks, iter_chunks
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.redis_adapter import PerNode, bulk_client, client_on_own_pool
from tickerdash.ingest.retention import Retention
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 1_000  # commands per round trip: big enough to hide latency, small enough for memory
TAIL_PAGE = 256  # most entries per XREVRANGE when looking for what landed before a connection died
CLOCK_MARGIN_MS = 1_000
REPLICA_WAIT_MS = 1_000  # a WAIT for a replica to hold a pipeline's entries, repeated until one does
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

    def __init__(self, client: AnyRedis, settings: Settings, *, producer_id: str | None = None) -> None:
        self.client = client
        # writers on pools of their own that never re-send an XADD (whatever the caller's client does), one
        # pair per node: `bulk` packs large values without copying them, `plain` is hiredis's (faster packing)
        self._bulk = PerNode(client, bulk_client)
        self._plain = PerNode(client, lambda node: client_on_own_pool(node, decode_responses=False))
        self._replicas: dict[int, int] = {}  # id of a writer -> replicas its node has connected (on a cluster)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.retention = Retention(client, settings, self.keys)
        self.producer_id = producer_id or new_producer_id()
        self.seq = 0  # sequence number of the last entry handed to Redis
        self.last_landed: dict[str, str] = {}  # stream -> ID of this producer's newest entry Redis confirmed
        self.outage = Outage(log)

    def writer(self, stream: str, *, bulk: bool = False) -> redis.Redis:
        """The producer's own client on the node that holds `stream` (any stream on a standalone server)."""
        return (self._bulk if bulk else self._plain)(stream)

    def close(self) -> None:
        """Close the connections of the producer's own pools (the caller's client stays open)."""
        for writer in [*self._bulk.made(), *self._plain.made()]:
            writer.connection_pool.disconnect()

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
        depth = self.retention.most_per_write(PIPELINE_DEPTH if per_tick else PIPELINE_DEPTH // 10)
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
                    entries += self.send(queued, bulk=not per_tick)
                    queued = []
        if queued:
            entries += self.send(queued, bulk=not per_tick)
        return PublishResult(ticks=len(batch), entries=entries)

    def send(self, entries: Iterable[Entry], *, bulk: bool = False, trim: bool = True) -> int:
        """XADD the entries (their field dicts get this producer's id and next sequence number) in one
        pipeline per node (`bulk`: packed without copying large values), with the tick streams' retention
        unless not `trim`; through a Redis outage or a redirect, wait and resend exactly those that did not
        land. Returns their count."""
        stamped: list[Stamped] = []
        for stream, fields in entries:
            self.seq += 1
            fields[PRODUCER_FIELD] = self.producer_id
            fields[SEQ_FIELD] = self.seq
            stamped.append((stream, fields, self.seq))
        todo, unsure, sent_at = stamped, False, time.monotonic()
        while todo:
            done: set[int] = set()  # sequence numbers of the entries Redis confirmed in this attempt
            try:
                if unsure:  # the last attempt failed: some of its entries may be on the streams already
                    refresh_slot_map(self.client)
                    todo, unsure = self._not_landed(todo, sent_at), False
                    if not todo:
                        break
                if trim:  # trims what every group has read; waits while the readers are a cap behind
                    incoming: dict[str, int] = {}
                    for stream, _, _ in todo:
                        incoming[stream] = incoming.get(stream, 0) + 1
                    self.retention.make_room(incoming)
                for writer, group in self._by_node(todo, bulk):
                    for (stream, _, seq), entry_id in zip(group, self._xadd_replicated(writer, group), strict=True):
                        self.last_landed[stream] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                        done.add(seq)
            except UNAVAILABLE as exc:  # (the pipeline may have been applied in part)
                self._replicas.clear()  # a failover may have changed the nodes and their replicas
                wait_out(self.outage, exc)
                todo, unsure = [entry for entry in todo if entry[2] not in done], True
                continue
            todo = []
        self.outage.recovered()
        return len(stamped)

    def _by_node(self, entries: list[Stamped], bulk: bool) -> list[tuple[redis.Redis, list[Stamped]]]:
        """The entries grouped by the node that holds their stream, in order within each node, with the
        producer's writer on it (one group on a standalone server)."""
        streams = [stream for stream, _, _ in entries]
        return [
            (self.writer(streams[at[0]], bulk=bulk), [entries[i] for i in at])
            for _, at in by_node(self.client, streams)
        ]

    def _xadd_replicated(self, writer: redis.Redis, entries: list[Stamped]) -> list[Any]:
        """XADD every entry in one pipeline; their IDs, once a replica holds them where the node has replicas
        (on a cluster: replication is asynchronous, and a failover loses what no replica has).

        Until a replica has them, they count as not written: if the node dies meanwhile, what its promoted
        replica lacks is found by reading the tails back, and sent again.
        """
        replicas = self._replica_count(writer)
        pipe = writer.pipeline(transaction=False)
        try:
            for stream, fields, _ in entries:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            if replicas:
                pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
            replies = list(pipe.execute())
        finally:
            pipe.reset()
        if replicas:
            acknowledged = int(replies.pop())
            while not acknowledged and self._replica_count(writer, again=True):
                log.warning("no replica of %s has the last entries after %d ms: waiting", writer, REPLICA_WAIT_MS)
                acknowledged = int(writer.execute_command("WAIT", 1, REPLICA_WAIT_MS))
        return replies

    def _replica_count(self, writer: redis.Redis, *, again: bool = False) -> int:
        """How many replicas the writer's node has connected (0 on a standalone server: nothing waited for)."""
        if not is_cluster(self.client):
            return 0
        if again or id(writer) not in self._replicas:
            info: Any = writer.info("replication")
            self._replicas[id(writer)] = int(info.get("connected_slaves", 0))
        return self._replicas[id(writer)]

    def _not_landed(self, sent: list[Stamped], sent_at: float) -> list[Stamped]:
        """The entries of `sent` (first sent at `sent_at`, monotonic) that are not on their streams, found by
        reading the streams back from their tails, each on the node that holds it now (each stream's landed
        entries are a prefix of those sent to it: Redis applies a pipeline in order)."""
        landed: dict[str, int] = {}
        oldest_on: dict[int, int] = {}  # writer -> the oldest ID time an entry of this send can have there
        for stream in dict.fromkeys(stream for stream, _, _ in sent):
            reader = self.writer(stream)
            if id(reader) not in oldest_on:
                seconds, micros = reader.time()
                # an entry added with `*` gets an ID no older than the server's clock when it arrived
                elapsed_ms = int((time.monotonic() - sent_at) * 1000)
                oldest_on[id(reader)] = max(seconds * 1000 + micros // 1000 - elapsed_ms - CLOCK_MARGIN_MS, 0)
            landed[stream] = self._last_seq_on(stream, reader, oldest_on[id(reader)])
        rest = [entry for entry in sent if entry[2] > landed[entry[0]]]
        log.info(
            "%d of %d entries had landed before the write failed; sending the other %d",
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
