"""The archiver on a real Redis: every closed bar lands in hive-partitioned Parquet exactly once, through crashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from history_data import START_MS, analyse, archive_once, archived, redis_bars, trades

from tickerdash.analytics.history.archive import Archiver
from tickerdash.analytics.history.archive_compact import compact
from tickerdash.analytics.history.archive_layout import archive_root
from tickerdash.analytics.history.archive_read import partition_files
from tickerdash.ingest.contract.keys import ARCHIVE_GROUP, Keys
from tickerdash.ingest.settings import Settings


def _frame(table: pa.Table, interval: str) -> pd.DataFrame:
    frame = table.to_pandas()
    frame = frame[frame["interval"] == interval].drop(columns=["interval", "date"])
    return frame.sort_values(["symbol", "start"], ignore_index=True)


class TestArchive:
    def test_every_closed_bar_is_archived_with_hive_partitions_units_and_utc_times(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The archive holds exactly the bars of the Redis bar streams, partitioned by interval and UTC date."""
        analyse(redis_client, settings, trades())
        archive_once(redis_client, settings)
        table = archived(settings)
        for interval in ("1s", "1m"):
            expected = redis_bars(redis_client, interval)
            pd.testing.assert_frame_equal(_frame(table, interval), expected, check_dtype=False)
        folders = {
            p.relative_to(archive_root(settings)).parent.as_posix() for p in archive_root(settings).rglob("*.parquet")
        }
        assert {"interval=1s/date=2026-01-01", "interval=1s/date=2026-01-02", "interval=1m/date=2026-01-01"} <= folders
        one_file = next(archive_root(settings).rglob("part-*.parquet"))
        schema = pq.read_schema(one_file)
        assert schema.field("start").type == pa.timestamp("ms", tz="UTC")
        assert b"quote currency" in schema.field("close").metadata[b"unit"]
        assert schema.field("volume").metadata[b"unit"] == b"shares/units traded"
        assert schema.metadata[b"tickerdash.interval"] in (b"1s", b"1m")

    def test_each_file_is_sorted_by_symbol_and_start(self, settings: Settings, redis_client: redis.Redis) -> None:
        """Within every archive file rows run by symbol, then bar start."""
        analyse(redis_client, settings, trades(8_000))
        archive_once(redis_client, settings, max_batch_rows=3_000)
        files = list(archive_root(settings).rglob("part-*.parquet"))
        assert len(files) > 2
        for path in files:
            frame = pq.read_table(path).to_pandas()
            assert frame.equals(frame.sort_values(["symbol", "start"], ignore_index=True))

    def test_an_archiver_killed_between_rename_and_ack_writes_each_bar_once_after_restart(
        self, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash after a file is in place but before XACK re-archives that batch under the same name."""
        analyse(redis_client, settings, trades(10_000))
        crashing = Archiver(redis_client, settings, max_batch_rows=4_000)
        real_write = crashing.write_batch
        batches = [0]

        def die_at_second_ack(entries: list) -> list[Path]:  # type: ignore[type-arg]
            batches[0] += 1
            if batches[0] == 2:  # the first batch is archived and acknowledged; the second dies before XACK

                def killed(*_: object) -> None:
                    raise SystemExit("killed between the rename and the XACK")

                monkeypatch.setattr(crashing.client, "xack", killed)
            return real_write(entries)

        monkeypatch.setattr(crashing, "write_batch", die_at_second_ack)
        with pytest.raises(SystemExit):
            crashing.run(once=True)
        monkeypatch.undo()
        written = sorted(archive_root(settings).rglob("part-*.parquet"))
        assert batches[0] == 2 and written
        before = {p: p.read_bytes() for p in written}
        pending = redis_client.xpending(Keys().closed_bars(), ARCHIVE_GROUP)["pending"]
        assert pending > 0  # the batch whose files exist is still unacknowledged

        restarted = archive_once(redis_client, settings, max_batch_rows=4_000)
        assert restarted.stats.entries >= pending
        assert {p: p.read_bytes() for p in written} == before  # same names, identical content
        table = archived(settings)
        keys = table.select(["symbol", "interval", "start"]).to_pandas()
        assert not keys.duplicated().any()
        assert len(keys) == len(redis_bars(redis_client, "1s")) + len(redis_bars(redis_client, "1m"))
        assert redis_client.xpending(Keys().closed_bars(), ARCHIVE_GROUP)["pending"] == 0

    def test_a_temporary_file_left_by_a_crash_before_the_rename_is_invisible(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Readers skip hidden temporaries, so a write cut short adds no rows."""
        analyse(redis_client, settings, trades(3_000))
        archive_once(redis_client, settings)
        rows = archived(settings).num_rows
        folder = next(archive_root(settings).rglob("part-*.parquet")).parent
        pq.write_table(pq.read_table(next(folder.glob("part-*.parquet"))), folder / ".part-x.parquet.123.tmp")
        assert archived(settings).num_rows == rows

    def test_compaction_merges_a_day_into_one_deduplicated_file(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """After compaction a partition is one file with the same bars, sorted, and no duplicates."""
        analyse(redis_client, settings, trades(8_000))
        archive_once(redis_client, settings, max_batch_rows=1_000)
        root = archive_root(settings)
        files = partition_files(root, "1s", ["2026-01-01"])
        assert len(files) > 1
        before = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
        # a duplicate, as a crash between compaction's rename and its deletes would leave
        pq.write_table(pq.read_table(files[0]), files[0].with_name("part-9-9.parquet"))
        merged = compact(root, "1s", "2026-01-01")
        assert merged is not None and partition_files(root, "1s", ["2026-01-01"]) == [merged]
        after = pq.read_table(merged).to_pandas()
        expected = before.sort_values(["symbol", "start"], ignore_index=True)
        pd.testing.assert_frame_equal(after, expected)
        assert int(after["start"].min().value // 1_000_000) >= START_MS


class TestRobustness:
    def test_entries_an_abandoned_archiver_left_pending_are_adopted_and_archived(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A replaced archiver (new consumer name) archives what its predecessor read but never acknowledged."""
        analyse(redis_client, settings, trades(8_000))
        feed = Keys().closed_bars()
        redis_client.xgroup_create(feed, ARCHIVE_GROUP, id="0")
        redis_client.xreadgroup(ARCHIVE_GROUP, "gone", {feed: ">"}, count=3)  # read, then the container vanished
        assert redis_client.xpending(feed, ARCHIVE_GROUP)["pending"] == 3
        successor = Archiver(redis_client, settings.model_copy(update={"consumer": "new", "claim_idle_ms": 0}))
        successor.run(once=True)
        assert redis_client.xpending(feed, ARCHIVE_GROUP)["pending"] == 0
        for interval in ("1s", "1m"):
            pd.testing.assert_frame_equal(
                _frame(archived(settings), interval), redis_bars(redis_client, interval), check_dtype=False
            )

    def test_the_archiver_rides_out_a_redis_restart(self, tmp_path: Path) -> None:
        """With Redis gone for a while and back, the archiver retries with backoff and archives everything."""
        import threading
        import time

        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from tickerdash.ingest.redis_server import EmbeddedRedis
        from tickerdash.ingest.runner import StopFlag

        server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
        port = server.port
        client = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
        settings = Settings(redis_url=server.url, data_dir=tmp_path / "data", block_ms=50, consumer="steady")
        stop = StopFlag()
        archiver = Archiver(client, settings, stop=stop)
        thread = threading.Thread(target=archiver.run, daemon=True)
        try:
            analyse(client, settings, trades(4_000, seed=3))
            thread.start()
            time.sleep(0.5)
            server.stop()
            time.sleep(1.5)
            server = EmbeddedRedis(tmp_path / "redis", port=port, appendonly=True).start()
            deadline = time.monotonic() + 60
            while client.xpending(Keys().closed_bars(), ARCHIVE_GROUP)["pending"] or not archiver.stats.bars:
                assert thread.is_alive() and time.monotonic() < deadline
                time.sleep(0.05)
            for interval in ("1s", "1m"):
                pd.testing.assert_frame_equal(
                    _frame(archived(settings), interval), redis_bars(client, interval), check_dtype=False
                )
        finally:
            stop.set()
            thread.join(60)
            server.stop()
        assert not thread.is_alive()
