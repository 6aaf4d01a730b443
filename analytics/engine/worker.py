"""The analytics worker: the thin loop that runs the pure stages on the tick stream, exactly once.

One worker owns some partitions (a lease per partition, so each symbol's trades are processed in
order by one worker at a time). For every batch read from a partition it runs the stage chain
(bars, indicators, then plug-in stages such as slump alerts and anomaly scores) and writes, in ONE
MULTI/EXEC transaction fenced by a WATCH on the partition's lease: the batch's effects (closed bars,
alerts, anomalies, late trades to the dead-letter stream, the live view), a progress marker (the last
entry ID applied) and the XACK of the batch.

The full stage state is large (a rolling VWAP window holds every trade of its window), so it is not
written with every batch: every 30 s (or 1M trades) a forked child writes a checkpoint of the whole
partition state as its last committed batch left it, fenced by the lease, while the loop goes on. A
restarted worker restores the checkpoint and replays the entries between the checkpoint and the
progress marker from the stream with their effects suppressed (they were written already); the
stages are deterministic, so it stands exactly where the old worker stood, and neither loses nor
double-counts a trade.

On large batches the plug-in stages run on a helper thread beside the bars and indicators (they read
only the batch); the live view is written as float64 rows that the dashboard gateway formats.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import redis

from tickerdash.analytics.engine.segments import pack_state, preload, unpack_state
from tickerdash.analytics.stages.bars import BarConfig, Bars, BarTable
from tickerdash.analytics.stages.indicators import IndicatorConfig, IndicatorFrame, Indicators, window_name
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import (
    LIVE_HZ,
    LIVE_MAXLEN,
    UpdateLayout,
    encode_update_rows,
    live_key,
    snapshot_key,
)
from tickerdash.ingest.contract.tick_entries import Rejected, as_text, decode_entries
from tickerdash.ingest.deadletter import add_rejected
from tickerdash.ingest.producer import client_on_own_pool
from tickerdash.ingest.reconnect import REDIS_DOWN, Outage, wait_out
from tickerdash.ingest.runner import (
    OutOfOrder,
    OwnershipLost,
    StopFlag,
    StreamRunner,
    ensure_groups,
    raw_client,
)
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, row_fields

log = logging.getLogger(__name__)

OUTPUT_MAXLEN = 100_000  # alerts and anomalies streams
# below this many trades a batch's numpy steps are too small to release the GIL for long: the helper
# thread would only take turns with the indicators (and add switching delays to small, latency-bound batches)
CONCURRENT_STAGES_MIN_ROWS = 20_000
CHECKPOINT_TIMEOUT_S = 120.0  # a checkpoint child still running after this long is killed (the next one is due)
DEFAULT_BAR_RETENTION = {"1s": 21_600, "1m": 10_080, "1h": 8_760, "1d": 3_650}  # 6 h, 7 d, 1 y, 10 y

# Renew the lease if we hold it, take it if it is free; 1 when we hold it afterwards.
_LEASE_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1
elseif owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
return 0
"""
# A batch's fence, after WATCH of the lease: who holds the lease, and whether any entry of the stream
# before the batch's first one is still pending (delivered, never applied: applying the batch would move
# the progress marker past it). KEYS: lease, tick stream; ARGV: group, the batch's first entry ID ('0-0':
# ownership only, see `ingest.runner.OWNERSHIP_ONLY`).
_FENCE_SCRIPT = """
local owner = redis.call('GET', KEYS[1]) or ''
if ARGV[2] == '0-0' then return {owner, 0} end
local unapplied = redis.call('XPENDING', KEYS[2], ARGV[1], '-', '(' .. ARGV[2], 1)
return {owner, #unapplied}
"""
# Append many entries to one stream in one command: ARGV[1] = maxlen, ARGV[2] = a JSON list of flat
# [field, value, ...] lists. Same entries, same order as one XADD each, without client-side command
# building per entry and per argument (in an alert storm that was most of the worker's time); trimmed
# once at the end (approximately, as XADD MAXLEN ~ would), not checked at every entry.
_XADD_MANY_SCRIPT = """
local entries = cjson.decode(ARGV[2])
for _, fields in ipairs(entries) do
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #entries
"""
# A checkpoint written after its batch committed (by a forked child): only while we hold the lease, and
# never over a newer one. ARGV: owner, state_id ("ms-seq"), state blob.
_CHECKPOINT_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = redis.call('HGET', KEYS[2], 'state_id')
if current then
  local cms, cseq = string.match(current, '^(%d+)-(%d+)$')
  local nms, nseq = string.match(ARGV[2], '^(%d+)-(%d+)$')
  if tonumber(nms) < tonumber(cms) or (tonumber(nms) == tonumber(cms) and tonumber(nseq) <= tonumber(cseq)) then
    return 0
  end
