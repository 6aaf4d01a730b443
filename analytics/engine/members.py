"""Workers that share the partitions: each registers itself, and the live members split the partitions.

A worker started without a fixed partition list joins its group's member set (`Keys.members`) and
renews its entry with every lease check; an entry that is not renewed within `ttl_ms` (the worker was
killed or cut off) drops out. Every member computes the same assignment from the same member list by
rendezvous hashing with balanced loads: each member ranks the partitions by a weight hash(member, p),
and the (member, partition) pairs are granted in falling weight order while the member has fewer than
its share (P // N, or one more for P % N of them). Every member owns P // N or P // N + 1 partitions
(plain rendezvous hashing leaves some idle at small P), and a member that joins moves about P/(N+1)
partitions on average, nearly all of them to itself. Leases stay the only safety mechanism: an
assignment says which partitions a worker should take or hand over, never that it may write to one
whose lease another holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys

# Renew this member's entry (score: when it expires, on the server's clock), drop the expired ones, and
# return the live members. KEYS: the member set; ARGV: member, ttl_ms.
BEAT_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def weight(member: str, partition: int) -> int:
    """The rendezvous weight of a member for a partition: the same on every machine and Python."""
    digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assignment(partitions: Iterable[int], members: Sequence[str]) -> dict[int, str]:
    """Which member owns each partition (none without members): the same for any order of `members`."""
    parts, names = list(partitions), sorted(set(members))
    if not names:
        return {}
    share, extra = divmod(len(parts), len(names))
    load = dict.fromkeys(names, 0)
    over = 0  # members holding share + 1 (at most `extra` of them)
    owner: dict[int, str] = {}
    for _, name, partition in sorted(((weight(n, p), n, p) for p in parts for n in names), reverse=True):
        if partition in owner:
            continue
        if load[name] < share or (load[name] == share and over < extra):
            load[name] += 1
            over += load[name] == share + 1
            owner[partition] = name
    return owner


class Membership:
    """One worker's entry in its group's member set."""

    def __init__(self, client: AnyRedis, keys: Keys, group: str, consumer: str, ttl_ms: int) -> None:
        self.key = keys.members(group)
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.partitions = range(keys.partitions)
        self._beat = client.register_script(BEAT_SCRIPT)
        self._client = client

    def beat(self) -> list[str]:
        """Renew this worker's entry; the live members, this one included, sorted."""
        reply: Any = self._beat(keys=[self.key], args=[self.consumer, self.ttl_ms])
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in reply)

    def mine(self, members: Sequence[str]) -> list[int]:
        """The partitions that the members' assignment gives this worker."""
        return sorted(p for p, owner in assignment(self.partitions, members).items() if owner == self.consumer)

    def leave(self) -> None:
        """Remove this worker's entry, so that the others share its partitions at their next check."""
        self._client.zrem(self.key, self.consumer)
