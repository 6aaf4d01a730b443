"""The engine's writer encodes a batch's entries column by column: the same commands as entry by entry."""

from __future__ import annotations

import json

import numpy as np
import redis

from tickerdash.analytics.engine.stage import AppendWithIds, Effects, IdEntries
from tickerdash.analytics.engine.writer import EffectsWriter, id_entries_json
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.ticks import TickBatch


def entries(rng: np.random.Generator, n: int) -> IdEntries:
    """n entries over three streams, with a field that some entries leave out."""
    streams = ["td:a", "td:b", "td:c"]
    values = np.array([repr(float(v)) for v in rng.normal(size=n)], object)
    sometimes = values.copy()
    sometimes[rng.random(n) < 0.3] = None
    ids = np.array([f"{k + 1}-0" for k in range(n)], object)
    return IdEntries(streams, [10, 20, 30], rng.integers(0, 3, n), ids, [("x", values), ("y", sometimes)])


def test_the_json_is_the_entries_one_by_one() -> None:
    """`id_entries_json` is what json.dumps makes of the entries taken one by one (absent fields left out)."""
    rng = np.random.default_rng(4)
    for n in (1, 2, 17, 500):
        batch = entries(rng, n)
        rows = [[batch.streams.index(s) + 1, str(maxlen), i, *f] for s, maxlen, i, f in batch]
        assert json.loads(id_entries_json(batch)) == rows
        assert id_entries_json(batch) == json.dumps(rows, separators=(",", ":"))


def test_entries_land_in_their_streams_in_order_with_their_ids(redis_client: redis.Redis) -> None:
    """One script call writes every entry to its stream, with its ID and fields, in order."""
    batch = entries(np.random.default_rng(5), 200)
    effects = Effects(TickBatch.empty(), outputs=[AppendWithIds("test", lambda keys: batch)])
    pipe = redis_client.pipeline(transaction=True)
    EffectsWriter(redis_client, Keys()).write(pipe, effects)
    pipe.execute()
    for k, stream in enumerate(batch.streams):
        expected = [
            (i.encode(), {f.encode(): v.encode() for f, v in zip(flat[::2], flat[1::2], strict=True)})
            for s, _, i, flat in batch
            if s == stream
        ]
        assert redis_client.xrange(stream) == expected, k
