"""The export's fast paths against its general ones: a sorted, duplicate-free archive goes out as read; anything else
is sorted and deduplicated; Redis is asked only for the bars the archive lacks. Real Redis, real Parquet files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from test_archive_read import DAY_MS, NAMES, SECONDS, day_of_bars, put

import tickerdash.analytics.history.export.bar_reader as reader_module
from tickerdash.analytics.history.archive_layout import ARCHIVE_SCHEMA, OVERLAY_COLUMNS, archive_root
from tickerdash.analytics.history.export import ExportRequest, TableWriter, export_bars, first_in_order, missing_ranges
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.settings import Settings

REDIS_S = 120  # Redis holds the last two minutes of each symbol's bars: the overlap the export deduplicates


def to_redis(client: redis.Redis, table: pa.Table) -> None:
    """XADD each row to its symbol's 1s bar stream, entry ID = bar start, the overlay fields after `trades` where
    defined (as the worker writes them)."""
    pipe = client.pipeline(transaction=False)
    rows = table.to_pylist()
    for row in sorted(rows, key=lambda r: (r["symbol"], r["start"])):
        fields = {name: repr(float(row[name])) for name in ("open", "high", "low", "close", "volume", "vwap")}
        overlays = {name: repr(row[name]) for name in OVERLAY_COLUMNS if row[name] is not None}
        pipe.xadd(
            Keys().bars("1s", row["symbol"]),
            {**fields, "trades": row["trades"], **overlays},  # type: ignore[arg-type]
            id=f"{int(row['start'].timestamp() * 1000)}-0",
        )
    pipe.execute()


def tail(table: pa.Table, seconds: int = REDIS_S) -> pa.Table:
    """The rows of the last `seconds` of the day."""
    start = table["start"].cast(pa.int64()).to_numpy()
    return table.filter(pa.array(start >= DAY_MS + (SECONDS - seconds) * 1000))


def exported(client: redis.Redis, settings: Settings, out: Path) -> pa.Table:
    """Export every 1s bar and read the file back (the metadata's creation time dropped)."""
    export_bars(client, settings, ExportRequest(interval="1s"), out)
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"tickerdash"])
    meta.pop("created_at")
    return table.replace_schema_metadata({**table.schema.metadata, b"tickerdash": json.dumps(meta).encode()})


def bars_of(table: pa.Table) -> pa.Table:
    """An export's rows in the archive's columns and schema."""
    return table.drop_columns(["interval"]).cast(ARCHIVE_SCHEMA)


def general_first_in_order(key: np.ndarray) -> np.ndarray:
    """The general path whatever the rows: sort, and keep the first row of equal keys."""
    return np.unique(key, return_index=True)[1]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """Record what first_in_order answered (None: the fast path) and how many Redis bars were parsed."""
    seen: dict[str, list[object]] = {"order": [], "parsed": []}
    real_order, real_parse = reader_module.first_in_order, reader_module.parse_bar_entries

    def order(key: np.ndarray) -> np.ndarray | None:
        seen["order"].append(answer := real_order(key))
        return answer

    def parse(symbol: str, entries: list[object]) -> pa.Table:
        seen["parsed"].append(len(entries))
        return real_parse(symbol, entries)

    monkeypatch.setattr(reader_module, "first_in_order", order)
    monkeypatch.setattr(reader_module, "parse_bar_entries", parse)
    return seen


