"""Producer: publishes trades onto the tick streams, routed by symbol, pipelined, with retention."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.connection import Encoder, PythonRespSerializer

from ingest.codecs import encode_batch, encode_ticks, iter_chunks
from ingest.keys import Keys
from ingest.redis_server import no_silent_retries
from ingest.settings import Settings
from ingest.ticks import TickBatch

PIPELINE_DEPTH = 1_000  # commands per round trip: big enough to hide latency, small enough for memory
BUFFER_CUTOFF = 6_000  # redis-py's own: values longer than this go to the socket as they are


def client_on_own_pool(client: redis.Redis, **overrides: Any) -> redis.Redis:
    """A client to the same server on a connection pool of its own, with some connection options changed;
    whatever the given client's retry policy, this one never re-sends a command (`no_silent_retries`)."""
    pool = client.connection_pool
    options = {**pool.connection_kwargs, "retry": no_silent_retries(), **overrides}
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
        # both write on pools of their own that never re-send an XADD (whatever the caller's client does)
        self.per_tick = client_on_own_pool(client)
        self.bulk = bulk_client(client)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)

    def close(self) -> None:
        """Close the connections of the producer's own pools (the caller's client stays open)."""
        self.per_tick.connection_pool.disconnect()
        self.bulk.connection_pool.disconnect()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _trim_args(self) -> dict[str, object]:
        if self.settings.retention_s is not None:
            min_ms = int(time.time() * 1000 - self.settings.retention_s * 1000)
            return {"minid": f"{max(min_ms, 0)}-0", "approximate": True}
        if self.settings.stream_maxlen:
            return {"maxlen": self.settings.stream_maxlen, "approximate": True}
        return {}

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

    def publish(self, batch: TickBatch, *, per_tick: bool = False) -> PublishResult:
        """Write every trade of `batch`; entries per partition keep the batch's order."""
        trim = self._trim_args()
        entries = 0
        pipe = (self.per_tick if per_tick else self.bulk).pipeline(transaction=False)
        for partition, part in self.split_by_partition(batch):
            stream = self.keys.ticks(partition)
            if per_tick:
                for fields in encode_ticks(part):
                    pipe.xadd(stream, fields, **trim)  # type: ignore[arg-type]
                    entries += 1
                    if len(pipe) >= PIPELINE_DEPTH:
                        pipe.execute()
            else:
                for chunk in iter_chunks(part, self.settings.batch_rows):
                    pipe.xadd(stream, encode_batch(chunk), **trim)  # type: ignore[arg-type]
                    entries += 1
                    if len(pipe) >= PIPELINE_DEPTH // 10:
                        pipe.execute()
        if len(pipe):
            pipe.execute()
        return PublishResult(ticks=len(batch), entries=entries)
