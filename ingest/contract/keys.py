"""Redis key names of the wire contract (DESIGN.md), in one place."""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every Redis key from the prefix and the partition count."""

    prefix: str = "tickerdash"
    partitions: int = 1

    def ticks(self, partition: int = 0) -> str:
        """Tick stream of one partition (the plain stream when there is one partition)."""
        if self.partitions == 1:
            return f"{self.prefix}:ticks"
        return f"{self.prefix}:ticks:{{{partition}}}"

    @property
    def tick_streams(self) -> list[str]:
        """Every tick stream, in partition order."""
        return [self.ticks(p) for p in range(self.partitions)]

    def partition_of(self, symbol: str) -> int:
        """Partition that always holds this symbol: crc32(symbol) % P."""
        return zlib.crc32(symbol.encode()) % self.partitions

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:deadletter"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}:anomalies"

    @property
    def rules(self) -> str:
        return f"{self.prefix}:rules"

    @property
    def labels(self) -> str:
        return f"{self.prefix}:labels"

    def bars(self, interval: str, symbol: str) -> str:
        """Closed OHLCV bars of one symbol at one interval."""
        return f"{self.prefix}:bars:{interval}:{symbol}"

    def lost(self, group: str, stream: str) -> str:
        """Hash of the entries of `stream` that were trimmed or deleted before `group` read them (a worker records
        them; `status` and the dashboard show them)."""
        return self.internal("lost", group, stream)

    def backpressure(self, stream: str) -> str:
        """Hash a producer keeps (with a short expiry) while it waits for the readers of `stream` to catch up."""
        return self.internal("backpressure", stream)

    def internal(self, *parts: str) -> str:
        """Project-private key (checkpoints, leases, snapshots): not part of the public contract."""
        return ":".join((self.prefix, "_", *parts))
