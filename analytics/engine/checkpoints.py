"""Checkpoints of partition states, written by a forked child while the loop goes on.

The full state of a partition is large (a rolling VWAP window holds every trade of its window), so it
is not written with every batch: when one is due, the loop forks between batches (when every state in
memory is what its last committed batch left), and the child writes the frozen states, each fenced by
its lease and never over a newer checkpoint, then exits. The loop reaps it later. A blob goes to Redis
in pieces and is then renamed into place, so no single command holds Redis up for long.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping

import numpy as np

from tickerdash.analytics.engine.restore import PartitionKeys, blob_pieces
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.ingest.cluster import AnyRedis, node_client
from tickerdash.ingest.redis_adapter import client_on_own_pool

log = logging.getLogger(__name__)

CHECKPOINT_TIMEOUT_S = 120.0  # a checkpoint child still running after this long is killed (the next one is due)

# A checkpoint whose blob has been written whole to the staging list, made the partition's checkpoint: only while
# we hold the lease, and never over a newer one. KEYS: lease, checkpoint hash, staging, state; ARGV: owner,
# state_id ("ms-seq"), the blob's number of pieces. Refused, the staging list goes. O(1): renamed, not copied.
COMMIT_SCRIPT = """
local function refuse() redis.call('DEL', KEYS[3]) return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return refuse() end
if redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[3]) then return refuse() end
local current = redis.call('HGET', KEYS[2], 'state_id')
if current then
  local cms, cseq = string.match(current, '^(%d+)-(%d+)$')
  local nms, nseq = string.match(ARGV[2], '^(%d+)-(%d+)$')
  if tonumber(nms) < tonumber(cms) or (tonumber(nms) == tonumber(cms) and tonumber(nseq) <= tonumber(cseq)) then
    return refuse()
  end
end
redis.call('RENAME', KEYS[3], KEYS[4])
redis.call('PERSIST', KEYS[4])
redis.call('HSET', KEYS[2], 'state_id', ARGV[2])
redis.call('HDEL', KEYS[2], 'state')
return 1
"""
STAGING_TTL_MS = 600_000  # a staging list its writer left (killed mid-write) goes by itself


def write_checkpoint(
    client: AnyRedis, lease: str, where: PartitionKeys, staging: str, owner: str, state_id: str, blob: bytes
) -> bool:
    """Write a checkpoint blob piece by piece to the `staging` list, then make it the partition's checkpoint if
    `owner` still holds the lease and no newer checkpoint exists; whether it did."""
    pieces = blob_pieces(blob)
    pipe = client.pipeline(transaction=False)
    pipe.delete(staging)
    for piece in pieces:
        pipe.rpush(staging, piece)
    pipe.pexpire(staging, STAGING_TTL_MS)
    pipe.execute()
    keys = (lease, where.checkpoint, staging, where.state)
    return bool(client.eval(COMMIT_SCRIPT, len(keys), *keys, owner, state_id, len(pieces)))


@functools.cache
def small_pages_for_fork() -> None:
    """Stop numpy asking for transparent huge pages (for arrays of 4 MB and more) in this process.

    After the checkpoint fork, every page the loop writes is copied for the child: a 2 MB huge page
    for each touched one, not 4 kB (Redis gives the same advice for its own forked saves). Measured on
    2M-trade drains: background checkpoints were 8% slower than in-transaction ones with huge pages,
    and no slower without them.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2 / numpy 1.26
    set_madvise = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)


class BackgroundCheckpoints:
    """The forked checkpoint writer: at most one child at a time."""

    def __init__(
        self,
        client: AnyRedis,
        consumer: str,
        lease_key: Callable[[int], str],
        keys_of: Callable[[int], PartitionKeys],
        staging_key: Callable[[int], str],
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.lease_key = lease_key
        self.keys_of = keys_of
        self.staging_key = staging_key
        # the running child: pid, the partitions it writes and the last_id of each, when it started
        self.child: tuple[int, dict[int, str], float] | None = None

    def start(self, states: Mapping[int, PartitionState], partitions: list[int]) -> None:
        """Fork a child that writes these partitions' checkpoints; call between batches only, when every
        state in memory is the state its last committed batch left (what the fork freezes)."""
        pid = os.fork()
        if pid == 0:  # the child: write and leave, running nothing of the parent's (no atexit, no finally)
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.nice(19)  # behind the loop and Redis on a busy host: the loop waits for nothing of ours
                written = []
                for p in partitions:  # each on a connection of its own (on a cluster, to the partition's primary)
                    node = node_client(self.client, self.lease_key(p))
                    client = client_on_own_pool(node, socket_timeout=CHECKPOINT_TIMEOUT_S)
                    state = states[p]
                    written.append(
                        write_checkpoint(
                            client,
                            self.lease_key(p),
                            self.keys_of(p),
                            self.staging_key(p),
                            self.consumer,
                            state.last_id,
                            state.to_bytes(),
                        )
                    )
                code = 0 if all(written) else 2
            finally:
                os._exit(code)
        self.child = (pid, {p: states[p].last_id for p in partitions}, time.monotonic())

    def finish(self, states: Mapping[int, PartitionState]) -> set[int]:
        """At shutdown: the partitions whose checkpoint of their current state the running child has written.

        A child that froze the current state is waited for (it is ahead of a checkpoint started now); one
        whose partitions have moved on since is stopped, as its checkpoints are about to be superseded.
        """
        if self.child is None:
            return set()
        pid, ids, _ = self.child
        current = all(p in states and states[p].last_id == last_id for p, last_id in ids.items())
        if not current:
            os.kill(pid, signal.SIGKILL)
        return set(ids) if self.reap(wait=True) == 0 and current else set()

    def reap(self, wait: bool = False) -> int | None:
        """Collect the child if it has finished (or wait for it), and log how it ended.

        A child that outlives CHECKPOINT_TIMEOUT_S (Redis unreachable, say) is killed: the next
        checkpoint is due as usual, and shutdown never hangs on it.
        """
        if self.child is None:
            return None
        pid, ids, started = self.child
        partitions = sorted(ids)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - started > CHECKPOINT_TIMEOUT_S:
                log.warning(
                    "checkpoint of partitions %s still running after %.0f s: stopped; the next one is due as usual",
                    partitions,
                    CHECKPOINT_TIMEOUT_S,
                )
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)  # a killed child ends at once: reap it now
                break
            if not wait:
                return None  # reaped on a later call
            time.sleep(0.01)
        self.child = None
        code = os.waitstatus_to_exitcode(status)
        if code == 2:
            log.info("checkpoint of partitions %s not written: the lease moved or a newer one exists", partitions)
        elif code == -signal.SIGKILL:
            log.info("checkpoint of partitions %s stopped before it finished", partitions)
        elif code != 0:
            log.warning("checkpoint of partitions %s failed (exit %d); the next one is due as usual", partitions, code)
        return code
