"""Connections dropped under the worker and the producer, at exact points and at random ones, through a
proxy on loopback in front of the real Redis: nothing is lost, nothing is repeated."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import pytest
import redis
from dropping_proxy import Drop, DroppingProxy
from test_worker import assert_checkpoints_hold_every_trade, bar_streams, drained, expected_bars, market, run_inline

from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.ingest import reconnect
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis, client_for
from tickerdash.ingest.runner import ensure_groups
from tickerdash.ingest.settings import Settings


def _is_new_entries_read(args: Sequence[bytes]) -> bool:
    return args[0].upper() == b"XREADGROUP" and args[-1] == b">"


def _assert_exact(
    redis_client: redis.Redis, settings: Settings, worker: AnalyticsWorker, producer: Producer, ticks: object
) -> None:
    """Every entry acknowledged, bars as an uninterrupted run's, checkpoints holding each trade once, no dead
    letter."""
    if not drained(redis_client, settings):  # dropped during its last read: what is left is still pending
        run_inline(redis_client, settings)
    assert drained(redis_client, settings)
    assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, WorkerConfig(), settings.partitions)  # type: ignore[arg-type]
    assert_checkpoints_hold_every_trade(redis_client, worker, producer, ticks)  # type: ignore[arg-type]
    assert sum(redis_client.xlen(s) for s in Keys(settings.prefix, settings.partitions).deadletter_streams) == 0


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking read", "read ahead"])
def test_a_read_whose_reply_is_lost_after_redis_delivered_it_loses_nothing(
    settings: Settings, redis_client: redis.Redis, redis_server: EmbeddedRedis, blocking: bool
) -> None:
    """Redis executes an XREADGROUP `>` (its entries are now pending for the worker) and the connection
    drops before the reply arrives: the worker must read those entries again, not the ones after them."""
    ticks = market(6_000, per_second=200)
    settings = settings.model_copy(update={"partitions": 2, "read_count": 1})
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 250}))
    producer.publish(ticks)
    reads = 0

    def drop_the_third_read(args: Sequence[bytes]) -> Drop:
        nonlocal reads
        if _is_new_entries_read(args) and (b"BLOCK" in args) == blocking:
            reads += 1
            if reads == 3 - 2 * blocking:  # the first blocking read (the others read ahead), the third read ahead
                return Drop.REPLY
        return Drop.NO

    with DroppingProxy(redis_server.port, drop_the_third_read) as proxy:
        # a client with redis-py's default retry policy, as any caller may pass: the worker must not depend on it
        client = redis.Redis(port=proxy.port)
        worker = AnalyticsWorker(client, settings, None, WorkerConfig(checkpoint_every_s=0.05))
        worker.run(max_idle_reads=5)
        client.close()
    _assert_exact(redis_client, settings, worker, producer, ticks)
    assert proxy.drops[Drop.REPLY] == 1 and worker.runner.stats.reconnects >= 1  # seen, not silently re-sent


def test_entries_delivered_elsewhere_before_a_batch_are_applied_before_it(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Entries that another reader took (a read whose reply was lost, a former owner's late read) and never
    acknowledged lie before the worker's next batch: the fence sees them pending, and the worker rebuilds
    the partition and claims them in ID order instead of moving its progress marker past them."""
    ticks = market(6_000, per_second=200)
    settings = settings.model_copy(update={"read_count": 1})
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 250}))
    producer.publish(ticks)
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig(checkpoint_every_s=0.05))
    worker.acquire()  # the partition is ours, nothing is pending yet
    taken = redis_client.xreadgroup(settings.group, "former-owner", {Keys().ticks(): ">"}, count=2)
    assert len(taken[0][1]) == 2
    worker.run(max_idle_reads=5)
    _assert_exact(redis_client, settings, worker, producer, ticks)


