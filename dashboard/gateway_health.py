"""The health strip's figures, measured once a second by the gateway over every partition.

Ticks/s through the worker, the analytics group's lag, pending and lost entries, a producer waiting for the
workers, dead letters, who holds each partition's lease, and, on a Redis Cluster, the node serving each
partition. Every figure is read key by key (or per partition), so it sees every shard of a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from tickerdash.dashboard.feed_reads import AsyncRedis, get_each
from tickerdash.ingest.contract.fields import as_text, entry_ms, id_order
from tickerdash.ingest.contract.keys import Keys


class HealthMeter:
    """Measures the health figures; remembers the trade count between calls for the ticks/s rate."""

    def __init__(self, keys: Keys, analytics_group: str) -> None:
        self.keys = keys
        self.group = analytics_group
        self._trades_seen: tuple[float, int] | None = None

    async def measure(
        self, client: AsyncRedis, symbols: Mapping[str, Mapping[str, Any]], cursor: Mapping[str, str]
    ) -> dict[str, Any]:
        """The figures now, from Redis, the gateway's latest update per symbol and its stream cursors."""
        keys, group_name = self.keys, self.group
        lag, pending, consumers, lost, waiting = 0, 0, 0, 0, None
        for stream in keys.tick_streams:
            lost += int(await client.hget(keys.lost(group_name, stream), "entries") or 0)
            waiting = waiting or await client.hget(keys.backpressure(stream), "message")
            try:
                groups: Any = await client.xinfo_groups(stream)
            except redis.ResponseError:  # the stream does not exist yet
                continue
            for group in groups:
                if as_text(group["name"]) == group_name:
                    lag += int(group.get("lag") or 0)
                    pending += int(group["pending"])
                    consumers += int(group["consumers"])
        now = time.time()
        trades = sum(int(s.get("trades", 0)) for s in symbols.values())
        rate = 0.0
        if self._trades_seen is not None:
            then, before = self._trades_seen
            rate = max(trades - before, 0) / max(now - then, 1e-3)
        self._trades_seen = (now, trades)
        owners: dict[str, list[int]] = {}
        for partition, owner in enumerate(await get_each(client, keys.leases(group_name))):
            owners.setdefault(as_text(owner) if owner is not None else "", []).append(partition)
        live_cursor = max((cursor.get(live, "0-0") for live in keys.live_streams), key=id_order)
        age_ms = int(now * 1000) - entry_ms(live_cursor) if live_cursor != "0-0" else None
        health = {
            "redis": "ok",
            "ticks_per_s": round(rate, 1),
            "lag": lag,
            "pending": pending,
            "workers": consumers,
            "deadletters": sum([await client.xlen(stream) for stream in keys.deadletter_streams]),
            "update_age_ms": age_ms,
            "lost": lost,
            "producer_waiting": as_text(waiting) if waiting else None,
            "owners": {owner: partitions for owner, partitions in owners.items() if owner},
            "unowned": owners.get("", []),
        }
        if isinstance(client, aioredis.RedisCluster):
            health["nodes"] = self._nodes(client)
        return health

    def _nodes(self, client: aioredis.RedisCluster) -> dict[str, list[int]]:
        """The primary serving each partition (host:port -> partitions), from the client's slot map."""
        nodes: dict[str, list[int]] = {}
        for partition, stream in enumerate(self.keys.tick_streams):
            node = client.get_node_from_key(stream)
            nodes.setdefault(node.name if node is not None else "unknown", []).append(partition)
        return dict(sorted(nodes.items()))
