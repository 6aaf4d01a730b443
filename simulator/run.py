"""The thin loop around the market model: stop by count or event-time duration, pace to the wall clock,
and write ticks and labels to Redis (through `ingest.producer.Producer`) or to a Parquet/CSV file.

Nothing here decides what the market does; everything here is I/O, pacing and bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.reconnect import through_outages
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.stopping import Terminated, sigterm_received
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.labels import LabelBatch

Chunk = tuple[TickBatch, LabelBatch]
FILE_SUFFIXES = (".parquet", ".csv")
PACE_SLICES_PER_S = 20  # how often a paced run writes: smooth enough for a live chart
LABEL_PIPELINE = 1_000


@dataclass(frozen=True, slots=True)
class Limits:
    """When to stop: after `count` trades and/or once event time passes `start_ms + duration_s`."""

    count: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run wrote."""

    ticks: int
    labels: int
    elapsed_s: float
    first_ts: int | None
    last_ts: int | None

    @property
    def ticks_per_s(self) -> float:
        """Throughput over the whole run (wall clock)."""
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def slice_chunk(chunk: Chunk, start: int, stop: int) -> Chunk:
    """Rows [start, stop) of a chunk, with the labels of exactly those rows."""
    ticks, labels = chunk
    if start == 0 and stop >= len(ticks):
        return chunk
    inside = (labels.row >= start) & (labels.row < stop)
    part = labels.take(inside)
    shifted = LabelBatch(part.trade_id, part.kind, part.episode_id, part.magnitude, part.row - start)
    return ticks.take(np.arange(start, min(stop, len(ticks)))), shifted


def limited(chunks: Iterable[Chunk], limits: Limits, start_ms: int) -> Iterator[Chunk]:
    """The chunks, cut at the trade count or the event-time end, whichever comes first."""
    remaining = limits.count
    end_ms = None if limits.duration_s is None else start_ms + int(limits.duration_s * 1000)
    for ticks, labels in chunks:
        stop = len(ticks)
        if end_ms is not None:
            stop = int(np.searchsorted(ticks.ts, end_ms, side="left"))
        if remaining is not None:
            stop = min(stop, remaining)
            remaining -= stop
        if stop:
            yield slice_chunk((ticks, labels), 0, stop)
        if stop < len(ticks) or remaining == 0:
            return


def paced(
    chunks: Iterable[Chunk],
    rate: float,
    *,
    event_time: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Chunk]:
    """Slices of the chunks, released on the wall clock: `rate` trades a second on average, or (with
    `event_time`) each slice when the wall clock has moved as far as the tape's own event clock.

    Event-time pacing is what keeps a live tape's event time in step with the wall clock: the market's
    intraday profile makes the open and the close busier than the session's mean rate, so releasing a
    fixed count per second would let event time fall behind at the open (about 4.5x) and run ahead later.
    """
    rows_per_slice = max(1, int(rate / PACE_SLICES_PER_S))
    started, released = clock(), 0
    first_ms: int | None = None
    for chunk in chunks:
        for start in range(0, len(chunk[0]), rows_per_slice):
            piece = slice_chunk(chunk, start, start + rows_per_slice)
            if event_time:
                if first_ms is None:
                    first_ms = int(piece[0].ts[0])
                due = started + (int(piece[0].ts[0]) - first_ms) / 1000.0
            else:
                due = started + released / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            released += len(piece[0])
            yield piece


class Sink(Protocol):
    """Where a run writes its ticks and labels."""

    def write(self, ticks: TickBatch, labels: LabelBatch) -> None:
        """Write one piece of the tape and its labels."""

    def close(self) -> None:
        """Flush and release."""


class RedisSink:
    """Ticks onto the tick streams (batch entries, or `per_tick`), labels onto `tickerdash:labels`."""

    def __init__(self, client: AnyRedis, settings: Settings, *, per_tick: bool = False) -> None:
        self.client = client
        self.producer = Producer(client, settings)
        keys = Keys(settings.prefix, settings.partitions)
        self.labels_key = keys.labels
        self.run_key = keys.simulator_run
        self.per_tick = per_tick

    def write(self, ticks: TickBatch, labels: LabelBatch) -> None:
        """Publish the ticks, then their labels (so a label never names a trade not yet on the stream);
        both ride out a Redis restart, exactly once (see `Producer.send`).

        Each entry declares the tape's event clock (its latest trade): a fast run's event time leads the wall
        clock by as much as it likes, and readers check `ts` against the declared clock, not the entry ID's time.
        """
        clock_ms = int(ticks.ts.max()) if len(ticks) else None
        self.producer.publish(ticks, per_tick=self.per_tick, clock_ms=clock_ms)
        fields = labels.to_fields()
        for start in range(0, len(fields), LABEL_PIPELINE):
            self.producer.send([(self.labels_key, f) for f in fields[start : start + LABEL_PIPELINE]], trim=False)

    def record_run(self, config: MarketConfig, scenario: str) -> None:
        """Note this run's seed and setup under `<prefix>:_:simulator`, so exports can say where data came from."""

        def record() -> None:
            self.client.hset(
                self.run_key,
                mapping={
                    "seed": config.seed,
                    "start_ms": config.start_ms,
                    "scenario": scenario,
                    "symbols": ",".join(config.symbols or ()) or f"universe:{config.universe}",
                },
            )

        through_outages(record, self.producer.outage)

    def close(self) -> None:
        """Nothing buffered (every write is already on the server): release the producer's connections."""
        self.producer.close()


