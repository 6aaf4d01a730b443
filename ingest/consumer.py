"""What a `StreamRunner` drives: the `Consumer` protocol, and the two signals a consumer's fence raises.

The runner owns reading, the transactions and the knowledge of which of them Redis confirmed; the
consumer owns its in-memory state of each stream. The runner calls the consumer, never the other way
round, with two exceptions, both documented on `StreamRunner`: `settle()` (read the replies of the
transaction in flight, so that the consumer's state is confirmed state: before a checkpoint, say),
and, between batches (from `housekeeping`), `add_stream`, `drop_stream` and `claim_stale`.

Which state is confirmed: with `defer_commit`, the consumer's state of a stream may be one batch ahead
of Redis (the batch in flight). When that batch turns out not to have been applied (the fence tripped,
the connection failed under it: a consumer that `keeps_state`), the runner drops the stream and calls
`dropped(stream)`: the
consumer forgets its state of that stream and rebuilds it from Redis before the stream is read again.
When processing a batch raises part-way, the runner settles, then calls `rebuild(stream)` at once (the
stream stays ours; the batch is handled again in halves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from tickerdash.ingest.ticks import TickBatch

OWNERSHIP_ONLY = b"0-0"  # a fence's first_id that no entry precedes: fence on the stream's ownership alone


class OwnershipLost(Exception):  # noqa: N818 - a signal, not an error: another consumer now owns the stream
    """The stream (partition) now belongs to another consumer: drop it, leave its entries pending."""


class OutOfOrder(OwnershipLost):
    """Entries before the batch were delivered but never applied (they are still pending): applying the batch
    would move the stream's progress past them. Handled like a lost ownership: the stream is dropped with its
    entries pending, for the consumer to rebuild its state and re-read them in ID order."""


class Consumer(Protocol):
    """The consumer of a `StreamRunner`'s streams."""

    # whether the consumer keeps state of its streams in memory: if so, a batch whose transaction may or may
    # not have been applied (the connection failed under it) makes the runner drop the stream (`dropped`)
    keeps_state: bool

    def fence(self, stream: str, first_id: bytes, pipe: redis.client.Pipeline) -> None:
        """Before MULTI: WATCH whatever fences the batch whose first entry is `first_id` (e.g. a partition lease),
        and raise OwnershipLost if the stream is no longer ours, OutOfOrder if the batch may not be applied yet."""

    def process(self, stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        """Apply the batch to the state and queue its effects on `pipe` (the batch's MULTI/EXEC transaction)."""

    def quarantined(self, stream: str, entry_ids: list[str], pipe: redis.client.Pipeline) -> None:
        """Entries are being quarantined unapplied, on `pipe`'s transaction: note them (a replay skips them)."""

    def dropped(self, stream: str) -> None:
        """The runner stopped reading the stream: forget its state (it may be ahead of Redis), rebuild before reuse."""

    def rebuild(self, stream: str) -> None:
        """Processing a batch raised part-way: put the stream's state back to what Redis confirmed."""

    def housekeeping(self) -> None:
        """Between batches (the cyclic GC on): the consumer's periodic work."""


ProcessFn = Callable[[str, TickBatch, redis.client.Pipeline], None]


@dataclass
class FunctionConsumer:
    """A consumer made of plain functions (tests, benchmarks, services with no state to rebuild)."""

    process_fn: ProcessFn
    keeps_state: bool = False
    fence_fn: Callable[[str, bytes, redis.client.Pipeline], None] | None = None
    dropped_fn: Callable[[str], None] | None = None
    housekeeping_fn: Callable[[], None] | None = None

    def fence(self, stream: str, first_id: bytes, pipe: redis.client.Pipeline) -> None:
        """The fence function, if any."""
        if self.fence_fn is not None:
            self.fence_fn(stream, first_id, pipe)

    def process(self, stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        """The process function."""
        self.process_fn(stream, ticks, pipe)

    def quarantined(self, stream: str, entry_ids: list[str], pipe: redis.client.Pipeline) -> None:
        """Nothing to note."""

    def dropped(self, stream: str) -> None:
        """The dropped function, if any."""
        if self.dropped_fn is not None:
            self.dropped_fn(stream)

    def rebuild(self, stream: str) -> None:
        """No state to rebuild."""

    def housekeeping(self) -> None:
        """The housekeeping function, if any."""
        if self.housekeeping_fn is not None:
            self.housekeeping_fn()
