"""Reading the archive: which partitions and row groups hold a range, read by symbol code without a copy."""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickerdash.analytics.history.archive_layout import ARCHIVE_SCHEMA, conform, partition_dir, utc_date


def partition_files(root: Path, interval: str, dates: Sequence[str]) -> list[Path]:
    """The visible Parquet files of these (interval, date) partitions, in name order."""
    files: list[Path] = []
    for date in dates:
        folder = partition_dir(root, interval, date)
        if folder.is_dir():
            files.extend(sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))))
    return files


def archived_intervals(root: Path) -> list[str]:
    """The intervals that have an archive partition."""
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.glob("interval=*") if p.is_dir())


def dates_between(root: Path, interval: str, lo_ms: int, hi_ms: int) -> list[str]:
    """The archived UTC dates of an interval that [lo_ms, hi_ms) touches (from the directories present)."""
    folder = root / f"interval={interval}"
    if hi_ms <= lo_ms or not folder.is_dir():
        return []
    first, last = utc_date(lo_ms), utc_date(min(hi_ms - 1, 253_402_300_799_000))  # at most 9999-12-31
    present = (p.name.split("=", 1)[1] for p in folder.glob("date=*"))
    return sorted(d for d in present if first <= d <= last)


# archive rows as read: the symbol as dictionary codes, not a string per row
CODED_SCHEMA = pa.schema(
    [pa.field("symbol", pa.dictionary(pa.int32(), pa.string())), *(f for f in ARCHIVE_SCHEMA if f.name != "symbol")]
)


@dataclass(frozen=True, slots=True)
class RowGroup:
    """One row group of an archive file, with what its footer statistics prove (None: no usable statistics)."""

    path: Path
    index: int
    rows: int
    symbols: tuple[str, str] | None  # the least and the greatest symbol
    starts: tuple[int, int] | None  # the least and the greatest bar start, epoch ms

    def may_hold(self, lo_ms: int, hi_ms: int, names: Sequence[str] | None = None) -> bool:
        """False where the statistics prove no row has start in [lo_ms, hi_ms) and a symbol of `names` (sorted)."""
        if self.rows == 0 or (self.starts is not None and (self.starts[1] < lo_ms or self.starts[0] >= hi_ms)):
            return False
        if names is None or self.symbols is None:
            return True
        at = bisect.bisect_left(names, self.symbols[0])
        return at < len(names) and names[at] <= self.symbols[1]

    def within(self, lo_ms: int, hi_ms: int) -> bool:
        """True where the statistics prove every row's start lies in [lo_ms, hi_ms)."""
        return self.starts is not None and lo_ms <= self.starts[0] and self.starts[1] < hi_ms


def row_groups(root: Path, interval: str, lo_ms: int, hi_ms: int) -> list[RowGroup]:
    """The row groups of the archive files that [lo_ms, hi_ms) touches, in file order, from the footers alone."""
    groups = []
    for path in partition_files(root, interval, dates_between(root, interval, lo_ms, hi_ms)):
        meta = pq.read_metadata(path)
        at = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            symbol, start = group.column(at["symbol"]).statistics, group.column(at["start"]).statistics
            groups.append(RowGroup(path, index, group.num_rows, _text_range(symbol), _ms_range(start)))
    return groups


def _text_range(stats: pq.Statistics | None) -> tuple[str, str] | None:
    # pyarrow writes string min/max whole (a value too long for statistics gets none): symbols are <= 16 chars
    if stats is None or not stats.has_min_max or stats.physical_type != "BYTE_ARRAY":
        return None
    return str(stats.min), str(stats.max)


def _ms_range(stats: pq.Statistics | None) -> tuple[int, int] | None:
    if stats is None or not stats.has_min_max or stats.physical_type != "INT64":
        return None
    if json.loads(stats.logical_type.to_json()).get("timeUnit") != "milliseconds":
        return None
    return int(stats.min_raw), int(stats.max_raw)


def _read_groups(
    groups: Sequence[RowGroup], columns: Sequence[str] | None = None
) -> Iterator[tuple[list[RowGroup], pa.Table]]:
    """The rows of these row groups, file by file in order, cast to the archive's types, `symbol` as a dictionary
    (a column the file lacks, an overlay added since it was written, reads as nulls)."""
    schema = CODED_SCHEMA if columns is None else pa.schema([CODED_SCHEMA.field(name) for name in columns])
    for path, same_file in itertools.groupby(groups, key=lambda g: g.path):
        chosen = list(same_file)
        file = pq.ParquetFile(path, read_dictionary=["symbol"])
        present = [name for name in schema.names if name in file.schema_arrow.names]
        table = file.read_row_groups([g.index for g in chosen], columns=present)
        yield chosen, conform(table, schema)


def symbol_codes(column: pa.ChunkedArray, names: Sequence[str]) -> np.ndarray:
    """Each row's symbol as its index in `names` (-1 for others), from a dictionary column without a string per row."""
    value_set = pa.array(names, pa.string())
    parts = [np.empty(0, np.int32)]
    for chunk in column.chunks:
        lookup = pc.index_in(chunk.dictionary, value_set=value_set).fill_null(-1).to_numpy().astype(np.int32)
        parts.append(lookup[chunk.indices.to_numpy()])
    return np.concatenate(parts)