def labels_path(out: Path) -> Path:
    """Where the labels of a tape file go: `trades.parquet` -> `trades.labels.parquet`."""
    return out.with_name(f"{out.stem}.labels{out.suffix}")


_SIDE_TEXT = pa.array(["S", None, "B"], pa.string())  # indexed by side + 1


def file_table(ticks: TickBatch) -> pa.RecordBatch:
    """Ticks in the public field vocabulary (symbol text, side B/S), as a file row group."""
    return pa.RecordBatch.from_pydict(
        {
            "symbol": pa.array(ticks.symbols, pa.string()).take(pa.array(ticks.symbol_idx)),
            "price": pa.array(ticks.price, pa.float64()),
            "size": pa.array(ticks.size, pa.float64()),
            "ts": pa.array(ticks.ts, pa.int64()),
            "side": _SIDE_TEXT.take(pa.array(ticks.side.astype(np.int64) + 1)),
            "trade_id": ticks.trade_id if ticks.trade_id is not None else pa.nulls(len(ticks), pa.string()),
            "buyer": ticks.buyer if ticks.buyer is not None else pa.nulls(len(ticks), pa.string()),
            "seller": ticks.seller if ticks.seller is not None else pa.nulls(len(ticks), pa.string()),
        }
    )


class FileSink:
    """Ticks to `out` (.parquet or .csv) and labels to the file beside it (see `labels_path`)."""

    def __init__(self, out: Path) -> None:
        suffix = out.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise ValueError(f"--out {out}: the file must end in {' or '.join(FILE_SUFFIXES)}")
        self.out, self.labels_out, self.suffix = out, labels_path(out), suffix
        self._writers: dict[str, pq.ParquetWriter | pacsv.CSVWriter] = {}
        self._wrote_labels = False

    def _append(self, name: str, path: Path, batch: pa.RecordBatch) -> None:
        writer = self._writers.get(name)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = (
                pq.ParquetWriter(str(path), batch.schema)
                if self.suffix == ".parquet"
                else pacsv.CSVWriter(str(path), batch.schema)
            )
            self._writers[name] = writer
        writer.write_batch(batch)

    def write(self, ticks: TickBatch, labels: LabelBatch) -> None:
        """Append the ticks and labels as one row group (Parquet) or block of lines (CSV)."""
        self._append("ticks", self.out, file_table(ticks))
        self._append("labels", self.labels_out, labels.to_arrow())

    def close(self) -> None:
        """Close both files (a run with no trades still leaves an empty labels file with its header)."""
        if "labels" not in self._writers:
            self._append("labels", self.labels_out, LabelBatch.empty().to_arrow())
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def run(
    chunks: Iterable[Chunk],
    sink: Sink,
    *,
    start_ms: int,
    limits: Limits,
    rate: float | None = None,
    event_time: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Drain the market into the sink until the limits; `rate` paces to the wall clock (None: fast), by
    count or (`event_time`) by the tape's event clock, as `paced` says.

    `on_progress(ticks, labels)` is called after every write with what that write added.
    """
    stream = limited(chunks, limits, start_ms)
    if rate is not None:
        stream = paced(stream, rate, event_time=event_time)
    began = time.perf_counter()
    ticks_total = labels_total = 0
    first_ts = last_ts = None
    try:
        for ticks, labels in stream:
            sink.write(ticks, labels)
            ticks_total += len(ticks)
            labels_total += len(labels)
            if first_ts is None:
                first_ts = int(ticks.ts[0])
            last_ts = int(ticks.ts[-1])
            if on_progress is not None:
                on_progress(len(ticks), len(labels))
            if sigterm_received():  # its Terminated was raised where it got swallowed (a finaliser): stop now
                raise Terminated()
    finally:
        sink.close()
    return RunSummary(ticks_total, labels_total, time.perf_counter() - began, first_ts, last_ts)
