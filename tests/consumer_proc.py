"""A consumer process for the crash tests: records each tick's effect, optionally dying mid-batch.

Run as `python tests/consumer_proc.py URL CONSUMER CLAIM_IDLE_MS STALL_AFTER_BATCHES`: after that many
batches it stalls inside the processing of the next one (with effects queued but not yet applied),
so that a test can SIGKILL it there.
"""

from __future__ import annotations

import logging
import sys
import time

import redis

from tickerdash.ingest.redis_server import client_for
from tickerdash.ingest.runner import StopFlag, StreamRunner
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch


def main() -> None:
    url, consumer, claim_idle_ms, stall_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    settings = Settings(redis_url=url, consumer=consumer, claim_idle_ms=claim_idle_ms, read_count=50, block_ms=50)
    client = client_for(url)
    batches = 0

    def record(stream: str, ticks: TickBatch, pipe: redis.client.Pipeline) -> None:
        nonlocal batches
        for row in range(len(ticks)):
            pipe.hincrby("effects", ticks.tick_id(row), 1)
        batches += 1
        if stall_after >= 0 and batches > stall_after:
            client.set("stalled", consumer)
            time.sleep(3600)

    runner = StreamRunner(client, settings, [settings.prefix + ":ticks"], record, stop=StopFlag().install())
    stats = runner.run(max_idle_reads=None if stall_after >= 0 else 20)
    print(f"ticks={stats.ticks} rejected={stats.rejected}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