def test_an_unapplied_entry_behind_the_progress_marker_is_dead_lettered_not_acknowledged_as_applied(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Should the marker ever stand past an entry that is still pending (never applied), the entry's trades
    go to the dead-letter stream with the reason, instead of being acknowledged as if they were in the bars."""
    ticks = market(1_000, per_second=200)
    Producer(redis_client, settings.model_copy(update={"batch_rows": 250})).publish(ticks)
    worker = AnalyticsWorker(redis_client, settings, None, WorkerConfig(checkpoint_every_s=0.05))
    ensure_groups(redis_client, [Keys().ticks()], settings.group)
    taken = redis_client.xreadgroup(settings.group, "former-owner", {Keys().ticks(): ">"}, count=2)
    skipped = [entry_id.decode() for entry_id, _ in taken[0][1]]
    redis_client.hset(worker.checkpoint_key(0), "last_id", skipped[-1])  # a marker that passed them
    worker.run(max_idle_reads=3)
    assert drained(redis_client, settings)
    dead = redis_client.xrange(Keys().deadletter())
    assert len(dead) == 500 and {f[b"reason"] for _, f in dead} == {
        b"out of order: delivered after later entries had been applied; its effects are missing"
    }
    assert {f[b"entry_id"].decode().split("#")[0] for _, f in dead} == set(skipped)


@pytest.mark.parametrize("per_tick", [False, True], ids=["batch entries", "per-tick entries"])
@pytest.mark.parametrize("retrying", [False, True], ids=["client_for", "a client that retries"])
def test_a_producer_whose_reply_is_lost_finds_what_landed_and_the_stream_holds_each_entry_once(
    settings: Settings, redis_client: redis.Redis, redis_server: EmbeddedRedis, per_tick: bool, retrying: bool
) -> None:
    """Redis appends an XADD and the connection drops before the reply: no client writes the entry a second
    time behind the producer's back, and the producer, which reads back what landed, sends only the rest."""

    def drop_the_first_xadd_reply(args: Sequence[bytes]) -> Drop:
        return Drop.REPLY if args[0].upper() == b"XADD" and not proxy.drops[Drop.REPLY] else Drop.NO

    with DroppingProxy(redis_server.port, drop_the_first_xadd_reply) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        client = redis.Redis(port=proxy.port) if retrying else client_for(url)  # redis-py's default policy, or ours
        producer = Producer(client, settings.model_copy(update={"batch_rows": 100}))
        producer.publish(market(300), per_tick=per_tick)
        producer.close()
        client.close()
    assert proxy.drops[Drop.REPLY] == 1
    entries = redis_client.xrange(Keys().ticks())
    sequence = [int(fields[b"seq"]) for _, fields in entries]
    assert sequence == list(range(1, (300 if per_tick else 3) + 1))  # each entry once, in order
    assert sum(int(fields.get(b"rows", 1)) for _, fields in entries) == 300


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_connections_dropped_at_random_points_of_every_stage_lose_and_repeat_nothing(
    settings: Settings,
    redis_client: redis.Redis,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> None:
    """Any command of the worker (reads, read-ahead, claims, lease and fence, the deferred transactions, the
    checkpoint child's script, restores) may have its connection dropped before Redis reads it or after
    Redis executed it, and every connection is dropped at random moments besides (while the worker
    computes): bars, acknowledgements and the checkpointed state are exact."""
    monkeypatch.setattr(reconnect, "MAX_BACKOFF_S", 0.2)  # drops in a row must not make the run long
    rng = random.Random(seed)
    ticks = market(8_000, per_second=200)
    settings = settings.model_copy(update={"partitions": 2, "read_count": 1, "claim_idle_ms": 200})
    producer = Producer(redis_client, settings.model_copy(update={"batch_rows": 250}))
    producer.publish(ticks)
    budget = 12  # drops, then the worker drains in peace
    lock = threading.Lock()

    def drop_some(args: Sequence[bytes]) -> Drop:
        nonlocal budget
        with lock:
            if budget <= 0 or rng.random() >= 0.02:
                return Drop.NO
            budget -= 1
            return rng.choice((Drop.BEFORE, Drop.REPLY))

    stop = threading.Event()
    with DroppingProxy(redis_server.port, drop_some) as proxy:
        client = redis.Redis(port=proxy.port)
        worker = AnalyticsWorker(client, settings, None, WorkerConfig(checkpoint_every_s=0.05))

        def kill_at_random_until_drained() -> None:
            nonlocal budget
            while not stop.wait(rng.uniform(0.01, 0.1)):
                if drained(redis_client, settings):
                    with lock:
                        budget = 0  # the shutdown checkpoint is written in peace
                    worker.stop.set()
                    return
                if worker.runner.stats.batches and proxy.kills < 10:
                    proxy.kill_all()

        killer = threading.Thread(target=kill_at_random_until_drained)
        killer.start()
        try:
            worker.run()
        finally:
            stop.set()
            killer.join()
            client.close()
    assert sum(proxy.drops.values()) >= 5 and proxy.kills >= 5 and worker.runner.stats.reconnects >= 3
    _assert_exact(redis_client, settings, worker, producer, ticks)
