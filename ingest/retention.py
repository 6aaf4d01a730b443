"""Retention of the tick streams without silent loss.

A producer trims a tick stream to its cap (`stream_maxlen` entries, or `retention_s` seconds) but never
past the oldest entry that some consumer group still needs: its oldest pending entry, else the entry after
its last-delivered ID. When the entries still needed reach the cap, the producer waits (backpressure) until
the readers catch up, and says so in its log and under `keys.backpressure(stream)` for `status`. Entries
removed before a group read them all the same are counted by `group_progress`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import as_text
from tickerdash.ingest.group_progress import GroupProgress, create_group, next_id, parse_id, read_progress
from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25  # a producer measures its streams at least this often while it writes
FIRST_WAIT_S = 0.05  # backpressure polls: the first wait, doubled up to MAX_WAIT_S
MAX_WAIT_S = 1.0
WARN_AFTER_S = 1.0  # a wait this long is logged (shorter ones are the workers' ordinary pace)
BACKPRESSURE_TTL_MS = 5_000  # the waiting note outlives a producer killed while it waits by this long
NEAR_HEAD = 128  # entries one trim reads to remove exactly what the cap asks (above a radix node's 100)

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


def needed_from(groups: Sequence[GroupProgress]) -> str | None:
    """The oldest entry ID some group still needs (None: no group reads the stream)."""
    floors = [g.oldest_pending if g.pending and g.oldest_pending else next_id(g.last_delivered) for g in groups]
    return min(floors, key=parse_id) if floors else None


@dataclass(frozen=True, slots=True)
class Room:
    """What one measurement of a stream found."""

    removed: int  # entries this measurement trimmed
    backlog: int  # entries from the oldest one still needed on (an upper bound), or, by time, its age in ms
    full: bool  # writing now would push what is still needed past the cap
    headroom: int  # entries that can be written before the next measurement must come


class Retention:
    """A producer's side of retention: trims its tick streams and waits when their readers fall behind."""

    def __init__(self, client: AnyRedis, settings: Settings, keys: Keys) -> None:
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
            oldest_id = as_text(oldest)
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
