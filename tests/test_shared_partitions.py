"""Workers that share the partitions (`--partitions auto`): the rendezvous assignment, a clean hand-over when a
worker joins, and a dead worker's partitions taken over within the lease time, nothing lost or counted twice."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from test_worker import bar_streams, drained, expected_bars, market

from tickerdash.analytics.engine.members import Membership, assignment
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.runner import StopFlag
from tickerdash.ingest.settings import Settings

PARTITIONS = 6
LEASE_S = 2.0
TICKERDASH = (sys.executable, "-m", "tickerdash")
QUICK_WORKER = ("--stages", "none", "--checkpoint-every", "0.5", "--no-webhooks")  # bars and indicators only

members_lists = st.lists(st.text("abcdefgh0123456789-", min_size=1, max_size=12), min_size=1, max_size=8, unique=True)


@given(members=members_lists, partitions=st.integers(1, 64))
def test_every_partition_has_one_owner_and_the_loads_differ_by_one_at_most(members: list[str], partitions: int) -> None:
    """Each partition goes to one member; each member owns P // N or P // N + 1; any order of the members gives the
    same assignment (every worker computes it alone)."""
    owners = assignment(range(partitions), members)
    assert set(owners) == set(range(partitions)) and set(owners.values()) <= set(members)
    loads = [list(owners.values()).count(member) for member in members]
    assert max(loads) - min(loads) <= 1
    assert assignment(range(partitions), list(reversed(members))) == owners


def test_a_worker_that_joins_moves_about_its_share() -> None:
    """Over many groups, a newcomer moves on average close to the P/(N+1) partitions it must take (minimal), and
    nearly all moved partitions go to it."""
    rng = random.Random(5)
    moved = ideal = to_newcomer = 0.0
    for _ in range(300):
        partitions = rng.randint(4, 64)
        members = [f"worker-{rng.randrange(10**9)}" for _ in range(rng.randint(1, 6))]
        before = assignment(range(partitions), members)
        after = assignment(range(partitions), [*members, "newcomer"])
        changed = [p for p in range(partitions) if before[p] != after[p]]
        moved += len(changed)
        to_newcomer += sum(after[p] == "newcomer" for p in changed)
        ideal += partitions / (len(set(members)) + 1)
    print(f"moved {moved / ideal:.2f}x the minimum; {to_newcomer / moved:.0%} of moves to the newcomer")
    assert moved <= 1.4 * ideal and to_newcomer >= 0.8 * moved


def _wait(what: str, done: Callable[[], bool], timeout: float = 60.0) -> float:
    """Seconds until `done()`; fails with `what` after `timeout`."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _owners(client: AnyRedis, keys: Keys) -> dict[int, str | None]:
    pipe = client.pipeline(transaction=False)  # one GET per lease: on a cluster they are on several nodes
    for p in range(keys.partitions):
        pipe.get(keys.lease("analytics", p))
    return {p: v.decode() if v is not None else None for p, v in enumerate(pipe.execute())}


