"""Peak RSS of an analytics worker process that meets one huge batch entry (a producer ignoring the row limit).

Writes one batch entry of N trades (default 2M) straight onto the tick stream, runs `tickerdash analytics`
in a child process until the group has acknowledged it, and prints the child's peak RSS (VmHWM) beside
that of the same worker after one ordinary entry of 10,000 trades. With the row limit
(TICKERDASH_MAX_ENTRY_ROWS, default 100,000) the huge entry is dead-lettered unread; without it, the
worker applies all of it at once.

    .venv/bin/python -m benchmarks.hostile_entry [--rows 2000000]
"""

from __future__ import annotations

import argparse

import redis

from benchmarks._common import synthetic_ticks, worker_process_peak_rss_mib
from tickerdash.ingest.contract.tick_entries import encode_batch
from tickerdash.ingest.redis_server import EmbeddedRedis


def peak_rss_mib(server: EmbeddedRedis, rows: int) -> tuple[float, int]:
    """(peak RSS in MiB, dead letters) of a worker process that drains one entry of `rows` trades."""
    client = redis.Redis(port=server.port)
    client.flushall()
    client.xadd("tickerdash:ticks", encode_batch(synthetic_ticks(rows, 500)))  # type: ignore[arg-type]
    return worker_process_peak_rss_mib(server), int(client.xlen("tickerdash:deadletter"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    with EmbeddedRedis(appendonly=False) as server:
        for rows in (10_000, args.rows):
            rss, letters = peak_rss_mib(server, rows)
            print(
                f"worker peak RSS after one batch entry of {rows:>9,} trades: {rss:7.0f} MiB ({letters} dead letters)"
            )


if __name__ == "__main__":
    main()
