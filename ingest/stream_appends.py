"""Appending many entries to one stream in one command: for what comes in storms (alerts, anomaly scores,
dead letters), where one client-built XADD per entry was most of the writer's time."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import redis

# ARGV[1] = maxlen, ARGV[2] = a JSON list of flat [field, value, ...] lists of strings. The same entries, in
# the same order, as one XADD each, without client-side command building per entry and per argument;
# trimmed once at the end (approximately, as XADD MAXLEN ~ would), not checked at every entry.
XADD_MANY_SCRIPT = """
local entries = cjson.decode(ARGV[2])
for _, fields in ipairs(entries) do
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #entries
"""


def append_many(pipe: redis.client.Pipeline, stream: str, entries: Sequence[str], maxlen: int) -> None:
    """Queue one script call appending `entries` (each a JSON array `[field, value, ...]` of strings) to
    `stream` in order (IDs by Redis), then trimming it to about `maxlen`; nothing when there are none.

    EVAL, not a registered script: that would make a transaction check SCRIPT EXISTS every time.
    """
    if entries:
        pipe.eval(XADD_MANY_SCRIPT, 1, stream, maxlen, "[" + ",".join(entries) + "]")


def entry_json(fields: Mapping[str, bytes | str]) -> str | None:
    """One entry's fields as the JSON array `append_many` takes, or None if a value is bytes that are not
    UTF-8 (JSON cannot carry it: such an entry is written on its own). The bytes Redis stores are the same."""
    flat: list[str] = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return None
        flat += (name, value)
    return json.dumps(flat, ensure_ascii=False, separators=(",", ":"))
