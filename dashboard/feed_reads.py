"""The gateway's Redis client and its reads of the feeds, on a standalone server or a Redis Cluster.

On a standalone server one XREAD covers every feed stream of every partition. On a Redis Cluster a
command may touch only one slot, and each partition is a slot of its own (`Keys`): one XREAD per
partition covers that partition's live, alerts and anomalies streams, and the partitions' reads wait
side by side, so that entries of any partition reach the pages as soon as they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis

AsyncRedis: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
StreamEntries = tuple[Any, Any]  # (stream, [(entry id, fields), ...]) as XREAD replies


async def open_client(url: str, **options: Any) -> AsyncRedis:
    """An asyncio client for a URL: a cluster client when the URL names a node of a Redis Cluster (raises
    ConnectionError while the server cannot be asked)."""
    client = aioredis.Redis.from_url(url, **options)
    try:
        info: Any = await client.info("cluster")
    except redis.ResponseError:  # INFO refused: not a cluster node that could tell
        info = {}
    except BaseException:
        await client.aclose()
        raise
    if int(info.get("cluster_enabled", 0)) != 1:
        return client
    await client.aclose()
    cluster = aioredis.RedisCluster.from_url(url, **options)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


def is_async_cluster(client: AsyncRedis | None) -> bool:
    """Whether the asyncio client talks to a Redis Cluster."""
    return isinstance(client, aioredis.RedisCluster)


async def get_each(client: AsyncRedis, keys: Sequence[str]) -> list[Any]:
    """GET of every key (MGET on a standalone server; one GET per key on a cluster, where they span slots)."""
    if isinstance(client, aioredis.RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


class FeedReads:
    """New entries of the feed streams after their cursors: one XREAD on a standalone server, one per
    partition (its streams share a slot) on a cluster, where reads still waiting carry over to the next call."""

    def __init__(self, partitions: Sequence[Sequence[str]], cursor: dict[str, str]) -> None:
        self.partitions = [list(streams) for streams in partitions]
        self.cursor = cursor  # the gateway's: advanced by the caller as it applies entries
        self._waiting: dict[int, asyncio.Task[Any]] = {}

    async def read(self, client: AsyncRedis, count: int, block_ms: int) -> list[StreamEntries]:
        """The entries of the next reply (of every partition whose read has returned, on a cluster); raises
        what a read raised, with no entry applied, and the reads still waiting cancelled."""
        if not isinstance(client, aioredis.RedisCluster):
            streams: Any = self.cursor
            reply: Any = await client.xread(streams, count=count, block=block_ms)
            return list(reply or [])
        for partition, streams in enumerate(self.partitions):
            if partition not in self._waiting:
                after: Any = {stream: self.cursor[stream] for stream in streams}
                read = client.xread(after, count=count, block=block_ms)
                self._waiting[partition] = asyncio.ensure_future(read)
        try:
            done, _ = await asyncio.wait(self._waiting.values(), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self.cancel()
            raise
        replies: list[StreamEntries] = []
        for partition, task in list(self._waiting.items()):
            if task in done:
                del self._waiting[partition]
                error = task.exception()
                if error is not None:  # the other reads' nodes may have gone too: start afresh
                    self.cancel()
                    raise error
                replies.extend(task.result() or [])
        return replies

    def cancel(self) -> None:
        """Cancel the reads still waiting (the next `read` sends new ones from the cursors)."""
        for task in self._waiting.values():
            task.cancel()
            task.add_done_callback(_quiet)
        self._waiting.clear()


def _quiet(task: asyncio.Task[Any]) -> None:
    """Retrieve a cancelled read's outcome, so that asyncio does not log it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
