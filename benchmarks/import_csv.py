"""CSV import throughput: `TradeReader` (the parsing and validation behind `tickerdash ingest`) over a clean
CSV file, over one whose string values are all quoted, and over one with a malformed line in every read
block (each such block is re-read line by line). No Redis: the publishing is `benchmarks/ingest.py`'s.

    python benchmarks/import_csv.py [--rows N] [--rounds R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from benchmarks._common import row, synthetic_ticks, timed
from tickerdash.ingest.importers import DEFAULT_CHUNK_ROWS, TradeReader


def write_trades(path: Path, rows: int, quoted: bool) -> None:
    """`rows` synthetic trades as CSV: symbol, price, size, ts (ms), side, trade_id."""
    ticks = synthetic_ticks(rows)
    table = pa.table(
        {
            "symbol": pa.array(np.asarray(ticks.symbols)[ticks.symbol_idx]),
            "price": ticks.price,
            "size": ticks.size,
            "ts": ticks.ts,
            "side": pa.array(np.where(ticks.side > 0, "buy", "sell")),
            "trade_id": pa.array(np.char.add("T", np.arange(rows).astype(str))),
        }
    )
    style = "all_valid" if quoted else "none"
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style=style))


def spoil_every_block(path: Path, every: int, spoil: bytes) -> None:
    """Put `spoil` after the first comma of one line in every `every` lines."""
    lines = path.read_bytes().split(b"\n")
    for i in range(every // 2, len(lines) - 1, every):
        lines[i] = lines[i].replace(b",", b"," + spoil, 1)
    path.write_bytes(b"\n".join(lines))


def read_seconds(path: Path, rounds: int) -> tuple[float, float, int, int]:
    """The best of `rounds` full reads: wall seconds, CPU seconds (steadier on a shared machine), trades read,
    rows rejected."""
    best = best_cpu = float("inf")
    for _ in range(rounds):
        trades = rejected = 0
        cpu = time.process_time()
        with timed() as took, TradeReader(path) as reader:
            for ticks, bad in reader:
                trades += len(ticks)
                rejected += len(bad)
        best, best_cpu = min(best, took[0]), min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, trades, rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="trades per file")
    parser.add_argument("--rounds", type=int, default=3, help="reads per file (the best is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tickerdash-bench-") as folder:
        clean, quoted, unbalanced, junk = (Path(folder) / f"{name}.csv" for name in ("clean", "quoted", "open", "junk"))
        write_trades(clean, args.rows, quoted=False)
        write_trades(quoted, args.rows, quoted=True)
        write_trades(unbalanced, args.rows, quoted=False)
        spoil_every_block(unbalanced, DEFAULT_CHUNK_ROWS, b'"')
        write_trades(junk, args.rows, quoted=False)
        spoil_every_block(junk, DEFAULT_CHUNK_ROWS, b"\xff")  # not UTF-8: the block is read line by line
        print(f"{args.rows:,} trades per file ({clean.stat().st_size / 2**20:.0f} MiB clean), best of {args.rounds}")
        files = (
            ("clean", clean),
            ("strings quoted", quoted),
            ("an open quote in every block", unbalanced),
            ("a byte not UTF-8 in every block", junk),
        )
        for label, path in files:
            seconds, cpu, trades, rejected = read_seconds(path, args.rounds)
            row(f"{label}: {trades:,} read, {rejected:,} rejected", trades / seconds, "trades/s")
            row("  the same per CPU second", trades / cpu, "trades/s")


if __name__ == "__main__":
    main()
