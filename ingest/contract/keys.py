"""Redis key names of the wire contract (docs/design.md), public and internal, and the consumer groups.

Every key Tickerdash reads or writes is built here, by a named method; nothing else spells a key.
Internal keys sit under `<prefix>:_:` and are not part of the public contract.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

ANALYTICS_GROUP = "analytics"  # the analytics workers, on every tick stream (the default of `Settings.group`)
ARCHIVE_GROUP = "archive"  # the archiver, on the closed-bars feed
WEBHOOKS_GROUP = "webhooks"  # webhook delivery, on the alerts stream
CONSUMER_GROUPS = (ANALYTICS_GROUP, ARCHIVE_GROUP, WEBHOOKS_GROUP)


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every Redis key from the prefix and the partition count."""

    prefix: str = "tickerdash"
    partitions: int = 1

    # --- public keys ---------------------------------------------------------------------------

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
        """Stream of every rejected input, with its reason and source."""
        return f"{self.prefix}:deadletter"

    @property
    def alerts(self) -> str:
        """Stream of fired slump alerts."""
        return f"{self.prefix}:alerts"

    @property
    def anomalies(self) -> str:
        """Stream of flagged trades."""
        return f"{self.prefix}:anomalies"

    @property
    def rules(self) -> str:
        """Hash of slump-alert rules: rule id -> JSON."""
        return f"{self.prefix}:rules"

    @property
    def labels(self) -> str:
        """Stream of the simulator's ground-truth labels of injected suspicious trades."""
        return f"{self.prefix}:labels"

    def bars(self, interval: str, symbol: str) -> str:
        """Closed OHLCV bars of one symbol at one interval."""
        return f"{self.prefix}:bars:{interval}:{symbol}"

    def bars_prefix(self, interval: str) -> str:
        """What every bar stream of one interval starts with (the symbol follows)."""
        return self.bars(interval, "")

    @property
    def every_key(self) -> str:
        """SCAN pattern matching every key under the prefix."""
        return f"{self.prefix}:*"

    # --- internal keys -------------------------------------------------------------------------

    def lease(self, group: str, partition: int) -> str:
        """Who owns a partition of a worker group right now (the value is the owner's token)."""
        return self.internal("lease", group, str(partition))

    def checkpoint(self, group: str, partition: int) -> str:
        """Hash of a partition's last checkpoint (state, progress marker)."""
        return self.internal("checkpoint", group, str(partition))

    def quarantined(self, group: str, partition: int) -> str:
        """Entries of a partition set aside after they failed to apply."""
        return self.internal("quarantined", group, str(partition))

    @property
    def snapshot(self) -> str:
        """Hash of each symbol's latest live update (what a page shows on load)."""
        return self.internal("snapshot")

    @property
    def live(self) -> str:
        """Stream of coalesced live updates, for the dashboard gateway."""
        return self.internal("live")

    @property
    def closed_bars(self) -> str:
        """Stream of every batch of closed bars (one Arrow IPC entry per batch), for the archiver's group."""
        return self.internal("closed_bars")

    @property
    def rules_version(self) -> str:
        """Counter bumped with every rule change, so workers reload rules only when they changed."""
        return self.internal("rules_version")

    @property
    def simulator_run(self) -> str:
        """Hash of the latest simulator run's seed and set-up (exports record it as provenance)."""
        return self.internal("simulator")

    @property
    def webhook_failures(self) -> str:
        """Stream of webhook deliveries that failed after every retry."""
        return self.internal("webhook_failures")

    def lost(self, group: str, stream: str) -> str:
        """Hash of the entries of `stream` that were trimmed or deleted before `group` read them (a worker records
        them; `status` and the dashboard show them)."""
        return self.internal("lost", group, stream)

    def backpressure(self, stream: str) -> str:
        """Hash a producer keeps (with a short expiry) while it waits for the readers of `stream` to catch up."""
        return self.internal("backpressure", stream)

    @property
    def every_internal_key(self) -> str:
        """SCAN pattern matching every internal key."""
        return self.internal("*")

    def internal(self, *parts: str) -> str:
        """Project-private key under `<prefix>:_:`; callers use the named methods above."""
        return ":".join((self.prefix, "_", *parts))
