"""Export: bars from the archive and Redis as one table, rolled up to the interval asked, to Parquet or CSV.

The work is cut into chunks of one day (UTC; with `--interval 1d`, a day in the requested time zone)
and a group of symbols small enough to bound memory (`CHUNK_ROWS` source bars). For each chunk the
archived bars and the Redis bars are merged and deduplicated by (symbol, start) (the two overlap:
Redis keeps the recent bars the archive also has), rolled up from the finer source interval when
needed, and appended to a writer that streams into a hidden temporary file; the file is renamed to
the requested path only when every chunk is written, so a reader never sees a partial export.

Rows come day by day; within a day by symbol, then start. `--interval 1d` rows add `return` (close
over the previous exported day's close, minus 1; empty on a symbol's first day), `realized_volatility`
(square root of the summed squared log returns between consecutive source-bar closes of the day, not
annualised) and `max_drawdown` (the largest fall of a source-bar close below the day's running peak
close, as a fraction).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import redis

from tickerdash.analytics.engine.segments import TS_BITS
from tickerdash.analytics.history.archive import ARCHIVE_SCHEMA, archive_root, archived_span, read_coded, symbol_column
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.settings import Settings

INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
# Where each interval's rows come from, best first: stored bars of that interval, else finer ones.
# Daily rows come from 1m bars (or 1s): the volatility and drawdown need intraday closes.
SOURCES = {"1s": ("1s",), "1m": ("1m", "1s"), "1h": ("1h", "1m", "1s"), "1d": ("1m", "1s")}
INCLUDES = ("alerts", "anomalies", "trades")
FORMATS = ("parquet", "csv")
CHUNK_ROWS = 1_000_000  # source bars per chunk: about 100 MB of columns, whatever the range
REDIS_PAGE = 10_000
PARQUET_COMPRESSION = "snappy"  # pyarrow's default: fast to write and read; the benchmark's reference uses it too
PROBE_COST_BARS = 4  # a gap probe costs about as much as parsing this many bars: sparse overlaps are just read
DAY_MS = 86_400_000
NO_END_MS = 2**TS_BITS
Format = Literal["parquet", "csv"]


class ExportError(ValueError):
    """The request cannot be served as asked; the message says what to fix."""


class NoDataError(ExportError):
    """The request is valid but no bar lies in its range: nothing is written."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: symbols (None: all), interval, [start_ms, end_ms) in epoch ms, time zone, format."""

    symbols: tuple[str, ...] | None = None
    interval: str = "1m"
    start_ms: int | None = None
    end_ms: int | None = None
    tz: str = "UTC"
    format: Format = "parquet"
    include: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The query as plain data (for the file's metadata)."""
        out = asdict(self)
        out["symbols"] = list(self.symbols) if self.symbols is not None else "all"
        out["include"] = list(self.include)
        return out


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote: the table's path, its rows, the bars it was built from, and any extra files."""

    path: Path
    rows: int
    source_interval: str
    symbols: tuple[str, ...]
    extra: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: plan, read (and build), write, sync


ProgressFn = Callable[[int, int, int], None]  # (chunks done, chunks in all, rows written)


class Stopwatch:
    """Seconds spent per phase: `lap(phase)` adds the time since the previous lap to that phase."""

    __slots__ = ("_last", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the last lap (or the start) to `phase`."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


# --- parsing and validation ----------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The time zone called `name`, or ExportError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"--tz: unknown time zone {name!r} (use an IANA name like UTC or America/New_York)") from None


def parse_time(text: str, tz: str = "UTC", *, end: bool = False) -> int:
    """Epoch ms of a date (YYYY-MM-DD; as --end, the end of that day), an ISO timestamp, or epoch ms."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        stamp = pd.Timestamp(raw)
    except ValueError:
        raise ExportError(
            f"{'--end' if end else '--start'}: {text!r} is not a date (2026-11-26), "
            "a timestamp (2026-11-26T14:30, offsets allowed) or epoch ms"
        ) from None
    if stamp is pd.NaT:
        raise ExportError(f"{'--end' if end else '--start'}: {text!r} is empty")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(zone(tz))
    is_date = len(raw) == 10 and raw[4] == "-" and raw[7] == "-"
    if end and is_date:  # a date as the end means "through that day"
        stamp = (stamp.tz_localize(None) + pd.Timedelta(days=1)).tz_localize(zone(tz))
    return int(stamp.as_unit("ns").value // 1_000_000)


def check_output(path: Path) -> None:
    """Raise ExportError unless `path` can be created or replaced."""
    if path.is_dir():
        raise ExportError(f"--out: {path} is a directory; give a file name, e.g. {path / 'bars.parquet'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"--out: directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"--out: {path} is not writable; choose a path you can write to")


def validate(request: ExportRequest) -> None:
    """Raise ExportError for a request that cannot be right whatever the data."""
    if request.interval not in INTERVAL_MS:
        raise ExportError(f"--interval: {request.interval!r} is not one of {', '.join(INTERVAL_MS)}")
    if request.format not in FORMATS:
        raise ExportError(f"--format: {request.format!r} is not one of {', '.join(FORMATS)}")
    unknown = sorted(set(request.include) - set(INCLUDES))
    if unknown:
        raise ExportError(f"--include: {', '.join(unknown)} unknown; choose from {', '.join(INCLUDES)}")
    zone(request.tz)
    if request.start_ms is not None and request.end_ms is not None and request.start_ms >= request.end_ms:
        raise ExportError(f"--start ({_iso(request.start_ms)}) must be before --end ({_iso(request.end_ms)})")
    if request.symbols is not None and not request.symbols:
        raise ExportError("--symbols is empty: name at least one ticker, or use --all")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- reading bars: the archive and Redis, merged ----------------------------------------------


class BarReader:
    """Bars of one interval from the archive and Redis together, deduplicated by (symbol, start)."""

    def __init__(self, client: redis.Redis | None, settings: Settings, root: Path | None = None) -> None:
        self.client = client
        self.raw = raw_client(client) if client is not None else None
        self.keys = Keys(settings.prefix, settings.partitions)
        self.root = root or archive_root(settings)

    def redis_symbols(self, interval: str) -> set[str]:
        """Symbols that have a Redis bar stream of this interval."""
        if self.client is None:
            return set()
        prefix = self.keys.bars(interval, "")
        found = self.client.scan_iter(match=f"{prefix}*", count=1000, _type="stream")
        return {(k.decode() if isinstance(k, bytes) else k)[len(prefix) :] for k in found}

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
        if self.raw is None:
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
        """Every entry of each (stream, first ms, last ms): one pipelined round trip, then one per further page."""
        assert self.raw is not None
        found: list[list[Any]] = [[] for _ in ranges]
        pending = [(i, f"{first}-0") for i, (_, first, _) in enumerate(ranges)]
        while pending:
            pipe = self.raw.pipeline(transaction=False)
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
        """The first and last Redis bar start in [lo_ms, hi_ms) of each symbol that has one (one round trip)."""
        if self.client is None or not symbols:
            return {}, {}
        pipe = self.client.pipeline(transaction=False)
        for symbol in symbols:
            key = self.keys.bars(interval, symbol)
            pipe.xrange(key, f"{lo_ms}-0", f"{hi_ms - 1}-0", count=1)
            pipe.xrevrange(key, f"{hi_ms - 1}-0", f"{lo_ms}-0", count=1)
        replies: list[Any] = pipe.execute()
        heads, tails = {}, {}
        for symbol, head, tail in zip(symbols, replies[0::2], replies[1::2], strict=True):
            if head and tail:
                heads[symbol] = int(head[0][0].split(b"-")[0])
                tails[symbol] = int(tail[0][0].split(b"-")[0])
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
    """Raw XRANGE entries of one bar stream (ID = bar start) as archive-schema rows."""
    ids = np.array([entry[0] for entry in entries])
    start = np.char.partition(ids, b"-")[:, 0].astype(np.int64)
    flat = [entry[1] for entry in entries]
    names = flat[0][0::2]
    try:
        grid = np.array(flat)  # fast path: every entry has the same fields in the same order
        uniform = grid.ndim == 2 and bool((grid[:, 0::2] == np.array(names)).all())
    except ValueError:
        uniform = False
    if uniform:
        values = {name.decode(): grid[:, 2 * i + 1] for i, name in enumerate(names)}
    else:  # a foreign writer's field order: the slow, general way
        rows = [dict(zip(f[0::2], f[1::2], strict=True)) for f in flat]
        values = {
            name: np.array([r[name.encode()] for r in rows])
            for name in ("open", "high", "low", "close", "volume", "vwap", "trades")
        }
    columns: dict[str, Any] = {
        "symbol": pa.array(np.full(len(start), symbol, dtype=object), pa.string()),
        "start": pa.array(start, pa.timestamp("ms", tz="UTC")),
    }
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        columns[name] = pa.array(values[name].astype(np.float64))
    columns["trades"] = pa.array(values["trades"].astype(np.float64).astype(np.int64))
    return pa.table(columns, schema=ARCHIVE_SCHEMA)


# --- rolling up -------------------------------------------------------------------------------


def rollup(bars: pa.Table, bucket_ms: np.ndarray) -> dict[str, np.ndarray]:
    """Bars sorted by (symbol, start) folded into one row per (symbol, bucket): OHLCV, VWAP, trades.

    Also returns `first` and `group` (each input bar's output row) for the daily statistics.
    """
    symbol_code = pc.index_in(bars["symbol"], value_set=pc.unique(bars["symbol"])).to_numpy()
    n = len(bucket_ms)
    new_group = np.ones(n, bool)
    new_group[1:] = (symbol_code[1:] != symbol_code[:-1]) | (bucket_ms[1:] != bucket_ms[:-1])
    first = np.flatnonzero(new_group)
    last = np.append(first[1:], n) - 1
    col = {name: bars[name].to_numpy() for name in ("open", "high", "low", "close", "volume", "vwap", "trades")}
    volume = np.add.reduceat(col["volume"], first)
    notional = np.add.reduceat(col["vwap"] * col["volume"], first)
    return {
        "first": first,
        "group": np.cumsum(new_group) - 1,
        "start": bucket_ms[first],
        "open": col["open"][first],
        "high": np.maximum.reduceat(col["high"], first),
        "low": np.minimum.reduceat(col["low"], first),
        "close": col["close"][last],
        "volume": volume,
        "vwap": np.divide(notional, volume, out=np.full(len(first), np.nan), where=volume > 0),
        "trades": np.add.reduceat(col["trades"], first),
    }


def daily_statistics(close: np.ndarray, group: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Realised volatility and max drawdown per day group, from the closes of its source bars (in order)."""
    log_close = np.log(close)
    same_day = group[1:] == group[:-1]
    squared = np.where(same_day, np.diff(log_close) ** 2, 0.0)
    realized = np.sqrt(np.bincount(group[1:], weights=squared, minlength=groups))
    peak = pd.Series(close).groupby(group).cummax().to_numpy()
    drawdown = np.zeros(groups)
    np.maximum.at(drawdown, group, 1.0 - close / peak)
    return realized, drawdown


# --- the plan: chunks of (day, symbols) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """One unit of work: source bars of `symbols` with start in [lo_ms, hi_ms)."""

    lo_ms: int
    hi_ms: int
    symbols: tuple[str, ...]


def day_starts(lo_ms: int, hi_ms: int, tz: str) -> list[int]:
    """Epoch ms of every midnight in `tz` from the day holding lo_ms through the day holding hi_ms - 1."""
    z = zone(tz)
    first = pd.Timestamp(lo_ms, unit="ms", tz="UTC").tz_convert(z).normalize()
    last = pd.Timestamp(hi_ms - 1, unit="ms", tz="UTC").tz_convert(z).normalize()
    days = pd.date_range(first.tz_localize(None), last.tz_localize(None), freq="D").tz_localize(z)
    return [int(v) for v in days.as_unit("ms").asi8]


def plan(lo_ms: int, hi_ms: int, symbols: Sequence[str], source: str, tz: str) -> list[Chunk]:
    """Chunks covering [lo_ms, hi_ms) day by day, each with as many symbols as CHUNK_ROWS allows."""
    per_symbol_day = DAY_MS // INTERVAL_MS[source]
    group = max(1, CHUNK_ROWS // per_symbol_day)
    starts = day_starts(lo_ms, hi_ms, tz)
    bounds = [*starts[1:], hi_ms]
    names = sorted(symbols)
    return [
        Chunk(max(day, lo_ms), min(end, hi_ms), tuple(names[i : i + group]))
        for day, end in zip(starts, bounds, strict=True)
        if min(end, hi_ms) > max(day, lo_ms)
        for i in range(0, len(names), group)
    ]


def floor_bucket(ms: int, interval: str, tz: str) -> int:
    """Start of the output bar holding `ms` (a midnight in `tz` for 1d; UTC-aligned otherwise)."""
    if interval != "1d":
        return ms - ms % INTERVAL_MS[interval]
    return day_starts(ms, ms + 1, tz)[0]


def ceil_bucket(ms: int, interval: str, tz: str) -> int:
    """`ms` if an output bar starts there, else the start of the next output bar."""
    floor = floor_bucket(ms, interval, tz)
    if floor == ms:
        return ms
    if interval != "1d":
        return floor + INTERVAL_MS[interval]
    z = zone(tz)
    midnight = pd.Timestamp(floor, unit="ms", tz="UTC").tz_convert(z).tz_localize(None)
    return int((midnight + pd.Timedelta(days=1)).tz_localize(z).as_unit("ns").value // 1_000_000)


def aligned_range(request: ExportRequest) -> tuple[int, int]:
    """[lo, hi) in ms holding whole output bars only: both ends rounded up to a bar start."""
    lo = request.start_ms if request.start_ms is not None else 0
    hi = request.end_ms if request.end_ms is not None else NO_END_MS
    lo = ceil_bucket(lo, request.interval, request.tz)
    hi = ceil_bucket(hi, request.interval, request.tz) if hi < NO_END_MS else hi
    return lo, hi


# --- output ----------------------------------------------------------------------------------

PRICE = {b"unit": b"quote currency per share/unit"}


def output_schema(interval: str, tz: str, meta: dict[str, Any]) -> pa.Schema:
    """Columns of an export (daily trend columns with `1d`), with units, and the export's metadata."""
    fields = [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("interval", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field(
            "start",
            pa.timestamp("ms", tz=tz),
            nullable=False,
            metadata={b"description": b"bar covers [start, start + interval)"},
        ),
        *(pa.field(name, pa.float64(), nullable=False, metadata=PRICE) for name in ("open", "high", "low", "close")),
        pa.field("volume", pa.float64(), nullable=False, metadata={b"unit": b"shares/units traded"}),
        pa.field("vwap", pa.float64(), metadata=PRICE),
        pa.field("trades", pa.int64(), nullable=False, metadata={b"unit": b"count of trades"}),
    ]
    if interval == "1d":
        fields += [
            pa.field("return", pa.float64(), metadata={b"unit": b"fraction: close / previous day's close - 1"}),
            pa.field(
                "realized_volatility",
                pa.float64(),
                metadata={b"unit": b"sqrt(sum of squared log returns of the day's source bars), not annualised"},
            ),
            pa.field("max_drawdown", pa.float64(), metadata={b"unit": b"fraction below the day's running peak close"}),
        ]
    return pa.schema(
        fields, metadata={b"tickerdash": json.dumps(meta, sort_keys=True).encode(), **(ARCHIVE_SCHEMA.metadata or {})}
    )


def describe_run(client: redis.Redis | None, keys: Keys) -> dict[str, Any]:
    """Version, rules version and simulator seed (where Redis knows them) for the metadata."""
    try:
        version = importlib_metadata.version("tickerdash")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    out: dict[str, Any] = {"tickerdash_version": version}
    if client is not None:
        rules_version = client.get(keys.internal("rules_version"))
        out["rules_version"] = int(rules_version) if rules_version is not None else 0
        seed = client.hget(keys.internal("simulator"), "seed")  # written by a simulator that records its run
        if seed is not None:
            out["simulator_seed"] = int(seed)
    return out


# A text cell starting with one of these is run as a formula by spreadsheets (OWASP, "CSV Injection").
FORMULA_START = "^([=+\\-@\t\r])"


def neutralise_formulas(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text cells a spreadsheet would run as a formula, prefixed with a single quote; other columns as given.

    Only text (string, or dictionary of strings) is changed: a negative number stays a number. The
    CSV writer quotes every text cell, so a prefixed cell cannot be split or unquoted.
    """
    typ = column.type
    if pa.types.is_dictionary(typ) and _is_text(typ.value_type):
        chunks = [
            pa.DictionaryArray.from_arrays(chunk.indices, _prefix_formulas(chunk.dictionary), ordered=typ.ordered)
            for chunk in column.chunks
        ]
        return pa.chunked_array(chunks, typ)
    return _prefix_formulas(column) if _is_text(typ) else column


def _is_text(typ: pa.DataType) -> bool:
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))


def _prefix_formulas(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.replace_substring_regex(text, pattern=FORMULA_START, replacement="'\\1", max_replacements=1)


class TableWriter:
    """Streams tables into a hidden temporary file beside `path` and renames it into place on `commit`.

    CSV text cells that would be spreadsheet formulas are prefixed with `'` (`neutralise_formulas`);
    Parquet keeps every value as it is.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: Format) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.schema = schema
        self.format = fmt
        self.rows = 0
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if fmt == "parquet":
            self._writer = pq.ParquetWriter(self.tmp, schema, compression=PARQUET_COMPRESSION)
        else:
            self._writer = pacsv.CSVWriter(self.tmp, schema)
        self._fd = os.open(self.tmp, os.O_RDONLY)  # for the early writeback and the fsync

    def write(self, table: pa.Table) -> None:
        """Append rows (already in the schema's columns), and start writing them to disk in the background."""
        if table.num_rows:
            table = table.cast(self.schema)
            if self.format == "csv":
                table = pa.table([neutralise_formulas(column) for column in table.columns], schema=self.schema)
            self._writer.write_table(table)
            self.rows += table.num_rows
            start_writeback(self._fd)

    def commit(self) -> Path:
        """Close, flush to disk and rename into place."""
        self._writer.close()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._writer.close()
        finally:
            os.close(self._fd)
            self.tmp.unlink(missing_ok=True)


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages to disk now, without waiting for it.

    On Linux, POSIX_FADV_DONTNEED starts the writeback of dirty pages (and drops only pages already
    clean), so while the next chunk is encoded the disk takes this one, and the fsync at `commit`
    waits for the last chunk only, not for the whole file. Durability is the fsync's, as before.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


# --- the export --------------------------------------------------------------------------------


def choose_source(
    reader: BarReader, request: ExportRequest, lo_ms: int, hi_ms: int
) -> tuple[str, list[str], tuple[int, int]]:
    """The stored interval to build from (the first in SOURCES with data), the symbols to export, and their span."""
    for source in SOURCES[request.interval]:
        survey = reader.survey(source, request.symbols, lo_ms, hi_ms)
        if not survey.symbols and request.symbols is None:
            continue
        if request.symbols is None:
            return source, sorted(survey.symbols), survey.span
        missing = sorted(set(request.symbols) - survey.symbols)
        if missing:
            available = reader.symbols(source, lo_ms, hi_ms)  # all of them, to say what could be asked
            if not available:
                continue
            shown = ", ".join(sorted(available)[:20]) + (" ..." if len(available) > 20 else "")
            raise ExportError(
                f"--symbols: no {source} bars for {', '.join(missing)} in {_span(lo_ms, hi_ms)} "
                "(unknown symbol, or no data in this range); "
                f"symbols with data there: {shown}"
            )
        return source, sorted(set(request.symbols)), survey.span
    raise NoDataError(
        f"no bars in {_span(lo_ms, hi_ms)} at {'/'.join(SOURCES[request.interval])} in Redis or "
        f"the archive; widen --start/--end (nothing was written)"
    )


def _span(lo_ms: int, hi_ms: int) -> str:
    return f"[{_iso(lo_ms)}, {_iso(hi_ms) if hi_ms < NO_END_MS else 'end'})"


def export_chunks(
    reader: BarReader, request: ExportRequest, source: str, chunks: Sequence[Chunk], schema: pa.Schema
) -> Iterator[pa.Table]:
    """The output rows of every chunk, in order (pure apart from the reads)."""
    step = INTERVAL_MS[request.interval]
    last_close: dict[str, float] = {}
    for chunk in chunks:
        bars = reader.read(source, chunk.symbols, chunk.lo_ms, chunk.hi_ms)
        if bars.num_rows == 0:
            yield schema.empty_table()
            continue
        start = bars["start"].cast(pa.int64()).to_numpy()
        if source == request.interval:
            table = bars.select(["symbol", "start", "open", "high", "low", "close", "volume", "vwap", "trades"])
            yield _with_interval(table, request.interval, schema)
            continue
        # a 1d chunk is exactly one day in the request's zone; other buckets are UTC-aligned
        bucket = np.full(len(start), chunk.lo_ms, np.int64) if request.interval == "1d" else start - start % step
        rolled = rollup(bars, bucket)
        symbols = bars["symbol"].take(pa.array(rolled["first"]))
        columns: dict[str, Any] = {"symbol": symbols, "start": pa.array(rolled["start"], pa.timestamp("ms", tz="UTC"))}
        columns.update({name: rolled[name] for name in ("open", "high", "low", "close", "volume", "vwap", "trades")})
        if request.interval == "1d":
            groups = len(rolled["first"])
            realized, drawdown = daily_statistics(bars["close"].to_numpy(), rolled["group"], groups)
            names = symbols.to_pylist()  # one per symbol-day, not per bar
            previous = np.array([last_close.get(s, np.nan) for s in names])
            columns["return"] = rolled["close"] / previous - 1
            columns["realized_volatility"] = realized
            columns["max_drawdown"] = drawdown
            last_close.update(zip(names, rolled["close"].tolist(), strict=True))
        yield _with_interval(pa.table(columns), request.interval, schema)


def _with_interval(table: pa.Table, interval: str, schema: pa.Schema) -> pa.Table:
    constant = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, np.int8)), pa.array([interval]))
    table = table.add_column(1, "interval", constant)
    return table.select(schema.names).cast(schema)


def export_bars(
    client: redis.Redis | None,
    settings: Settings,
    request: ExportRequest,
    out: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write the requested bars (and any `include`d streams beside them) to `out`; raise ExportError if bad.

    `client` may be None to read the archive alone. Nothing is written when the range holds no bars
    (NoDataError). The file appears complete or not at all.
    """
    began = time.perf_counter()
    watch = Stopwatch()
    validate(request)
    out = Path(out)
    check_output(out)
    reader = BarReader(client, settings)
    lo_ms, hi_ms = aligned_range(request)
    if lo_ms >= hi_ms:
        raise ExportError(f"{_span(lo_ms, hi_ms)} holds no whole {request.interval} bar; widen --start/--end")
    # plan only the days that hold data (an open range would otherwise plan every day since 1970)
    source, symbols, (span_lo, span_hi) = choose_source(reader, request, lo_ms, hi_ms)
    span_lo = max(lo_ms, floor_bucket(span_lo, request.interval, request.tz))
    span_hi = min(hi_ms, ceil_bucket(span_hi, request.interval, request.tz))
    chunks = plan(span_lo, span_hi, symbols, source, request.tz)
    meta = {
        **describe_run(client, reader.keys),
        "query": request.describe(),
        "source_interval": source,
        "row_order": "day, then symbol, then start",
        "created_at": _iso(int(time.time() * 1000)),
    }
    schema = output_schema(request.interval, request.tz, meta)
    writer = TableWriter(out, schema, request.format)
    watch.lap("plan")
    try:
        for done, table in enumerate(export_chunks(reader, request, source, chunks, schema), start=1):
            watch.lap("read")
            writer.write(table)
            watch.lap("write")
            if on_progress:
                on_progress(done, len(chunks), writer.rows)
        if writer.rows == 0:
            raise NoDataError(
                f"no {request.interval} bars for {', '.join(symbols[:10])} in {_span(lo_ms, hi_ms)}; "
                "nothing was written"
            )
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    watch.lap("sync")
    extra = {
        name: export_stream(client, reader.keys, name, request, symbols, lo_ms, hi_ms, out) for name in request.include
    }
    return ExportResult(out, writer.rows, source, tuple(symbols), extra, time.perf_counter() - began, watch.seconds)


def export_bytes(client: redis.Redis | None, settings: Settings, request: ExportRequest) -> tuple[bytes, str]:
    """The export as file contents and a file name, for downloads (the dashboard); `include` is ignored."""
    import tempfile

    suffix = "parquet" if request.format == "parquet" else "csv"
    name = f"tickerdash_{request.interval}.{suffix}"
    with tempfile.TemporaryDirectory(prefix="tickerdash-export-") as folder:
        path = Path(folder) / name
        plain = ExportRequest(
            request.symbols, request.interval, request.start_ms, request.end_ms, request.tz, request.format, ()
        )
        export_bars(client, settings, plain, path)
        return path.read_bytes(), name


# --- alerts, anomalies, trades beside the bars ----------------------------------------------------


def sibling(out: Path, name: str) -> Path:
    """`bars.parquet` -> `bars.alerts.parquet`."""
    return out.with_name(f"{out.stem}.{name}{out.suffix}")


def _stream_pages(raw: redis.Redis, key: str) -> Iterator[list[Any]]:
    start = "-"
    while True:
        entries = raw.execute_command("XRANGE", key, start, "+", "COUNT", REDIS_PAGE)
        if not entries:
            return
        yield entries
        if len(entries) < REDIS_PAGE:
            return
        start = "(" + entries[-1][0].decode()


def export_stream(
    client: redis.Redis | None,
    keys: Keys,
    name: str,
    request: ExportRequest,
    symbols: Sequence[str],
    lo_ms: int,
    hi_ms: int,
    out: Path,
) -> Path:
    """Write the alerts, anomalies or trades of these symbols with event time in [lo_ms, hi_ms) beside `out`."""
    path = sibling(out, name)
    if client is None:
        raise ExportError(f"--include {name}: needs Redis (alerts, anomalies and trades are not archived)")
    raw = raw_client(client)
    wanted = pa.array(sorted(symbols), pa.string())
    streams = keys.tick_streams if name == "trades" else [keys.alerts if name == "alerts" else keys.anomalies]
    tables = []
    for stream in streams:
        for entries in _stream_pages(raw, stream):
            table = _trades_table(entries) if name == "trades" else _events_table(entries)
            if table.num_rows:
                keep = pc.and_(
                    pc.is_in(table["symbol"], value_set=wanted),
                    pc.and_(pc.greater_equal(table["ts_ms"], lo_ms), pc.less(table["ts_ms"], hi_ms)),
                )
                tables.append(table.filter(keep))
    table = (
        pa.concat_tables(tables, promote_options="permissive")
        if tables
        else pa.table({"symbol": pa.array([], pa.string()), "ts_ms": pa.array([], pa.int64())})
    )
    table = table.append_column(
        "ts", table["ts_ms"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms", tz=request.tz))
    ).drop_columns(["ts_ms"])
    about = {"query": request.describe(), "stream": name}
    table = table.replace_schema_metadata({b"tickerdash": json.dumps(about).encode()})
    writer = TableWriter(path, table.schema, request.format)
    try:
        writer.write(table)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def _events_table(entries: Sequence[Any]) -> pa.Table:
    """Alert or anomaly entries as columns of text (numbers where the field is numeric), with ts_ms."""
    rows = [dict(zip(f[0::2], f[1::2], strict=False)) for _, f in entries]
    frame = pd.DataFrame.from_records(rows).rename(columns=lambda c: c.decode() if isinstance(c, bytes) else c)
    frame = frame.map(lambda v: v.decode() if isinstance(v, bytes) else v)
    frame["entry_id"] = [eid.decode() for eid, _ in entries]
    for column in frame.columns:
        if column not in ("symbol", "entry_id", "message", "reasons", "rule_id", "trade_id", "tick_id"):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.notna().sum() == frame[column].notna().sum():  # numeric throughout: keep as numbers
                frame[column] = numbers
    frame["ts_ms"] = pd.to_numeric(frame.get("ts", frame["entry_id"].str.split("-").str[0]), errors="coerce")
    frame = frame.dropna(subset=["ts_ms"]).drop(columns=["ts"], errors="ignore")
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    return pa.Table.from_pandas(frame, preserve_index=False)


def _trades_table(entries: Sequence[Any]) -> pa.Table:
    """Tick entries (either wire form) as columns symbol, ts_ms, price, size, side, trade_id, tick_id."""
    ticks = decode_entries(entries).ticks
    if not len(ticks):
        return pa.table({"symbol": pa.array([], pa.string()), "ts_ms": pa.array([], pa.int64())})
    entry = np.asarray(ticks.entry_ids, dtype=object)[ticks.entry_of]
    offset = ticks.row_in_entry
    tick_id = np.where(offset < 0, entry, entry + "#" + offset.astype(str).astype(object))
    columns = {
        "symbol": pa.array(ticks.symbol, pa.string()),
        "ts_ms": pa.array(ticks.ts, pa.int64()),
        "price": ticks.price,
        "size": ticks.size,
        "side": pa.array(ticks.side, pa.int8()),
        "trade_id": ticks.trade_id if ticks.trade_id is not None else pa.nulls(len(ticks), pa.string()),
        "tick_id": pa.array(tick_id, pa.string()),
    }
    return pa.table(columns)
