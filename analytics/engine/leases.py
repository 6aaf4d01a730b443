"""Partition leases: who owns a partition of a consumer group right now, and the fence of every batch.

A worker renews its leases every third of `lease_ms`; one that stops renewing (killed, cut off) loses
them, and another worker takes the partitions over. Each batch's transaction WATCHes the lease and
checks it in the fence script, so a worker that lost the lease commits nothing.
"""

from __future__ import annotations

import redis

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.runner import OutOfOrder, OwnershipLost

# Renew the lease if we hold it, take it if it is free; 1 when we hold it afterwards.
LEASE_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1
elseif owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
return 0
"""
# A batch's fence, after WATCH of the lease: who holds the lease, and whether any entry of the stream
# before the batch's first one is still pending (delivered, never applied: applying the batch would move
# the progress marker past it). KEYS: lease, tick stream; ARGV: group, the batch's first entry ID ('0-0':
# ownership only, see `ingest.runner.OWNERSHIP_ONLY`).
FENCE_SCRIPT = """
local owner = redis.call('GET', KEYS[1]) or ''
if ARGV[2] == '0-0' then return {owner, 0} end
local unapplied = redis.call('XPENDING', KEYS[2], ARGV[1], '-', '(' .. ARGV[2], 1)
return {owner, #unapplied}
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    """The leases of one consumer (`consumer`) of one group on the partitions of `keys`."""

    def __init__(self, client: AnyRedis, keys: Keys, group: str, consumer: str, lease_ms: int) -> None:
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.lease_ms = lease_ms
        self._take = client.register_script(LEASE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    def key(self, partition: int) -> str:
        """Who owns a partition of the group right now."""
        return self.keys.lease(self.group, partition)

    def hold(self, partition: int) -> bool:
        """Renew the lease if it is ours, take it if it is free; whether it is ours now."""
        return bool(self._take(keys=[self.key(partition)], args=[self.consumer, self.lease_ms]))

    def release(self, partition: int) -> None:
        """Give the lease up (if it is still ours), so that another worker takes the partition at once."""
        self._release(keys=[self.key(partition)], args=[self.consumer])

    def extend(self, pipe: redis.client.Pipeline, partition: int) -> None:
        """Queue the renewal that every batch's transaction carries."""
        pipe.pexpire(self.key(partition), self.lease_ms)

    def fence(self, pipe: redis.client.Pipeline, partition: int, stream: str, first_id: bytes) -> None:
        """WATCH the lease for the batch whose first entry is `first_id`; raise OwnershipLost if the lease is
        not ours, OutOfOrder if an entry before the batch is still unapplied."""
        lease = self.key(partition)
        pipe.watch(lease)
        # EVAL, not a registered script: that would join the pipeline's scripts, checked (SCRIPT EXISTS) per batch
        owner, unapplied = pipe.eval(FENCE_SCRIPT, 2, lease, stream, self.group, first_id)
        if (owner.decode() if isinstance(owner, bytes) else owner) != self.consumer:
            raise OwnershipLost(stream)
        if unapplied:  # (a read whose reply was lost, a late read of a former owner): rebuild, claim all in order
            raise OutOfOrder(stream)
