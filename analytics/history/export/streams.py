"""Alerts, anomalies and scored trades of the exported symbols and range, written beside the bars."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import redis

from tickerdash.analytics.history.export.bar_reader import (
    REDIS_PAGE,
)
from tickerdash.analytics.history.export.request import (
    ExportError,
    ExportRequest,
)
from tickerdash.analytics.history.export.table_writer import (
    TableWriter,
)
from tickerdash.ingest.cluster import AnyRedis, node_client
from tickerdash.ingest.contract.alerts import ALERT_TEXT_FIELDS
from tickerdash.ingest.contract.anomalies import ANOMALY_TEXT_FIELDS
from tickerdash.ingest.contract.fields import as_text, text_fields
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.contract.tick_ids import tick_ids
from tickerdash.ingest.redis_adapter import raw_client


def sibling(out: Path, name: str) -> Path:
    """`bars.parquet` -> `bars.alerts.parquet`."""
    return out.with_name(f"{out.stem}.{name}{out.suffix}")


def _stream_pages(raw: redis.Redis, key: str) -> Iterator[list[Any]]:
    start = "-"
    while True:
        entries = raw.execute_command("XRANGE", key, start, "+", "COUNT", REDIS_PAGE)
        if not entries:
            return
        yield entries
        if len(entries) < REDIS_PAGE:
            return
        start = "(" + entries[-1][0].decode()


def export_stream(
    client: AnyRedis | None,
    keys: Keys,
    name: str,
    request: ExportRequest,
    symbols: Sequence[str],
    lo_ms: int,
    hi_ms: int,
    out: Path,
) -> Path:
    """Write the alerts, anomalies or trades of these symbols with event time in [lo_ms, hi_ms) beside `out`."""
    path = sibling(out, name)
    if client is None:
        raise ExportError(f"--include {name}: needs Redis (alerts, anomalies and trades are not archived)")
    wanted = pa.array(sorted(symbols), pa.string())
    streams = {"trades": keys.tick_streams, "alerts": keys.alert_streams}.get(name, keys.anomaly_streams)
    tables = []
    for stream in streams:
        for entries in _stream_pages(raw_client(node_client(client, stream)), stream):  # a cluster: on its node
            table = _trades_table(entries) if name == "trades" else _events_table(entries)
            if table.num_rows:
                keep = pc.and_(
                    pc.is_in(table["symbol"], value_set=wanted),
                    pc.and_(pc.greater_equal(table["ts_ms"], lo_ms), pc.less(table["ts_ms"], hi_ms)),
                )
                tables.append(table.filter(keep))
    table = (
        pa.concat_tables(tables, promote_options="permissive")
        if tables
        else pa.table({"symbol": pa.array([], pa.string()), "ts_ms": pa.array([], pa.int64())})
    )
    if name != "trades" and len(streams) > 1:  # one stream per partition: merged in event time
        table = table.take(pc.sort_indices(table, [("ts_ms", "ascending")]))
    table = table.append_column(
        "ts", table["ts_ms"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms", tz=request.tz))
    ).drop_columns(["ts_ms"])
    about = {"query": request.describe(), "stream": name}
    table = table.replace_schema_metadata({b"tickerdash": json.dumps(about).encode()})
    writer = TableWriter(path, table.schema, request.format)
    try:
        writer.write(table)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


# columns of an alert or anomaly export kept as text, even where every value looks like a number (a trade id)
EVENT_TEXT_COLUMNS = frozenset({"entry_id", *ALERT_TEXT_FIELDS, *ANOMALY_TEXT_FIELDS})


def _events_table(entries: Sequence[Any]) -> pa.Table:
    """Alert or anomaly entries as columns of text (numbers where the field is numeric), with ts_ms."""
    frame = pd.DataFrame.from_records([text_fields(f) for _, f in entries])
    frame["entry_id"] = [as_text(eid) for eid, _ in entries]
    for column in frame.columns:
        if column not in EVENT_TEXT_COLUMNS:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.notna().sum() == frame[column].notna().sum():  # numeric throughout: keep as numbers
                frame[column] = numbers
    frame["ts_ms"] = pd.to_numeric(frame.get("ts", frame["entry_id"].str.split("-").str[0]), errors="coerce")
    frame = frame.dropna(subset=["ts_ms"]).drop(columns=["ts"], errors="ignore")
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    return pa.Table.from_pandas(frame, preserve_index=False)


def _trades_table(entries: Sequence[Any]) -> pa.Table:
    """Tick entries (either wire form) as columns symbol, ts_ms, price, size, side, trade_id, tick_id."""
    ticks = decode_entries(entries).ticks
    if not len(ticks):
        return pa.table({"symbol": pa.array([], pa.string()), "ts_ms": pa.array([], pa.int64())})
    tick_id = tick_ids(ticks.entry_ids, ticks.entry_of, ticks.row_in_entry)
    columns = {
        "symbol": pa.array(ticks.symbol, pa.string()),
        "ts_ms": pa.array(ticks.ts, pa.int64()),
        "price": ticks.price,
        "size": ticks.size,
        "side": pa.array(ticks.side, pa.int8()),
        "trade_id": ticks.trade_id if ticks.trade_id is not None else pa.nulls(len(ticks), pa.string()),
        "tick_id": pa.array(tick_id, pa.string()),
    }
    return pa.table(columns)
