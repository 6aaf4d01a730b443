"""Retention of the tick streams without silent loss.

A producer trims a tick stream to its cap (`stream_maxlen` entries, or `retention_s` seconds) but never
past the oldest entry that some consumer group still needs: its oldest pending entry, else the entry after
its last-delivered ID. When the entries still needed reach the cap, the producer waits (backpressure) until
the readers catch up, and says so in its log and under `keys.backpressure(stream)` for `status`.

Entries removed before a group read them all the same (an operator's XTRIM, an outside producer's MAXLEN)
are counted from the stream's counters (Redis 7: entries-added, and the group's entries-read, exact from a
group created with ENTRIESREAD 0), only where something past the group's position may have been removed
(the stream's first entry is past it, or its max-deleted-entry-id), and recorded under
`keys.lost(group, stream)`. A restart on the append-only file leaves entries-read behind (Redis 7.0 does
not log it); the runner sets it right again whenever its group has read everything. Redis 6.2 keeps no
such counters: there the count is unknown (entries deleted while pending are still dead-lettered as
`trimmed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import as_text
from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25  # a producer measures its streams at least this often while it writes
FIRST_WAIT_S = 0.05  # backpressure polls: the first wait, doubled up to MAX_WAIT_S
MAX_WAIT_S = 1.0
WARN_AFTER_S = 1.0  # a wait this long is logged (shorter ones are the workers' ordinary pace)
BACKPRESSURE_TTL_MS = 5_000  # the waiting note outlives a producer killed while it waits by this long
NEAR_HEAD = 128  # entries one trim reads to remove exactly what the cap asks (above a radix node's 100)

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

# Trim KEYS[1] for ARGV[3] entries about to be written, to at most the cap ARGV[1] entries, removing only
# entries older than ARGV[2] (the oldest entry a group still needs; '' when no group reads the stream).
# Whole radix nodes go first (XTRIM MINID ~ LIMIT), then the few left near the head are read to remove
# exactly what the cap asks. Returns {entries removed, entries from ARGV[2] on: exact, or an upper bound
# that leaves room for ARGV[3]}.
_CAP_TRIM_SCRIPT = """
local cap, needed, incoming = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local length = redis.call('XLEN', KEYS[1])
local excess = length + incoming - cap
if excess <= 0 then return {0, length} end
if needed == '' then
  local keep = math.max(cap - incoming, 0)
  return {redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', keep), 0}
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', needed, 'LIMIT', excess)
excess = excess - removed
if excess <= 0 then return {removed, length - removed} end
local near = math.min(excess, tonumber(ARGV[4]))
local below = redis.call('XRANGE', KEYS[1], '-', '(' .. needed, 'COUNT', near + 1)
if #below > near then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', length - removed - near)
  removed = removed + near
  return {removed, length - removed - 1}
end
if #below > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', needed)
  removed = removed + #below
end
return {removed, length - removed}
"""

# Trim KEYS[1] by time: remove entries older than ARGV[1] (the older of the time cut and the oldest entry
# a group still needs, ARGV[2]). Returns {entries removed, ID of the oldest entry still needed or ''}.
_TIME_TRIM_SCRIPT = """
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1])
if ARGV[2] == '' then return {removed, ''} end
local oldest = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', 1)
if #oldest == 0 then return {removed, ''} end
return {removed, oldest[1][1]}
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


def needed_from(groups: Sequence[GroupProgress]) -> str | None:
    """The oldest entry ID some group still needs (None: no group reads the stream)."""
    floors = [g.oldest_pending if g.pending and g.oldest_pending else next_id(g.last_delivered) for g in groups]
    return min(floors, key=parse_id) if floors else None


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


def read_progress(client: redis.Redis, stream: str) -> StreamProgress | None:
    """The stream's size, counters and groups in one atomic step (None if the stream does not exist)."""
    reply = client.register_script(_PROGRESS_SCRIPT)(keys=[stream])
    return None if not reply else _parse_progress(reply)


def create_group(client: redis.Redis, stream: str, group: str) -> bool:
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


def record_missed(client: redis.Redis, keys: Keys, group: str, stream: str) -> tuple[int, int]:
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


def lost_entries(client: redis.Redis, keys: Keys, group: str, stream: str) -> int:
    """The recorded count of entries of `stream` that `group` missed."""
    return int(client.hget(keys.lost(group, stream), "entries") or 0)


@dataclass(frozen=True, slots=True)
class Room:
    """What one measurement of a stream found."""

    removed: int  # entries this measurement trimmed
    backlog: int  # entries from the oldest one still needed on (an upper bound), or, by time, its age in ms
    full: bool  # writing now would push what is still needed past the cap
    headroom: int  # entries that can be written before the next measurement must come


