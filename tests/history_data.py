"""Shared by the archive and export tests: a few hours of trades through a real worker, and bar readers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import redis

from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.history.archive import Archiver
from tickerdash.analytics.history.archive_layout import DATASET_SCHEMA, OVERLAY_COLUMNS, PARTITIONING, archive_root
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

START_MS = 1_767_306_600_000  # 2026-01-01 22:30 UTC: the data crosses midnight
HOURS = 3
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
BAR_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "trades")
FLUSH_MS = 1_767_398_700_000  # 2026-01-03 00:05 UTC: one trade per symbol here closes every earlier bar


def trades(n: int = 30_000, seed: int = 11) -> TickBatch:
    """n trades of SYMBOLS spread over HOURS from START_MS, plus one closing trade per symbol at FLUSH_MS."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(SYMBOLS), n).astype(np.int32)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n))) * (1 + idx / 4), 2)
    ts = START_MS + np.sort(rng.integers(0, HOURS * 3_600_000, n))
    k = len(SYMBOLS)
    return TickBatch(
        symbols=SYMBOLS,
        symbol_idx=np.concatenate([idx, np.arange(k, dtype=np.int32)]),
        price=np.concatenate([price, np.full(k, 100.0)]),
        size=np.concatenate([rng.integers(1, 50, n) * 10.0, np.ones(k)]),
        ts=np.concatenate([ts, np.full(k, FLUSH_MS)]).astype(np.int64),
        side=np.ones(n + k, np.int8),
    )


def analyse(client: redis.Redis, settings: Settings, ticks: TickBatch) -> None:
    """Publish the trades and run an analytics worker inline until it has processed them all."""
    Producer(client, settings.model_copy(update={"batch_rows": 2_000})).publish(ticks)
    one_entry_per_read = settings.model_copy(update={"read_count": 1})  # several feed entries, several archive batches
    AnalyticsWorker(client, one_entry_per_read, None, WorkerConfig(checkpoint_every_s=0.2)).run(max_idle_reads=3)


def archive_once(client: redis.Redis, settings: Settings, max_batch_rows: int = 20_000) -> Archiver:
    """Run the archiver until the closed-bars feed is drained."""
    archiver = Archiver(client, settings, max_batch_rows=max_batch_rows)
    archiver.run(once=True)
    return archiver


def redis_bars(client: redis.Redis, interval: str, symbols: tuple[str, ...] = SYMBOLS) -> pd.DataFrame:
    """Every bar of the interval in Redis as a frame: symbol, start, open ... trades, then the overlay fields (NaN
    where the entry leaves one out)."""
    rows = []
    for symbol in symbols:
        for entry_id, fields in client.xrange(Keys().bars(interval, symbol)):
            row = {name: float(fields[name.encode()]) for name in BAR_FIELDS}
            row |= {name: float(fields.get(name.encode(), "nan")) for name in OVERLAY_COLUMNS}
            rows.append({"symbol": symbol, "start": int(entry_id.split(b"-")[0]), **row})
    frame = pd.DataFrame(rows)
    frame["trades"] = frame["trades"].astype("int64")
    frame["start"] = pd.to_datetime(frame["start"], unit="ms", utc=True)
    return frame.sort_values(["symbol", "start"], ignore_index=True)


def archived(settings: Settings) -> pa.Table:
    """The whole archive dataset, with the hive partition columns."""
    return ds.dataset(
        archive_root(settings), format="parquet", partitioning=PARTITIONING, schema=DATASET_SCHEMA
    ).to_table()
