"""Dead-letter stream: every rejected input, with its original fields, the reason and the source."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from tickerdash.ingest.contract.dead_letters import encode_dead_letter
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.stream_appends import append_many, entry_json

DEADLETTER_MAXLEN = 100_000


def add_rejected(pipe: redis.client.Pipeline, stream: str, rejected: Iterable[Rejected], source: str) -> int:
    """Queue one dead-letter entry per rejected input on `pipe`, in order; returns how many.

    They go in one script call (`append_many`): a storm of late or malformed trades costs one command, not
    one per trade. An entry with a value JSON cannot carry (bytes that are not UTF-8) is an XADD of its own.
    """
    count = 0
    run: list[str] = []
    for item in rejected:
        fields = encode_dead_letter(item.fields, item.reason, source, item.entry_id)
        text = entry_json(fields)
        if text is None:
            append_many(pipe, stream, run, DEADLETTER_MAXLEN)
            run = []
            pipe.xadd(stream, fields, maxlen=DEADLETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
        else:
            run.append(text)
        count += 1
    append_many(pipe, stream, run, DEADLETTER_MAXLEN)
    return count
