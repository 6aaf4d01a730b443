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
import os
import signal
import subprocess
import sys
import time

import redis

from benchmarks._common import synthetic_ticks
from ingest.codecs import encode_batch
from ingest.redis_server import EmbeddedRedis


def peak_rss_mib(server: EmbeddedRedis, rows: int) -> tuple[float, int]:
    """(peak RSS in MiB, dead letters) of a worker process that drains one entry of `rows` trades."""
    client = redis.Redis(port=server.port)
    client.flushall()
    client.xadd("tickerdash:ticks", encode_batch(synthetic_ticks(rows, 500)))  # type: ignore[arg-type]
    env = {**os.environ, "TICKERDASH_REDIS_URL": server.url, "TICKERDASH_BLOCK_MS": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "tickerdash", "analytics", "--consumer", "rss"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            groups = client.xinfo_groups("tickerdash:ticks")
            if groups and groups[0]["pending"] == 0 and groups[0].get("lag") == 0:
                break
            time.sleep(0.2)
        with open(f"/proc/{proc.pid}/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM"))
        return int(hwm.split()[1]) / 1024, int(client.xlen("tickerdash:deadletter"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    with EmbeddedRedis(appendonly=False) as server:
        for rows in (10_000, args.rows):
            rss, letters = peak_rss_mib(server, rows)
            print(f"worker peak RSS after one batch entry of {rows:>9,} trades: {rss:7.0f} MiB "
                  f"({letters} dead letters)")  # fmt: skip


if __name__ == "__main__":
    main()
