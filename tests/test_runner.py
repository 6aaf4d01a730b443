"""The consumer-group runner: batches in, effects and acknowledgements atomically out."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import FunctionConsumer, StopFlag, StreamRunner, ensure_groups, gc_paused
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

HERE = Path(__file__).parent


def make_ticks(n: int, symbols: int = 5, seed: int = 0) -> TickBatch:
    """n random but valid trades over a few symbols."""
    rng = np.random.default_rng(seed)
    return TickBatch.from_columns(
        symbol=[f"S{i}" for i in rng.integers(0, symbols, n)],
        price=rng.uniform(10, 20, n).round(2),
        size=rng.integers(1, 500, n),
        ts=1_700_000_000_000 + np.arange(n),
        trade_id=[f"t{i}" for i in range(n)],
    )


def collect(settings: Settings, client: redis.Redis, streams: list[str] | None = None) -> list[str]:
    """Run a runner until the streams are drained; return the trade ids it processed, in order."""
    seen: list[str] = []

    def process(stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        assert ticks.trade_id is not None
        seen.extend(ticks.trade_id.to_pylist())

    streams = streams or Keys(settings.prefix, settings.partitions).tick_streams
    StreamRunner(client, settings, streams, process).run(max_idle_reads=2)
    return seen


class TestRunner:
    def test_reads_per_tick_and_batch_entries_alike(self, settings: Settings, redis_client: redis.Redis) -> None:
        """Trades published as per-tick entries and as batch entries reach the processor identically."""
        ticks = make_ticks(300)
        producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 64}))
        producer.publish(ticks.take(np.arange(150)), per_tick=True)
        producer.publish(ticks.take(np.arange(150, 300)))
        assert collect(settings, redis_client) == [f"t{i}" for i in range(300)]

    def test_malformed_tick_goes_to_deadletter_and_its_neighbours_are_processed(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A negative price is dead-lettered with a reason naming the field; valid ticks around it go on."""
        stream = "tickerdash:ticks"
        redis_client.xadd(stream, {"symbol": "AAPL", "price": "187.2", "size": "100", "trade_id": "a"})
        redis_client.xadd(stream, {"symbol": "AAPL", "price": "-3", "size": "10", "trade_id": "bad"})
        redis_client.xadd(stream, {"symbol": "aapl", "price": "187.3", "size": "5", "trade_id": "b"})
        assert collect(settings, redis_client) == ["a", "b"]
        dead = redis_client.xrange("tickerdash:deadletter")
        assert len(dead) == 1
        fields = dead[0][1]
        assert fields[b"price"] == b"-3" and fields[b"trade_id"] == b"bad"
        assert fields[b"reason"].startswith(b"price:")
        assert fields[b"source"] == b"analytics:tickerdash:ticks"
        assert redis_client.xpending(stream, "analytics")["pending"] == 0

    def test_undecodable_batch_entry_is_dead_lettered_and_acknowledged(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Garbage in a batch entry does not stop the consumer; the entry is recorded with its reason."""
        redis_client.xadd("tickerdash:ticks", {"batch": b"\x00garbage", "rows": 3})
        Producer(redis_client, settings).publish(make_ticks(10))
        assert len(collect(settings, redis_client)) == 10
        (entry,) = redis_client.xrange("tickerdash:deadletter")
        assert entry[1][b"reason"].startswith(b"batch: undecodable")
        assert entry[1][b"batch"] == b"\x00garbage"

    def test_partitions_route_each_symbol_to_one_stream(self, settings: Settings, redis_client: redis.Redis) -> None:
        """With 4 partitions every symbol lands in crc32(symbol) % 4, and a runner over all reads everything."""
        settings = settings.model_copy(update={"partitions": 4})
        keys = Keys(settings.prefix, 4)
        Producer(redis_client, settings).publish(make_ticks(400, symbols=20), per_tick=True)
        for p, stream in enumerate(keys.tick_streams):
            assert stream == f"tickerdash:ticks:{{{p}}}"
            for _, fields in redis_client.xrange(stream):
                assert keys.partition_of(fields[b"symbol"].decode()) == p
        assert sorted(collect(settings, redis_client)) == sorted(f"t{i}" for i in range(400))

    def test_group_creation_is_idempotent_and_other_groups_read_independently(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Two runs of the analytics group do not re-read; another group still sees every trade."""
        Producer(redis_client, settings).publish(make_ticks(50))
        assert len(collect(settings, redis_client)) == 50
        assert collect(settings, redis_client) == []
        archive = settings.model_copy(update={"group": "archiver"})
        assert len(collect(archive, redis_client)) == 50

    def test_retention_caps_a_stream_no_group_reads(self, settings: Settings, redis_client: redis.Redis) -> None:
        """Without any consumer group (the workers' one removed), MAXLEN ~ keeps the tick stream near its size."""
        capped = settings.model_copy(update={"stream_maxlen": 100})
        producer = Producer(redis_client, capped)
        producer.retention.prepare()
        redis_client.xgroup_destroy("tickerdash:ticks", capped.group)
        producer.publish(make_ticks(2000), per_tick=True)
        assert 100 <= redis_client.xlen("tickerdash:ticks") < 400


def _spawn(url: str, consumer: str, claim_idle_ms: int, stall_after: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "consumer_proc.py"), url, consumer, str(claim_idle_ms), str(stall_after)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _consumers(client: redis.Redis) -> set[bytes]:
    """The consumers of the analytics group on the tick stream (one appears at its first XREADGROUP)."""
    try:
        return {c["name"] for c in client.xinfo_consumers("tickerdash:ticks", "analytics")}
    except redis.ResponseError:  # no stream or group yet
        return set()


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll until the predicate holds; the timeout is a bound for a loaded machine (a consumer process's
    start-up alone took over 20 s with two busy loops beside the suite), not a measure of speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.mark.slow
class TestCrashes:
    def test_sigkill_mid_batch_then_successor_finishes_exactly_once(
        self, settings: Settings, redis_client: redis.Redis, redis_server: EmbeddedRedis
    ) -> None:
        """A consumer killed inside a batch leaves it pending; another consumer claims it; each effect once."""
        Producer(redis_client, settings).publish(make_ticks(2000), per_tick=True)
        victim = _spawn(redis_server.url, "victim", 60_000, stall_after=5)
        _wait_for(lambda: redis_client.get("stalled") == b"victim")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        pending = redis_client.xpending("tickerdash:ticks", "analytics")
        assert pending["pending"] > 0 and pending["consumers"][0]["name"] == b"victim"
        successor = _spawn(redis_server.url, "successor", 200, stall_after=-1)
        _out, err = successor.communicate(timeout=60)
        assert successor.returncode == 0, err
        effects = redis_client.hgetall("effects")
        assert len(effects) == 2000
        assert set(effects.values()) == {b"1"}
        assert redis_client.xpending("tickerdash:ticks", "analytics")["pending"] == 0

    def test_sigterm_drains_and_exits_cleanly(
        self, settings: Settings, redis_client: redis.Redis, redis_server: EmbeddedRedis
    ) -> None:
        """SIGTERM makes the consumer finish its batch, acknowledge it, and exit 0."""
        proc = _spawn(redis_server.url, "polite", 60_000, stall_after=10**9)
        _wait_for(lambda: proc.poll() is not None or b"polite" in _consumers(redis_client))
        assert proc.poll() is None, proc.communicate()[1]
        Producer(redis_client, settings).publish(make_ticks(500), per_tick=True)
        _wait_for(lambda: len(redis_client.hgetall("effects")) == 500)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "ticks=500" in out
        assert redis_client.xpending("tickerdash:ticks", "analytics")["pending"] == 0

    def test_reconnects_with_backoff_when_redis_restarts(self, tmp_path: Path) -> None:
        """The runner survives its Redis going away and coming back, losing nothing."""
        server = EmbeddedRedis(tmp_path, appendonly=True).start()
        port = server.port
        settings = Settings(redis_url=server.url, block_ms=50, read_count=10)
        # no client-side retries: the outage must be ridden out by the runner's own backoff
        client = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
        seen: list[str] = []

        def process(stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
            assert ticks.trade_id is not None
            seen.extend(ticks.trade_id.to_pylist())

        stop = StopFlag()
        runner = StreamRunner(client, settings, ["tickerdash:ticks"], process, stop=stop)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            Producer(client, settings).publish(make_ticks(100), per_tick=True)
            _wait_for(lambda: len(seen) == 100)
            server.stop()
            time.sleep(3.0)  # longer than redis-py's own quick retries, so the runner's backoff runs
            server = EmbeddedRedis(tmp_path, port=port, appendonly=True).start()
            more = make_ticks(200)
            Producer(client, settings).publish(more.take(np.arange(100, 200)), per_tick=True)
            _wait_for(lambda: len(seen) == 200)
            assert runner.stats.reconnects >= 1
            assert seen == [f"t{i}" for i in range(200)]
        finally:
            stop.set()
            thread.join(5)
            server.stop()


def test_a_closed_producer_leaves_no_connection_of_its_own(settings: Settings, redis_client: redis.Redis) -> None:
    """The producer's bulk connections close with it; the caller's client stays usable."""

    def clients() -> set[str]:  # by id: other tests' connections may close meanwhile
        return {str(client["id"]) for client in redis_client.client_list()}

    before = clients()
    with Producer(redis_client, settings) as producer:
        producer.publish(make_ticks(1_000))
        opened = clients() - before
        assert opened  # the bulk pool opened a connection of its own
    deadline = time.monotonic() + 5
    while opened & clients() and time.monotonic() < deadline:  # the server notices a close a moment later
        time.sleep(0.05)
    assert not opened & clients()
    assert redis_client.xlen(Keys().ticks()) > 0


def test_batches_are_handled_with_the_gc_paused_and_housekeeping_runs_with_it_on(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The cyclic GC is off while a batch is read and handled, on again between batches, and a GC that
    was off before stays off."""
    Producer(redis_client, settings).publish(make_ticks(50), per_tick=True)
    seen = {"process": [], "housekeeping": []}
    runner = StreamRunner(
        redis_client,
        settings,
        [Keys().ticks()],
        FunctionConsumer(
            lambda stream, batch, pipe: seen["process"].append(gc.isenabled()),
            housekeeping_fn=lambda: seen["housekeeping"].append(gc.isenabled()),
        ),
    )
    runner.run(max_idle_reads=2)
    assert seen["process"] and not any(seen["process"])
    assert seen["housekeeping"] and all(seen["housekeeping"]) and gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failed batch")
    assert gc.isenabled()


def test_the_next_read_is_in_flight_while_a_batch_is_handled_and_each_entry_is_handled_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Read-ahead: Redis builds the next reply while a batch is handled; order and exactly-once hold, and a
    runner stopped (by an interrupt: errors of the processing function quarantine entries instead) leaves
    what it read ahead pending for the next one."""
    ticks = make_ticks(400)
    Producer(redis_client, settings).publish(ticks, per_tick=True)
    small = settings.model_copy(update={"read_count": 7})
    seen: list[str] = []
    ahead: list[bool] = []

    def process(stream: str, batch: TickBatch, pipe: redis.client.Pipeline) -> None:
        assert batch.trade_id is not None
        if len(seen) >= 200:
            raise KeyboardInterrupt
        seen.extend(batch.trade_id.to_pylist())
        ahead.append(runner._ahead_sent)

    runner = StreamRunner(redis_client, small, [Keys().ticks()], process)
    with pytest.raises(KeyboardInterrupt):
        runner.run(max_idle_reads=2)
    assert runner._ahead is None  # the connection with the unread reply is gone: those entries stay pending
    assert sum(ahead) >= len(ahead) - 2  # all but the first reads (sizes still growing) and the last
    pending = redis_client.xpending(Keys().ticks(), small.group)["pending"]
    assert pending > 7  # the failed batch and the one read ahead

    def rest(stream: str, batch: TickBatch, pipe: redis.client.Pipeline) -> None:
        assert batch.trade_id is not None
        seen.extend(batch.trade_id.to_pylist())

    StreamRunner(redis_client, small, [Keys().ticks()], rest).run(max_idle_reads=2)
    assert seen == [f"t{i}" for i in range(400)]
    assert redis_client.xpending(Keys().ticks(), small.group)["pending"] == 0


def test_entries_read_ahead_for_a_stream_given_up_are_left_pending_for_its_new_owner(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A consumer that drops its only stream with a read in flight takes the reply and handles nothing of it."""
    Producer(redis_client, settings).publish(make_ticks(40), per_tick=True)
    handled: list[int] = []
    runner = StreamRunner(
        redis_client,
        settings.model_copy(update={"read_count": 10}),
        [Keys().ticks()],
        lambda stream, batch, pipe: handled.append(len(batch)),
    )
    ensure_groups(redis_client, [Keys().ticks()], settings.group)
    assert runner.read_new() == 10 and runner._ahead_sent
    runner.drop_stream(Keys().ticks())
    assert runner.read_new() == 0 and not runner._ahead_sent
    assert handled == [10]
    assert redis_client.xpending(Keys().ticks(), settings.group)["pending"] == 10  # read ahead, not handled


def test_with_deferred_commits_a_batch_is_confirmed_once_the_next_is_processed_or_before_waiting(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """defer_commit: batch N's replies are read after batch N+1 is processed (N is applied meanwhile), and the
    last batch's before the runner waits for more; every entry is acknowledged once, in order."""
    ticks = make_ticks(60)
    Producer(redis_client, settings).publish(ticks, per_tick=True)
    small = settings.model_copy(update={"read_count": 10})
    seen: list[str] = []
    confirmed_before: list[int] = []  # batches confirmed when each batch was processed

    def process(stream: str, batch: TickBatch, pipe: redis.client.Pipeline) -> None:
        assert batch.trade_id is not None
        confirmed_before.append(runner.stats.batches)
        seen.extend(batch.trade_id.to_pylist())
        pipe.incrby("applied", len(batch))

    runner = StreamRunner(redis_client, small, [Keys().ticks()], process, defer_commit=True)
    ensure_groups(redis_client, [Keys().ticks()], small.group)
    assert runner.read_new() == 10
    assert runner.stats.batches == 0 and runner._in_flight is not None  # sent, replies not read
    runner.settle()
    assert runner.stats.batches == 1 and runner._in_flight is None
    assert int(redis_client.get("applied") or 0) == 10
    while runner.read_new():  # as `run` does; the empty read at the end settles the last batch first
        pass
    assert seen == [f"t{i}" for i in range(60)]
    # batch k >= 2 was processed while batch k - 1 was in flight: k - 1 batches confirmed
    assert confirmed_before == [0, 1, *range(1, len(confirmed_before) - 1)]
    assert runner.stats.batches == 6 and runner._in_flight is None
    assert int(redis_client.get("applied") or 0) == 60
    assert redis_client.xpending(Keys().ticks(), small.group)["pending"] == 0


def test_with_deferred_commits_a_fence_that_trips_in_flight_drops_the_stream_and_leaves_the_batch_pending(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The fence's key changes between a batch's WATCH and its EXEC: the replies, read a batch later, drop
    the stream; nothing of that batch or of the one processed meanwhile is applied or acknowledged."""
    Producer(redis_client, settings).publish(make_ticks(40), per_tick=True)
    small = settings.model_copy(update={"read_count": 10})
    stream = Keys().ticks()
    lost: list[str] = []

    def guard(name: str, first_id: bytes, pipe: redis.client.Pipeline) -> None:
        pipe.watch("fence")

    def process(name: str, batch: TickBatch, pipe: redis.client.Pipeline) -> None:
        pipe.incrby("applied", len(batch))

    consumer = FunctionConsumer(process, fence_fn=guard, dropped_fn=lost.append)
    runner = StreamRunner(redis_client, small, [stream], consumer, defer_commit=True)
    ensure_groups(redis_client, [stream], small.group)
    assert runner.read_new() == 10
    runner.settle()
    assert runner.stats.batches == 1
    assert runner.read_new() == 10
    redis_client.set("fence", "moved")  # after that batch's EXEC was sent: it is applied all the same
    runner.settle()
    assert runner.stats.batches == 2 and not lost
    real_send = StreamRunner._send

    def send_after_the_fence_moves(self: StreamRunner, batch: object) -> None:
        redis_client.set("fence", "taken")
        real_send(self, batch)  # type: ignore[arg-type]

    StreamRunner._send = send_after_the_fence_moves  # type: ignore[method-assign]
    try:
        assert runner.read_new() == 10
    finally:
        StreamRunner._send = real_send  # type: ignore[method-assign]
    assert runner.stats.batches == 2 and not lost  # not known yet
    runner.settle()
    assert lost == [stream] and runner.streams == []
    assert int(redis_client.get("applied") or 0) == 20
    assert redis_client.xpending(stream, small.group)["pending"] == 20  # the tripped batch and the one read ahead
