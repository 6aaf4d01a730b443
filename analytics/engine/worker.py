"""The analytics worker: the thin loop that runs the stage chain on the tick stream, exactly once.

One worker owns some partitions (a lease per partition, `engine.leases`, so each symbol's trades are
processed in order by one worker at a time): a fixed list, or, shared, those that the group's live
members assign it (`engine.members`), handed over cleanly when a member joins or leaves. For every
batch read from a partition it runs the partition's stage chain (`engine.state`) and writes, in ONE
MULTI/EXEC transaction fenced by a WATCH on the partition's lease: the stages' outputs and the batch's
dead letters (`engine.writer`), the live view when a round is due (`engine.live_view`), a progress
marker (the last entry ID applied) and the XACK of the batch.

Checkpoints of whole partition states are written now and then by a forked child while the loop goes
on (`engine.checkpoints`); a restarted worker restores the checkpoint and replays the entries between
it and the progress marker, effects suppressed (`engine.restore`).

The `StreamRunner` (`ingest.runner`) reads, sends the transactions and knows which of them Redis
confirmed; it drives this worker through the `Consumer` members (`fence`, `process`, `quarantined`,
`dropped`, `rebuild`, `housekeeping`), and this worker calls back only `settle()` (to see confirmed
state), and, between batches, `add_stream`, `drop_stream` and `claim_stale`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from tickerdash.analytics.engine.checkpoints import BackgroundCheckpoints, small_pages_for_fork, write_checkpoint
from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.leases import Leases
from tickerdash.analytics.engine.live_view import LiveView
from tickerdash.analytics.engine.members import Membership
from tickerdash.analytics.engine.restore import PartitionKeys, blob_pieces, refresh_stages, restore
from tickerdash.analytics.engine.segments import preload
from tickerdash.analytics.engine.stage import Effects, Stage, StageFactory
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.analytics.engine.writer import EffectsWriter, preload_writer
from tickerdash.analytics.stages.registry import preload_core
from tickerdash.ingest.cluster import UNAVAILABLE, AnyRedis
from tickerdash.ingest.consumer import OwnershipLost
from tickerdash.ingest.contract.fields import id_order
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.group_reads import ensure_groups
from tickerdash.ingest.layout import check_layout
from tickerdash.ingest.reconnect import Outage, wait_out
from tickerdash.ingest.redis_adapter import PerNode, raw_client
from tickerdash.ingest.runner import StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stop_flag import StopFlag
from tickerdash.ingest.ticks import TickBatch, row_fields

__all__ = ["AnalyticsWorker", "Effects", "PartitionState", "Stage", "StageFactory", "WorkerConfig"]

log = logging.getLogger(__name__)


class AnalyticsWorker:
    """Owns partitions, runs the stages on their ticks, and writes effects exactly once."""

    keeps_state = True  # (ingest.consumer.Consumer) a partition's state is rebuilt when its write may have failed

    def __init__(
        self,
        client: AnyRedis,
        settings: Settings,
        partitions: Sequence[int] | None = None,
        config: WorkerConfig | None = None,
        stop: StopFlag | None = None,
        shared: bool = False,
    ) -> None:
        """Own `partitions` (None: every one; a hot standby where another worker holds them) or, `shared`,
        the partitions the group's live shared workers assign this one."""
        self.client = client
        self.raw_node = PerNode(client, raw_client)  # (of the primary that holds a partition, on a cluster)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.config = config or WorkerConfig()
        preload()  # scipy.signal for the EMA scans: imported now, never in the middle of the stream
        preload_core()  # and the compiled per-trade loops of the bars and indicators
        preload_writer()  # and the writer's compiled XADD rows
        pa.array([0.0])  # pyarrow imports pandas on its first array (~0.3 s): now, not in the first closed bars
        for make in self.config.stages:  # and what the optional stages load lazily (a stage's `preload`)
            getattr(make, "preload", lambda: None)()
        if self.config.background_checkpoints:
            small_pages_for_fork()
        wanted = range(settings.partitions) if partitions is None else partitions
        bad = [p for p in wanted if not 0 <= p < settings.partitions]
        if bad:
            raise ValueError(f"partitions {bad} do not exist: TICKERDASH_PARTITIONS={settings.partitions}")
        if shared and partitions is not None:
            raise ValueError("a shared worker takes the partitions its group assigns it: give no partition list")
        self.wanted = list(wanted)
        self.stream_of = {p: self.keys.ticks(p) for p in self.wanted}
        self.partition_of = {s: p for p, s in self.stream_of.items()}
        self.states: dict[int, PartitionState] = {}
        self.stop = stop or StopFlag()
        self.leases = Leases(client, self.keys, settings.group, settings.consumer, self.config.lease_ms)
        self.membership = (
            Membership(client, self.keys, settings.group, settings.consumer, self.config.lease_ms) if shared else None
        )
        self.writer = EffectsWriter(client, self.keys)
        self.live = LiveView(client, self.keys, self.config)
        self.checkpoints = BackgroundCheckpoints(
            client, settings.consumer, self.lease_key, self.partition_keys, self.staging_key
        )
        self.runner = StreamRunner(
            client, settings, [], self, source="analytics", stop=self.stop, defer_commit=self.config.defer_commit
        )
        self._last_lease_check = 0.0
        self._last_checkpoint: dict[int, tuple[float, int]] = {}
        self._checkpoint_due: set[int] = set()  # partitions whose next committed state is to be checkpointed
        self._last_refresh = 0.0
        self._ticks_since_log = 0
        self._last_log = time.monotonic()

    # --- keys ------------------------------------------------------------------------------

    def lease_key(self, partition: int) -> str:
        """Who owns a partition of the analytics group right now."""
        return self.leases.key(partition)

    def partition_keys(self, partition: int) -> PartitionKeys:
        """The partition's checkpoint, quarantine and tick stream keys."""
        return PartitionKeys.of(self.keys, self.settings.group, partition)

    def checkpoint_key(self, partition: int) -> str:
        """A partition's checkpoint hash: `state_id` (the last entry its state has), `last_id` (progress marker)."""
        return self.partition_keys(partition).checkpoint

    def staging_key(self, partition: int) -> str:
        """Where this worker writes a partition's checkpoint blob in pieces before it replaces the last one."""
        return self.keys.checkpoint_staging(self.settings.group, partition, self.settings.consumer)

    def quarantine_key(self, partition: int) -> str:
        """IDs of the partition's entries that were quarantined unapplied (a replay skips them)."""
        return self.partition_keys(partition).quarantine

    # --- what the runner calls (ingest.runner.Consumer) -------------------------------------

    def fence(self, stream: str, first_id: bytes, pipe: redis.client.Pipeline) -> None:
        """WATCH the partition's lease for the batch; raise OwnershipLost / OutOfOrder (see `Leases.fence`)."""
        self.leases.fence(pipe, self.partition_of[stream], stream, first_id)

    def dropped(self, stream: str) -> None:
        """The runner dropped the stream: our state of it ran ahead of what Redis confirmed; rebuild on reacquire."""
        partition = self.partition_of[stream]
        self.states.pop(partition, None)
        self.live.forget(partition)
        # at once if the lease is still ours (redis-py reports a connection failed under WATCH as a WatchError)
        self._last_lease_check = 0.0

    def rebuild(self, stream: str) -> None:
        """Processing a batch raised part-way through its stages: put the partition back where Redis says it is."""
        partition = self.partition_of[stream]
        self.live.forget(partition)
        if partition in self.states:
            self.restore(partition)

    def quarantined(self, stream: str, entry_ids: list[str], pipe: redis.client.Pipeline) -> None:
        """Note entries quarantined unapplied (on their transaction), so that a replay skips them."""
        pipe.sadd(self.quarantine_key(self.partition_of[stream]), *entry_ids)

    def process(self, stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        """Run the partition's stages on a batch and queue its effects, progress marker and lease renewal."""
        partition = self.partition_of[stream]
        state = self.states[partition]
        # Entries at or before the progress marker were applied already (possible only after an
        # ownership change raced a claim): skip them rather than count them twice.
        applied = id_order(state.last_id)
        fresh = None
        if id_order(ticks.entry_ids[0]) <= applied:  # entries come in ID order: only then look at each
            fresh = np.array([id_order(e) > applied for e in ticks.entry_ids], dtype=bool)
        if fresh is not None and not fresh.all():
            unapplied = self._unapplied_rows(stream, ticks, fresh)
            if len(unapplied):
                self.writer.write_rejected(pipe, unapplied, partition)
            ticks = ticks.take(fresh[ticks.entry_of])
            if not len(ticks):
                return
        queued = 0

        def queue_loop_outputs(done: Effects) -> None:  # encoded while the concurrent stages still run
            nonlocal queued
            self.writer.write_outputs(pipe, done.outputs, partition)
            queued = len(done.outputs)

        effects = state.apply(ticks, meanwhile=queue_loop_outputs)
        state.last_id = ticks.entry_ids[-1]
        self.writer.write_outputs(pipe, effects.outputs[queued:], partition)  # then theirs, then the dead letters
        self.writer.write_rejected(pipe, effects.rejected, partition)
        pipe.hset(self.checkpoint_key(partition), "last_id", state.last_id)
        self.leases.extend(pipe, partition)
        since, count = self._last_checkpoint.get(partition, (0.0, 0))
        count += len(ticks)
        due = time.monotonic() - since >= self.config.checkpoint_every_s
        checkpoint_now = due or count >= self.config.checkpoint_every_ticks
        if checkpoint_now and not self.config.background_checkpoints:
            self.checkpoint(partition, pipe)
        else:
            self._last_checkpoint[partition] = (since, count)
            if checkpoint_now:
                self._checkpoint_due.add(partition)  # written once this batch has committed
        self.live.note(partition, effects)
        self.live.publish(self.states, pipe, partition=partition)
        self._ticks_since_log += len(ticks)

    def _unapplied_rows(self, stream: str, ticks: TickBatch, fresh: np.ndarray) -> list[Rejected]:
        """The trades of entries at or before the progress marker that were never applied, as dead letters.

        Every applied entry was acknowledged with its effects, so such an entry that is still pending was
        skipped: the marker passed it before it was delivered (the fence of every batch is there to make
        that impossible). Its effects cannot be inserted behind bars already written: it is dead-lettered,
        never acknowledged as if it had been applied.
        """
        self.runner.settle()  # a batch in flight may be the one that applied (and acknowledges) these entries
        if self.partition_of[stream] not in self.states:
            raise OwnershipLost(stream)  # its failure dropped the partition: rebuilt, then re-read
        stale = [entry_id for entry_id, keep in zip(ticks.entry_ids, fresh.tolist(), strict=True) if not keep]
        pending: list[dict[str, Any]] = self.client.xpending_range(
            stream, self.settings.group, stale[0], stale[-1], len(stale)
        )
        skipped = {p["message_id"].decode() if isinstance(p["message_id"], bytes) else p["message_id"] for p in pending}
        if not skipped:
            return []
        log.error(
            "%s: %d entries up to %s were delivered after later ones had been applied: dead-lettered",
            stream,
            len(skipped),
            max(skipped, key=id_order),
        )
        entry_of = np.array([entry_id in skipped for entry_id in ticks.entry_ids], dtype=bool)[ticks.entry_of]
        return [
            Rejected(
                ticks.tick_id(row),
                dict(row_fields(ticks, row)),
                "out of order: delivered after later entries had been applied; its effects are missing",
            )
            for row in np.flatnonzero(entry_of).tolist()
        ]

    def housekeeping(self) -> None:
        """Between batches: checkpoints due, leases, the stages' outside changes, the live view, the rate log."""
        now = time.monotonic()
        self.checkpoints.reap()
        if self._checkpoint_due and self.checkpoints.child is None:
            self.runner.settle()  # the fork freezes the states: each must be what its last batch committed
            due = sorted(p for p in self._checkpoint_due if p in self.states)  # a dropped state is not ours
            self._checkpoint_due.clear()
            if due:
                self.checkpoint_in_background(due)
        if now - self._last_lease_check >= self.config.lease_ms / 3000:
            self._check_leases()
        if now - self._last_refresh >= 0.25:
            self._last_refresh = now
            for state in self.states.values():
                refresh_stages(state, self.client, self.keys)
        self.live.publish(self.states, settle=self.runner.settle)
        if now - self._last_log >= 10:
            rate = self._ticks_since_log / (now - self._last_log)
            log.info("%s: %.0f ticks/s over partitions %s", self.settings.consumer, rate, sorted(self.states))
            self._ticks_since_log = 0
            self._last_log = now

    # --- ownership -------------------------------------------------------------------------

    def _check_leases(self) -> None:
        """Renew the leases we hold, and take (restore, then read) any wanted partition that is free."""
        self.runner.settle()  # a partition lost by the batch in flight is restored here, not run ahead
        self._last_lease_check = time.monotonic()
        if self.membership is not None:
            assigned = self.membership.mine(self.membership.beat())
            if assigned != self.wanted:
                log.info("partitions assigned to %s: %s", self.settings.consumer, assigned)
            for partition in sorted(set(self.states) - set(assigned)):
                self.hand_over(partition)
            self.wanted = assigned
        for partition in self.wanted:
            held = self.leases.hold(partition)
            stream = self.stream_of[partition]
            if held and partition not in self.states:
                self.restore(partition)
                self.runner.add_stream(stream)
                try:
                    self.runner.claim_stale([stream], min_idle_ms=0)  # the old owner's pending entries are ours now
                except UNAVAILABLE:
                    self.runner.drop_stream(stream)  # taken again whole: restored, then every pending entry claimed
                    self._last_lease_check = 0.0
                    raise
            elif not held and partition in self.states:
                log.warning("partition %d is owned by another worker now", partition)
                self.runner.drop_stream(stream)

    def acquire(self) -> None:
        """Create the consumer groups if need be, and take (restore) every wanted partition that is free.

        `run` starts with it; call it first to have a worker ready (its state restored) before it reads,
        as benchmarks do to time the reading alone.
        """
        check_layout(self.client, self.keys)
        ensure_groups(self.client, list(self.stream_of.values()), self.settings.group)
        self._check_leases()

    def release(self) -> None:
        """Checkpoint and give up every partition (clean shutdown), so a standby takes over at once."""
        self.runner.settle()  # only a confirmed state is checkpointed
        if self.membership is not None:
            self.membership.leave()  # first: the others assign themselves these partitions at their next check
        written = self.checkpoints.finish(self.states)
        for partition in list(self.states):
            if partition not in written:
                self.checkpoint(partition)
            self.leases.release(partition)
            self.states.pop(partition)

    def hand_over(self, partition: int) -> None:
        """Give a partition up to the member it is assigned to now: its confirmed state is checkpointed, so the
        next owner restores it with nothing to replay, and its lease is released, so it takes over at once.

        Entries read ahead for it stay pending under this consumer; the next owner claims them.
        """
        self.runner.settle()
        if partition not in self.states:  # the settle dropped it (a failed batch): nothing confirmed to hand
            return
        self.checkpoints.reap(wait=True)  # a child still writing an older state must not land after ours
        last_id = self.states[partition].last_id
        self.checkpoint(partition)
        self._checkpoint_due.discard(partition)
        self.runner.drop_stream(self.stream_of[partition])  # its state and pending live view go with it
        self.leases.release(partition)
        log.info("partition %d handed over at %s", partition, last_id)

    # --- state -----------------------------------------------------------------------------

    def restore(self, partition: int) -> PartitionState:
        """Load the partition's checkpoint and replay what was applied after it, effects suppressed."""
        stream = self.stream_of[partition]
        state, replayed = restore(
            self.client,
            self.raw_node(stream),
            self.keys,
            self.partition_keys(partition),
            self.config,
            self.runner.rules,
            self.settings.read_count,
        )
        self.states[partition] = state
        self._last_checkpoint[partition] = (time.monotonic(), 0)
        log.info(
            "partition %d: restored at %s (replayed %d ticks after the checkpoint)", partition, state.last_id, replayed
        )
        return state

    def checkpoint(self, partition: int, pipe: redis.client.Pipeline | None = None) -> None:
        """Write the partition's whole state: in `pipe`'s transaction when given, else in pieces, fenced by the
        lease and never over a newer checkpoint (`checkpoints.write_checkpoint`)."""
        state = self.states[partition]
        where = self.partition_keys(partition)
        if pipe is not None:
            pipe.delete(where.state)
            pipe.rpush(where.state, *blob_pieces(state.to_bytes()))
            pipe.hset(where.checkpoint, mapping={"state_id": state.last_id, "last_id": state.last_id})
            pipe.hdel(where.checkpoint, "state")  # the blob of an earlier layout
        else:
            lease, staging = self.lease_key(partition), self.staging_key(partition)
            write_checkpoint(
                self.client, lease, where, staging, self.settings.consumer, state.last_id, state.to_bytes()
            )
        self._last_checkpoint[partition] = (time.monotonic(), 0)

    def checkpoint_in_background(self, partitions: list[int]) -> None:
        """Fork a child that writes these partitions' checkpoints (between batches only: `BackgroundCheckpoints`)."""
        self.checkpoints.start(self.states, partitions)
        now = time.monotonic()
        for partition in partitions:
            self._last_checkpoint[partition] = (now, 0)

    # --- the loop --------------------------------------------------------------------------

    def _acquire_once_redis_answers(self) -> None:
        """`acquire`, tried again with backoff while the connection fails (redis-py re-sends nothing)."""
        outage = Outage(log)
        while not self.stop.is_set():
            try:
                self.acquire()
                outage.recovered()
                return
            except UNAVAILABLE as exc:  # (a cluster failing over, too)
                wait_out(outage, exc, self.stop)

    def run(self, max_idle_reads: int | None = None) -> None:
        """Run until stopped (SIGTERM/SIGINT), then checkpoint and release the partitions."""
        try:
            self._acquire_once_redis_answers()
            self.runner.run(max_idle_reads=max_idle_reads)
        finally:
            try:
                self.live.publish(self.states, force=True, settle=self.runner.settle)  # whatever the rate limit
                self.release()
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:  # shutting down, Redis gone
                log.warning("could not checkpoint at shutdown (%s); a restart will replay from the last one", exc)
