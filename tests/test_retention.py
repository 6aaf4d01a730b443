"""Retention never drops unread ticks silently: producers trim only what every group has read and wait at
the cap; ticks removed by someone else are counted, logged and shown by `status`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from test_worker import bar_streams, drained, expected_bars, market, run_inline

from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.group_progress import GroupProgress, StreamProgress, missed_entries
from tickerdash.ingest.importers import ColumnMapping, TradeReader
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.retention import needed_from
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import concat

WAIT_S = 120.0  # how long a test waits for a process to reach a state (never an assertion on speed)


def tickerdash(server: EmbeddedRedis, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real console command against the test Redis."""
    return subprocess.run(
        [sys.executable, "-m", "tickerdash", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TICKERDASH_REDIS_URL": server.url, **env},
    )


def status_json(server: EmbeddedRedis) -> dict[str, Any]:
    """`tickerdash status --json`, parsed."""
    result = tickerdash(server, "status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def tick_stream(report: dict[str, Any], name: str = "tickerdash:ticks") -> dict[str, Any]:
    """The report's entry for one stream."""
    (stream,) = [s for s in report["streams"] if s["stream"] == name]
    return stream


def group(progress: str, pending: int = 0, read: int | None = None, oldest: str | None = None) -> GroupProgress:
    return GroupProgress("g", pending, progress, read, oldest)


class TestNeededFrom:
    def test_the_oldest_pending_entry_of_the_slowest_group_is_needed(self) -> None:
        """A group's oldest pending entry, else the entry after its last-delivered one; the minimum over groups."""
        groups = [group("5-3"), GroupProgress("h", 2, "9-0", None, "4-7"), group("0-0")]
        assert needed_from(groups[:1]) == "5-4"
        assert needed_from(groups[:2]) == "4-7"
        assert needed_from(groups) == "0-1"

    def test_a_stream_without_groups_needs_nothing(self) -> None:
        """No group reads the stream: the cap alone applies."""
        assert needed_from([]) is None


class TestMissedEntries:
    def stream(
        self, length: int, added: int | None, first: str | None, last: str = "50-0", deleted: str | None = None
    ) -> StreamProgress:
        """A stream whose newest removed entry is `deleted` (default: the one just before `first`)."""
        if deleted is None:
            deleted = f"{int(first.split('-')[0]) - 1}-0" if first else last
        return StreamProgress(length, last, added, first, (), deleted)

    def test_a_group_that_read_nothing_missed_every_entry_that_is_gone(self) -> None:
        """Never read: every entry ever added and no longer there was missed."""
        assert missed_entries(self.stream(10, 100, "40-0"), group("0-0")) == 90

    def test_entries_trimmed_past_the_groups_position_were_missed(self) -> None:
        """Read 30 of 100, the stream trimmed to its last 10 (past the group): 60 missed."""
        assert missed_entries(self.stream(10, 100, "40-0"), group("20-0", read=30)) == 60

    def test_acknowledged_entries_trimmed_are_not_missed(self) -> None:
        """Read 95 of 100, the stream trimmed to its last 10 (behind the group): nothing missed."""
        assert missed_entries(self.stream(10, 100, "41-0"), group("45-0", read=95)) == 0
        assert missed_entries(self.stream(10, 100, "41-0"), group("50-0", read=100)) == 0

    def test_a_wrong_read_counter_counts_no_loss_where_nothing_past_the_group_was_removed(self) -> None:
        """After a restart on the append-only file Redis 7.0 reports entries-read 0 for a group that read
        all 100 entries; nothing newer than its position was removed, so it missed nothing."""
        assert missed_entries(self.stream(100, 100, "1-0", deleted="0-0"), group("50-0", read=0)) == 0
        assert missed_entries(self.stream(60, 100, "41-0"), group("45-0", read=0)) == 0

    def test_redis_6_cannot_count(self) -> None:
        """Without entries-added (Redis 6.2) the count is unknown, not zero."""
        assert missed_entries(self.stream(10, None, "40-0"), group("0-0")) is None


def simulate_args(count: int, per_tick: bool) -> list[str]:
    """A reproducible simulator run (same flags, same trades)."""
    return [
        "simulate",
        "--symbols",
        "AAA,BBB,CCC",
        "--count",
        str(count),
        "--seed",
        "5",
        "--start",
        "2026-01-02T14:30:00Z",
        "--fast",
        "--quiet",
        *(["--per-tick"] if per_tick else []),
    ]


@pytest.mark.parametrize("per_tick", [True, False], ids=["per-tick", "batches"])
def test_ten_times_the_cap_without_a_worker_waits_and_then_every_tick_is_in_the_bars(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, settings: Settings, tmp_path: Path, per_tick: bool
) -> None:
    """`simulate` writes 10x the stream cap with no worker running: it trims nothing unread, waits at the cap
    (saying so, and `status` shows it), resumes once a worker reads, and every trade is in the bars."""
    cap, batch_rows = (2_000, 1) if per_tick else (10, 200)
    count = 10 * cap * batch_rows
    env = {"TICKERDASH_STREAM_MAXLEN": str(cap), "TICKERDASH_BATCH_ROWS": str(batch_rows)}
    tape = tmp_path / "trades.parquet"
    assert tickerdash(redis_server, *simulate_args(count, per_tick=False), "--out", str(tape)).returncode == 0
    with TradeReader(tape, ColumnMapping()) as reader:
        ticks = concat([chunk for chunk, _ in reader])
    assert len(ticks) == count

    command = [sys.executable, "-m", "tickerdash", *simulate_args(count, per_tick)]
    simulator = subprocess.Popen(
        command, env={**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, **env}, stderr=subprocess.PIPE, text=True
    )
    try:
        waiting, length = None, 0
        deadline = time.monotonic() + WAIT_S
        while waiting is None and simulator.poll() is None and time.monotonic() < deadline:
            if redis_client.exists("tickerdash:ticks"):
                waiting = tick_stream(status_json(redis_server)).get("producer_waiting")
                length = redis_client.xlen("tickerdash:ticks")
            time.sleep(0.2)

        worker = AnalyticsWorker(redis_client, settings, config=WorkerConfig(checkpoint_every_s=0.2))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            _, err = simulator.communicate(timeout=WAIT_S)
            assert simulator.returncode == 0, err
            deadline = time.monotonic() + WAIT_S
            while not drained(redis_client, settings) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            worker.stop.set()
            thread.join()
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait()
    assert worker.runner.stats.ticks == count
    assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, worker.config)
    assert waiting is not None and "at the cap" in waiting, "the simulator never waited for a worker"
    assert length <= cap
    assert "waiting: backlog" in err and "workers behind" in err
    report = status_json(redis_server)
    assert [g["lost"] for g in tick_stream(report)["groups"]] == [0]
    assert tick_stream(report)["producer_waiting"] is None


@pytest.mark.parametrize(
    ("read_before", "plain_group"),
    [(0, False), (3_000, False), (0, True)],
    ids=["never-read", "read-some", "group-without-entries-read"],
)
def test_unread_ticks_an_operator_trims_are_counted_exactly_and_shown(
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    read_before: int,
    plain_group: bool,
) -> None:
    """An operator's XTRIM removes 4,000 ticks no worker has read: the worker reads the rest, logs the loss,
    and `status --json`, the status table and the record under `keys.lost` all say 4,000 exactly (also for
    a group created by a plain XGROUP CREATE, whose read counter Redis only estimates)."""
    if plain_group:
        redis_client.xgroup_create("tickerdash:ticks", "analytics", id="0", mkstream=True)
    ticks = market(read_before + 5_000)
    producer = Producer(redis_client, settings)
    producer.publish(ticks.take(np.arange(read_before)), per_tick=True)
    if read_before:
        run_inline(redis_client, settings)
    producer.publish(ticks.take(np.arange(read_before, len(ticks))), per_tick=True)
    redis_client.xtrim("tickerdash:ticks", maxlen=1_000, approximate=False)  # the operator

    with caplog.at_level(logging.WARNING, logger="tickerdash.ingest.runner"):
        worker = run_inline(redis_client, settings)
    assert worker.runner.stats.ticks == 1_000
    assert "lost 4,000 entries of tickerdash:ticks" in caplog.text

    (analytics,) = tick_stream(status_json(redis_server))["groups"]
    assert analytics["name"] == "analytics" and analytics["lost"] == 4_000
    keys = Keys()
    assert redis_client.hget(keys.lost("analytics", "tickerdash:ticks"), "entries") == b"4000"
    table = tickerdash(redis_server, "status").stdout
    assert "Lost: 4,000 entries of tickerdash:ticks were trimmed or deleted before group analytics" in " ".join(
        table.split()
    )


def test_the_producer_trims_to_the_cap_only_what_every_group_has_read(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """The cap still holds: entries the worker has read make room for new ones, and every tick is counted."""
    capped = settings.model_copy(update={"stream_maxlen": 1_000})
    ticks = market(1_900)
    producer = Producer(redis_client, capped)
    producer.publish(ticks.take(np.arange(900)), per_tick=True)
    first = run_inline(redis_client, capped)
    producer.publish(ticks.take(np.arange(900, 1_900)), per_tick=True)  # the 900 read entries make room
    assert redis_client.xlen("tickerdash:ticks") == 1_000
    second = run_inline(redis_client, capped)
    assert first.runner.stats.ticks + second.runner.stats.ticks == 1_900


def test_time_retention_keeps_unread_ticks_and_waits_for_the_worker(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """With TICKERDASH_RETENTION_S, an unread entry older than the retention is kept: the producer waits
    (and says so under `keys.backpressure`) until a worker has read it, and every tick is counted."""
    timed = settings.model_copy(update={"retention_s": 0.5, "stream_maxlen": 0})
    ticks = market(2_000)
    producer = Producer(redis_client, timed)
    producer.publish(ticks.take(np.arange(1_000)), per_tick=True)
    first_ms = int(redis_client.xrange("tickerdash:ticks", count=1)[0][0].split(b"-")[0])
    while redis_client.time()[0] * 1000 - first_ms < 600:
        time.sleep(0.1)  # until the first entry is past the retention
    writer = threading.Thread(
        target=producer.publish, args=(ticks.take(np.arange(1_000, 2_000)),), kwargs={"per_tick": True}
    )
    writer.start()
    key = Keys().backpressure("tickerdash:ticks")
    deadline = time.monotonic() + WAIT_S
    while not redis_client.exists(key) and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = redis_client.hget(key, "message")
    worker = AnalyticsWorker(redis_client, timed, config=WorkerConfig(checkpoint_every_s=0.2))
    reader = threading.Thread(target=worker.run)
    reader.start()
    try:
        writer.join(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not drained(redis_client, timed) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop.set()
        reader.join()
    assert worker.runner.stats.ticks == 2_000
    assert waiting is not None and b"retention 0.5 s" in waiting
