"""The analytics worker on a real Redis: right bars, exactly once through crashes, scale-out, dead letters."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from effects_tools import entries, entries_json

from tickerdash.analytics.engine.restore import state_blob
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.engine.worker import AnalyticsWorker, PartitionState, WorkerConfig
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.analytics.stages.bars import Bars
from tickerdash.analytics.stages.indicators import window_name
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest import runner as runner_module
from tickerdash.ingest.contract.bars import BAR_FLOAT_FIELDS, encode_bar, feed_entry_table
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.contract.live import decode_updates
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import StopFlag, StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def market(n: int, symbols: int = 20, per_second: int = 2_000, seed: int = 7) -> TickBatch:
    """n trades over `symbols` tickers, `per_second` trades per second of event time, in time order."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, symbols, n).astype(np.int32)
    steps = rng.normal(0, 2e-4, n)
    price = np.round(100 * np.exp(np.cumsum(steps)) * (1 + idx / 10), 2)
    ts = START_MS + np.sort(rng.integers(0, max(1, n * 1000 // per_second), n))
    return TickBatch(
        symbols=tuple(f"S{i:02d}" for i in range(symbols)),
        symbol_idx=idx,
        price=price,
        size=rng.integers(1, 50, n) * 10.0,
        ts=ts.astype(np.int64),
        side=rng.choice(np.array([-1, 1], np.int8), n),
        trade_id=None,
    )


def bar_streams(client: redis.Redis, prefix: str) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
    """Every bar stream under a prefix (key without the prefix -> entries)."""
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:bars:*", count=1000))
    return {k[len(prefix) :]: client.xrange(k) for k in keys}


def expected_bars(
    ticks: TickBatch, config: WorkerConfig, partitions: int = 1
) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
    """The bars a pure Bars stage closes over the same trades, with their overlays, in the worker's wire format
    (keys without their prefix, as `bar_streams` gives them)."""
    keys = Keys("", partitions)
    closed = Bars(config.bars).process(ticks).closed
    overlays = OverlayStage().update(closed)
    out: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
    for k in range(len(closed)):
        key = keys.bars(window_name(int(closed.interval_ms[k])), closed.symbols[int(closed.symbol_idx[k])])
        extra = {name: float(column[k]) for name, column in overlays.items()}
        flat = encode_bar(*(getattr(closed, name)[k] for name in BAR_FLOAT_FIELDS), closed.trades[k], extra)
        fields = {str(flat[i]).encode(): str(flat[i + 1]).encode() for i in range(0, len(flat), 2)}
        out.setdefault(key, []).append((f"{int(closed.start_ms[k])}-0".encode(), fields))
    return {k: sorted(v, key=lambda e: int(e[0].split(b"-")[0])) for k, v in sorted(out.items())}


def drained(client: redis.Redis, settings: Settings) -> bool:
    """Whether the analytics group has read and acknowledged every tick entry."""
    for stream in Keys(settings.prefix, settings.partitions).tick_streams:
        last = client.xinfo_stream(stream)["last-generated-id"]
        groups = {g["name"]: g for g in client.xinfo_groups(stream)}
        group = groups.get(settings.group.encode()) or groups.get(settings.group)
        if not group or group["pending"] or group["last-delivered-id"] != last:
            return False
    return True


def run_inline(
    client: redis.Redis, settings: Settings, config: WorkerConfig | None = None, partitions: list[int] | None = None
) -> AnalyticsWorker:
    """Run a worker in this process until the streams are drained, then stop it cleanly."""
    worker = AnalyticsWorker(client, settings, partitions, config or WorkerConfig(checkpoint_every_s=0.2))
    worker.run(max_idle_reads=3)
    return worker


def assert_checkpoints_hold_every_trade(
    client: redis.Redis, worker: AnalyticsWorker, producer: Producer, ticks: TickBatch
) -> None:
    """Each partition's checkpoint holds the indicators of all its trades, each counted once."""
    for partition, part in producer.split_by_partition(ticks):
        reference = PartitionState(WorkerConfig())
        reference.apply(part)
        saved = state_blob(client, worker.partition_keys(partition))
        assert saved is not None
        restored = PartitionState.from_bytes(saved, WorkerConfig())
        for name in ("sums", "trades", "clock", "last_price", "ema"):
            np.testing.assert_array_equal(
                getattr(restored.stage("indicators").indicators, name),
                getattr(reference.stage("indicators").indicators, name),
            )


class TestWorker:
    def test_bars_on_redis_equal_the_pure_stage_over_the_same_trades(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Closed bars land in tickerdash:bars:<interval>:<SYMBOL> with ID = bar start, as the stage computed."""
        ticks = market(30_000, per_second=200)  # 150 s of event time: 1m bars close too
        producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 1000}))
        producer.publish(ticks.take(np.arange(10_000)), per_tick=True)
        producer.publish(ticks.take(np.arange(10_000, 30_000)))
        run_inline(redis_client, settings)
        got = bar_streams(redis_client, "tickerdash")
        assert got == expected_bars(ticks, WorkerConfig())
        feed = [feed_entry_table(f) for _, f in redis_client.xrange(Keys().closed_bars())]
        assert sum(t.num_rows for t in feed) == sum(len(v) for v in got.values())  # the archivers' feed has them all
        assert any(k.startswith(":bars:1m:") for k in got) and any(k.startswith(":bars:1s:") for k in got)

    def test_live_view_has_every_symbol_and_its_indicators(self, settings: Settings, redis_client: redis.Redis) -> None:
        """The snapshot hash and the live stream carry each symbol's last price and indicators."""
        ticks = market(5_000)
        Producer(redis_client, settings).publish(ticks)
        run_inline(redis_client, settings)
        stored = redis_client.hgetall(Keys().snapshot())
        snapshot = {k.decode(): decode_updates(v)[0].to_dict() for k, v in stored.items()}
        assert set(snapshot) == set(ticks.symbols)
        for symbol, update in snapshot.items():
            rows = np.flatnonzero(ticks.symbol == symbol)
            assert update["price"] == ticks.price[rows[-1]]
            assert update["trades"] == len(rows)
            assert set(update["indicators"]) >= {"sma_20", "ema_12", "vwap_1m", "session_vwap"}
        entries = redis_client.xrange(Keys().live())
        assert entries and all(decode_updates(fields[b"u"]) for _, fields in entries)

    def test_bar_entries_carry_their_overlays_after_the_seven_bar_fields(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Each bar entry is open ... trades, then each overlay defined by then (SMA from the 20th bar on); the
        live view holds each symbol's latest closed bar and its overlay values."""
        ticks = market(20_000, symbols=5, per_second=200)  # 100 s of event time: ~100 1s bars per symbol
        Producer(redis_client, settings).publish(ticks)
        run_inline(redis_client, settings)
        fields = OverlayStage().fields
        for key, stream_entries in bar_streams(redis_client, "tickerdash").items():
            names = [[name.decode() for name in entry] for _, entry in stream_entries]
            assert all(n[:7] == ["open", "high", "low", "close", "volume", "vwap", "trades"] for n in names), key
            assert all(set(n[7:]) <= set(fields) and n[7:] == sorted(n[7:], key=fields.index) for n in names), key
            if key.startswith(":bars:1s:"):
                assert all("sma20" not in n for n in names[:19]) and all("sma20" in n for n in names[19:]), key
                closes = [float(entry[b"close"]) for _, entry in stream_entries]
                assert float(stream_entries[-1][1][b"sma20"]) == pytest.approx(np.mean(closes[-20:]), rel=1e-12)
        snapshot = {k.decode(): decode_updates(v)[0] for k, v in redis_client.hgetall(Keys().snapshot()).items()}
        for symbol, update in snapshot.items():
            last_id, last = redis_client.xrevrange(Keys().bars("1s", symbol), count=1)[0]
            closed = update.overlays["1s"]
            assert closed["start"] == int(last_id.split(b"-")[0])
            assert {name: closed[name] for name in fields} == {name: float(last[name.encode()]) for name in fields}

    def test_malformed_and_late_ticks_go_to_deadletter_and_the_worker_goes_on(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """A bad price and a trade older than its closed bar plus grace are dead-lettered with reasons."""
        stream = "tickerdash:ticks"
        for i in range(10):
            redis_client.xadd(stream, {"symbol": "AAPL", "price": 100 + i, "size": 1, "ts": START_MS + i * 1000})
        redis_client.xadd(stream, {"symbol": "AAPL", "price": "abc", "size": 1, "ts": START_MS + 10_000})
        redis_client.xadd(stream, {"symbol": "AAPL", "price": 99, "size": 1, "ts": START_MS + 1_000})  # late
        redis_client.xadd(stream, {"symbol": "AAPL", "price": 120, "size": 1, "ts": START_MS + 20_000})
        run_inline(redis_client, settings)
        reasons = [f[b"reason"].decode() for _, f in redis_client.xrange("tickerdash:deadletter")]
        assert sorted(r.split(":")[0] for r in reasons) == ["late", "price"]
        bars = redis_client.xrange("tickerdash:bars:1s:AAPL")
        assert [int(f[b"trades"]) for _, f in bars] == [1] * 10  # the late trade counted nowhere
        assert redis_client.hget(Keys().snapshot(), "AAPL") is not None

    def test_four_partitions_over_two_workers_give_the_same_bars_as_one(
        self, redis_client: redis.Redis, redis_server: EmbeddedRedis
    ) -> None:
        """Scale-out does not change results: each partition is owned by one worker, per-symbol order holds."""
        ticks = market(40_000, symbols=40)
        one = Settings(redis_url=redis_server.url, prefix="one", partitions=4, consumer="solo", block_ms=20)
        Producer(redis_client, one).publish(ticks)
        run_inline(redis_client, one)
        two = Settings(redis_url=redis_server.url, prefix="two", partitions=4, block_ms=20)
        Producer(redis_client, two).publish(ticks)
        workers = [
            AnalyticsWorker(redis_client, two.model_copy(update={"consumer": f"w{i}"}), parts)
            for i, parts in enumerate(([0, 1], [2, 3]))
        ]
        threads = [threading.Thread(target=w.run, kwargs={"max_idle_reads": 3}) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert bar_streams(redis_client, "one") == bar_streams(redis_client, "two")
        assert bar_streams(redis_client, "one")  # and there are bars at all

    def test_a_standby_worker_takes_over_a_partition_when_its_owner_stops(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Two workers want the same partition: one owns it; when it leaves, the other takes over and goes on."""
        ticks = market(20_000)
        # a lease long enough that a loaded machine never lets the owner's lapse between renewals; a clean
        # stop releases it, so the standby takes over at its next check (a third of the lease) all the same
        config = WorkerConfig(checkpoint_every_s=0.1, lease_ms=3000)
        first_stop, second_stop = StopFlag(), StopFlag()
        first = AnalyticsWorker(
            redis_client, settings.model_copy(update={"consumer": "first"}), None, config, stop=first_stop
        )
        second = AnalyticsWorker(
            redis_client, settings.model_copy(update={"consumer": "second"}), None, config, stop=second_stop
        )
        producer = Producer(redis_client, settings)
        t1 = threading.Thread(target=first.run)
        t1.start()
        deadline = time.monotonic() + 60
        while redis_client.get(first.lease_key(0)) != b"first":  # the first owns the partition before the second asks
            assert t1.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        t2 = threading.Thread(target=second.run)
        t2.start()
        producer.publish(ticks.take(np.arange(10_000)))
        deadline = time.monotonic() + 60
        while not drained(redis_client, settings):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert 0 in first.states and 0 not in second.states
        first_stop.set()
        t1.join(10)
        producer.publish(ticks.take(np.arange(10_000, 20_000)))
        deadline = time.monotonic() + 60
        while not (0 in second.states and drained(redis_client, settings)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second_stop.set()
        t2.join(10)
        assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, config)


def _spawn_worker(url: str, prefix: str, consumer: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TICKERDASH_REDIS_URL": url, "TICKERDASH_PREFIX": prefix, "TICKERDASH_BLOCK_MS": "50"}
    return subprocess.Popen(
        [sys.executable, "-m", "tickerdash", "analytics", "--consumer", consumer, "--checkpoint-every", "0.3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _probe_outputs(client: redis.Redis, settings: Settings, probe: TickBatch) -> dict[str, np.ndarray]:
    """Restore the partition's saved state and run one more batch through it: its indicator values."""
    worker = AnalyticsWorker(client, settings.model_copy(update={"consumer": "probe"}), [0])
    state: PartitionState = worker.restore(0)
    frame = state.apply(probe).products["indicators"]
    assert frame is not None
    return frame.columns


def stream_fields(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    """Every entry's fields of a stream, decoded."""
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)]


def without_tick_id(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """Entries' fields without `tick_id`, which holds a stream ID (one that differs from run to run)."""
    return [{k: v for k, v in fields.items() if k != "tick_id"} for fields in entries]


def _crash_run(client: redis.Redis, server: EmbeddedRedis, n: int, kills: int, seed: int, tmp: Path) -> None:
    ticks = market(n, symbols=50, per_second=20_000, seed=seed)
    calm = Settings(redis_url=server.url, prefix="calm", block_ms=50)
    crashy = Settings(redis_url=server.url, prefix="crashy", block_ms=50)
    for s in (calm, crashy):
        RuleStore(client, Keys(s.prefix)).add(Rule(id="slump", symbol="*", drop_pct=1.5, window_s=5))
        Producer(client, s.model_copy(update={"batch_rows": 500})).publish(ticks.take(np.arange(n // 2)))
        Producer(client, s).publish(ticks.take(np.arange(n // 2, n)), per_tick=True)

    worker = _spawn_worker(server.url, "calm", "calm-worker")
    deadline = time.monotonic() + 600
    while not drained(client, calm):
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    rng = random.Random(seed)
    killed_mid_run = 0
    lease = Keys("crashy").lease(ANALYTICS_GROUP, 0)
    for attempt in range(kills + 1):
        worker = _spawn_worker(server.url, "crashy", "crashy-worker")
        while client.get(lease) != b"crashy-worker":  # it has started and owns the partition
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        if attempt < kills:
            time.sleep(rng.uniform(0.0, 1.5))
            killed_mid_run += not drained(client, crashy)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            client.delete(lease)  # as if the lease had expired
        else:
            while not drained(client, crashy):
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0

    assert killed_mid_run >= 1, "no kill landed while the worker still had work"
    assert bar_streams(client, "calm") == bar_streams(client, "crashy")
    assert sum(len(v) for v in bar_streams(client, "calm").values()) > 0
    for name in ("alerts", "anomalies"):  # the plug-in stages' firings too: each once, none lost
        calm_entries, crashy_entries = (
            without_tick_id(stream_fields(client, getattr(Keys(p), name)())) for p in ("calm", "crashy")
        )
        assert len(calm_entries) >= 20, name
        assert crashy_entries == calm_entries, name
    probe = TickBatch.from_columns(list(ticks.symbols), np.full(50, 123.0), np.ones(50), np.full(50, int(ticks.ts[-1])))
    calm_values = _probe_outputs(client, calm, probe)
    crashy_values = _probe_outputs(client, crashy, probe)
    for name, values in calm_values.items():
        np.testing.assert_array_equal(values, crashy_values[name], err_msg=name)


@pytest.mark.slow
def test_killed_and_restarted_worker_neither_loses_nor_double_counts(
    redis_client: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """SIGKILL at random points of a 500k-tick run, restarting each time: bars byte for byte and indicators equal
    an uninterrupted run's."""
    _crash_run(redis_client, redis_server, 500_000, kills=5, seed=11, tmp=tmp_path)


@pytest.mark.realdata
@pytest.mark.slow
def test_replayed_lobster_bars_on_redis_equal_pandas(
    settings: Settings, redis_client: redis.Redis, shared_data: Path
) -> None:
    """All 58,087 NASDAQ trades through importer, producer, stream and worker: every closed 1s and 1m bar
    in Redis equals a pandas groupby of the raw file to 1e-9 relative, and none is missing."""
    import pandas as pd
    from real_trades import read_lobster
    from test_bars import pandas_bars

    from tickerdash.ingest.importers import ColumnMapping, TradeReader

    producer = Producer(redis_client, settings)
    with TradeReader(shared_data / "lobster/lobster_trades_2012-06-21.csv", ColumnMapping(ts_col="ts_ns")) as reader:
        for chunk, rejected in reader:
            assert not rejected
            producer.publish(chunk)
    run_inline(redis_client, settings)
    raw = read_lobster(shared_data)
    last_ts = raw.groupby("symbol")["ts"].max()
    for interval_ms, name in ((1_000, "1s"), (60_000, "1m")):
        want = pandas_bars(raw, interval_ms)
        closed = want["start_ms"] + interval_ms + 2_000 <= want["symbol"].map(last_ts)
        want = want[closed].reset_index(drop=True)
        rows = []
        for symbol in sorted(raw["symbol"].unique()):
            for entry_id, f in redis_client.xrange(f"tickerdash:bars:{name}:{symbol}"):
                rows.append(
                    {
                        "symbol": symbol,
                        "start_ms": int(entry_id.split(b"-")[0]),
                        **{k.decode(): float(v) for k, v in f.items()},
                    }
                )
        got = pd.DataFrame(rows)
        assert got["symbol"].tolist() == want["symbol"].tolist()
        assert got["start_ms"].tolist() == want["start_ms"].tolist()
        assert got["trades"].astype(int).tolist() == want["trades"].tolist()
        for column in ("open", "high", "low", "close", "volume", "vwap"):
            np.testing.assert_allclose(got[column], want[column], rtol=1e-9, err_msg=f"{name} {column}")


def test_every_symbol_that_trades_reaches_the_live_feed(settings: Settings, redis_client: redis.Redis) -> None:
    """Snapshot rounds outpace feed entries; a symbol that traded only between two feed entries still
    reaches the feed, and each symbol's last feed update equals its snapshot."""
    config = WorkerConfig(snapshot_hz=1_000.0, live_hz=1.0)
    small_reads = settings.model_copy(update={"read_count": 5})
    stream = "tickerdash:ticks"
    worker = AnalyticsWorker(redis_client, small_reads, None, config)
    for i in range(60):  # one symbol per entry: most trade only in rounds without a feed entry
        redis_client.xadd(stream, {"symbol": f"S{i:02d}", "price": 10 + i, "size": 1, "ts": START_MS + i})
    worker.run(max_idle_reads=3)
    last: dict[str, dict[str, object]] = {}
    for _, fields in redis_client.xrange(Keys().live()):
        for update in decode_updates(fields[b"u"]):
            last[update.symbol] = update.to_dict()
    stored = redis_client.hgetall(Keys().snapshot())
    snapshot = {k.decode(): decode_updates(v)[0].to_dict() for k, v in stored.items()}
    assert set(last) == {f"S{i:02d}" for i in range(60)} == set(snapshot)
    assert all(last[s]["price"] == snapshot[s]["price"] for s in snapshot)


def test_a_batch_firing_many_alerts_writes_exactly_what_the_stage_fired(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Many alerts of one batch go out in one command; the stream holds the stage's alerts, fields and order."""
    from tickerdash.analytics.stages.alerts.rules import Rule
    from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
    from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
    from tickerdash.analytics.stages.alerts.store import RuleStore

    symbols = [f"S{i}" for i in range(30)]
    rules = [
        Rule(id="any-2", symbol="*", drop_pct=2, window_s=60),
        Rule(id="s1-1", symbol="S1", drop_pct=1, window_s=30),
    ]
    store = RuleStore(redis_client, Keys())
    for rule in rules:
        store.add(rule)
    walk = [100.0, 100.8, 100.0, 99.2, 98.4]  # 0.8% a trade (no bad prints), 2.4% down at the end
    n = len(symbols) * len(walk)
    prices = np.tile(walk, len(symbols)) * np.repeat(np.linspace(1, 2, len(symbols)), len(walk))
    ticks = TickBatch.from_columns(np.repeat(symbols, len(walk)), prices, np.ones(n), START_MS + np.arange(n))
    Producer(redis_client, settings).publish(ticks)
    AnalyticsWorker(redis_client, settings, None, WorkerConfig(stages=(SlumpAlertStage,))).run(max_idle_reads=3)
    expected = [a.to_fields() for a in SlumpAlerts(store.list()).process(ticks)]
    written = stream_fields(redis_client, Keys().alerts())
    assert len(expected) >= 30
    assert without_tick_id(written) == without_tick_id(expected)
    assert all(e["tick_id"].endswith(f"#{int(e['ts']) - START_MS}") for e in written)


@pytest.mark.parametrize("applied", [False, True], ids=["lost before redis", "reply lost after redis"])
@pytest.mark.parametrize("defer_commit", [False, True], ids=["replies read at once", "replies read a batch later"])
def test_a_transaction_that_fails_in_flight_loses_and_repeats_nothing(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, applied: bool, defer_commit: bool
) -> None:
    """The connection drops under a batch's EXEC after the stages ran on it: bars and indicators still exact.

    With deferred replies the next batch, of either partition, has been computed too when the failure
    is read: both partitions' states are rebuilt.
    """
    ticks = market(30_000, per_second=200)
    settings = settings.model_copy(update={"partitions": 2})
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 500}))
    producer.publish(ticks)
    calls = {"transactions": 0, "failed": 0}
    doomed: set[int] = set()  # the transactions (by pipeline) that fail

    def fails(pipe: redis.client.Pipeline) -> bool:
        """Every 7th batch transaction (the ones that acknowledge entries) fails."""
        if not pipe.transaction or not any(args[0] == "XACK" for args, _ in pipe.command_stack):
            return False
        calls["transactions"] += 1
        return calls["transactions"] % 7 == 3

    if not defer_commit:
        real_execute = runner_module.execute_transaction

        def flaky_execute(pipe: redis.client.Pipeline) -> None:
            if not fails(pipe):
                return real_execute(pipe)
            calls["failed"] += 1
            if applied:
                real_execute(pipe)
            else:
                pipe.reset()
            raise redis.ConnectionError("connection dropped under EXEC (injected)")

        monkeypatch.setattr(runner_module, "execute_transaction", flaky_execute)
    else:
        real_send, real_confirm = StreamRunner._send, StreamRunner._confirm

        def flaky_send(runner: StreamRunner, batch: Any) -> None:
            if fails(batch.pipe):
                doomed.add(id(batch.pipe))
                if not applied:  # sent into a connection that is already gone
                    return
            real_send(runner, batch)

        def flaky_confirm(runner: StreamRunner, batch: Any) -> None:
            if id(batch.pipe) in doomed:
                doomed.discard(id(batch.pipe))
                calls["failed"] += 1
                if applied:
                    real_confirm(runner, batch)
                raise redis.ConnectionError("connection dropped under EXEC (injected)")
            real_confirm(runner, batch)

        monkeypatch.setattr(StreamRunner, "_send", flaky_send)
        monkeypatch.setattr(StreamRunner, "_confirm", flaky_confirm)
    settings = settings.model_copy(update={"read_count": 2})  # two entries per batch: 30 transactions
    config = WorkerConfig(checkpoint_every_s=0.05, defer_commit=defer_commit)
    worker = AnalyticsWorker(redis_client, settings, None, config)
    worker.run(max_idle_reads=5)
    monkeypatch.undo()

    assert calls["failed"] >= 3 and worker.runner.stats.reconnects == calls["failed"]
    assert drained(redis_client, settings)
    assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, WorkerConfig(), partitions=2)
    assert worker.states == {}  # released at the end: the last checkpoint holds the state
    assert_checkpoints_hold_every_trade(redis_client, worker, producer, ticks)


def test_connections_killed_by_redis_while_the_worker_runs_lose_and_repeat_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Redis drops every worker connection again and again (CLIENT KILL), whatever is in flight: bars exact."""
    ticks = market(30_000, per_second=200)
    settings = settings.model_copy(update={"partitions": 2})
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 250}))
    producer.publish(ticks)
    one_entry_a_batch = settings.model_copy(update={"read_count": 1})  # 120 transactions
    worker = AnalyticsWorker(redis_client, one_entry_a_batch, None, WorkerConfig(checkpoint_every_s=0.05))
    killer = redis.Redis(port=redis_client.connection_pool.connection_kwargs["port"])
    killed: list[int] = []
    stop = threading.Event()

    def kill_connections() -> None:
        while not stop.wait(0.02) and len(killed) < 15:
            if worker.runner.stats.batches:  # once the worker is under way
                killed.append(int(killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))

    thread = threading.Thread(target=kill_connections)
    thread.start()
    try:
        worker.run(max_idle_reads=10)
    finally:
        stop.set()
        thread.join()
        killer.close()
    assert len(killed) >= 3 and sum(killed) >= 3 and worker.runner.stats.reconnects >= 1
    if not drained(redis_client, settings):  # killed during its last read: what is left is still pending
        run_inline(redis_client, settings)
    assert drained(redis_client, settings)
    assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, WorkerConfig(), partitions=2)
    assert_checkpoints_hold_every_trade(redis_client, worker, producer, ticks)


def test_the_live_view_never_names_a_batch_whose_transaction_is_still_in_flight(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Between batches the live view is written on its own connection: only after the batch in flight has
    committed, or a page that fetches the closed bar the view names could find it missing."""
    ticks = market(20_000, symbols=4, per_second=100)
    Producer(redis_client, settings.model_copy(update={"batch_rows": 50})).publish(ticks)
    worker = AnalyticsWorker(
        redis_client, settings.model_copy(update={"read_count": 2}), None, WorkerConfig(snapshot_hz=100, live_hz=100)
    )
    assert worker.config.defer_commit
    written_in_flight: list[bool] = []
    sent_batches = 0
    real_send = worker.runner._send

    def send(batch: Any) -> None:
        nonlocal sent_batches
        sent_batches += 1
        real_send(batch)
        time.sleep(0.006)  # rounds (every 10 ms) fall due while a batch is in flight

    class Watched:
        def pipeline(self, transaction: bool = True) -> redis.client.Pipeline:
            written_in_flight.append(worker.runner._in_flight is not None)
            return redis_client.pipeline(transaction=transaction)

    real_publish = worker.live.publish

    def between_batches_only(states: Any, pipe: Any = None, **options: Any) -> None:
        if pipe is None:  # every round then falls between batches, whatever the machine's speed
            real_publish(states, **options)

    worker.runner._send = send  # type: ignore[method-assign]
    worker.live.client = Watched()  # type: ignore[assignment]
    worker.live.publish = between_batches_only  # type: ignore[method-assign]
    worker.run(max_idle_reads=3)
    assert sent_batches > 10 and written_in_flight, "the run must send batches and write the view between them"
    assert not any(written_in_flight)
    assert drained(redis_client, settings)


def test_checkpoints_are_written_in_the_background_after_their_batch_commits(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A forked child writes the committed state: restoring it (plus the replay) gives the same state."""
    ticks = market(20_000, per_second=200)
    Producer(redis_client, settings.model_copy(update={"batch_rows": 500})).publish(ticks)
    settings = settings.model_copy(update={"read_count": 4})
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig(checkpoint_every_s=0.0))
    assert worker.config.background_checkpoints
    worker.acquire()
    worker.runner.run(max_idle_reads=3)  # the loop only: no release, so no checkpoint at shutdown
    worker.checkpoints.reap(wait=True)
    saved = redis_client.hgetall(worker.checkpoint_key(0))
    state_id, marker = saved[b"state_id"].decode(), saved[b"last_id"].decode()
    written = PartitionState.from_bytes(state_blob(redis_client, worker.partition_keys(0)), WorkerConfig())
    assert written.last_id == state_id and state_id != "0-0" and state_id <= marker == worker.states[0].last_id
    restored = AnalyticsWorker(redis_client, settings, None, WorkerConfig()).restore(0)
    for name in ("sums", "trades", "clock", "last_price", "ema"):
        np.testing.assert_array_equal(
            getattr(restored.stage("indicators").indicators, name),
            getattr(worker.states[0].stage("indicators").indicators, name),
        )
    assert restored.stage("bars").to_bytes() == worker.states[0].stage("bars").to_bytes()


def test_a_background_checkpoint_is_fenced_by_the_lease_and_never_goes_back(redis_client: redis.Redis) -> None:
    """A child of a worker that lost its lease, or one slower than a newer checkpoint, writes nothing."""
    from tickerdash.analytics.engine.checkpoints import write_checkpoint
    from tickerdash.analytics.engine.restore import PartitionKeys

    where = PartitionKeys("t:checkpoint", "t:state", "t:quarantined", "t:ticks")
    lease, staging = "t:lease", "t:staging"

    def write(owner: str, state_id: str, blob: bytes) -> bool:
        return write_checkpoint(redis_client, lease, where, staging, owner, state_id, blob)

    redis_client.set(lease, "me")
    assert write("me", "1000-5", b"state@1000-5")
    assert not write("me", "999-9", b"older")
    assert not write("me", "1000-5", b"same")
    assert not write("other", "2000-0", b"not ours")
    assert write("me", "1000-10", b"newer")  # seq compared as a number
    assert state_blob(redis_client, where) == b"newer" and redis_client.hget(where.checkpoint, "state_id") == b"1000-10"
    assert not redis_client.exists(staging)  # renamed into place, or dropped when refused


def test_a_checkpoint_blob_goes_in_pieces_and_replaces_an_earlier_layouts_blob(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob of many pieces arrives whole and without an expiry; the hash keeps no blob of its own."""
    from tickerdash.analytics.engine import checkpoints as checkpoints_module
    from tickerdash.analytics.engine import restore as restore_module
    from tickerdash.analytics.engine.restore import PartitionKeys

    monkeypatch.setattr(restore_module, "PIECE_BYTES", 7)
    where = PartitionKeys("t:checkpoint", "t:state", "t:quarantined", "t:ticks")
    redis_client.set("t:lease", "me")
    redis_client.hset(where.checkpoint, mapping={"state": b"blob of an earlier layout", "state_id": "5-0"})
    blob = np.random.default_rng(1).bytes(1_000)
    assert checkpoints_module.write_checkpoint(redis_client, "t:lease", where, "t:staging", "me", "6-0", blob)
    assert redis_client.llen(where.state) == 143 and redis_client.pttl(where.state) == -1  # 1,000 bytes in 7s
    assert state_blob(redis_client, where) == blob
    assert redis_client.hgetall(where.checkpoint) == {b"state_id": b"6-0"}


def test_a_checkpoint_of_the_earlier_layout_restores(settings: Settings, redis_client: redis.Redis) -> None:
    """A checkpoint hash that holds its blob as its `state` field (the earlier layout) restores as before."""
    Producer(redis_client, settings).publish(market(3_000))
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig())
    worker.run(max_idle_reads=2)  # a clean stop: checkpointed
    where = worker.partition_keys(0)
    blob = state_blob(redis_client, where)
    assert blob is not None
    redis_client.delete(where.state)
    redis_client.hset(where.checkpoint, "state", blob)
    restored = AnalyticsWorker(redis_client, settings, None, WorkerConfig()).restore(0)
    assert restored.to_bytes() == blob


def test_plug_in_stages_beside_the_indicators_give_what_they_give_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """On large batches alerts and anomaly scores run on a helper thread: same effects, same state bytes."""
    from tickerdash.analytics.engine import state as state_module
    from tickerdash.analytics.stages.alerts.rules import Rule
    from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
    from tickerdash.analytics.stages.anomaly.stage import AnomalyStage
    from tickerdash.ingest.contract.tick_entries import iter_chunks

    ticks = market(120_000, symbols=30, per_second=2_000, seed=5)
    rules = [
        Rule(id="any-1", symbol="*", drop_pct=0.5, window_s=30),
        Rule(id="s1", symbol="S01", drop_pct=0.2, window_s=10),
    ]

    def alerts_with_rules() -> SlumpAlertStage:
        stage = SlumpAlertStage()
        stage.alerts.set_rules(rules)
        return stage

    config = WorkerConfig(stages=(alerts_with_rules, AnomalyStage))

    def run(min_rows: int) -> tuple[list[Effects], bytes]:
        monkeypatch.setattr(state_module, "CONCURRENT_STAGES_MIN_ROWS", min_rows)
        state = PartitionState(config)
        return [state.apply(chunk) for chunk in iter_chunks(ticks, 40_000)], state.to_bytes()

    together, together_state = run(20_000)
    in_turn, in_turn_state = run(10**9)
    assert sum(len(entries(e, "anomalies")) for e in together) > 0
    assert sum(len(entries_json(e, "alerts")) for e in together) > 0
    for a, b in zip(together, in_turn, strict=True):
        assert entries(a, "anomalies") == entries(b, "anomalies")
        assert entries_json(a, "alerts") == entries_json(b, "alerts")
        frame_a, frame_b = a.products.get("indicators"), b.products.get("indicators")
        assert frame_a is not None and frame_b is not None
        for name, values in frame_a.columns.items():
            assert values.tobytes() == frame_b.columns[name].tobytes(), name
    assert together_state == in_turn_state


def test_a_checkpoint_child_that_hangs_is_killed_so_shutdown_never_waits_on_it(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CHECKPOINT_TIMEOUT_S the child is killed and reaped; the next checkpoint is due as usual."""
    from tickerdash.analytics.engine import checkpoints as checkpoints_module

    Producer(redis_client, settings).publish(market(2_000))
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig())
    worker.acquire()
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(PartitionState, "to_bytes", lambda self: time.sleep(60))  # the child inherits it
    started = time.monotonic()
    worker.checkpoint_in_background([0])
    worker.checkpoints.reap(wait=True)
    assert worker.checkpoints.child is None and time.monotonic() - started < 10
    assert state_blob(redis_client, worker.partition_keys(0)) is None  # nothing half-written


def test_a_worker_restarted_before_its_first_checkpoint_replays_and_reads_with_the_rules(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A crash before any checkpoint leaves only the progress marker; the next owner replays the stream
    from the start: with the stored rules, so a slump whose high came before the crash still fires."""
    from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
    from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage

    RuleStore(redis_client, Keys()).add(Rule(id="slump", symbol="X", drop_pct=2, window_s=60))
    highs = TickBatch.from_columns(["X"] * 3, [100.0, 101.0, 100.5], np.ones(3), START_MS + np.arange(3) * 1000)
    slump = TickBatch.from_columns(["X"] * 3, [99.5, 98.9, 98.5], np.ones(3), START_MS + 10_000 + np.arange(3) * 1000)
    config = WorkerConfig(stages=(SlumpAlertStage,), checkpoint_every_s=1e9, checkpoint_every_ticks=10**12)
    producer = Producer(redis_client, settings)
    producer.publish(highs)
    first = AnalyticsWorker(redis_client, settings, None, config)
    first.acquire()
    first.runner.run(max_idle_reads=2)  # no release: as if killed after its batches committed
    assert state_blob(redis_client, first.partition_keys(0)) is None
    redis_client.delete(first.lease_key(0))  # as if the lease had expired
    producer.publish(slump)
    AnalyticsWorker(redis_client, settings.model_copy(update={"consumer": "next"}), None, config).run(max_idle_reads=2)
    stage = SlumpAlerts(RuleStore(redis_client, Keys()).list())
    expected = [a.to_fields() for a in stage.process(concat([highs, slump]))]
    written = stream_fields(redis_client, Keys().alerts())
    assert len(expected) == 1 and expected[0]["price"] == "98.9"  # in steps under 1%: no bad prints
    assert without_tick_id(written) == without_tick_id(expected)


def test_a_run_of_bad_prints_carried_across_a_restart_confirms_after_it_and_fires_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The bad-print filter's state is in the checkpoint: an off-market trade before a restart and two that agree
    with it after make a confirmed gap, which fires the default rule once, on the third (a filter that forgot
    the run would fire on another trade); the rule that counts bad prints fired on the first, before the
    restart, and is not written again."""
    from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
    from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage

    store = RuleStore(redis_client, Keys())
    store.add(Rule(id="gap", symbol="X", drop_pct=5, window_s=60))
    store.add(Rule(id="raw", symbol="X", drop_pct=5, window_s=60, include_bad_prints=True))
    before = TickBatch.from_columns(["X"] * 3, [100.0, 100.2, 93.0], np.ones(3), START_MS + np.arange(3) * 1000)
    after = TickBatch.from_columns(["X"] * 3, [93.1, 93.2, 93.0], np.ones(3), START_MS + 3_000 + np.arange(3) * 1000)
    config = WorkerConfig(stages=(SlumpAlertStage,), checkpoint_every_s=1e9, checkpoint_every_ticks=10**12)
    producer = Producer(redis_client, settings)
    producer.publish(before)
    first = AnalyticsWorker(redis_client, settings, None, config)
    first.run(max_idle_reads=2)  # a clean stop: the only checkpoint, holding the rejected trade
    assert state_blob(redis_client, first.partition_keys(0)) is not None
    producer.publish(after)
    AnalyticsWorker(redis_client, settings.model_copy(update={"consumer": "next"}), None, config).run(max_idle_reads=2)

    written = stream_fields(redis_client, Keys().alerts())
    expected = [a.to_fields() for a in SlumpAlerts(store.list()).process(concat([before, after]))]
    assert [(e["rule_id"], e["price"]) for e in expected] == [("raw", "93.0"), ("gap", "93.2")]
    assert without_tick_id(written) == without_tick_id(expected)


def test_shutdown_takes_a_running_checkpoint_of_the_current_state_and_supersedes_an_older_one(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """release() does not write twice what the background child is writing, and does not wait for a child
    whose state batches have passed since: it stops it and writes the current state itself."""
    ticks = market(4_000)
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 1_000}))
    producer.publish(ticks.take(np.arange(2_000)))
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig())
    worker.acquire()
    worker.runner.run(max_idle_reads=2)
    worker.checkpoint_in_background([0])  # of the current state
    foreground: list[int] = []
    monkeypatch.setattr(AnalyticsWorker, "checkpoint", lambda self, partition, pipe=None: foreground.append(partition))
    worker.release()
    assert foreground == [] and worker.checkpoints.child is None
    saved = redis_client.hmget(worker.checkpoint_key(0), "state_id", "last_id")
    assert saved[0] is not None and saved[0] == saved[1]
    monkeypatch.undo()

    producer.publish(ticks.take(np.arange(2_000, 4_000)))
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig())
    worker.acquire()
    monkeypatch.setattr(PartitionState, "to_bytes", lambda self: time.sleep(60))  # a child that would take long
    worker.checkpoint_in_background([0])
    monkeypatch.undo()
    worker.runner.run(max_idle_reads=2)  # the state moves on past what the child froze
    started = time.monotonic()
    worker.release()
    assert time.monotonic() - started < 10 and worker.checkpoints.child is None
    state_id, marker = redis_client.hmget(worker.checkpoint_key(0), "state_id", "last_id")
    assert state_id == marker == redis_client.xinfo_stream(Keys().ticks())["last-generated-id"]
