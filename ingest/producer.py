"""Producer: publishes trades onto the tick streams, routed by symbol, pipelined, with retention that never
drops an entry a consumer group still needs (ingest/retention.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.connection import Encoder, PythonRespSerializer

from ingest.codecs import encode_batch, encode_ticks, iter_chunks
from ingest.keys import Keys
from ingest.retention import Retention
from ingest.settings import Settings
from ingest.ticks import TickBatch

PIPELINE_DEPTH = 1_000  # commands per round trip: big enough to hide latency, small enough for memory
BUFFER_CUTOFF = 6_000  # redis-py's own: values longer than this go to the socket as they are


def client_on_own_pool(client: redis.Redis, **overrides: Any) -> redis.Redis:
    """A client to the same server on a connection pool of its own, with some connection options changed."""
    pool = client.connection_pool
    options = {**pool.connection_kwargs, **overrides}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options))


def bulk_client(client: redis.Redis) -> redis.Redis:
    """A client to the same server whose commands send large values without copying them.

    hiredis packs each command into one new bytes object, so a 300 kB batch entry is copied once more
    before the socket copies it; redis-py's Python packer hands memoryviews and long values to
    `sendall` as they are. Replies are still parsed by hiredis.
    """
    packer = PythonRespSerializer(BUFFER_CUTOFF, Encoder("utf-8", "strict", False).encode)
    return client_on_own_pool(client, command_packer=packer)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one publish call wrote."""

    ticks: int
    entries: int


class Producer:
    """Writes `TickBatch`es as batch entries (fast) or per-tick entries (interoperable)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.bulk = bulk_client(client)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.retention = Retention(client, settings, self.keys)

    def close(self) -> None:
        """Close the connections of the bulk client's own pool (the caller's client stays open)."""
        self.bulk.connection_pool.disconnect()

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
        entries = 0
        queued: dict[str, int] = {}  # entries per stream on the pipeline, for the retention check
        pipe = (self.client if per_tick else self.bulk).pipeline(transaction=False)
        depth = self.retention.most_per_write(PIPELINE_DEPTH if per_tick else PIPELINE_DEPTH // 10)

        def flush() -> None:
            self.retention.make_room(queued)
            pipe.execute()
            queued.clear()

        for partition, part in self.split_by_partition(batch):
            stream = self.keys.ticks(partition)
            if per_tick:
                for fields in encode_ticks(part, clock_ms):
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                    queued[stream] = queued.get(stream, 0) + 1
                    entries += 1
                    if len(pipe) >= depth:
                        flush()
            else:
                for chunk in iter_chunks(part, self.settings.batch_rows):
                    pipe.xadd(stream, encode_batch(chunk, clock_ms))  # type: ignore[arg-type]
                    queued[stream] = queued.get(stream, 0) + 1
                    entries += 1
                    if len(pipe) >= depth:
                        flush()
        if len(pipe):
            flush()
        return PublishResult(ticks=len(batch), entries=entries)
