"""How far each consumer group has read a stream, and the entries it missed, from the stream's counters.

`read_progress` takes a stream's size, counters and every group's position in one atomic step; the
producer's retention trims by it and `status` reports it.

Entries removed before a group read them (an operator's XTRIM, an outside producer's MAXLEN) are counted
from the stream's counters (Redis 7: entries-added, and the group's entries-read, exact from a group
created with ENTRIESREAD 0), only where something past the group's position may have been removed (the
stream's first entry is past it, or its max-deleted-entry-id), and recorded under `keys.lost(group,
stream)`. A restart on the append-only file leaves entries-read behind (Redis 7.0 does not log it); the
runner sets it right again whenever its group has read everything. Redis 6.2 keeps no such counters: there
the count is unknown (entries deleted while pending are still dead-lettered as `trimmed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import as_text

# What a stream holds and how far each group has come, in one atomic step (XINFO without the first and
# last entries, which may be 300 kB batch entries). Returns false when the stream does not exist, else
# {length, last-generated-id, entries-added or -1 (6.2), first entry ID or '', groups, max-deleted-entry-id
# ('0-0' on 6.2)}, each group as {name, pending, last-delivered-id, entries-read or -1, oldest pending ID or ''}.
_PROGRESS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, last, added, first, deleted = 0, '0-0', -1, '', '0-0'
for i = 1, #info, 2 do
  local k, v = info[i], info[i + 1]
  if k == 'length' then length = v
  elseif k == 'last-generated-id' then last = v
  elseif k == 'entries-added' then added = v
  elseif k == 'max-deleted-entry-id' then deleted = v
  elseif k == 'first-entry' and v then first = v[1] end
end
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, pending, delivered, read = '', 0, '0-0', -1
  for i = 1, #g, 2 do
    local k, v = g[i], g[i + 1]
    if k == 'name' then name = v
    elseif k == 'pending' then pending = v
    elseif k == 'last-delivered-id' then delivered = v
    elseif k == 'entries-read' and v then read = v end
  end
  local oldest = ''
  if pending > 0 then oldest = redis.call('XPENDING', KEYS[1], name)[2] end
  table.insert(groups, {name, pending, delivered, read, oldest})
end
return {length, last, added, first, groups, deleted}
"""

# A group's entries-read is exact while the server runs, but Redis 7.0 does not carry it through a restart on
# its append-only file (deliveries are logged as XCLAIM ... LASTID, which moves the group's position and not
# its counter). Once the group has read everything (nothing to miss), its counter must equal entries-added
# less the entries recorded as missed: set it so (XGROUP SETID ... ENTRIESREAD), atomically with the check.
# KEYS: stream, lost record; ARGV: group. Returns 1 if the counter was corrected.
_HEAL_READ_SCRIPT = """
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added = nil, nil
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'entries-added' then added = info[i + 1] end
end
if not added then return 0 end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered, read = nil, nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then delivered = g[i + 1]
    elseif g[i] == 'entries-read' then read = g[i + 1] end
  end
  if name == ARGV[1] and delivered == last then
    local expected = added - tonumber(redis.call('HGET', KEYS[2], 'entries') or '0')
    if read ~= expected and expected >= 0 then
      redis.call('XGROUP', 'SETID', KEYS[1], name, delivered, 'ENTRIESREAD', expected)
      return 1
    end
  end
end
return 0
"""

# Raise hash KEYS[1]'s `entries` to ARGV[1] (a group's lifetime count of missed entries only grows) and
# stamp `at_ms` = ARGV[2]; returns by how much it rose.
_RECORD_MISSED_SCRIPT = """
local before = tonumber(redis.call('HGET', KEYS[1], 'entries') or '0')
local now = tonumber(ARGV[1])
if now <= before then return 0 end
redis.call('HSET', KEYS[1], 'entries', now, 'at_ms', ARGV[2])
return now - before
"""


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream ID as (ms, seq), for comparing."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest ID after `entry_id`."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}" if seq < 2**64 - 1 else f"{ms + 1}-0"


