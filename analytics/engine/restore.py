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


# Pieces a checkpoint blob is stored in: Redis copies one in well under a millisecond, so writing or reading a
# checkpoint of any size never holds up the other clients (one command carrying a 21 MB blob held it ~80 ms).
PIECE_BYTES = 1 << 20


def blob_pieces(blob: bytes) -> list[memoryview]:
    """A checkpoint blob cut into the pieces it is stored as (at least one)."""
    if not blob:
        raise ValueError("a checkpoint blob is never empty")
    view = memoryview(blob)
    return [view[start : start + PIECE_BYTES] for start in range(0, len(blob), PIECE_BYTES)]


def state_blob(client: AnyRedis, where: PartitionKeys) -> bytes | None:
    """The partition's checkpointed state blob, its pieces joined (None if it has none in this layout)."""
    pieces: list[bytes] = client.lrange(where.state, 0, -1)  # type: ignore[assignment]
    return b"".join(pieces) if pieces else None


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The internal keys of one partition of one consumer group."""

    checkpoint: str  # hash: `state_id` (the last entry the state includes), `last_id` (progress marker)
    state: str  # list: the state blob (`PartitionState.to_bytes`) in pieces (`blob_pieces`)
    quarantine: str  # set: IDs of entries quarantined unapplied (a replay skips them)
    stream: str  # the partition's tick stream

    @classmethod
    def of(cls, keys: Keys, group: str, partition: int) -> PartitionKeys:
        """The keys of `partition` under `keys`."""
        return cls(
            keys.checkpoint(group, partition),
            keys.checkpoint_state(group, partition),
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
    # (a checkpoint hash of an earlier layout holds the blob itself, as its `state` field)
    blob = state_blob(client, where) or saved.get(b"state")
    if blob:
        state = PartitionState.from_bytes(blob, config)  # with the rules it had then
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
