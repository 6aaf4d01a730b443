"""The live view: every symbol's latest indicators, price and open bars, for the dashboard.

Two keys per partition, written on the partition's batch transaction or between batches when a round
is due: the snapshot (a hash, symbol -> its latest update; at most `snapshot_hz` rounds a second) and
the live feed (a stream whose entries carry the updates of every symbol that moved since the last one;
at most `live_hz` a second). Updates are float64 rows encoded by `ingest.contract.live`, which the
dashboard gateway formats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import redis

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.indicators import IndicatorFrame, window_name
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import LIVE_MAXLEN, UpdateLayout, encode_update_rows, live_entry_fields

if TYPE_CHECKING:
    from tickerdash.analytics.engine.stage import Effects
    from tickerdash.analytics.engine.state import PartitionState

# What one batch left for the live view: its indicator frame, its trades' ts, and its open bars (when asked).
Pending = tuple[IndicatorFrame, np.ndarray, Callable[[], BarTable]]


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


class LiveView:
    """Publishes the partitions' latest updates: batches are noted as they are applied, and written in rounds."""

    def __init__(self, client: AnyRedis, keys: Keys, config: WorkerConfig) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self._pending: dict[int, list[Pending]] = {}
        self._feed_pending: dict[int, dict[str, bytes]] = {}  # per partition: symbol -> latest update not in the feed
        self._last_live: dict[int, float] = {}
        self._last_snapshot: dict[int, float] = {}

    def note(self, partition: int, effects: Effects) -> None:
        """Remember a batch's products for the next round (a batch without an indicator frame shows nothing)."""
        frame = effects.products.get("indicators")
        if frame is not None:
            self._pending.setdefault(partition, []).append(
                (frame, effects.batch.ts, effects.products.get("open_bars", _no_open_bars))
            )

    def forget(self, partition: int) -> None:
        """Drop what a partition's batches left (its state is being rebuilt: they may not have committed)."""
        self._pending.pop(partition, None)

    def publish(
        self,
        states: Mapping[int, PartitionState],
        pipe: redis.client.Pipeline | None = None,
        force: bool = False,
        settle: Callable[[], None] | None = None,
        partition: int | None = None,
    ) -> None:
        """Write each partition's snapshot (at most snapshot_hz) and live feed (at most live_hz) of changed symbols.

        On a batch's transaction (`pipe`), only that batch's `partition` is written: a transaction touches
        one partition's keys, which a cluster keeps on one shard. Outside one, every partition with a round
        due is written. Snapshot rounds are more frequent than feed entries, so each round's updates wait in
        `_feed_pending` (latest per symbol) until the partition's next feed entry: no symbol's move is skipped.
        With `force`, whatever is pending is written whatever the rates (at shutdown). Outside a transaction,
        `settle` runs first when a round is due: the view must never name a bar or state whose transaction is
        still in flight, or a page that fetches that bar would miss it.
        """
        now = time.monotonic()
        if force:
            self._last_snapshot.clear()
            self._last_live.clear()
        if pipe is None and settle is not None and self._due(now):
            settle()  # may drop a failed batch's partition (`forget`): what is pending is re-read below
        target: redis.client.Pipeline | None = pipe

        def queue() -> redis.client.Pipeline:
            nonlocal target
            if target is None:
                target = self.client.pipeline(transaction=False)
            return target

        if pipe is not None:
            partitions = [] if partition is None else [partition]
        else:
            partitions = sorted(set(self._pending) | set(self._feed_pending))
        for each in partitions:
            self._round(each, states.get(each), now, queue)
        if target is not None and pipe is None:
            target.execute()

    def _round(
        self, partition: int, state: PartitionState | None, now: float, queue: Callable[[], redis.client.Pipeline]
    ) -> None:
        """Queue the partition's snapshot and feed writes that are due."""
        batches = self._pending.get(partition)
        if batches and now - self._last_snapshot.get(partition, 0.0) >= 1 / self.config.snapshot_hz:
            del self._pending[partition]
            self._last_snapshot[partition] = now
            # each update is encoded once: the snapshot field, and later a piece of a feed entry
            encoded = self._encoded_updates(state, batches) if state is not None else {}
            if encoded:
                queue().hset(self.keys.snapshot(partition), mapping=encoded)  # type: ignore[arg-type]
                self._feed_pending.setdefault(partition, {}).update(encoded)
        feed = self._feed_pending.get(partition)
        if feed and now - self._last_live.get(partition, 0.0) >= 1 / self.config.live_hz:
            queue().xadd(
                self.keys.live(partition),
                live_entry_fields(b"".join(feed.values())),  # type: ignore[arg-type]
                maxlen=LIVE_MAXLEN,
                approximate=True,
            )
            del self._feed_pending[partition]
            self._last_live[partition] = now

    def _due(self, now: float) -> bool:
        """Whether a snapshot or feed round of some partition would write now."""
        snapshot_due = any(
            now - self._last_snapshot.get(p, 0.0) >= 1 / self.config.snapshot_hz for p, b in self._pending.items() if b
        )
        feed_due = any(
            now - self._last_live.get(p, 0.0) >= 1 / self.config.live_hz for p, f in self._feed_pending.items() if f
        )
        return snapshot_due or feed_due

    def _encoded_updates(self, state: PartitionState, batches: list[Pending]) -> dict[str, bytes]:
        """Symbol -> its update after its latest trade in `batches`, with its open bars and the overlay values
        of its latest closed bars (`encode_update_rows`).

        Built column by column and copied, not formatted: with 50 rounds a second over hundreds of
        symbols, formatting every number as JSON here was the largest share of a busy worker's time.
        """
        chosen: dict[str, tuple[int, int]] = {}  # symbol -> (frame, row) of its latest trade
        for index in range(len(batches) - 1, -1, -1):  # newest first: the first sighting is the latest
            frame = batches[index][0]
            for symbol, row in zip(frame.latest_symbols, frame.latest_rows.tolist(), strict=True):
                chosen.setdefault(symbol, (index, row))
        opened = batches[-1][2]()  # the bars open now (the latest batch's view of its stage)
        intervals_ms = self.config.bars.intervals_ms
        overlays = state.stage("overlays") if state.has_stage("overlays") else None
        overlay_fields: tuple[str, ...] = overlays.fields if overlays is not None else ()
        out: dict[str, bytes] = {}
        for index, (frame, ts, _) in enumerate(batches):
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
            # each interval's latest closed bar: start, closed count, overlay values (in `intervals` order)
            closed = (
                [overlays.latest(ms, mine) for ms in sorted(set(intervals_ms))]
                if overlays is not None and overlay_fields
                else []
            )
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
            layout = UpdateLayout(names, intervals, overlay_fields)
            out.update(zip(mine, encode_update_rows(layout, mine, numbers), strict=True))
        return out


def _no_open_bars() -> BarTable:
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
    return BarTable((), empty_i, empty_i, empty_i, *(empty_f,) * 6, empty_i)
