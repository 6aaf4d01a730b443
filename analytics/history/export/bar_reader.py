"""Reading bars for an export: the archive and Redis merged, Redis asked only for what the archive lacks.

On a Redis Cluster each partition's bar streams are found by a SCAN on the node that holds the partition,
and read with one pipeline per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tickerdash.analytics.engine.segments import TS_BITS
from tickerdash.analytics.history.archive_layout import (
    ARCHIVE_SCHEMA,
    OVERLAY_COLUMNS,
    archive_root,
    conform,
    overlay_values,
)
from tickerdash.analytics.history.archive_read import archived_span, read_coded, symbol_column
from tickerdash.analytics.history.export.request import (
    INTERVAL_MS,
)
from tickerdash.ingest.cluster import AnyRedis, by_node, node_client
from tickerdash.ingest.contract.bars import BAR_FIELDS, decode_bar_entries
from tickerdash.ingest.contract.fields import entry_ms
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.settings import Settings

REDIS_PAGE = 10_000
PROBE_COST_BARS = 4  # a gap probe costs about as much as parsing this many bars: sparse overlaps are just read


class BarReader:
    """Bars of one interval from the archive and Redis together, deduplicated by (symbol, start)."""

    def __init__(self, client: AnyRedis | None, settings: Settings, root: Path | None = None) -> None:
        self.client = client
        self.keys = Keys(settings.prefix, settings.partitions)
        self.root = root or archive_root(settings)

    def redis_symbols(self, interval: str) -> set[str]:
        """Symbols that have a Redis bar stream of this interval."""
        if self.client is None:
            return set()
        symbols: set[str] = set()
        for prefix in self.keys.bars_prefixes(interval):  # a partition's bars are on its node
            found = node_client(self.client, prefix).scan_iter(match=f"{prefix}*", count=1000, _type="stream")
            symbols.update((k.decode() if isinstance(k, bytes) else k)[len(prefix) :] for k in found)
        return symbols

    def symbols(self, interval: str, lo_ms: int, hi_ms: int) -> set[str]:
        """Symbols with bars of this interval in [lo_ms, hi_ms), in either store."""
        in_redis = {s for s in self.redis_symbols(interval) if self._redis_has(interval, s, lo_ms, hi_ms)}
        return in_redis | archived_span(self.root, interval, lo_ms, hi_ms)[0]

    def _redis_has(self, interval: str, symbol: str, lo_ms: int, hi_ms: int) -> bool:
        assert self.client is not None
        return bool(self.client.xrange(self.keys.bars(interval, symbol), f"{lo_ms}-0", f"{hi_ms - 1}-0", count=1))

    def read(self, interval: str, symbols: Sequence[str], lo_ms: int, hi_ms: int) -> pa.Table:
        """Bars of these symbols from both stores, sorted by (symbol, start), one row per bar (the archive's first).

        The archive is read first; Redis is asked only for the bars the archive lacks (`missing_ranges`),
        so the recent bars both stores hold (the usual overlap) are neither fetched nor parsed. Rows are
        keyed by (symbol code, start) as one int64: when the archive's rows are already in order without
        duplicates (one compacted file) and Redis adds none, they go out as read, without a sort or a copy.
        """
        names = sorted(symbols)
        table, codes = read_coded(self.root, interval, lo_ms, hi_ms, names)
        key = bar_keys(codes, table["start"])
        order = first_in_order(key)
        recent, recent_codes = self.redis_missing(interval, names, lo_ms, hi_ms, key if order is None else key[order])
        if recent.num_rows:
            table = pa.concat_tables([table, recent])
            codes = np.concatenate([codes, recent_codes])
            order = first_in_order(np.concatenate([key, bar_keys(recent_codes, recent["start"])]))
        if order is not None:
            table, codes = table.take(pa.array(order)), codes[order]
        return table.add_column(0, ARCHIVE_SCHEMA.field("symbol"), symbol_column(names, codes))

    def redis_missing(
        self, interval: str, names: Sequence[str], lo_ms: int, hi_ms: int, held: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        """The Redis bars of `names` (sorted) in [lo_ms, hi_ms) whose keys are not in `held` (the archive's, sorted
        and unique; see `bar_keys`), without the symbol column, and each one's index in `names`.

        Two pipelined round trips: the first and last Redis bar of each symbol, then every range
        between them that the archive leaves open (further pages only where a range is long).
        """
        empty = ARCHIVE_SCHEMA.empty_table().drop_columns(["symbol"]), np.empty(0, np.int32)
        if self.client is None:
            return empty
        step = INTERVAL_MS[interval]
        heads, tails = self._redis_ends(interval, names, lo_ms, hi_ms)
        bounds = np.searchsorted(held, np.arange(len(names) + 1, dtype=np.int64) << TS_BITS)
        asked: list[tuple[int, int, int]] = []  # (symbol code, first ms, last ms)
        for code, symbol in enumerate(names):
            if symbol not in heads:
                continue
            starts = held[bounds[code] : bounds[code + 1]] & START_MASK
            starts = starts[(starts >= heads[symbol]) & (starts <= tails[symbol])]
            asked += [(code, lo, hi) for lo, hi in missing_ranges(starts, heads[symbol], tails[symbol], step)]
        replies = self._xrange_all([(self.keys.bars(interval, names[code]), lo, hi) for code, lo, hi in asked])
        entries: dict[int, list[Any]] = {}
        for (code, _, _), reply in zip(asked, replies, strict=True):
            entries.setdefault(code, []).extend(reply)
        parts = [(parse_bar_entries(names[code], found), code) for code, found in entries.items() if found]
        if not parts:
            return empty
        codes = np.concatenate([np.full(table.num_rows, code, np.int32) for table, code in parts])
        return pa.concat_tables([table for table, _ in parts]).drop_columns(["symbol"]), codes

    def _xrange_all(self, ranges: Sequence[tuple[str, int, int]]) -> list[list[Any]]:
        """Every entry of each (stream, first ms, last ms): one pipelined round trip per node, then one per further
        page."""
        assert self.client is not None
        found: list[list[Any]] = [[] for _ in ranges]
        for node, positions in by_node(self.client, [key for key, _, _ in ranges]):
            raw = raw_client(node)
            pending = [(i, f"{ranges[i][1]}-0") for i in positions]
            while pending:
                pipe = raw.pipeline(transaction=False)
                for i, start in pending:
                    key, _, last = ranges[i]
                    pipe.execute_command("XRANGE", key, start, f"{last}-0", "COUNT", REDIS_PAGE)
                more = []
                for (i, _), page in zip(pending, pipe.execute(), strict=True):
                    found[i].extend(page)
                    if len(page) == REDIS_PAGE:
                        more.append((i, "(" + page[-1][0].decode()))
                pending = more
        return found

    def survey(self, interval: str, symbols: Sequence[str] | None, lo_ms: int, hi_ms: int) -> Survey:
        """Which symbols have bars in [lo_ms, hi_ms) in either store, and the narrowest [lo, hi) holding them.

        The archive's side comes from its files' footers where their statistics settle it (see
        `archived_span`), Redis's from the first and last bar of each stream (one round trip): no bar
        is read to plan the export.
        """
        step = INTERVAL_MS[interval]
        wanted = None if symbols is None else set(symbols)
        in_redis = sorted(s for s in self.redis_symbols(interval) if wanted is None or s in wanted)
        heads, tails = self._redis_ends(interval, in_redis, lo_ms, hi_ms)
        archived, span = archived_span(self.root, interval, lo_ms, hi_ms, symbols)
        lows = [*heads.values(), *(span[:1] if span else ())]
        highs = [*tails.values(), *(span[1:] if span else ())]
        bounds = (max(lo_ms, min(lows)), min(hi_ms, max(highs) + step)) if lows else (lo_ms, lo_ms)
        return Survey(archived | set(heads), bounds)

    def _redis_ends(
        self, interval: str, symbols: Sequence[str], lo_ms: int, hi_ms: int
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The first and last Redis bar start in [lo_ms, hi_ms) of each symbol that has one (one round trip per
        node)."""
        if self.client is None or not symbols:
            return {}, {}
        heads, tails = {}, {}
        for node, positions in by_node(self.client, [self.keys.bars(interval, symbol) for symbol in symbols]):
            pipe = node.pipeline(transaction=False)
            for i in positions:
                key = self.keys.bars(interval, symbols[i])
                pipe.xrange(key, f"{lo_ms}-0", f"{hi_ms - 1}-0", count=1)
                pipe.xrevrange(key, f"{hi_ms - 1}-0", f"{lo_ms}-0", count=1)
            replies: list[Any] = pipe.execute()
            for i, head, tail in zip(positions, replies[0::2], replies[1::2], strict=True):
                if head and tail:
                    heads[symbols[i]] = entry_ms(head[0][0])
                    tails[symbols[i]] = entry_ms(tail[0][0])
        return heads, tails


@dataclass(frozen=True, slots=True)
class Survey:
    """What `BarReader.survey` found: symbols with bars in the range, and the narrowest [lo, hi) holding them."""

    symbols: set[str]
    span: tuple[int, int]


START_MASK = (1 << TS_BITS) - 1


def bar_keys(codes: np.ndarray, start: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """One int64 per row ordering like (symbol code, start): the code above the start's TS_BITS bits."""
    return (codes.astype(np.int64) << TS_BITS) | start.cast(pa.int64()).to_numpy()


def first_in_order(key: np.ndarray) -> np.ndarray | None:
    """Row indices that sort `key` and keep the first row of equal keys; None when `key` is strictly increasing
    already (sorted, no duplicates: the rows can be used as they are)."""
    if len(key) < 2 or bool((key[1:] > key[:-1]).all()):
        return None
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    keep = np.ones(len(order), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep]


def missing_ranges(held: np.ndarray, head: int, tail: int, step: int) -> list[tuple[int, int]]:
    """[first, last] ms ranges where Redis bars of one symbol from `head` to `tail` (its first and last there) may be
    that the archive lacks; `held` are the archive's starts of that symbol in [head, tail], sorted and unique.

    Bar starts are multiples of `step`, so apart from the two ends only a gap wider than one step
    between consecutive archived starts can hide a bar. Where the ranges would cost more round trips
    than reading every Redis bar there costs parsing (PROBE_COST_BARS), or the archive's starts are
    off the grid, the answer is the whole [head, tail] (the merge then drops the bars read twice).
    """
    if len(held) == 0 or bool((held % step).any()):
        return [(head, tail)]
    ranges = [(head, int(held[0]) - 1)] if held[0] > head else []
    gaps = np.flatnonzero(np.diff(held) > step)
    ranges += zip((held[gaps] + 1).tolist(), (held[gaps + 1] - 1).tolist(), strict=True)
    if held[-1] < tail:
        ranges.append((int(held[-1]) + 1, tail))
    return ranges if len(ranges) * PROBE_COST_BARS <= len(held) else [(head, tail)]


def parse_bar_entries(symbol: str, entries: Sequence[Any]) -> pa.Table:
    """Raw XRANGE entries of one bar stream (ID = bar start) as archive-schema rows (an overlay field an entry
    leaves out, not defined yet, is null)."""
    bars = decode_bar_entries(entries)
    columns: dict[str, Any] = {
        "symbol": pa.array(np.full(len(bars), symbol, dtype=object), pa.string()),
        "start": pa.array(bars.start_ms, pa.timestamp("ms", tz="UTC")),
    }
    columns.update({name: pa.array(bars.column(name)) for name in BAR_FIELDS})
    overlays = [name for name in OVERLAY_COLUMNS if name in bars.extra]
    columns.update({name: overlay_values(bars.extra[name]) for name in overlays})
    return conform(pa.table(columns), ARCHIVE_SCHEMA)
