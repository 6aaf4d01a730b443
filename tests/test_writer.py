"""The engine's writer encodes a batch's entries column by column, and dead letters go in one command:
the same entries as one XADD each."""

from __future__ import annotations

import json

import numpy as np
import redis

from tickerdash.analytics.engine.stage import AppendWithIds, Effects, IdEntries
from tickerdash.analytics.engine.writer import EffectsWriter, id_entries_json
from tickerdash.ingest.contract.dead_letters import encode_dead_letter
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.deadletter import add_rejected
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
    EffectsWriter(redis_client, Keys()).write(pipe, effects, partition=0)
    pipe.execute()
    for k, stream in enumerate(batch.streams):
        expected = [
            (i.encode(), {f.encode(): v.encode() for f, v in zip(flat[::2], flat[1::2], strict=True)})
            for s, _, i, flat in batch
            if s == stream
        ]
        assert redis_client.xrange(stream) == expected, k


def test_dead_letters_go_in_one_call_in_order_with_their_bytes(redis_client: redis.Redis) -> None:
    """A storm of dead letters is one script call; bytes that are not UTF-8 are kept exactly, order too."""
    rejected = [
        Rejected("1-0#0", {"symbol": "AAPL", "price": "-1"}, "price: must be > 0"),
        Rejected("1-0#1", {"symbol": b"\xff\xfe", "price": "2"}, "symbol: not UTF-8"),
        Rejected("2-0", {"note": 'caf\u00e9 "quoted" \\ \n\u0000', "raw": b"ok"}, "entry: odd"),
    ]
    pipe = redis_client.pipeline(transaction=True)
    assert add_rejected(pipe, "td:dead", rejected, "test") == 3
    commands = [args[0] for args, _ in pipe.command_stack]
    pipe.execute()
    assert commands == ["EVAL", "XADD", "EVAL"]  # the entry JSON cannot carry stands alone, in its place
    written = [fields for _, fields in redis_client.xrange("td:dead")]
    expected = [encode_dead_letter(r.fields, r.reason, "test", r.entry_id) for r in rejected]
    assert written == [{k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in e.items()} for e in expected]
