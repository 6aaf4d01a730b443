"""Analytics workers on a local Redis Cluster beside the same on one standalone server, with the redis-benchmark
reference of the same run.

    python -m benchmarks.cluster [--ticks N] [--tape simulated|synthetic] [--stages core|default]
                                 [--primaries 3] [--partitions 6] [--rounds 1]
                                 [--latency-seconds 10] [--latency-rate 20000] [--no-failover]

The tape (default: the simulator's default market, 500 symbols) is published once, as batch entries in
P partitions, on a standalone server; its tick streams are copied byte for byte to the cluster (DUMP and
RESTORE), so both hold the same entries. Then, on each, `tickerdash analytics` runs as one process owning
every partition and as three processes owning a third each (fixed lists: no assignment to wait for), and
each run is timed from the moment every partition's lease is held to the moment every partition is read
and acknowledged: ticks/s. Then the p50/p99 latency from a trade's XADD to the snapshot showing it, with
the tape fed at `--latency-rate` to one worker, on each; and, on a cluster with a replica per primary, how
long a SIGKILL of a primary stops the worker reading that primary's partition.

What one machine can show: that the cluster path works at full speed, what it costs (one XREADGROUP per
partition instead of one for all, a node lookup per batch) and that work spreads over processes. It cannot
show the scaling: the primaries and the workers share this machine's cores, so three workers and three
primaries compete for what one worker and one server had. See docs/cluster.md for what the design predicts
for N machines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis

from benchmarks import tapes
from benchmarks._common import Figure, redis_benchmark_xadd, row
from benchmarks.analytics import WARMUP_PROBES, latency
from tickerdash.ingest.cluster import AnyRedis, node_name, primary_clients
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.local_cluster import cluster_ok, local_cluster
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis, client_for
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

STAGE_OPTION = {"core": "none", "default": "alerts,anomaly"}
POLL_S = 0.02
TIMEOUT_S = 600.0


def parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--ticks", type=int, default=600_000, help="trades on the tape")
    parse.add_argument("--tape", choices=("simulated", "synthetic"), default="simulated")
    parse.add_argument("--stages", choices=tuple(STAGE_OPTION), default="default", help="core: bars and indicators")
    parse.add_argument("--primaries", type=int, default=3, help="primaries of the local cluster")
    parse.add_argument("--partitions", type=int, default=6, help="TICKERDASH_PARTITIONS")
    parse.add_argument("--rounds", type=int, default=1, help="runs of each case (alternated); the best is printed")
    parse.add_argument("--latency-seconds", type=float, default=10.0, help="0: no latency figures")
    parse.add_argument("--latency-rate", type=int, default=20_000, help="ticks/s fed while latency is measured")
    parse.add_argument(
        "--no-failover", dest="failover", action="store_false", help="skip the failover (a cluster with replicas)"
    )
    return parse


def tape(args: argparse.Namespace) -> TickBatch:
    """The trades to publish."""
    return tapes.simulated(args.ticks) if args.tape == "simulated" else tapes.synthetic(args.ticks)


def fill(client: AnyRedis, standalone: redis.Redis, keys: Keys) -> None:
    """Copy the standalone server's tick streams (no group yet) to `client`'s Redis, emptied first."""
    for primary in primary_clients(client):
        primary.flushall()
    for stream in keys.tick_streams:
        dumped: Any = standalone.dump(stream)
        client.restore(stream, 0, dumped)


def worker_processes(
    url: str, settings: Settings, owned: list[list[int]], stages: str
) -> list[subprocess.Popen[bytes]]:
    """`tickerdash analytics` processes, one per partition list, as deployed."""
    env = {
        **os.environ,
        "TICKERDASH_REDIS_URL": url,
        "TICKERDASH_PREFIX": settings.prefix,
        "TICKERDASH_PARTITIONS": str(settings.partitions),
        "TICKERDASH_BLOCK_MS": "5",
    }
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tickerdash",
                "analytics",
                "--consumer",
                f"bench-{k}",
                "--partitions",
                ",".join(map(str, partitions)),
                "--stages",
                stages,
                "--no-webhooks",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k, partitions in enumerate(owned)
    ]


def all_leased(client: AnyRedis, keys: Keys) -> bool:
    """Whether every partition's lease is held."""
    return all(client.exists(keys.lease(ANALYTICS_GROUP, p)) for p in range(keys.partitions))


