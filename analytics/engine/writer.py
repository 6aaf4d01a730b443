"""Writing a batch's effects: every stage's outputs, encoded now, and the dead letters, on the batch's transaction.

The writer knows the three ways of appending to a stream (`engine.stage`: many entries to one stream,
one entry to one stream, entries with explicit IDs to the streams they name), not what a stage writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis

from tickerdash.analytics.engine.stage import AppendMany, AppendOne, AppendWithIds, Effects, IdEntries, Output
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.text_tables import TextTable
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


@functools.lru_cache(maxsize=256)
def _field_pieces(names: tuple[str, ...]) -> TextTable:
    """Per field, what comes between the text before it and its value's `$<length>`: CRLF, then its name."""
    return TextTable.of(["\r\n" + _bulk(name) for name in names])


def xadd_commands(entries: IdEntries) -> bytes:
    """Every entry as `XADD <stream> MAXLEN ~ <maxlen> <ID> <field> <value> ...`, packed as the RESP a client
    sends: the same commands, in the same order, as one client-built XADD each.

    Redis runs each as a plain XADD (about 2 us with a bar's fields, against 7 us for the same XADD made by
    a script from a JSON payload), and the client builds none of them one by one: one compiled loop
    (`byte_runs.xadd_rows`) writes every row from the entries' text columns. A row is `*<arguments>`, the
    stream's head (XADD to MAXLEN, packed once per stream), the ID, then each present field's name and value.
    """
    if not len(entries):
        return b""
    # numba costs ~0.5 s to import: the commands that never write entries (the simulator, --help) skip it
    from tickerdash.ingest.contract.byte_runs import xadd_rows

    heads = TextTable.of(list(map(_xadd_head, entries.streams, entries.maxlens)))
    fields = _field_pieces(tuple(entries.names))
    ids, values = entries.ids, entries.values
    return xadd_rows(
        6,  # XADD, stream, MAXLEN, ~, maxlen, ID
        heads.data,
        _flat(heads.starts),
        _flat(heads.lengths),
        np.ascontiguousarray(entries.stream_at, np.int64),
        ids.data,
        _flat(ids.starts),
        _flat(ids.lengths),
        fields.data,
        _flat(fields.starts),
        _flat(fields.lengths),
        values.data,
        np.ascontiguousarray(values.starts),
        np.ascontiguousarray(values.lengths),
        np.ascontiguousarray(values.present),
    ).tobytes()


def _flat(column: np.ndarray) -> np.ndarray:
    """A one-column (n, 1) array as a contiguous (n,) one (the compiled loop takes one layout)."""
    return np.ascontiguousarray(column[:, 0])


def preload_writer() -> None:
    """Load `xadd_commands`' compiled loop now (from numba's cache, or compiled once), not with the first bars."""
    one = TextTable.of(["1"])
    xadd_commands(IdEntries(["preload"], [1], np.zeros(1, np.int64), TextTable.of(["1-1"]), ["f"], one))
