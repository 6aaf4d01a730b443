"""Export throughput: one day of 1s bars for 100 symbols (8.64M rows) to Parquet, beside pyarrow's own write.

The archive is prepared directly (one compacted Parquet file for the day, as `tickerdash archive
--compact` leaves it) and the last hour also sits in Redis bar streams, so the export merges and
deduplicates the two stores as it does for users. The export runs in a child process so its peak RSS
is its own. Prints figures; asserts nothing about time.

    .venv/bin/python -m benchmarks.export [--symbols 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from benchmarks._common import row
from tickerdash.analytics.history.archive_layout import (
    ARCHIVE_SCHEMA,
    OVERLAY_COLUMNS,
    file_metadata,
    overlay_values,
    partition_dir,
    write_atomically,
)
from tickerdash.analytics.history.export import PARQUET_COMPRESSION
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.contract.bars import BAR_FLOAT_FIELDS
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.redis_server import EmbeddedRedis

DAY_START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SECONDS = 86_400
REDIS_TAIL_S = 3_600  # the last hour is in Redis too (the overlap the export deduplicates)


def day_of_bars(symbols: int, seed: int = 3) -> pa.Table:
    """One 1s bar per symbol per second of one day, sorted by symbol and start, with the overlays the worker
    computes (archive schema)."""
    rng = np.random.default_rng(seed)
    n = symbols * SECONDS
    names = np.array([f"S{i:03d}" for i in range(symbols)])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    spread = np.abs(rng.normal(0, 0.01, n))
    columns = {
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(symbols, dtype=np.int32), SECONDS)), pa.array(names)
        ).cast(pa.string()),
        "start": pa.array(
            np.tile(DAY_START_MS + np.arange(SECONDS, dtype=np.int64) * 1000, symbols), pa.timestamp("ms", tz="UTC")
        ),
        "open": close - spread / 2,
        "high": close + spread,
        "low": close - spread,
        "close": close,
        "volume": rng.integers(1, 100, n) * 10.0,
        "vwap": close,
        "trades": rng.integers(1, 20, n),
    }
    columns.update(overlays_of(columns, symbols))
    return pa.table(columns, schema=ARCHIVE_SCHEMA)


def overlays_of(columns: dict[str, Any], symbols: int) -> dict[str, pa.Array]:
    """Every overlay field of the day's bars (null before it is defined), symbol by symbol (bounded temporaries)."""
    stage = OverlayStage()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OVERLAY_COLUMNS}
    for k in range(symbols):
        rows = slice(k * SECONDS, (k + 1) * SECONDS)
        bars = BarTable(
            (f"S{k:03d}",),
            np.zeros(SECONDS, np.int64),
            np.full(SECONDS, 1000, np.int64),
            start_ms=DAY_START_MS + np.arange(SECONDS, dtype=np.int64) * 1000,
            trades=np.asarray(columns["trades"][rows]),
            **{name: np.asarray(columns[name][rows], np.float64) for name in BAR_FLOAT_FIELDS},
        )
        for name, values in stage.update(bars).items():
            parts[name].append(values)
    return {name: overlay_values(np.concatenate(parts[name])) for name in OVERLAY_COLUMNS}


def load_redis_tail(client: redis.Redis, table: pa.Table, symbols: int) -> int:
    """XADD the last REDIS_TAIL_S seconds of every symbol's bars to its bar stream, pipelined."""
    tail = table.filter(
        pa.compute.greater_equal(table["start"].cast(pa.int64()), DAY_START_MS + (SECONDS - REDIS_TAIL_S) * 1000)
    )
    cols = {name: tail[name].to_numpy(zero_copy_only=False) for name in tail.column_names}
    start = tail["start"].cast(pa.int64()).to_numpy()
    keys = Keys()
    pipe = client.pipeline(transaction=False)
    for k in range(tail.num_rows):  # benchmark set-up only, not the measured path
        pipe.execute_command(
            "XADD",
            keys.bars("1s", cols["symbol"][k]),
            f"{start[k]}-0",
            "open",
            repr(float(cols["open"][k])),
            "high",
            repr(float(cols["high"][k])),
            "low",
            repr(float(cols["low"][k])),
            "close",
            repr(float(cols["close"][k])),
            "volume",
            repr(float(cols["volume"][k])),
            "vwap",
            repr(float(cols["vwap"][k])),
            "trades",
            int(cols["trades"][k]),
            *(part for name in OVERLAY_COLUMNS if not np.isnan(v := cols[name][k]) for part in (name, repr(float(v)))),
        )
        if len(pipe) >= 5_000:
            pipe.execute()
    pipe.execute()
    return tail.num_rows