end
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'state_id', ARGV[2])
return 1
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Effects:
    """What the stages made of one batch, for the worker to write (nothing here touches Redis)."""

    batch: TickBatch
    frame: IndicatorFrame | None = None
    closed_bars: BarTable | None = None
    bar_columns: dict[str, np.ndarray] = field(default_factory=dict)  # per closed bar, written after its 7 fields
    alerts: list[str] = field(default_factory=list)  # each entry's fields as a JSON array [field, value, ...]
    anomalies: list[dict[str, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@functools.cache
def _small_pages_for_fork() -> None:
    """Stop numpy asking for transparent huge pages (for arrays of 4 MB and more) in this process.

    After the checkpoint fork, every page the loop writes is copied for the child: a 2 MB huge page
    for each touched one, not 4 kB (Redis gives the same advice for its own forked saves). Measured on
    2M-trade drains: background checkpoints were 8% slower than in-transaction ones with huge pages,
    and no slower without them.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2 / numpy 1.26
    set_madvise = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)


@functools.cache
def _stage_thread() -> ThreadPoolExecutor:
    """The one thread that runs plug-in stages beside the indicators (made on first use)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="plug-in-stages")


class Stage(Protocol):
    """A plug-in stage: pure `process` on the batch, and a checkpointable state."""

    name: str

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Add this stage's outputs for `batch` to `effects`."""

    def to_bytes(self) -> bytes:
        """The stage's whole state."""

    def load(self, data: bytes) -> None:
        """Replace the state with one from `to_bytes`."""

    def refresh(self, client: redis.Redis, keys: Keys) -> None:
        """Pick up outside changes (e.g. rules); called often, must be cheap when nothing changed."""


StageFactory = Callable[[], Stage]


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker computes and how often it checkpoints."""

    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    bars: BarConfig = field(default_factory=BarConfig)
    bar_retention: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BAR_RETENTION))
    checkpoint_every_s: float = 30.0
    checkpoint_every_ticks: int = 1_000_000
    lease_ms: int = 10_000
    # write checkpoints from a forked child after their batch commits, so the loop never serialises the
    # whole state (a rolling 5-minute window at 100k trades/s is tens of MB: ~0.1 s a checkpoint)
    background_checkpoints: bool = hasattr(os, "fork")
    # read a batch's transaction replies once the next batch is computed, so that Redis applies one
    # batch (its bars, alerts, acknowledgements) while this process computes the next
    defer_commit: bool = True
    live_hz: float = LIVE_HZ
    snapshot_hz: float = 50.0
    stages: tuple[StageFactory, ...] = ()


class PartitionState:
    """Everything one partition's computation depends on, and its (de)serialisation."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.bars = Bars(config.bars)
        self.indicators = Indicators(config.indicators)
        self.overlays = OverlayStage()
        self.stages: list[Stage] = [make() for make in config.stages]
        self.session_open: dict[str, float] = {}  # first price seen per symbol, for change %
        self.last_id = "0-0"

    def apply(self, batch: TickBatch) -> Effects:
        """Run the stage chain on one batch (pure: no I/O)."""
        effects = Effects(batch)
        arrived = self.bars.arrive(batch)
        if len(arrived.late_rows):
            late = arrived.late_rows
            for row in late.tolist():
                effects.rejected.append(
                    Rejected(
                        batch.tick_id(row) if len(batch.entry_ids) else "?",
                        dict(row_fields(batch, row)),
                        "late: its bar closed more than the grace period ago",
                    )
                )
            keep = np.ones(len(batch), bool)
            keep[late] = False
            batch = batch.take(keep)
            effects.batch = batch
        # the plug-in stages read only the batch and write only their own effects, so on a large batch
        # (whose numpy steps release the GIL) they run on a helper thread beside the bars and indicators
        helper = None
        if self.stages and len(batch) >= CONCURRENT_STAGES_MIN_ROWS:
            helper = _stage_thread().submit(self._plug_in_stages, batch, effects)
        try:
            effects.closed_bars = self.bars.fold(arrived)
            effects.bar_columns = self.overlays.update(effects.closed_bars)
            if len(batch):
                effects.frame = self.indicators.process(batch)
                if helper is None:
                    self._plug_in_stages(batch, effects)
                frame = effects.frame
                prices = frame.columns["price"]
                for symbol, row in zip(frame.latest_symbols, frame.latest_rows.tolist(), strict=True):
                    self.session_open.setdefault(symbol, float(prices[row]))
        finally:  # never leave the helper working on this state while the caller goes on
            if helper is not None:
                helper.result()
        return effects

    def _plug_in_stages(self, batch: TickBatch, effects: Effects) -> None:
        for stage in self.stages:
            stage.process(batch, effects)

    def to_bytes(self) -> bytes:
        """The whole partition state as one checkpoint."""
        meta = {
            "kind": "partition",
            "last_id": self.last_id,
            "session_open": self.session_open,
            "stages": [s.name for s in self.stages],
        }
        blobs = {
            "bars": self.bars.to_bytes(),
            "indicators": self.indicators.to_bytes(),
            "overlays": self.overlays.to_bytes(),
        }
        blobs.update({f"stage:{s.name}": s.to_bytes() for s in self.stages})
        return pack_state(meta, {k: np.frombuffer(v, np.uint8) for k, v in blobs.items()})

    @classmethod
    def from_bytes(cls, data: bytes, config: WorkerConfig) -> PartitionState:
        """A partition state restored from `to_bytes`."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "partition":
            raise ValueError("checkpoint is not a partition state")
        state = cls(config)
        state.bars = Bars.from_bytes(arrays["bars"].tobytes())
        state.indicators = Indicators.from_bytes(arrays["indicators"].tobytes())
        if "overlays" in arrays:  # an older checkpoint has none: the overlays start afresh
            state.overlays.load(arrays["overlays"].tobytes())
        for stage in state.stages:
            blob = arrays.get(f"stage:{stage.name}")
            if blob is not None:
                stage.load(blob.tobytes())
        state.session_open = {k: float(v) for k, v in meta["session_open"].items()}
        state.last_id = str(meta["last_id"])
        return state


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


BARS_FEED_MAXLEN = 100_000


def bars_feed_key(keys: Keys) -> str:
    """Stream of every batch of closed bars (one Arrow IPC entry per batch), for archivers' consumer groups."""
    return keys.internal("closed_bars")


def encode_bar_table(bars: BarTable) -> bytes:
    """Closed bars as an Arrow IPC stream (columns symbol, interval_ms, start_ms, open ... trades)."""
    columns = bars.to_dict()
    table = pa.table(
        {
            "symbol": pa.array(list(columns.pop("symbol")), pa.string()),
            **{name: pa.array(values) for name, values in columns.items()},
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_bar_table(payload: bytes) -> pa.Table:
    """The inverse of `encode_bar_table`, as an Arrow table."""
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def open_bar_columns(
    opened: BarTable, symbols: Sequence[str], intervals_ms: Sequence[int]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Each symbol's open bars side by side: (interval names, shortest first; (n, 6 * intervals) array of
    start, open, high, low, close, volume per interval, all NaN where none is open).

    Of two open bars of one interval (the previous one still in its grace period), the later one shows.
    """
    interval_ms = np.unique(np.asarray(intervals_ms, np.int64))
    values = np.full((len(symbols), len(interval_ms), 6), np.nan)
    position = {symbol: k for k, symbol in enumerate(symbols)}
    where = np.array([position.get(symbol, -1) for symbol in opened.symbols], np.int64)
    at = where[opened.symbol_idx]
    rows = np.flatnonzero((at >= 0) & np.isin(opened.interval_ms, interval_ms))
    if len(rows):
        key = at[rows] * len(interval_ms) + np.searchsorted(interval_ms, opened.interval_ms[rows])
        order = np.lexsort((opened.start_ms[rows], key))  # by key, then start: the last of each key is the latest
        last = order[np.r_[key[order][1:] != key[order][:-1], True]]
        rows, key = rows[last], key[last]
        columns = (opened.start_ms, opened.open, opened.high, opened.low, opened.close, opened.volume)
        values.reshape(-1, 6)[key] = np.column_stack([column[rows] for column in columns])
    names = tuple(window_name(int(ms)) for ms in interval_ms)
    return names, values.reshape(len(symbols), -1)


def bar_fields(bars: BarTable, k: int, columns: dict[str, np.ndarray] | None = None) -> list[Any]:
    """The stream fields of bar k, as XADD arguments (floats as repr, so rewrites are byte-identical).

    The seven bar fields come first, then each of `columns` (overlay values) in order; a NaN value
    (not defined yet) is left out.
    """
    extra = [] if columns is None else [(name, float(values[k])) for name, values in columns.items()]
    return [
        "open",
        repr(float(bars.open[k])),
        "high",
        repr(float(bars.high[k])),
        "low",
        repr(float(bars.low[k])),
        "close",
        repr(float(bars.close[k])),
        "volume",
        repr(float(bars.volume[k])),
        "vwap",
        repr(float(bars.vwap[k])),
        "trades",
        int(bars.trades[k]),
        *(x for name, value in extra if value == value for x in (name, repr(value))),
    ]


class AnalyticsWorker:
    """Owns partitions, runs the stages on their ticks, and writes effects exactly once."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        partitions: Sequence[int] | None = None,
        config: WorkerConfig | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.client = client
        self.raw = raw_client(client)
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.config = config or WorkerConfig()
        preload()  # scipy.signal for the EMA scans: imported now, never in the middle of the stream
        pa.array([0.0])  # pyarrow imports pandas on its first array (~0.3 s): now, not in the first closed bars
        for make in self.config.stages:  # and what the plug-in stages load lazily (a stage's `preload`)
            getattr(make, "preload", lambda: None)()
        if self.config.background_checkpoints:
            _small_pages_for_fork()
        wanted = range(settings.partitions) if partitions is None else partitions
        bad = [p for p in wanted if not 0 <= p < settings.partitions]
        if bad:
            raise ValueError(f"partitions {bad} do not exist: TICKERDASH_PARTITIONS={settings.partitions}")
        self.wanted = list(wanted)
        self.stream_of = {p: self.keys.ticks(p) for p in self.wanted}
        self.partition_of = {s: p for p, s in self.stream_of.items()}
        self.states: dict[int, PartitionState] = {}
        self.stop = stop or StopFlag()
        self.runner = StreamRunner(
            client,
            settings,
            [],
            self._process,
            source="analytics",
            housekeeping=self._housekeeping,
            stop=self.stop,
            guard=self._guard,
            on_lost=self._lost,
            on_write_failed=self._write_failed,
            on_failed=self._rebuild,
            on_quarantine=self._note_quarantined,
            defer_commit=self.config.defer_commit,
        )
        self._lease = client.register_script(_LEASE_SCRIPT)
        self._xadd_many = client.register_script(_XADD_MANY_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._last_lease_check = 0.0
        self._last_checkpoint: dict[int, tuple[float, int]] = {}
        self._checkpoint_due: set[int] = set()  # partitions whose next committed state is to be checkpointed
        # the running checkpoint child: pid, the partitions it writes and the last_id of each, when it started
        self._checkpointer: tuple[int, dict[int, str], float] | None = None
        self._pending_live: dict[int, list[tuple[IndicatorFrame, np.ndarray]]] = {}
        self._feed_pending: dict[str, bytes] = {}  # symbol -> its latest update not yet in the feed
        self._last_live = 0.0
        self._last_snapshot = 0.0
        self._last_refresh = 0.0
        self._ticks_since_log = 0
        self._last_log = time.monotonic()

    # --- keys ------------------------------------------------------------------------------

    def lease_key(self, partition: int) -> str:
        """Who owns a partition of the analytics group right now."""
        return self.keys.internal("lease", self.settings.group, str(partition))

    def checkpoint_key(self, partition: int) -> str:
        """A partition's checkpoint: `state` (blob), `state_id`, `last_id` (progress marker)."""
        return self.keys.internal("checkpoint", self.settings.group, str(partition))

    def quarantine_key(self, partition: int) -> str:
        """IDs of the partition's entries that were quarantined unapplied (a replay skips them)."""
        return self.keys.internal("quarantined", self.settings.group, str(partition))

    # --- ownership -------------------------------------------------------------------------

    def _guard(self, stream: str, first_id: bytes, pipe: redis.client.Pipeline) -> None:
        partition = self.partition_of[stream]
        lease = self.lease_key(partition)
        pipe.watch(lease)
        # EVAL, not a registered script: that would join the pipeline's scripts, checked (SCRIPT EXISTS) per batch
        owner, unapplied = pipe.eval(_FENCE_SCRIPT, 2, lease, stream, self.settings.group, first_id)
        if (owner.decode() if isinstance(owner, bytes) else owner) != self.settings.consumer:
            raise OwnershipLost(stream)
        if unapplied:  # (a read whose reply was lost, a late read of a former owner): rebuild, claim all in order
            raise OutOfOrder(stream)

    def _lost(self, stream: str) -> None:
        partition = self.partition_of[stream]
        self.states.pop(partition, None)  # its in-memory state ran ahead of Redis: rebuild on reacquire
        self._pending_live.pop(partition, None)
        # at once if the lease is still ours (redis-py reports a connection failed under WATCH as a WatchError)
        self._last_lease_check = 0.0

    def _write_failed(self, stream: str) -> None:
        """A batch's transaction failed in flight, after its stages ran: rebuild the partition from Redis.

        Whether or not Redis applied it, the checkpoint and progress marker say what was: restoring
        from them (at the next housekeeping) and re-reading the pending entries loses and repeats nothing.
        """
        log.warning("write to Redis failed for %s: its state will be restored from the checkpoint", stream)
        self.runner.drop_stream(stream)
        self._last_lease_check = 0.0  # restore and re-read as soon as Redis answers again

    def _rebuild(self, stream: str) -> None:
        """Processing a batch raised part-way through its stages: put the partition back where Redis says it is."""
        partition = self.partition_of[stream]
        self._pending_live.pop(partition, None)
        if partition in self.states:
            self.restore(partition)

    def _note_quarantined(self, stream: str, entry_ids: list[str], pipe: redis.client.Pipeline) -> None:
        pipe.sadd(self.quarantine_key(self.partition_of[stream]), *entry_ids)

    def _check_leases(self) -> None:
        """Renew the leases we hold, and take (restore, then read) any wanted partition that is free."""
        self.runner.settle()  # a partition lost by the batch in flight is restored here, not run ahead
        self._last_lease_check = time.monotonic()
        for partition in self.wanted:
            held = bool(
                self._lease(keys=[self.lease_key(partition)], args=[self.settings.consumer, self.config.lease_ms])
            )
            stream = self.stream_of[partition]
            if held and partition not in self.states:
                self.restore(partition)
                self.runner.add_stream(stream)
                try:
                    self.runner.claim_stale([stream], min_idle_ms=0)  # the old owner's pending entries are ours now
                except (redis.ConnectionError, redis.TimeoutError):
                    self.runner.drop_stream(stream)  # taken again whole: restored, then every pending entry claimed
                    self._last_lease_check = 0.0
                    raise
            elif not held and partition in self.states:
                log.warning("partition %d is owned by another worker now", partition)
                self.runner.drop_stream(stream)

    def release(self) -> None:
        """Checkpoint and give up every partition (clean shutdown), so a standby takes over at once."""
        self.runner.settle()  # only a confirmed state is checkpointed
        written = self._finish_checkpointer()
        for partition in list(self.states):
            if partition not in written:
                self.checkpoint(partition)
            self._release(keys=[self.lease_key(partition)], args=[self.settings.consumer])
            self.states.pop(partition)

    # --- state -----------------------------------------------------------------------------

    def restore(self, partition: int) -> PartitionState:
        """Load the partition's checkpoint and replay what was applied after it, effects suppressed."""
        saved: dict[bytes, bytes] = self.client.hgetall(self.checkpoint_key(partition))  # type: ignore[assignment]
        if saved.get(b"state"):
            state = PartitionState.from_bytes(saved[b"state"], self.config)  # with the rules it had then
        else:  # never checkpointed: the old owner took the stored rules (say) before its first batch; so do we
            state = PartitionState(self.config)
            self._refresh_stages(state)
        applied = saved.get(b"last_id", b"0-0").decode()
        replayed = 0
        if _id_tuple(applied) > _id_tuple(state.last_id):
            stream = self.stream_of[partition]
            start = state.last_id
            members: set[bytes | str] = self.client.smembers(self.quarantine_key(partition))
            quarantined = {as_text(member).encode() for member in members}
            while True:
                entries = self.raw.execute_command(
                    "XRANGE", stream, f"({start}", applied, "COUNT", self.settings.read_count
                )
                if not entries:
                    break
                start = entries[-1][0].decode()
                if quarantined:
                    entries = [entry for entry in entries if entry[0] not in quarantined]
                decoded = decode_entries(entries, self.runner.rules)
                if len(decoded.ticks):
                    state.apply(decoded.ticks)
                    replayed += len(decoded.ticks)
            if _id_tuple(start) < _id_tuple(applied):
                log.error(
                    "partition %d: entries up to %s were trimmed before replay; state may miss trades",
                    partition,
                    applied,
                )
            state.last_id = applied
        self._refresh_stages(state)  # what comes after the progress marker meets today's rules, as it would have
        self.states[partition] = state
        self._last_checkpoint[partition] = (time.monotonic(), 0)
        log.info("partition %d: restored at %s (replayed %d ticks after the checkpoint)", partition, applied, replayed)
        return state

    def _refresh_stages(self, state: PartitionState) -> None:
        for stage in state.stages:
            stage.refresh(self.client, self.keys)

    def checkpoint(self, partition: int, pipe: redis.client.Pipeline | None = None) -> None:
        """Write the partition's whole state (in `pipe`'s transaction when given)."""
        state = self.states[partition]
        target = pipe if pipe is not None else self.client
        snapshot = {"state": state.to_bytes(), "state_id": state.last_id, "last_id": state.last_id}
        target.hset(self.checkpoint_key(partition), mapping=snapshot)  # type: ignore[arg-type]
        self._last_checkpoint[partition] = (time.monotonic(), 0)

    def _checkpoint_in_background(self, partitions: list[int]) -> None:
        """Fork a child that writes these partitions' checkpoints; called between batches only, when
        every state in memory is the state its last committed batch left (what the fork freezes)."""
        pid = os.fork()
        if pid == 0:  # the child: write and leave, running nothing of the parent's (no atexit, no finally)
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                client = client_on_own_pool(self.client, socket_timeout=CHECKPOINT_TIMEOUT_S)
                script = client.register_script(_CHECKPOINT_SCRIPT)
                written = [
                    script(
                        keys=[self.lease_key(p), self.checkpoint_key(p)],
                        args=[self.settings.consumer, self.states[p].last_id, self.states[p].to_bytes()],
                    )
                    for p in partitions
                ]
                code = 0 if all(written) else 2
            finally:
                os._exit(code)
        now = time.monotonic()
        self._checkpointer = (pid, {p: self.states[p].last_id for p in partitions}, now)
        for partition in partitions:
            self._last_checkpoint[partition] = (now, 0)

    def _finish_checkpointer(self) -> set[int]:
        """At shutdown: the partitions whose checkpoint of their current state the running child has written.

        A child that froze the current state is waited for (it is ahead of a checkpoint started now); one
        whose partitions have moved on since is stopped, as its checkpoints are about to be superseded.
        """
        if self._checkpointer is None:
            return set()
        pid, ids, _ = self._checkpointer
        current = all(p in self.states and self.states[p].last_id == last_id for p, last_id in ids.items())
        if not current:
            os.kill(pid, signal.SIGKILL)
        return set(ids) if self._reap_checkpointer(wait=True) == 0 and current else set()

    def _reap_checkpointer(self, wait: bool = False) -> int | None:
        """Collect the checkpoint child if it has finished (or wait for it), and log how it ended.

        A child that outlives CHECKPOINT_TIMEOUT_S (Redis unreachable, say) is killed: the next
        checkpoint is due as usual, and shutdown never hangs on it.
        """
        if self._checkpointer is None:
            return None
        pid, ids, started = self._checkpointer
        partitions = sorted(ids)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - started > CHECKPOINT_TIMEOUT_S:
                log.warning(
                    "checkpoint of partitions %s still running after %.0f s: stopped; the next one is due as usual",
                    partitions,
                    CHECKPOINT_TIMEOUT_S,
                )
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)  # a killed child ends at once: reap it now
                break
            if not wait:
                return None  # reaped on a later call
            time.sleep(0.01)
        self._checkpointer = None
        code = os.waitstatus_to_exitcode(status)
        if code == 2:
            log.info("checkpoint of partitions %s not written: the lease moved or a newer one exists", partitions)
        elif code == -signal.SIGKILL:
            log.info("checkpoint of partitions %s stopped before it finished", partitions)
        elif code != 0:
            log.warning("checkpoint of partitions %s failed (exit %d); the next one is due as usual", partitions, code)
        return code

    # --- the batch -------------------------------------------------------------------------

    def _process(self, stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        partition = self.partition_of[stream]
        state = self.states[partition]
        # Entries at or before the progress marker were applied already (possible only after an
        # ownership change raced a claim): skip them rather than count them twice.
        applied = _id_tuple(state.last_id)
        fresh = None
        if _id_tuple(ticks.entry_ids[0]) <= applied:  # entries come in ID order: only then look at each
            fresh = np.array([_id_tuple(e) > applied for e in ticks.entry_ids], dtype=bool)
        if fresh is not None and not fresh.all():
            unapplied = self._unapplied_rows(stream, ticks, fresh)
            if len(unapplied):
                add_rejected(pipe, self.keys.deadletter, unapplied, "analytics")
            ticks = ticks.take(fresh[ticks.entry_of])
            if not len(ticks):
                return
        effects = state.apply(ticks)
        state.last_id = ticks.entry_ids[-1]
        self.write_effects(pipe, effects)
        pipe.hset(self.checkpoint_key(partition), "last_id", state.last_id)
        pipe.pexpire(self.lease_key(partition), self.config.lease_ms)
        since, count = self._last_checkpoint.get(partition, (0.0, 0))
        count += len(ticks)
        due = time.monotonic() - since >= self.config.checkpoint_every_s
        checkpoint_now = due or count >= self.config.checkpoint_every_ticks
        if checkpoint_now and not self.config.background_checkpoints:
            self.checkpoint(partition, pipe)
        else:
            self._last_checkpoint[partition] = (since, count)
            if checkpoint_now:
                self._checkpoint_due.add(partition)  # written once this batch has committed
        if effects.frame is not None:
            self._pending_live.setdefault(partition, []).append((effects.frame, effects.batch.ts))
        self._publish_live(pipe)
        self._ticks_since_log += len(ticks)

    def _unapplied_rows(self, stream: str, ticks: TickBatch, fresh: np.ndarray) -> list[Rejected]:
        """The trades of entries at or before the progress marker that were never applied, as dead letters.

        Every applied entry was acknowledged with its effects, so such an entry that is still pending was
        skipped: the marker passed it before it was delivered (the fence of every batch is there to make
        that impossible). Its effects cannot be inserted behind bars already written: it is dead-lettered,
        never acknowledged as if it had been applied.
        """
        self.runner.settle()  # a batch in flight may be the one that applied (and acknowledges) these entries
        if self.partition_of[stream] not in self.states:
            raise OwnershipLost(stream)  # its failure dropped the partition: rebuilt, then re-read
        stale = [entry_id for entry_id, keep in zip(ticks.entry_ids, fresh.tolist(), strict=True) if not keep]
        pending: list[dict[str, Any]] = self.client.xpending_range(
            stream, self.settings.group, stale[0], stale[-1], len(stale)
        )
        skipped = {p["message_id"].decode() if isinstance(p["message_id"], bytes) else p["message_id"] for p in pending}
        if not skipped:
            return []
        log.error(
            "%s: %d entries up to %s were delivered after later ones had been applied: dead-lettered",
            stream,
            len(skipped),
            max(skipped, key=_id_tuple),
        )
        entry_of = np.array([entry_id in skipped for entry_id in ticks.entry_ids], dtype=bool)[ticks.entry_of]
        return [
            Rejected(
                ticks.tick_id(row),
                dict(row_fields(ticks, row)),
                "out of order: delivered after later entries had been applied; its effects are missing",
            )
            for row in np.flatnonzero(entry_of).tolist()
        ]

    def write_effects(self, pipe: redis.client.Pipeline, effects: Effects) -> None:
        """Queue the writes of one batch's effects on the transaction."""
        bars = effects.closed_bars
        if bars is not None and len(bars):
            names = bars.symbols
            interval_names = {ms: window_name(ms) for ms in set(bars.interval_ms.tolist())}
            for k, (interval_ms, code, start) in enumerate(
                zip(bars.interval_ms.tolist(), bars.symbol_idx.tolist(), bars.start_ms.tolist(), strict=True)
            ):
                interval = interval_names[interval_ms]
                maxlen = self.config.bar_retention.get(interval, 10_000)
                pipe.execute_command(
                    "XADD",
                    self.keys.bars(interval, names[code]),
                    "MAXLEN",
                    "~",
                    maxlen,
                    f"{start}-0",
                    *bar_fields(bars, k, effects.bar_columns),
                )
            pipe.xadd(
                bars_feed_key(self.keys),
                {"bars": encode_bar_table(bars), "rows": len(bars)},
                maxlen=BARS_FEED_MAXLEN,
                approximate=True,
            )
        anomalies = [json.dumps([x for pair in fields.items() for x in pair]) for fields in effects.anomalies]
        for stream, entries in ((self.keys.alerts, effects.alerts), (self.keys.anomalies, anomalies)):
            if entries:  # JSON arrays [field, value, ...], appended in order by one script call
                self._xadd_many(keys=[stream], args=[OUTPUT_MAXLEN, "[" + ",".join(entries) + "]"], client=pipe)
        if effects.rejected:
            add_rejected(pipe, self.keys.deadletter, effects.rejected, "analytics")

    # --- live view -------------------------------------------------------------------------

    def _publish_live(self, pipe: redis.client.Pipeline | None = None) -> None:
        """Write the snapshot (at most snapshot_hz) and the live feed (at most live_hz) of changed symbols.

        Snapshot rounds are more frequent than feed entries, so each round's updates wait in
        `_feed_pending` (latest per symbol) until the next feed entry: no symbol's move is skipped.
        """
        now = time.monotonic()
        target: redis.client.Pipeline | None = None
        if self._pending_live and now - self._last_snapshot >= 1 / self.config.snapshot_hz:
            # each update is encoded once: the snapshot field, and later a piece of a feed entry
            encoded: dict[str, bytes] = {}
            for partition, frames in self._pending_live.items():
                state = self.states.get(partition)
                if state is not None:
                    encoded.update(self._encoded_updates(state, frames))
            self._pending_live.clear()
            self._last_snapshot = now
            if encoded:
                target = pipe if pipe is not None else self.client.pipeline(transaction=False)
                target.hset(snapshot_key(self.keys), mapping=encoded)  # type: ignore[arg-type]
                self._feed_pending.update(encoded)
        if self._feed_pending and now - self._last_live >= 1 / self.config.live_hz:
            if target is None:
                target = pipe if pipe is not None else self.client.pipeline(transaction=False)
            target.xadd(
                live_key(self.keys), {"u": b"".join(self._feed_pending.values())}, maxlen=LIVE_MAXLEN, approximate=True
            )
            self._feed_pending.clear()
            self._last_live = now
        if target is not None and pipe is None:
            target.execute()

    def _encoded_updates(
        self, state: PartitionState, frames: list[tuple[IndicatorFrame, np.ndarray]]
    ) -> dict[str, bytes]:
        """Symbol -> its update after its latest trade in `frames`, with its open bars and its latest closed
        bars' overlay values (`encode_update_rows`).

        Built column by column and copied, not formatted: with 50 rounds a second over hundreds of
        symbols, formatting every number as JSON here was the largest share of a busy worker's time.
        """
        chosen: dict[str, tuple[int, int]] = {}  # symbol -> (frame, row) of its latest trade
        for index in range(len(frames) - 1, -1, -1):  # newest first: the first sighting is the latest
            frame = frames[index][0]
            for symbol, row in zip(frame.latest_symbols, frame.latest_rows.tolist(), strict=True):
                chosen.setdefault(symbol, (index, row))
        opened = state.bars.open_view()
        intervals_ms = self.config.bars.intervals_ms
        out: dict[str, bytes] = {}
        for index, (frame, ts) in enumerate(frames):
            mine = [symbol for symbol, (i, _) in chosen.items() if i == index]
            if not mine:
                continue
            rows = np.fromiter((chosen[symbol][1] for symbol in mine), np.int64, len(mine))
            names = tuple(name for name in frame.columns if name not in ("price", "trades", "volume"))
            price = frame.columns["price"][rows]
            first = np.fromiter(
                (state.session_open.get(symbol, p) for symbol, p in zip(mine, price.tolist(), strict=True)),
                np.float64,
                len(mine),
            )
            opened_at = first != 0  # a zero first price has no change: 0.0, as before
            change_pct = np.zeros(len(mine))
            np.divide(price, first, out=change_pct, where=opened_at)
            change_pct[opened_at] -= 1.0
            change_pct *= 100.0
            intervals, bars = open_bar_columns(opened, mine, intervals_ms)
            closed = [state.overlays.latest(ms, mine) for ms in sorted(set(intervals_ms))]  # as `intervals`
            if not state.overlays.fields:
                closed = []  # no overlays, no closed-bar columns
            numbers = np.column_stack(
                [
                    ts[rows],
                    price,
                    change_pct,
                    frame.columns["trades"][rows],
                    frame.columns["volume"][rows],
                    *(frame.columns[name][rows] for name in names),
                    bars,
                    *closed,
                ]
            )
            layout = UpdateLayout(names, intervals, state.overlays.fields)
            out.update(zip(mine, encode_update_rows(layout, mine, numbers), strict=True))
        return out

    # --- the loop --------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._reap_checkpointer()
        if self._checkpoint_due and self._checkpointer is None:
            self.runner.settle()  # the fork freezes the states: each must be what its last batch committed
            due = sorted(p for p in self._checkpoint_due if p in self.states)  # a dropped state is not ours
            self._checkpoint_due.clear()
            if due:
                self._checkpoint_in_background(due)
        if now - self._last_lease_check >= self.config.lease_ms / 3000:
            self._check_leases()
        if now - self._last_refresh >= 0.25:
            self._last_refresh = now
            for state in self.states.values():
                self._refresh_stages(state)
        self._publish_live()
        if now - self._last_log >= 10:
            rate = self._ticks_since_log / (now - self._last_log)
            log.info("%s: %.0f ticks/s over partitions %s", self.settings.consumer, rate, sorted(self.states))
            self._ticks_since_log = 0
            self._last_log = now

    def acquire(self) -> None:
        """Create the consumer groups if need be, and take (restore) every wanted partition that is free.

        `run` starts with it; call it first to have a worker ready (its state restored) before it reads,
        as benchmarks do to time the reading alone.
        """
        ensure_groups(self.client, list(self.stream_of.values()), self.settings.group)
        self._check_leases()

    def _acquire_once_redis_answers(self) -> None:
        """`acquire`, tried again with backoff while the connection fails (redis-py re-sends nothing)."""
        outage = Outage(log)
        while not self.stop.is_set():
            try:
                self.acquire()
                outage.recovered()
                return
            except REDIS_DOWN as exc:
                wait_out(outage, exc, self.stop)

    def run(self, max_idle_reads: int | None = None) -> None:
        """Run until stopped (SIGTERM/SIGINT), then checkpoint and release the partitions."""
        try:
            self._acquire_once_redis_answers()
            self.runner.run(max_idle_reads=max_idle_reads)
        finally:
            try:
                self._last_snapshot = self._last_live = 0.0  # publish what is pending, whatever the rate limit
                self._publish_live()
                self.release()
            except redis.RedisError as exc:  # shutting down with Redis gone: the progress markers suffice
                log.warning("could not checkpoint at shutdown (%s); a restart will replay from the last one", exc)