def symbol_column(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """The strings `names[codes]` as one Arrow string array (the inverse of `symbol_codes`).

    Rows come grouped by symbol, so the column is built run by run: one copy of each name per row
    straight into the buffers. Codes that change often (no long runs) go through a dictionary take.
    """
    if len(codes) == 0:
        return pa.array([], pa.string())
    run_starts = np.flatnonzero(np.diff(codes, prepend=codes[0] - 1))
    encoded = [name.encode() for name in names]
    if len(run_starts) * 64 > len(codes):
        dictionary = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))
        return dictionary.cast(pa.string())
    runs = codes[run_starts]
    lengths = np.diff(np.append(run_starts, len(codes)))
    data = b"".join(encoded[code] * length for code, length in zip(runs.tolist(), lengths.tolist(), strict=True))
    widths = np.fromiter((len(e) for e in encoded), np.int32, len(encoded))[runs]
    if (widths == widths[0]).all():  # tickers of one length: the offsets are a plain range
        offsets = np.arange(len(codes) + 1, dtype=np.int32) * widths[0]
    else:
        offsets = np.zeros(len(codes) + 1, np.int32)
        np.cumsum(np.repeat(widths, lengths), out=offsets[1:])
    return pa.StringArray.from_buffers(len(codes), pa.py_buffer(offsets), pa.py_buffer(data))


def read_coded(root: Path, interval: str, lo_ms: int, hi_ms: int, names: Sequence[str]) -> tuple[pa.Table, np.ndarray]:
    """Archived bars of the symbols `names` (sorted) with start in [lo_ms, hi_ms), in file order: the columns after
    `symbol` (archive schema), and each row's symbol as its index in `names`.

    Only the row groups whose statistics allow a match are read, and the symbols as dictionary codes:
    no string is made per row (the caller builds the column it writes from the codes).
    """
    tables, codes = [], []
    wanted = [g for g in row_groups(root, interval, lo_ms, hi_ms) if g.may_hold(lo_ms, hi_ms, names)]
    for _, table in _read_groups(wanted):
        code = symbol_codes(table["symbol"], names)
        start = table["start"].cast(pa.int64()).to_numpy()
        keep = (code >= 0) & (start >= lo_ms) & (start < hi_ms)
        table = table.drop_columns(["symbol"])
        if not keep.all():
            table, code = table.filter(pa.array(keep)), code[keep]
        tables.append(table)
        codes.append(code)
    if not tables:
        return CODED_SCHEMA.empty_table().drop_columns(["symbol"]), np.empty(0, np.int32)
    return pa.concat_tables(tables), np.concatenate(codes)


def archived_span(
    root: Path, interval: str, lo_ms: int, hi_ms: int, symbols: Sequence[str] | None = None
) -> tuple[set[str], tuple[int, int] | None]:
    """The symbols with archived bars of this interval in [lo_ms, hi_ms) (of `symbols`, if given), and the first and
    last start of those bars (None: no bar).

    The footers settle a row group that holds one symbol with every start in range. One with every
    start in range but several symbols needs only its symbol codes read (cheap: no string per row)
    when all its symbols are wanted; only a row group that the range cuts, or that mixes wanted and
    unwanted symbols, has its starts read. A compacted day asked for whole costs no start read.
    """
    names = sorted(symbols) if symbols is not None else None
    found: set[str] = set()
    firsts: list[int] = []
    lasts: list[int] = []
    by_symbols: list[RowGroup] = []  # wholly in range, several symbols: which ones?
    by_rows: list[RowGroup] = []  # cut by the range (or no statistics): which rows?
    for group in row_groups(root, interval, lo_ms, hi_ms):
        if not group.may_hold(lo_ms, hi_ms, names):
            continue
        if not group.within(lo_ms, hi_ms) or group.symbols is None or group.starts is None:
            by_rows.append(group)
        elif group.symbols[0] != group.symbols[1]:
            by_symbols.append(group)
        else:  # one symbol, wanted (may_hold says so), every start in range
            found.add(group.symbols[0])
            firsts.append(group.starts[0])
            lasts.append(group.starts[1])
    for groups, table in _read_groups(by_symbols, ["symbol"]):
        present = set(_present(table["symbol"]))
        if names is not None and not present <= set(names):
            by_rows.extend(groups)  # unwanted symbols too: the statistics' span may be theirs
            continue
        found |= present
        spans = [g.starts for g in groups if g.starts is not None]  # every one (within)
        firsts.append(min(first for first, _ in spans))
        lasts.append(max(last for _, last in spans))
    for _, table in _read_groups(by_rows, ["symbol", "start"]):
        symbol = table["symbol"].unify_dictionaries().combine_chunks()
        present = symbol.dictionary.to_pylist()
        code = symbol_codes(pa.chunked_array([symbol]), names if names is not None else present)
        start = table["start"].cast(pa.int64()).to_numpy()
        keep = (code >= 0) & (start >= lo_ms) & (start < hi_ms)
        if keep.any():
            found.update(np.asarray(names if names is not None else present, dtype=object)[np.unique(code[keep])])
            firsts.append(int(start[keep].min()))
            lasts.append(int(start[keep].max()))
    return found, ((min(firsts), max(lasts)) if firsts else None)


def _present(column: pa.ChunkedArray) -> list[str]:
    """The values that occur in a dictionary column (a dictionary may hold values no row uses)."""
    found: list[str] = []
    for chunk in column.chunks:
        used = np.bincount(chunk.indices.to_numpy(), minlength=len(chunk.dictionary)) > 0
        found += chunk.dictionary.filter(pa.array(used)).to_pylist()
    return found