CHILD = """
import json, resource, sys, time
from pathlib import Path
import redis
from tickerdash.analytics.history.export import ExportRequest, export_bars
from tickerdash.ingest.settings import Settings
url, data_dir, out = sys.argv[1:4]
settings = Settings(redis_url=url, data_dir=Path(data_dir))
began = time.perf_counter()
result = export_bars(redis.Redis.from_url(url), settings, ExportRequest(interval="1s"), Path(out))
seconds = time.perf_counter() - began
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"rows": result.rows, "seconds": seconds, "phases": result.phases,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vm_hwm_mib": hwm / 1024}))
"""


def main() -> None:
    """Prepare the data, time pyarrow's write and the export, print rows/s and the export's peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tickerdash-bench-export-") as folder,
        EmbeddedRedis(Path(folder) / "redis", appendonly=False) as server,
    ):
        data_dir = Path(folder) / "data"
        began = time.perf_counter()
        table = day_of_bars(args.symbols)
        root = data_dir / "archive"
        write_atomically(
            table.replace_schema_metadata(file_metadata("1s")),
            partition_dir(root, "1s", "2026-01-01") / "compact-0-0.parquet",
            row_group_size=SECONDS,
        )
        in_redis = load_redis_tail(redis.Redis(port=server.port), table, args.symbols)
        print(
            f"export benchmark: {table.num_rows:,} 1s bars of {args.symbols} symbols for one day "
            f"(archive) and the last hour ({in_redis:,} bars) in Redis too; "
            f"set-up {time.perf_counter() - began:.1f} s"
        )

        reference = Path(folder) / "pyarrow.parquet"
        t0 = time.perf_counter()
        pq.write_table(table, reference, compression=PARQUET_COMPRESSION)  # the export's codec: a like-for-like write
        pyarrow_s = time.perf_counter() - t0
        pyarrow_rate = table.num_rows / pyarrow_s
        print(f"  both sides write Parquet with compression={PARQUET_COMPRESSION!r}")
        row("pyarrow write_table of the same table from memory", pyarrow_rate, "rows/s")
        del table

        out = Path(folder) / "export.parquet"
        child = subprocess.run(
            [sys.executable, "-c", CHILD, server.url, str(data_dir), str(out)], capture_output=True, text=True
        )
        if child.returncode:
            raise SystemExit(f"export failed:\n{child.stderr}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        row(
            "tickerdash export (archive + Redis, deduplicated)",
            figures["rows"] / figures["seconds"],
            "rows/s",
            ref=pyarrow_rate,
        )
        children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"  {'export peak RSS (child process)':<58} {figures['peak_rss_mib']:>14,.0f} MiB"
            f"  (RUSAGE_CHILDREN: {children_rss:,.0f} MiB; target < 1024)"
        )
        # ru_maxrss of a child starts at its parent's RSS at fork (Linux keeps it across exec), and the parent
        # holds the generated table; VmHWM is the high-water mark of the export's own address space
        print(f"  {'export peak RSS of its own pages (child VmHWM)':<58} {figures['vm_hwm_mib']:>14,.0f} MiB")
        print(
            f"  rows exported {figures['rows']:,} in {figures['seconds']:.2f} s; pyarrow wrote in {pyarrow_s:.2f} s; "
            f"file {out.stat().st_size / 2**20:,.0f} MiB"
        )
        phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures["phases"].items())
        print(
            f"  export's time by phase: {phases} (plan: survey and chunks; read: archive and Redis, merged; "
            "write: Parquet encoding; sync: fsync and rename)"
        )


if __name__ == "__main__":
    main()
