"""Writing a batch's effects: every stage's outputs, encoded now, and the dead letters, on the batch's transaction.

The writer knows the three ways of appending to a stream (`engine.stage`: many entries to one stream,
one entry to one stream, entries with explicit IDs to the streams they name), not what a stage writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis

from tickerdash.analytics.engine.stage import AppendMany, AppendOne, AppendWithIds, Effects, IdEntries, Output
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.stream_appends import append_many

# Append entries with explicit IDs to many streams in one command: KEYS = the streams, ARGV[1] = a JSON list
# of [stream's KEYS index, maxlen, entry ID, field, value, ...]. The same XADDs, in the same order, as one
# client command each; what it saves is the client's work of building and packing every argument of every
# entry (a bar's XADD has 17 or more), which was the largest cost of writing bars. The JSON is built column
# by column (`id_entries_json`), never entry by entry.
XADD_WITH_IDS_SCRIPT = """
local entries = cjson.decode(ARGV[1])
for _, e in ipairs(entries) do
  redis.call('XADD', KEYS[e[1]], 'MAXLEN', '~', e[2], e[3], unpack(e, 4))
end
return #entries
"""


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
        if len(entries):  # EVAL, not a registered script: that would make the pipeline check SCRIPT EXISTS per batch
            pipe.eval(XADD_WITH_IDS_SCRIPT, len(entries.streams), *entries.streams, id_entries_json(entries))


def id_entries_json(entries: IdEntries) -> str:
    """XADD_WITH_IDS_SCRIPT's ARGV[1]: `[[stream's KEYS index, "maxlen", "ID", "field", "value", ...], ...]`.

    Built as one table of text pieces, a row per entry (its head, then `,"field","` + value + `"` per field,
    all three empty where the entry leaves the field out, then `]`), filled column by column and joined
    once: no Python step per entry.
    """
    heads = np.array([f'[{k + 1},{json.dumps(str(maxlen))},"' for k, maxlen in enumerate(entries.maxlens)], object)
    pieces = np.empty((len(entries), 4 + 3 * len(entries.fields)), object)
    pieces[:, 0] = heads[entries.stream_at]
    pieces[:, 1] = entries.ids
    pieces[:, 2] = '"'
    for at, (name, values) in enumerate(entries.fields, start=1):
        absent = values == None  # noqa: E711 (elementwise on an object array)
        pieces[:, 3 * at] = "," + json.dumps(name) + ',"'
        pieces[:, 3 * at + 1] = values
        pieces[:, 3 * at + 2] = '"'
        if absent.any():
            pieces[absent, 3 * at : 3 * at + 3] = ""
    pieces[:, -1] = "],"
    pieces[-1, -1] = "]"
    return "[" + "".join(pieces.ravel().tolist()) + "]"
