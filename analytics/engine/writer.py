"""Writing a batch's effects: every stage's outputs, encoded now, and the dead letters, on the batch's transaction.

The writer knows the three ways of appending to a stream (`engine.stage`: many entries to one stream,
one entry to one stream, entries with explicit IDs to the streams they name), not what a stage writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import redis

from tickerdash.analytics.engine.stage import AppendMany, AppendOne, AppendWithIds, Effects, IdEntries, Output
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.text_tables import TextTable, constant, join_rows, length_prefixes, lookup
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.redis_adapter import queue_packed
from tickerdash.ingest.stream_appends import append_many


class EffectsWriter:
    """Queues one batch's effects on its transaction."""

    def __init__(self, client: AnyRedis, keys: Keys, source: str = "analytics") -> None:
        self.keys = keys
        self.source = source
        self._queue: dict[type, Callable[[redis.client.Pipeline, Any, int], None]] = {
            AppendMany: self._append_many,
            AppendOne: self._append_one,
            AppendWithIds: self._append_with_ids,
        }

    def write(self, pipe: redis.client.Pipeline, effects: Effects, partition: int) -> None:
        """Queue every output of a batch of `partition` (in the order the stages added them), then the dead letters."""
        self.write_outputs(pipe, effects.outputs, partition)
        self.write_rejected(pipe, effects.rejected, partition)

    def write_outputs(self, pipe: redis.client.Pipeline, outputs: Sequence[Output], partition: int) -> None:
        """Queue these outputs of a batch of `partition`, in order."""
        for output in outputs:
            self.queue(pipe, output, partition)

    def write_rejected(self, pipe: redis.client.Pipeline, rejected: Sequence[Rejected], partition: int) -> None:
        """Queue these dead letters of a batch of `partition`, in order."""
        if rejected:
            add_rejected(pipe, self.keys.deadletter(partition), rejected, self.source)

    def queue(self, pipe: redis.client.Pipeline, output: Output, partition: int) -> None:
        """Encode one output and queue its appends (to `partition`'s streams: one transaction, one slot)."""
        self._queue[type(output)](pipe, output, partition)

    def _append_many(self, pipe: redis.client.Pipeline, output: AppendMany, partition: int) -> None:
        append_many(pipe, output.stream(self.keys, partition), output.encode(), output.maxlen)

    def _append_one(self, pipe: redis.client.Pipeline, output: AppendOne, partition: int) -> None:
        stream = output.stream(self.keys, partition)
        pipe.xadd(stream, output.encode(), maxlen=output.maxlen, approximate=True)  # type: ignore[arg-type]

    def _append_with_ids(self, pipe: redis.client.Pipeline, output: AppendWithIds, partition: int) -> None:
        entries = output.encode(self.keys)
        queue_packed(pipe, xadd_commands(entries), len(entries))


def _bulk(text: str) -> str:
    return f"${len(text.encode())}\r\n{text}\r\n"


@functools.lru_cache(maxsize=1 << 16)  # a stream per symbol and interval: made once each, not once per batch
def _xadd_head(stream: str, maxlen: int) -> bytes:
    return f"$4\r\nXADD\r\n{_bulk(stream)}$6\r\nMAXLEN\r\n$1\r\n~\r\n{_bulk(str(maxlen))}".encode()


@functools.lru_cache(maxsize=64)
def _argument_counts(most: int) -> TextTable:
    return TextTable.of([f"*{n}\r\n" for n in range(most + 1)])


def xadd_commands(entries: IdEntries) -> bytes:
    """Every entry as `XADD <stream> MAXLEN ~ <maxlen> <ID> <field> <value> ...`, packed as the RESP a client
    sends: the same commands, in the same order, as one client-built XADD each.

    Redis runs each as a plain XADD (about 2 us with a bar's fields, against 7 us for the same XADD made by
    a script from a JSON payload), and the client builds none of them one by one: the rows are joined from
    text tables in one gather over bytes (`text_tables.join_rows`). A row is `*<args>`, the stream's head,
    the ID's `$<length>` and the ID, then per field the piece that ends the value before it (CRLF) and
    starts this one (name, `$<length>`), and the value (both empty where the entry leaves the field out),
    then the last CRLF.
    """
    count, width = len(entries), len(entries.names)
    heads = lookup(TextTable.of(list(map(_xadd_head, entries.streams, entries.maxlens))), entries.stream_at)
    field_heads = length_prefixes(["\r\n" + _bulk(name) for name in entries.names], entries.values)
    arg_counts = 6 + 2 * entries.values.present.sum(axis=1)  # XADD, stream, MAXLEN, ~, maxlen, ID, name and value
    parts = [
        lookup(_argument_counts(6 + 2 * width), arg_counts),
        heads,
        length_prefixes([""], entries.ids),
        entries.ids,
        field_heads,
        entries.values,
        constant("\r\n", count),
    ]
    # columns: the four of the entry's head, then each field's head and value, then the last CRLF
    fields = [column for j in range(width) for column in (4 + j, 4 + width + j)]
    return join_rows(parts, [0, 1, 2, 3, *fields, 4 + 2 * width])
