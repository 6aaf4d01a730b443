"""Dead-letter stream: every rejected input, with its original fields, the reason and the source."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from tickerdash.ingest.contract.dead_letters import encode_dead_letter
from tickerdash.ingest.contract.tick_entries import Rejected

DEADLETTER_MAXLEN = 100_000


def add_rejected(pipe: redis.client.Pipeline, stream: str, rejected: Iterable[Rejected], source: str) -> int:
    """Queue one dead-letter entry per rejected input on `pipe`; returns how many."""
    count = 0
    for item in rejected:
        fields = encode_dead_letter(item.fields, item.reason, source, item.entry_id)
        pipe.xadd(stream, fields, maxlen=DEADLETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
        count += 1
    return count