@dataclass(frozen=True, slots=True)
class GroupProgress:
    """How far one consumer group has read a stream."""

    name: str
    pending: int
    last_delivered: str
    entries_read: int | None  # Redis 7's counter (None: 6.2, or not known to Redis)
    oldest_pending: str | None


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """A stream's size and counters, and its groups' progress, taken at one instant."""

    length: int
    last_id: str
    entries_added: int | None  # None on Redis 6.2
    first_id: str | None
    groups: tuple[GroupProgress, ...]
    max_deleted: str = "0-0"  # the newest ID ever trimmed or deleted ('0-0': none, or Redis 6.2)

    def group(self, name: str) -> GroupProgress | None:
        """The named group's progress (None if the group does not exist)."""
        return next((g for g in self.groups if g.name == name), None)


def missed_entries(stream: StreamProgress, group: GroupProgress) -> int | None:
    """Entries the group never read that are gone from the stream (trimmed or deleted), over the group's
    life; None where the counters cannot tell (Redis 6.2, or a group part way through a stream whose
    counter Redis lost)."""
    if stream.entries_added is None:
        return None
    if group.last_delivered == "0-0":  # nothing read yet: every entry ever added is unread
        return max(stream.entries_added - stream.length, 0)
    position = parse_id(group.last_delivered)
    trimmed_past = stream.first_id is None or parse_id(stream.first_id) > position  # a trim removes the head
    deleted_past = parse_id(stream.max_deleted) > position  # XDEL anywhere
    if not (trimmed_past or deleted_past):
        return 0  # every entry after the group's position is still there: it missed nothing (more)
    if group.entries_read is None:
        return None
    if stream.first_id is None or parse_id(stream.first_id) > parse_id(group.last_delivered):
        unread_here = stream.length
    elif group.last_delivered == stream.last_id:
        unread_here = 0
    else:  # part way through: how many entries lie ahead is not counted by Redis
        return None
    return max(stream.entries_added - group.entries_read - unread_here, 0)


def _text(value: bytes | str | int) -> str:
    return as_text(value) if isinstance(value, bytes | str) else str(value)


def _parse_progress(reply: Any) -> StreamProgress:
    length, last, added, first, groups, deleted = reply
    parsed = tuple(
        GroupProgress(
            name=_text(g[0]),
            pending=int(g[1]),
            last_delivered=_text(g[2]),
            entries_read=None if int(g[3]) < 0 else int(g[3]),
            oldest_pending=_text(g[4]) or None,
        )
        for g in groups
    )
    return StreamProgress(
        length=int(length),
        last_id=_text(last),
        entries_added=None if int(added) < 0 else int(added),
        first_id=_text(first) or None,
        groups=parsed,
        max_deleted=_text(deleted),
    )


def read_progress(client: AnyRedis, stream: str) -> StreamProgress | None:
    """The stream's size, counters and groups in one atomic step (None if the stream does not exist)."""
    reply = client.register_script(_PROGRESS_SCRIPT)(keys=[stream])
    return None if not reply else _parse_progress(reply)


def create_group(client: AnyRedis, stream: str, group: str) -> bool:
    """Create `group` at the start of `stream` (and the stream) unless it exists; True if it was created.

    On Redis 7 the group starts with ENTRIESREAD 0, so that its entries-read counts exactly what it read
    and `missed_entries` can count what was trimmed before it read it."""
    for extra in ({"entries_read": 0}, {}):
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True, **extra)
            return True
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            if not extra:  # the plain form failed: not an old server's missing option
                raise
    return False


def record_missed(client: AnyRedis, keys: Keys, group: str, stream: str) -> tuple[int, int]:
    """Count the entries of `stream` that `group` missed and raise its record to it: (newly missed, in all)."""
    progress = read_progress(client, stream)
    mine = progress.group(group) if progress else None
    if progress and mine and progress.entries_added is not None and mine.last_delivered == progress.last_id:
        lost = keys.lost(group, stream)
        if mine.entries_read != progress.entries_added - lost_entries(client, keys, group, stream):
            client.register_script(_HEAL_READ_SCRIPT)(keys=[stream, lost], args=[group])
        return 0, lost_entries(client, keys, group, stream)
    missed = missed_entries(progress, mine) if progress and mine else None
    if not missed:
        return 0, lost_entries(client, keys, group, stream)
    rose = client.register_script(_RECORD_MISSED_SCRIPT)(
        keys=[keys.lost(group, stream)], args=[missed, int(time.time() * 1000)]
    )
    return int(rose), lost_entries(client, keys, group, stream)


def lost_entries(client: AnyRedis, keys: Keys, group: str, stream: str) -> int:
    """The recorded count of entries of `stream` that `group` missed."""
    return int(client.hget(keys.lost(group, stream), "entries") or 0)