class Retention:
    """A producer's side of retention: trims its tick streams and waits when their readers fall behind."""

    def __init__(self, client: redis.Redis, settings: Settings, keys: Keys) -> None:
        self.client = client
        self.settings = settings
        self.keys = keys
        self.cap = settings.stream_maxlen
        self.max_age_ms = None if settings.retention_s is None else int(settings.retention_s * 1000)
        self.active = bool(self.cap) or self.max_age_ms is not None
        self._cap_trim = client.register_script(_CAP_TRIM_SCRIPT)
        self._time_trim = client.register_script(_TIME_TRIM_SCRIPT)
        self._headroom: dict[str, int] = {}
        self._measured_at: dict[str, float] = {}
        self._prepared = False

    def most_per_write(self, depth: int) -> int:
        """Entries a producer may queue before it checks for room: `depth`, or less under a small cap (so
        that one pipeline of writes never overshoots the cap by more than half of it)."""
        return max(min(depth, self.cap // 2), 1) if self.cap and self.max_age_ms is None else depth

    def prepare(self) -> None:
        """Create the workers' group on every tick stream, so that ticks written before any worker runs
        are kept for it (a stream that no group reads is trimmed by the cap alone)."""
        if self.active and not self._prepared:
            for stream in self.keys.tick_streams:
                create_group(self.client, stream, self.settings.group)
            self._prepared = True

    def make_room(self, incoming: Mapping[str, int]) -> None:
        """Before writing `incoming` entries per stream: trim, and wait while the readers are a cap behind."""
        if not self.active:
            return
        self.prepare()
        now = time.monotonic()
        for stream, count in incoming.items():
            if count > self._headroom.get(stream, 0) or now - self._measured_at.get(stream, 0.0) >= CHECK_EVERY_S:
                self._wait_for_room(stream, count)
            self._headroom[stream] = self._headroom.get(stream, 0) - count

    def measure(self, stream: str, incoming: int) -> Room:
        """Trim the stream for `incoming` new entries and say whether they fit under the cap."""
        progress = read_progress(self.client, stream)
        if progress is None:
            return Room(0, 0, False, self.cap or 2**62)
        needed = needed_from(progress.groups)
        if self.max_age_ms is not None:
            cut = f"{max(int(time.time() * 1000) - self.max_age_ms, 0)}-0"
            minid = cut if needed is None else min(cut, needed, key=parse_id)
            removed, oldest = self._time_trim(keys=[stream], args=[minid, needed or ""])
            oldest_id = _text(oldest)
            age = int(time.time() * 1000) - parse_id(oldest_id)[0] if oldest_id else 0
            return Room(int(removed), age, age > self.max_age_ms, 2**62)
        removed, backlog = self._cap_trim(keys=[stream], args=[self.cap, needed or "", incoming, NEAR_HEAD])
        backlog = int(backlog)
        full = backlog + min(incoming, self.cap) > self.cap
        return Room(int(removed), backlog, full, max(self.cap - backlog, 0))

    def _wait_for_room(self, stream: str, incoming: int) -> None:
        wait_s, waiting_since, warned = FIRST_WAIT_S, 0.0, False
        while True:
            room = self.measure(stream, incoming)
            if not room.full:
                break
            if room.removed:  # trimming made progress: measure again at once
                continue
            waiting_since = waiting_since or time.time()
            if not warned and time.time() - waiting_since >= WARN_AFTER_S:  # not for a worker's short hiccup
                warned = True
                log.warning(
                    "waiting: %s at the cap, workers behind (group %s); resuming once they catch up",
                    self._describe(stream, room),
                    self.settings.group,
                )
            if warned:  # `status` says so from the moment the log does
                self._announce(stream, room, waiting_since)
            time.sleep(wait_s)
            wait_s = min(wait_s * 2, MAX_WAIT_S)
        if waiting_since:
            self.client.delete(self.keys.backpressure(stream))
        if warned:
            log.info("resumed writing to %s after waiting %.1f s for the workers", stream, time.time() - waiting_since)
        self._headroom[stream] = room.headroom
        self._measured_at[stream] = time.monotonic()

    def _describe(self, stream: str, room: Room) -> str:
        if self.max_age_ms is not None:
            return (
                f"oldest unread entry of {stream} {room.backlog / 1000:,.1f} s old (retention "
                f"{self.max_age_ms / 1000:,g} s)"
            )
        return f"backlog {room.backlog:,} entries of {stream}"

    def _announce(self, stream: str, room: Room, since: float) -> None:
        """Note (for `status`) that this producer waits, refreshed while it does."""
        key = self.keys.backpressure(stream)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "message": f"{self._describe(stream, room)} at the cap, producer waiting",
                "since_ms": int(since * 1000),
                "group": self.settings.group,
            },
        )
        pipe.pexpire(key, BACKPRESSURE_TTL_MS)
        pipe.execute()