def drained(client: AnyRedis, keys: Keys) -> bool:
    """Whether the analytics group has read and acknowledged every entry of every partition."""
    for stream in keys.tick_streams:
        groups: Any = client.xinfo_groups(stream)
        if not groups or groups[0]["lag"] != 0 or groups[0]["pending"] != 0:
            return False
    return True


def wait(what: str, ready: Any, processes: list[subprocess.Popen[bytes]]) -> float:
    """time.monotonic() once `ready()` holds; raises if a worker died or TIMEOUT_S passed."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if any(process.poll() is not None for process in processes):
            raise RuntimeError(f"a worker exited before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic()


def drain_rate(client: AnyRedis, url: str, settings: Settings, workers: int, stages: str, ticks: int) -> float:
    """ticks/s of `workers` worker processes sharing the partitions, from all leases held to drained."""
    keys = Keys(settings.prefix, settings.partitions)
    owned = [list(range(settings.partitions))[k::workers] for k in range(workers)]
    processes = worker_processes(url, settings, owned, stages)
    try:
        started = wait("every lease held", lambda: all_leased(client, keys), processes)
        done = wait("every tick read and acknowledged", lambda: drained(client, keys), processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    return ticks / (done - started)


def entries_read(client: AnyRedis, stream: str) -> int:
    """How many entries of the stream the analytics group has read (-1 while it cannot be asked)."""
    try:
        groups: Any = client.xinfo_groups(stream)
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return -1
    return int(groups[0]["entries-read"] or 0) if groups else -1


def promoted_for(client: redis.RedisCluster, key: str, dead_port: int) -> bool:
    """Whether the slot map read afresh gives the key's slot to a primary other than the dead one."""
    try:
        client.nodes_manager.initialize()
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return False
    return bool(client.get_node_from_key(key).port != dead_port)


def latency_figures(
    args: argparse.Namespace, ticks: TickBatch, url: str, cluster_url: str, cluster: AnyRedis
) -> list[Figure]:
    """p50/p99 ms from a trade's XADD to the snapshot showing it, at `latency_rate` ticks/s, one worker owning
    every partition, standalone and on the cluster (`benchmarks.analytics.latency`)."""
    figures = []
    for where, client, at in (("standalone", redis.Redis.from_url(url), url), ("cluster", cluster, cluster_url)):
        settings = Settings(redis_url=at, prefix="bench", partitions=args.partitions)
        delays = latency(client, settings, ticks, args.latency_seconds, STAGE_OPTION[args.stages], args.latency_rate)
        p50, p99 = np.percentile(delays[WARMUP_PROBES:], [50, 99])
        label = f"XADD to snapshot at {args.latency_rate:,} ticks/s, {where}"
        row(f"{label}: p50", p50, "ms")
        row(f"{label}: p99", p99, "ms")
        figures.append(Figure(f"{label}: p99", float(p99), "ms"))
    return figures


