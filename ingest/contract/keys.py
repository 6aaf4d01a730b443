"""Redis key names of the wire contract (docs/design.md), public and internal, and the consumer groups.

Every key Tickerdash reads or writes is built here, by a named method; nothing else spells a key.
Internal keys sit under `<prefix>:_:` and are not part of the public contract.

With one partition the keys carry no hash tag. With P > 1, every key that one partition's batch
transaction touches carries the partition's tag `{p}` (its tick stream, its symbols' bars, its alerts,
anomalies and dead letters, its lease, checkpoint, quarantine, live view and closed-bars feed), so that
on a Redis Cluster the transaction stays on one shard; the rules and their version share a tag of their
own, the rules key's name.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
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
        return self._partitioned("ticks", partition)

    @property
    def tick_streams(self) -> list[str]:
        """Every tick stream, in partition order."""
        return self._each(self.ticks)

    def partition_of(self, symbol: str) -> int:
        """Partition that always holds this symbol: crc32(symbol) % P."""
        return zlib.crc32(symbol.encode()) % self.partitions

    def deadletter(self, partition: int = 0) -> str:
        """Stream of one partition's rejected inputs, with their reasons and sources (producers use partition 0)."""
        return self._partitioned("deadletter", partition)

    def deadletter_of(self, tick_stream: str) -> str:
        """The dead-letter stream of the partition whose tick stream this is (partition 0's for any other)."""
        streams = self.tick_streams
        return self.deadletter(streams.index(tick_stream) if tick_stream in streams else 0)

    @property
    def deadletter_streams(self) -> list[str]:
        """Every dead-letter stream, in partition order."""
        return self._each(self.deadletter)

    def alerts(self, partition: int = 0) -> str:
        """Stream of the slump alerts fired on one partition's symbols."""
        return self._partitioned("alerts", partition)

    @property
    def alert_streams(self) -> list[str]:
        """Every alerts stream, in partition order (readers merge them)."""
        return self._each(self.alerts)

    def anomalies(self, partition: int = 0) -> str:
        """Stream of one partition's flagged trades."""
        return self._partitioned("anomalies", partition)

    @property
    def anomaly_streams(self) -> list[str]:
        """Every anomalies stream, in partition order (readers merge them)."""
        return self._each(self.anomalies)

    @property
    def rules(self) -> str:
        """Hash of slump-alert rules: rule id -> JSON."""
        return f"{self.prefix}:rules"

    @property
    def labels(self) -> str:
        """Stream of the simulator's ground-truth labels of injected suspicious trades."""
        return f"{self.prefix}:labels"

    def bars(self, interval: str, symbol: str) -> str:
        """Closed OHLCV bars of one symbol at one interval (tagged with the symbol's partition)."""
        return f"{self.bars_prefix(interval, self.partition_of(symbol))}{symbol}"

    def bars_prefix(self, interval: str, partition: int = 0) -> str:
        """What every bar stream of one interval in one partition starts with (the symbol follows)."""
        return f"{self.prefix}:bars:{self._tag(partition)}{interval}:"

    def bars_prefixes(self, interval: str) -> list[str]:
        """`bars_prefix` of every partition: a reader scans each for the symbols that have bars."""
        return self._each(lambda partition: self.bars_prefix(interval, partition))

    @property
    def every_key(self) -> str:
        """SCAN pattern matching every key under the prefix."""
        return f"{self.prefix}:*"

    # --- internal keys -------------------------------------------------------------------------

    def lease(self, group: str, partition: int) -> str:
        """Who owns a partition of a worker group right now (the value is the owner's token)."""
        return self._partition_internal(partition, "lease", group, numbered=True)

    def leases(self, group: str) -> list[str]:
        """Every partition's lease of a group, in partition order (`status` and the dashboard show the holders)."""
        return self._each(lambda partition: self.lease(group, partition))

    def members(self, group: str) -> str:
        """Sorted set of the workers of a group that share its partitions (score: when the entry expires, ms)."""
        return self.internal("members", group)

    def checkpoint(self, group: str, partition: int) -> str:
        """Hash of a partition's last checkpoint: which entry its state includes, and the progress marker."""
        return self._partition_internal(partition, "checkpoint", group, numbered=True)

    def checkpoint_state(self, group: str, partition: int) -> str:
        """List: the state blob of a partition's last checkpoint, in pieces."""
        return self._partition_internal(partition, "checkpoint-state", group, numbered=True)

    def checkpoint_staging(self, group: str, partition: int, consumer: str) -> str:
        """List: a checkpoint blob one consumer is writing in pieces, renamed to `checkpoint_state` once whole."""
        return self._partition_internal(partition, "checkpoint-staging", group, consumer, numbered=True)

    def quarantined(self, group: str, partition: int) -> str:
        """Entries of a partition set aside after they failed to apply."""
        return self._partition_internal(partition, "quarantined", group, numbered=True)

    def snapshot(self, partition: int = 0) -> str:
        """Hash of the latest live update of each symbol of one partition (what a page shows on load)."""
        return self._partition_internal(partition, "snapshot")

    @property
    def snapshots(self) -> list[str]:
        """Every partition's snapshot hash."""
        return self._each(self.snapshot)

    def live(self, partition: int = 0) -> str:
        """Stream of one partition's coalesced live updates, for the dashboard gateway."""
        return self._partition_internal(partition, "live")

    @property
    def live_streams(self) -> list[str]:
        """Every partition's live feed."""
        return self._each(self.live)

    def closed_bars(self, partition: int = 0) -> str:
        """Stream of one partition's batches of closed bars (one Arrow IPC entry per batch), for the archiver."""
        return self._partition_internal(partition, "closed_bars")

    @property
    def closed_bars_streams(self) -> list[str]:
        """Every partition's closed-bars feed."""
        return self._each(self.closed_bars)

    @property
    def rules_version(self) -> str:
        """Counter bumped with every rule change, so workers reload rules only when they changed.

        With P > 1 it carries the rules key's name as its hash tag: the rules and their version change in
        one transaction, which a cluster allows only within one slot.
        """
        if self.partitions == 1:
            return self.internal("rules_version")
        return self.internal(hash_tag(self.rules), "rules_version")

    @property
    def layout(self) -> str:
        """Hash of the key layout the data was written with (`partitions`, `version`): one per prefix, whatever P."""
        return self.internal("layout")

    @property
    def simulator_run(self) -> str:
        """Hash of the latest simulator run's seed and set-up (exports record it as provenance)."""
        return self.internal("simulator")

    def webhook_failures(self, partition: int = 0) -> str:
        """Stream of the webhook deliveries of one partition's alerts that failed after every retry."""
        return self._partition_internal(partition, "webhook_failures")

    @property
    def webhook_failure_streams(self) -> list[str]:
        """Every partition's webhook-failures stream."""
        return self._each(self.webhook_failures)

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

    # --- partition tags ------------------------------------------------------------------------

    def _each(self, key_of: Callable[[int], str]) -> list[str]:
        """`key_of(p)` for every partition, in partition order."""
        return [key_of(partition) for partition in range(self.partitions)]

    def _tag(self, partition: int) -> str:
        """The partition's hash tag and its separator where keys are partitioned (P > 1), else nothing."""
        return "" if self.partitions == 1 else f"{hash_tag(partition)}:"

    def _partitioned(self, name: str, partition: int) -> str:
        """A public per-partition stream: `<prefix>:<name>`, or `<prefix>:<name>:{p}` when P > 1."""
        return f"{self.prefix}:{name}" if self.partitions == 1 else f"{self.prefix}:{name}:{hash_tag(partition)}"

    def _partition_internal(self, partition: int, *parts: str, numbered: bool = False) -> str:
        """A partition's internal key: `<prefix>:_:{p}:<parts>` when P > 1; with one partition, `<prefix>:_:<parts>`,
        followed by the partition number when `numbered` (a key per partition whatever P, such as a lease)."""
        if self.partitions > 1:
            return self.internal(hash_tag(partition), *parts)
        return self.internal(*parts, str(partition)) if numbered else self.internal(*parts)


def hash_tag(name: int | str) -> str:
    """`{name}`: the part of a key Redis Cluster hashes, so that keys with one tag share a slot."""
    return f"{{{name}}}"
