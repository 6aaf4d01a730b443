"""The engine's writer packs a batch's entries with IDs column by column as the XADDs a client would send
one by one, and dead letters go in one command: the same entries as one XADD each."""

from __future__ import annotations

import hiredis
import numpy as np
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.analytics.engine.stage import AppendWithIds, Effects, IdEntries
from tickerdash.analytics.engine.writer import EffectsWriter, xadd_commands
from tickerdash.ingest.contract.dead_letters import encode_dead_letter
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.text_tables import TextTable, hstack
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.redis_adapter import execute_transaction
from tickerdash.ingest.ticks import TickBatch


def entries(rng: np.random.Generator, n: int) -> IdEntries:
    """n entries over three streams, with a field that some entries leave out."""
    streams = ["td:a", "td:b", "td:c"]
    values: list[str | None] = [repr(float(v)) for v in rng.normal(size=n)]
    sometimes = [None if leave_out else value for value, leave_out in zip(values, rng.random(n) < 0.3, strict=True)]
    ids = TextTable.of([f"{k + 1}-0" for k in range(n)])
    table = hstack([TextTable.of(values), TextTable.of(sometimes)])
    return IdEntries(streams, [10, 20, 30], rng.integers(0, 3, n), ids, ["x", "y"], table)


def test_the_packed_commands_are_the_entries_one_by_one(redis_client: redis.Redis) -> None:
    """`xadd_commands` is byte for byte what redis-py packs for the entries' XADDs taken one by one (absent
    fields left out), and reads back as those commands."""
    rng = np.random.default_rng(4)
    connection = redis_client.connection_pool.get_connection()
    try:
        for n in (1, 2, 17, 500):
            batch = entries(rng, n)
            commands = [("XADD", stream, "MAXLEN", "~", str(maxlen), i, *flat) for stream, maxlen, i, flat in batch]
            assert xadd_commands(batch) == b"".join(connection.pack_commands(commands))
            reader = hiredis.Reader(encoding="utf-8")
            reader.feed(xadd_commands(batch))
            assert [tuple(reader.gets()) for _ in commands] == commands and reader.gets() is False
    finally:
        redis_client.connection_pool.release(connection)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_texts_pack_as_redis_py_packs_them_one_by_one(data: st.DataObject) -> None:
    """Any field count, absent and empty values, texts of 0 to over 1,000 bytes (lengths of one to four digits),
    multi-byte characters: the packed rows are the XADDs redis-py packs one by one."""
    rows = data.draw(st.integers(1, 40))
    width = data.draw(st.integers(0, 5))
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=14)
    long_text = st.one_of(text, st.integers(90, 1100).map(lambda n: "9" * n))
    streams = data.draw(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4))
    maxlens = data.draw(st.lists(st.integers(0, 10**12), min_size=len(streams), max_size=len(streams)))
    stream_at = np.array(data.draw(st.lists(st.integers(0, len(streams) - 1), min_size=rows, max_size=rows)))
    ids = TextTable.of(data.draw(st.lists(text.filter(bool), min_size=rows, max_size=rows)))
    names = data.draw(st.lists(text.filter(bool), min_size=width, max_size=width))
    columns = [
        TextTable.of(data.draw(st.lists(st.one_of(st.none(), long_text), min_size=rows, max_size=rows)))
        for _ in range(width)
    ]
    values = (
        hstack(columns)
        if columns
        else TextTable(np.zeros(0, np.uint8), *np.zeros((2, rows, 0), np.int64), np.zeros((rows, 0), bool))
    )
    batch = IdEntries(streams, maxlens, stream_at, ids, names, values)
    commands = [("XADD", stream, "MAXLEN", "~", str(maxlen), i, *flat) for stream, maxlen, i, flat in batch]
    packer = redis.connection.Connection()
    assert xadd_commands(batch) == b"".join(packer.pack_commands(commands))


def test_entries_land_in_their_streams_in_order_with_their_ids(redis_client: redis.Redis) -> None:
    """The packed XADDs write every entry to its stream, with its ID and fields, in order."""
    batch = entries(np.random.default_rng(5), 200)
    effects = Effects(TickBatch.empty(), outputs=[AppendWithIds("test", lambda keys: batch)])
    pipe = redis_client.pipeline(transaction=True)
    EffectsWriter(redis_client, Keys()).write(pipe, effects, partition=0)
    execute_transaction(pipe)
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