def failover_seconds(ticks: TickBatch, args: argparse.Namespace) -> tuple[float, float]:
    """On a cluster with a replica per primary, one worker draining the tape: SIGKILL of the primary that holds
    partition 0 a quarter of the way through it; seconds until the cluster reports itself ok again, and until
    the worker reads partition 0 again (rebuilt from what the promoted replica holds)."""
    with local_cluster(args.primaries, replicas=1) as nodes:
        url = nodes[0].url
        settings = Settings(redis_url=url, prefix="bench", partitions=args.partitions)
        keys = Keys(settings.prefix, settings.partitions)
        client = client_for(url, cluster=True)
        Producer(client, settings).publish(ticks)
        stream = keys.ticks(0)
        total = client.xlen(stream)
        processes = worker_processes(url, settings, [list(range(settings.partitions))], STAGE_OPTION[args.stages])
        try:
            wait("every lease held", lambda: all_leased(client, keys), processes)
            wait("a quarter of partition 0 read", lambda: entries_read(client, stream) >= total // 4, processes)
            victim = next(node for node in nodes if f"127.0.0.1:{node.port}" == node_name(client, stream))
            assert victim.process is not None
            victim.process.kill()
            killed = time.monotonic()
            victim.process.wait()
            survivor = redis.RedisCluster(host="127.0.0.1", port=next(n for n in nodes if n is not victim).port)
            promoted = lambda: promoted_for(survivor, stream, victim.port) and cluster_ok(nodes)  # noqa: E731
            ok = wait("a replica promoted", promoted, processes)
            survivor.close()
            again = entries_read(client, stream)
            resumed = wait("partition 0 read again", lambda: entries_read(client, stream) > again, processes)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
            client.close()
    return ok - killed, resumed - killed


@contextlib.contextmanager
def servers(primaries: int) -> Iterator[tuple[EmbeddedRedis, list[EmbeddedRedis]]]:
    """A standalone server and a cluster of `primaries` primaries (no replicas: this machine's cores are few)."""
    with EmbeddedRedis(appendonly=False) as standalone, local_cluster(primaries) as nodes:
        yield standalone, nodes


def run(args: argparse.Namespace) -> list[Figure]:
    """Run the benchmark; its figures."""
    ticks = tape(args)
    figures: list[Figure] = []
    with servers(args.primaries) as (server, nodes):
        settings = Settings(redis_url=server.url, prefix="bench", partitions=args.partitions)
        keys = Keys(settings.prefix, settings.partitions)
        standalone = redis.Redis(port=server.port)
        cluster = client_for(nodes[0].url, cluster=True)
        Producer(standalone, settings).publish(ticks)
        saved = {stream: standalone.dump(stream) for stream in keys.tick_streams}
        reference = redis_benchmark_xadd(server)
        cluster_reference = redis_benchmark_xadd(nodes[0], cluster=True)
        print(
            f"{len(ticks):,} ticks of the {args.tape} tape, {args.partitions} partitions, {args.stages} stages; "
            f"cluster of {args.primaries} primaries on this machine ({os.cpu_count()} cores)",
            flush=True,
        )
        row("reference: redis-benchmark XADD -P 256, standalone", reference, "req/s")
        row("reference: redis-benchmark --cluster XADD -P 256, every primary", cluster_reference, "req/s")
        best: dict[tuple[str, int], float] = {}
        for _ in range(args.rounds):
            for where, client, url in (("standalone", standalone, server.url), ("cluster", cluster, nodes[0].url)):
                for workers in (1, 3):
                    standalone.flushall()
                    for stream, dumped in saved.items():
                        standalone.restore(stream, 0, dumped)
                    if where == "cluster":
                        fill(cluster, standalone, keys)
                    rate = drain_rate(client, url, settings, workers, STAGE_OPTION[args.stages], len(ticks))
                    best[where, workers] = max(rate, best.get((where, workers), 0.0))
        for (where, workers), rate in best.items():
            label = f"{workers} worker{'s' if workers > 1 else ''}, {where}, {args.tape} tape, {args.stages} stages"
            row(label, rate, ref=reference)
            figures.append(Figure(label, rate, "ticks/s", reference))
        if args.latency_seconds > 0:
            figures += latency_figures(args, ticks, server.url, nodes[0].url, cluster)
        standalone.close()
        cluster.close()
    if args.failover:
        ok_s, resumed_s = failover_seconds(ticks, args)
        row("failover: SIGKILL of a primary to its replica promoted", ok_s * 1000, "ms")
        row("failover: SIGKILL of a primary to the worker reading its partition again", resumed_s * 1000, "ms")
        figures.append(Figure("failover: SIGKILL of a primary to the worker reading again", resumed_s * 1000, "ms"))
    return figures


def main() -> None:
    """Run with the command line's options."""
    run(parser().parse_args())


if __name__ == "__main__":
    main()
