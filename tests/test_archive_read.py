"""Reading the archive by its footers: the row groups read, the symbols as codes, the same rows as a plain scan."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import tickerdash.analytics.history.archive_read as archive_module
from tickerdash.analytics.history.archive_compact import compact
from tickerdash.analytics.history.archive_layout import (
    ARCHIVE_SCHEMA,
    OVERLAY_COLUMNS,
    conform,
    file_metadata,
    partition_dir,
    write_atomically,
)
from tickerdash.analytics.history.archive_read import archived_span, read_coded, row_groups, symbol_column

DAY_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SECONDS = 600
NAMES = ("AAA", "BB", "CCCC", "DDD")
EVERYTHING = (0, 2**42)


def day_of_bars(symbols: Sequence[str] = NAMES, seconds: int = SECONDS, seed: int = 5) -> pa.Table:
    """One 1s bar per symbol per second from DAY_MS, sorted by symbol and start (archive schema; each overlay column
    a function of the close, null at every symbol's first bar)."""
    rng = np.random.default_rng(seed)
    n = len(symbols) * seconds
    close = 100 + np.cumsum(rng.normal(0, 0.01, n))
    first_bar = np.arange(n) % seconds == 0
    overlays = {
        name: pa.array(np.where(first_bar, np.nan, close * (1 + k / 1000)), pa.float64(), from_pandas=True)
        for k, name in enumerate(OVERLAY_COLUMNS)
    }
    return pa.table(
        {
            "symbol": pa.array(np.repeat(np.array(symbols, dtype=object), seconds), pa.string()),
            "start": pa.array(
                np.tile(DAY_MS + np.arange(seconds, dtype=np.int64) * 1000, len(symbols)), pa.timestamp("ms", tz="UTC")
            ),
            "open": close - 0.01,
            "high": close + 0.02,
            "low": close - 0.02,
            "close": close,
            "volume": rng.integers(1, 9, n) * 10.0,
            "vwap": close,
            "trades": rng.integers(1, 9, n),
            **overlays,
        },
        schema=ARCHIVE_SCHEMA,
    )


def put(root: Path, table: pa.Table, name: str, row_group_size: int) -> Path:
    """Write `table` as one archive file of the 1s partition of 2026-01-01."""
    path = partition_dir(root, "1s", "2026-01-01") / name
    write_atomically(table.replace_schema_metadata(file_metadata("1s")), path, row_group_size=row_group_size)
    return path


def scanned(root: Path, names: Sequence[str] | None, lo_ms: int, hi_ms: int) -> pa.Table:
    """The plain answer: every file read whole, in name order, filtered by symbol and start."""
    files = sorted(p for p in (root / "interval=1s").rglob("*.parquet") if not p.name.startswith("."))
    table = pa.concat_tables([pq.read_table(f, schema=ARCHIVE_SCHEMA) for f in files])
    start = table["start"].cast(pa.int64())
    keep = pc.and_(pc.greater_equal(start, lo_ms), pc.less(start, hi_ms))
    if names is not None:
        keep = pc.and_(keep, pc.is_in(table["symbol"], value_set=pa.array(list(names), pa.string())))
    return table.filter(keep).replace_schema_metadata(None)


@pytest.fixture(params=["one symbol per row group", "row groups across symbols", "parts with a duplicate file"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """An archive day in one of the layouts the export meets: compacted as the benchmark writes it, compacted with
    row groups that cut across symbols, and part files left beside a copy (a crash during compaction)."""
    root = tmp_path / "archive"
    table = day_of_bars()
    if request.param == "one symbol per row group":
        put(root, table, "compact-0-0.parquet", SECONDS)
    elif request.param == "row groups across symbols":
        put(root, table, "compact-0-0.parquet", 250)
    else:
        put(root, table.slice(0, 1000), "part-1-0-1-9.parquet", 300)
        put(root, table.slice(1000), "part-2-0-2-9.parquet", 300)
        put(root, table.slice(500, 900), "part-3-0-3-9.parquet", 300)
    return root


RANGES = [EVERYTHING, (DAY_MS + 100_000, DAY_MS + 200_000), (DAY_MS + 599_000, DAY_MS + 700_000), (0, DAY_MS)]
WANTED = [list(NAMES), ["BB"], ["AAA", "DDD"], ["BB", "ZZZ"], ["ZZZ"]]


class TestReadCoded:
    @pytest.mark.parametrize(("lo_ms", "hi_ms"), RANGES)
    @pytest.mark.parametrize("names", WANTED)
    def test_rows_and_codes_equal_a_plain_scan(self, archive: Path, names: list[str], lo_ms: int, hi_ms: int) -> None:
        """Whatever the layout, range and symbols, the rows are the plain scan's, in file order, codes into names."""
        table, codes = read_coded(archive, "1s", lo_ms, hi_ms, names)
        got = table.add_column(0, ARCHIVE_SCHEMA.field("symbol"), symbol_column(names, codes))
        assert got.equals(scanned(archive, names, lo_ms, hi_ms).cast(ARCHIVE_SCHEMA))
        assert codes.dtype == np.int32 and (codes >= 0).all()

    def test_row_groups_of_other_symbols_and_days_are_not_read(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The footers' statistics pick the row groups: asking for one symbol reads only its row group."""
        root = tmp_path / "archive"
        put(root, day_of_bars(), "compact-0-0.parquet", SECONDS)
        read: list[int] = []
        real = pq.ParquetFile.read_row_groups

        def counting(self: pq.ParquetFile, indices: list[int], *args: object, **kwargs: object) -> pa.Table:
            read.extend(indices)
            return real(self, indices, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counting)
        table, _ = read_coded(root, "1s", *EVERYTHING, ["CCCC"])
        assert read == [2] and table.num_rows == SECONDS
        read.clear()
        assert read_coded(root, "1s", DAY_MS + SECONDS * 1000, 2**42, list(NAMES))[0].num_rows == 0
        assert read == []


class TestFilesWithoutOverlays:
    def test_a_file_written_before_the_overlays_reads_as_nulls_there_and_compacts_with_newer_ones(
        self, tmp_path: Path
    ) -> None:
        """An older file has only the bar's contract columns: its rows read with null overlays beside a newer file's
        values, and compaction merges both into one file of the current schema."""
        root = tmp_path / "archive"
        day = day_of_bars()
        old, new = day.slice(0, SECONDS * 2), day.slice(SECONDS * 2)
        put(root, old.drop_columns(list(OVERLAY_COLUMNS)), "part-1-0-1-9.parquet", SECONDS)
        put(root, new, "part-2-0-2-9.parquet", SECONDS)
        expected = pa.concat_tables([conform(old.drop_columns(list(OVERLAY_COLUMNS)), ARCHIVE_SCHEMA), new])
        assert expected[OVERLAY_COLUMNS[0]].null_count == SECONDS * 2 + 2  # the old rows, and new's first bars
        table, codes = read_coded(root, "1s", *EVERYTHING, list(NAMES))
        assert table.add_column(0, ARCHIVE_SCHEMA.field("symbol"), symbol_column(NAMES, codes)).equals(expected)
        merged = compact(root, "1s", "2026-01-01")
        assert merged is not None and pq.read_schema(merged).names == ARCHIVE_SCHEMA.names
        assert pq.read_table(merged).replace_schema_metadata(None).equals(expected)


class TestArchivedSpan:
    @pytest.mark.parametrize(("lo_ms", "hi_ms"), RANGES)
    @pytest.mark.parametrize("names", [None, *WANTED])
    def test_symbols_and_span_equal_a_plain_scan(
        self, archive: Path, names: list[str] | None, lo_ms: int, hi_ms: int
    ) -> None:
        """The symbols with bars in the range and their first and last start are what scanning every row finds."""
        rows = scanned(archive, names, lo_ms, hi_ms)
        start = rows["start"].cast(pa.int64())
        expected = (
            set(rows["symbol"].to_pylist()),
            (pc.min(start).as_py(), pc.max(start).as_py()) if rows.num_rows else None,
        )
        assert archived_span(archive, "1s", lo_ms, hi_ms, names) == expected

    @pytest.fixture
    def reads(self, monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], list[int]]]:
        """Record the columns and row groups archived_span reads (nothing recorded: no data read)."""
        seen: list[tuple[tuple[str, ...], list[int]]] = []
        real = archive_module._read_groups

        def spy(groups: Sequence[archive_module.RowGroup], columns: Sequence[str] | None = None) -> object:
            if groups:
                seen.append((tuple(columns or ()), [g.index for g in groups]))
            return real(groups, columns)

        monkeypatch.setattr(archive_module, "_read_groups", spy)
        return seen

    def test_a_compacted_day_of_one_symbol_row_groups_is_surveyed_from_its_footer(
        self, tmp_path: Path, reads: list[tuple[tuple[str, ...], list[int]]]
    ) -> None:
        """Row groups of one symbol wholly inside the range are settled by their statistics; only a cut one is read."""
        root = tmp_path / "archive"
        put(root, day_of_bars(), "compact-0-0.parquet", SECONDS)
        assert all(g.symbols is not None and g.starts is not None for g in row_groups(root, "1s", *EVERYTHING))
        assert archived_span(root, "1s", *EVERYTHING) == (set(NAMES), (DAY_MS, DAY_MS + (SECONDS - 1) * 1000))
        assert reads == []
        archived_span(root, "1s", DAY_MS + 1000, 2**42, ["AAA"])  # the range cuts AAA's row group: it is read
        assert reads == [(("symbol", "start"), [0])]

    def test_row_groups_across_symbols_need_only_their_symbol_codes_when_all_are_wanted(
        self, tmp_path: Path, reads: list[tuple[tuple[str, ...], list[int]]]
    ) -> None:
        """Compacted with row groups that cut across symbols: the symbols are read, the starts only where
        a row group mixes wanted and unwanted symbols."""
        root = tmp_path / "archive"
        put(root, day_of_bars(), "compact-0-0.parquet", 500)  # AAA, AAA+BB, BB+CCCC, CCCC+DDD, DDD
        assert archived_span(root, "1s", *EVERYTHING)[0] == set(NAMES)
        assert reads == [(("symbol",), [1, 2, 3])]
        reads.clear()
        assert archived_span(root, "1s", *EVERYTHING, ["DDD"]) == ({"DDD"}, (DAY_MS, DAY_MS + (SECONDS - 1) * 1000))
        assert reads == [(("symbol",), [3]), (("symbol", "start"), [3])]
