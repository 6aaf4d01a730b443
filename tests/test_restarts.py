"""Redis going away under running code: the producer neither loses nor repeats an entry when its
connections die mid-pipeline, and the long-running commands ride out a kill -9 restart of Redis."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from restart_tools import BackgroundPublish, kill_and_restart, stream_ticks

from tickerdash.analytics.stages.alerts.alert import Alert
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.reconnect import Outage
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

REPO = Path(__file__).resolve().parents[1]
KILLS = 4
DOWN_S = 6.0  # longer than redis-py's own silent retries of a client from `client_for` last


def make_ticks(n: int, symbols: int = 7, seed: int = 0, spacing_ms: int = 1) -> TickBatch:
    """n valid trades with unique trade ids, `spacing_ms` apart in event time."""
    rng = np.random.default_rng(seed)
    return TickBatch.from_columns(
        symbol=[f"S{i}" for i in rng.integers(0, symbols, n)],
        price=rng.uniform(10, 20, n).round(2),
        size=rng.integers(1, 500, n),
        ts=1_700_000_000_000 + np.arange(n) * spacing_ms,
        trade_id=[f"t{i}" for i in range(n)],
    )


def trade_ids_on_streams(client: redis.Redis, keys: Keys) -> list[str]:
    """The trade id of every tick on the tick streams (duplicates kept)."""
    ticks = stream_ticks(client, keys)
    assert ticks.trade_id is not None
    return [str(t) for t in ticks.trade_id.to_pylist()]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    """Five failed attempts make one warning (with the first delay) and the next success one more;
    the delay doubles up to its cap."""
    outage = Outage(logging.getLogger("test.outage"), first_s=0.4, max_s=2.0)
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        delays = [outage.failed(redis.ConnectionError("Connection refused")) for _ in range(5)]
        outage.recovered()
        outage.recovered()  # no outage on: nothing to say
    assert delays == [0.4, 0.8, 1.6, 2.0, 2.0]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "redis unavailable (Connection refused): retrying in 0.4s"
    assert lines[1].startswith("redis back after ") and lines[1].endswith(" s")
    assert outage.failed(redis.ConnectionError("again")) == 0.4 and outage.outages == 2


@pytest.mark.parametrize("per_tick", [True, False], ids=["per-tick", "batch"])
def test_connections_killed_under_a_publish_lose_and_repeat_no_trade(
    redis_client: redis.Redis, settings: Settings, per_tick: bool
) -> None:
    """CLIENT KILL of the producer's connections, again and again while it writes: afterwards every trade
    is on the streams exactly once (the producer found out which of its pipelined XADDs had landed)."""
    settings = settings.model_copy(update={"partitions": 3, "batch_rows": 50, "stream_maxlen": 0})
    most = 300_000 if per_tick else 1_000_000  # ample: the writer stops once the connections were killed enough
    ticks = make_ticks(most)
    writer = BackgroundPublish(Producer(redis_client, settings), ticks, 5_000, per_tick=per_tick).start()
    kills = 0
    while writer.is_alive() and kills < KILLS:
        time.sleep(0.15)
        kills += int(redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")) > 0
    writer.stop()
    assert kills == KILLS, "the publish ended before its connections were killed enough times: make it longer"
    published = writer.published
    ids = trade_ids_on_streams(redis_client, Keys(settings.prefix, settings.partitions))
    assert len(ids) == published and sorted(ids) == sorted(f"t{i}" for i in range(published))


def test_after_a_lost_connection_only_the_entries_that_did_not_land_are_sent_again(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """A pipeline cut after some of its XADDs ran, on two streams, with another client writing between:
    reading the tails back finds, per stream, exactly the entries still to send."""
    producer = Producer(redis_client, settings)
    producer.send([("s:a", {"n": "first"})])  # a confirmed entry: the tail is read back no further than it
    sent = []
    for i in range(10):  # what a pipeline held: stamped as `send` stamps, alternating between two streams
        producer.seq += 1
        sent.append(
            (("s:a", "s:b")[i % 2], {"n": str(i), "producer": producer.producer_id, "seq": producer.seq}, producer.seq)
        )
    landed = [entry for entry in sent if entry[0] == "s:a"][:3] + [entry for entry in sent if entry[0] == "s:b"][:1]
    for stream, fields, _ in sorted(landed, key=lambda entry: entry[2]):  # Redis ran these before the cut
        redis_client.xadd(stream, fields)  # type: ignore[arg-type]
        redis_client.xadd(stream, {"n": "another client", "producer": "someone-else", "seq": 99})
    rest = producer._not_landed(sent, time.monotonic())
    assert [fields["n"] for _, fields, _ in rest] == ["3", "5", "6", "7", "8", "9"]  # landed: 0 2 4 on a, 1 on b
    producer.close()


# --- commands against a Redis that is killed -9 and restarted on its append-only file -------------------


def wait_for(what: str, check: object, procs: dict[str, subprocess.Popen[str]], timeout: float = 60) -> None:
    """Poll `check()` until true; fail at once if a process ended."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_ingest_replay_alerts_tail_and_archive_ride_out_a_redis_restart(
    aof_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """A paced `ingest --speed` replay, `alerts tail` and `archive` keep running through kill -9 and a
    restart: the replay publishes every trade exactly once, the tail prints the alert added after the
    restart, and each says once that Redis went away and once that it came back."""
    n = 3_000
    ticks = make_ticks(n, spacing_ms=4)  # 12 s of event time, replayed at 1x
    csv = tmp_path / "trades.csv"
    assert ticks.trade_id is not None
    symbols = np.array(ticks.symbols)[ticks.symbol_idx]
    rows = zip(
        symbols.tolist(),
        ticks.price.tolist(),
        ticks.size.tolist(),
        ticks.ts.tolist(),
        ticks.trade_id.to_pylist(),
        strict=True,
    )
    csv.write_text("symbol,price,size,ts,trade_id\n" + "".join(f"{s},{p},{q},{t},{i}\n" for s, p, q, t, i in rows))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TICKERDASH_REDIS_URL": aof_redis.url,
        "TICKERDASH_DATA_DIR": str(tmp_path / "data"),
        "TICKERDASH_PARTITIONS": "2",
    }
    client = redis.Redis(port=aof_redis.port)
    keys = Keys(partitions=2)

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tickerdash", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    procs = {"tail": start("alerts", "tail", "--json"), "archive": start("archive", "--consumer", "restarts")}
    ingest = start("ingest", str(csv), "--speed", "1", "--chunk-rows", "500")
    try:
        wait_for(
            "the first trades", lambda: sum(client.xlen(s) for s in keys.tick_streams) > 0, {**procs, "ingest": ingest}
        )
        kill_and_restart(aof_redis, down_s=DOWN_S)
        assert ingest.poll() is None, "the replay ended before Redis was killed"
        alert_fields: Any = Alert("r1", "S1", 1_700_000_000_000, 9.5, 10.0, 5.0, 60, "S1 -5%").to_fields()
        wait_for("Redis after the restart", lambda: client.xadd(keys.alerts(), alert_fields), procs)
        out, _ = ingest.communicate(timeout=60)
        assert ingest.returncode == 0, out[-3000:]
        assert "Traceback" not in out and out.count("redis unavailable") == 1 and "redis back after" in out, out
        ids = trade_ids_on_streams(client, keys)
        assert len(ids) == n and sorted(ids) == sorted(f"t{i}" for i in range(n))
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} died: {proc.communicate()[0][-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        outputs = {name: proc.communicate(timeout=30)[0] for name, proc in procs.items()}
    printed = [json.loads(line) for line in outputs["tail"].splitlines() if line.startswith("{")]
    assert [a["message"] for a in printed] == ["S1 -5%"], outputs["tail"][-3000:]
    for name, text in outputs.items():
        assert "Traceback" not in text, text[-3000:]
        # "redis unavailable", or "Redis at URL unavailable" from `alerts tail`, which names the server it follows
        assert text.count(" unavailable (") == 1 and text.count(" back after ") == 1, (name, text[-3000:])