def test_a_worker_that_joins_is_handed_its_share_with_nothing_to_replay(
    settings: Settings, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """One shared worker owns every partition; a second one joins and gets the partitions it wins, each handed
    over with a checkpoint of its last committed batch, so the newcomer restores it and replays nothing."""
    settings = settings.model_copy(update={"partitions": PARTITIONS})
    keys = Keys(settings.prefix, PARTITIONS)
    ticks = market(24_000, symbols=30)
    Producer(redis_client, settings).publish(ticks)
    config = WorkerConfig(checkpoint_every_s=60, lease_ms=int(LEASE_S * 1000), stages=())
    stops = {name: StopFlag() for name in ("first", "second")}
    workers = {
        name: AnalyticsWorker(
            redis_client, settings.model_copy(update={"consumer": name}), None, config, stop=stops[name], shared=True
        )
        for name in stops
    }
    threads = {name: threading.Thread(target=worker.run) for name, worker in workers.items()}
    threads["first"].start()
    try:
        _wait("the first worker drains every partition", lambda: drained(redis_client, settings))
        assert set(_owners(redis_client, keys).values()) == {"first"}
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tickerdash.analytics.engine.worker"):
            threads["second"].start()
            expected = assignment(range(PARTITIONS), ["first", "second"])
            _wait("the leases follow the assignment", lambda: _owners(redis_client, keys) == expected)
            _wait(
                "the second worker restores its share",
                lambda: set(workers["second"].states) == {p for p, owner in expected.items() if owner == "second"},
            )
        taken = sorted(p for p, owner in expected.items() if owner == "second")
        assert taken and len(taken) < PARTITIONS
        restored = [r.getMessage() for r in caplog.records if "restored at" in r.getMessage()]
        assert len(restored) == len(taken) and all("(replayed 0 ticks" in m for m in restored), restored
        assert set(workers["first"].states) == set(range(PARTITIONS)) - set(taken)
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads.values():
            thread.join(30)
    assert bar_streams(redis_client, "tickerdash") == expected_bars(ticks, WorkerConfig(), PARTITIONS)


def _spawn(url: str, consumer: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TICKERDASH_REDIS_URL": url, "TICKERDASH_PARTITIONS": str(PARTITIONS)}
    return subprocess.Popen(
        [*TICKERDASH, "analytics", "--consumer", consumer, "--lease", str(LEASE_S), *QUICK_WORKER],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_three_workers_split_the_partitions_and_a_killed_ones_are_taken_within_the_lease(
    settings: Settings, redis_client: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Three workers started one after another end with disjoint partitions covering all six; after a kill -9 of
    one, the other two hold its partitions within the lease time (plus a renewal period), and the bars equal
    those of an uninterrupted run."""
    three_workers_then_a_kill(redis_client, redis_server.url, settings.model_copy(update={"partitions": PARTITIONS}))


def three_workers_then_a_kill(client: AnyRedis, url: str, settings: Settings) -> None:
    """Half the ticks; three `tickerdash analytics` processes started one after another (each time the leases
    follow the assignment); kill -9 of the one with the most partitions; the other half; the survivors take
    its partitions within the lease time, and the bars equal those of an uninterrupted run."""
    keys = Keys(settings.prefix, PARTITIONS)
    ticks = market(60_000, symbols=36, per_second=500)
    producer = Producer(client, settings)
    half = len(ticks) // 2
    producer.publish(ticks.take(np.arange(half)))
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("w0", "w1", "w2"):
            workers[name] = _spawn(url, name)
            expected = assignment(range(PARTITIONS), sorted(workers))
            _wait(f"{name} joined: the leases follow the assignment", lambda e=expected: _owners(client, keys) == e)
        owners = _owners(client, keys)
        assert set(owners.values()) == {"w0", "w1", "w2"} and None not in owners.values()
        victim = max(workers, key=lambda name: list(owners.values()).count(name))
        orphaned = sorted(p for p, owner in owners.items() if owner == victim)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(10)
        killed_at = time.monotonic()
        producer.publish(ticks.take(np.arange(half, len(ticks))))
        survivors = assignment(range(PARTITIONS), sorted(set(workers) - {victim}))
        taken_s = _wait("the survivors take the dead worker's partitions", lambda: _owners(client, keys) == survivors)
        print(f"partitions {orphaned} of {victim} taken over {time.monotonic() - killed_at:.1f} s after kill -9")
        # its entry and its leases lapse after LEASE_S; the others look every LEASE_S / 3: a loaded machine gets more
        assert taken_s <= 2 * LEASE_S + 4.0
        _wait("every tick applied", lambda: drained(client, settings), timeout=120)  # type: ignore[arg-type]
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers.values():
            process.wait(30)
    bars = bar_streams(client, settings.prefix)  # type: ignore[arg-type]
    assert bars == expected_bars(ticks, WorkerConfig(), PARTITIONS)


def test_a_shared_worker_takes_no_partition_list(settings: Settings, redis_client: redis.Redis) -> None:
    """`shared` means the group assigns the partitions: a list besides it is refused, saying so."""
    with pytest.raises(ValueError, match="give no partition list"):
        AnalyticsWorker(redis_client, settings, [0], shared=True)
    assert Membership(redis_client, Keys(), "analytics", "solo", 1000).beat() == ["solo"]