class TestCore:
    def test_first_in_order_is_none_only_for_strictly_increasing_keys(self) -> None:
        """Sorted without duplicates: None (use the rows as they are); otherwise the rows to take, first of equals."""
        assert first_in_order(np.array([1, 2, 5, 9])) is None
        assert first_in_order(np.array([7])) is None
        assert first_in_order(np.array([1, 2, 2, 3])).tolist() == [0, 1, 3]
        assert first_in_order(np.array([3, 1, 2])).tolist() == [1, 2, 0]
        assert first_in_order(np.array([5, 1, 5, 1, 0])).tolist() == [4, 1, 0]
        key = np.random.default_rng(1).integers(0, 50, 1_000)
        assert first_in_order(key).tolist() == general_first_in_order(key).tolist()

    def test_missing_ranges_are_the_ends_and_the_gaps_wider_than_a_step(self) -> None:
        """Redis bars the archive lacks can only be before its first start, in wider gaps, or after its last."""
        held = np.arange(10, 50, 1) * 1000
        assert missing_ranges(held, 10_000, 49_000, 1000) == []
        assert missing_ranges(held, 5_000, 60_000, 1000) == [(5_000, 9_999), (49_001, 60_000)]
        holed = np.concatenate([held[:10], held[15:]])  # 20 s .. 24 s missing
        assert missing_ranges(holed, 10_000, 49_000, 1000) == [(19_001, 24_999)]

    def test_missing_ranges_fall_back_to_the_whole_span(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No archived bar, starts off the bar grid, or more ranges than bars are worth: read [head, tail] whole."""
        assert missing_ranges(np.array([], np.int64), 0, 9_000, 1000) == [(0, 9_000)]
        assert missing_ranges(np.array([0, 1500, 3000]), 0, 3_000, 1000) == [(0, 3_000)]
        sparse = np.arange(0, 40, 2) * 1000  # a gap after every bar
        assert missing_ranges(sparse, 0, 38_000, 1000) == [(0, 38_000)]
        monkeypatch.setattr(reader_module, "PROBE_COST_BARS", 0)
        assert len(missing_ranges(sparse, 0, 38_000, 1000)) == 19


class TestFastPath:
    def test_a_sorted_unique_archive_goes_out_as_read_and_equals_the_general_path(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        tmp_path: Path,
        spy: dict[str, list[object]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """One compacted file and the last minutes in Redis too: no sort, no Redis bar parsed, the same file."""
        day = day_of_bars()
        put(archive_root(settings), day, "compact-0-0.parquet", SECONDS)
        to_redis(redis_client, tail(day))
        fast = exported(redis_client, settings, tmp_path / "fast.parquet")
        assert spy["order"] and all(answer is None for answer in spy["order"]) and spy["parsed"] == []
        monkeypatch.setattr(reader_module, "first_in_order", general_first_in_order)
        general = exported(redis_client, settings, tmp_path / "general.parquet")
        assert fast.equals(general, check_metadata=True)
        assert bars_of(fast).equals(day)

    @pytest.mark.parametrize("layout", ["overlapping files in order", "overlapping files, one out of order"])
    def test_duplicates_and_disorder_in_the_archive_take_the_general_path(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        tmp_path: Path,
        spy: dict[str, list[object]],
        monkeypatch: pytest.MonkeyPatch,
        layout: str,
    ) -> None:
        """Part files that overlap (a crash in compaction), in order or not: sorted, each bar once."""
        day = day_of_bars()
        root = archive_root(settings)
        if layout == "overlapping files in order":  # keys never fall, but the row where the files meet repeats
            put(root, day.slice(0, 1300), "part-1-0-1-9.parquet", 500)
            put(root, day.slice(1299), "part-2-0-2-9.parquet", 500)
        else:
            put(root, day.slice(0, 1300), "part-1-0-1-9.parquet", 500)
            put(root, day.slice(1200, 600).take(pa.array(np.arange(599, -1, -1))), "part-2-0-2-9.parquet", 500)
            put(root, day.slice(1700), "part-3-0-3-9.parquet", 500)
        to_redis(redis_client, tail(day))
        got = exported(redis_client, settings, tmp_path / "fast.parquet")
        assert any(answer is not None for answer in spy["order"])
        assert bars_of(got).equals(day)
        monkeypatch.setattr(reader_module, "first_in_order", general_first_in_order)
        assert got.equals(exported(redis_client, settings, tmp_path / "general.parquet"), check_metadata=True)

    def test_only_the_bars_the_archive_lacks_are_read_from_redis(
        self, settings: Settings, redis_client: redis.Redis, tmp_path: Path, spy: dict[str, list[object]]
    ) -> None:
        """A hole inside the overlap, a missing tail, a missing head of the overlap, a symbol only in Redis."""
        day = day_of_bars()
        only_redis = day_of_bars(["EEE"], seed=9)
        symbol = np.array(day["symbol"].to_pylist())
        second = (day["start"].cast(pa.int64()).to_numpy() - DAY_MS) // 1000
        lost = (
            ((symbol == "BB") & (second >= 500) & (second < 510))  # a hole in the middle of the overlap
            | ((symbol == "CCCC") & (second >= SECONDS - 30))  # the archiver is behind
            | ((symbol == "DDD") & (second >= SECONDS - REDIS_S) & (second < SECONDS - REDIS_S + 10))
        )
        put(archive_root(settings), day.filter(pa.array(~lost)), "compact-0-0.parquet", SECONDS)
        to_redis(redis_client, pa.concat_tables([tail(day), tail(only_redis)]))
        got = exported(redis_client, settings, tmp_path / "bars.parquet")
        assert sum(spy["parsed"]) == int(lost.sum()) + REDIS_S  # type: ignore[arg-type]
        expected = pa.concat_tables([day, tail(only_redis)])
        assert bars_of(got).equals(expected)
        assert set(NAMES) < set(got["symbol"].to_pylist())


class TestTableWriter:
    def test_each_chunk_starts_its_writeback_and_commit_fsyncs_before_the_rename(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Writeback is started after every chunk; at commit the file is fsynced, then renamed, and reads back whole."""
        calls: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace
        monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: calls.append(f"fadvise {advice}"))
        monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
        monkeypatch.setattr(os, "replace", lambda src, dst: (calls.append("replace"), real_replace(src, dst))[1])
        day = day_of_bars()
        out = tmp_path / "bars.parquet"
        writer = TableWriter(out, ARCHIVE_SCHEMA, "parquet")
        writer.write(day.slice(0, 1000))
        writer.write(day.slice(1000))
        assert not out.exists()
        writer.commit()
        advice = f"fadvise {os.POSIX_FADV_DONTNEED}"
        assert calls == [advice, advice, "fsync", "replace"]
        assert pq.read_table(out).equals(day) and [p.name for p in tmp_path.iterdir()] == ["bars.parquet"]

    def test_abort_closes_and_deletes_the_temporary_file(self, tmp_path: Path) -> None:
        """An aborted export leaves nothing beside the target and no open descriptor."""
        writer = TableWriter(tmp_path / "bars.parquet", ARCHIVE_SCHEMA, "parquet")
        writer.write(day_of_bars())
        fd = writer._fd
        writer.abort()
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(OSError):
            os.fstat(fd)


class TestResult:
    def test_the_result_says_where_the_time_went(
        self, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """ExportResult.phases has plan, read, write and sync, together no longer than the whole export."""
        day = day_of_bars()
        put(archive_root(settings), day, "compact-0-0.parquet", SECONDS)
        result = export_bars(redis_client, settings, ExportRequest(interval="1s"), tmp_path / "bars.parquet")
        assert list(result.phases) == ["plan", "read", "write", "sync"]
        assert all(seconds >= 0 for seconds in result.phases.values())
        assert sum(result.phases.values()) <= result.seconds
