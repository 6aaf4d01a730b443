"""Restoring a partition: its checkpoint, then a replay of what was applied after it, effects suppressed.

The stages are deterministic, so a state restored from a checkpoint and fed the entries between the
checkpoint and the progress marker stands exactly where the old owner's stood: neither a trade lost
nor one counted twice. The replayed batches' outputs were written already and are dropped unencoded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.fields import id_order
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import DecodeRules, as_text, decode_entries

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The internal keys of one partition of one consumer group."""

    checkpoint: str  # hash: `state` (blob), `state_id`, `last_id` (progress marker)
    quarantine: str  # set: IDs of entries quarantined unapplied (a replay skips them)
    stream: str  # the partition's tick stream

    @classmethod
    def of(cls, keys: Keys, group: str, partition: int) -> PartitionKeys:
        """The keys of `partition` under `keys`."""
        return cls(
            keys.checkpoint(group, partition),
            keys.quarantined(group, partition),
            keys.ticks(partition),
        )


def refresh_stages(state: PartitionState, client: AnyRedis, keys: Keys) -> None:
    """Let every stage pick up outside changes (e.g. rules)."""
    for stage in state.stages:
        stage.refresh(client, keys)


def restore(
    client: AnyRedis,
    raw: redis.Redis,
    keys: Keys,
    where: PartitionKeys,
    config: WorkerConfig,
    rules: DecodeRules,
    read_count: int,
) -> tuple[PartitionState, int]:
    """The partition's state as its last committed batch left it, and how many ticks were replayed.

    `raw` is a client whose XRANGE replies are unparsed (`ingest.redis_adapter.raw_client`).
    """
    saved: dict[bytes, bytes] = client.hgetall(where.checkpoint)  # type: ignore[assignment]
    if saved.get(b"state"):
        state = PartitionState.from_bytes(saved[b"state"], config)  # with the rules it had then
    else:  # never checkpointed: the old owner took the stored rules (say) before its first batch; so do we
        state = PartitionState(config)
        refresh_stages(state, client, keys)
    applied = saved.get(b"last_id", b"0-0").decode()
    replayed = 0
    if id_order(applied) > id_order(state.last_id):
        start = state.last_id
        members: set[bytes | str] = client.smembers(where.quarantine)
        quarantined = {as_text(member).encode() for member in members}
        while True:
            entries = raw.execute_command("XRANGE", where.stream, f"({start}", applied, "COUNT", read_count)
            if not entries:
                break
            start = entries[-1][0].decode()
            if quarantined:
                entries = [entry for entry in entries if entry[0] not in quarantined]
            decoded = decode_entries(entries, rules)
            if len(decoded.ticks):
                state.apply(decoded.ticks)
                replayed += len(decoded.ticks)
        if id_order(start) < id_order(applied):
            log.error("%s: entries up to %s were trimmed before replay; state may miss trades", where.stream, applied)
        state.last_id = applied
    refresh_stages(state, client, keys)  # what comes after the progress marker meets today's rules, as it would have
    return state, replayed
