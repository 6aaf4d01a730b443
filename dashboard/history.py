"""What a chart needs when it (re)loads, read from Redis: bars, the open bar, the symbol's markers.

The chart route (dashboard.app) calls these when the page picks a symbol or interval; live data
then arrives over the gateway's websocket, never through here. Each read touches one key, or one per
partition (the snapshots, pipelined per node), so the same calls serve a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tickerdash.analytics.stages.overlays.registry import overlay_lines
from tickerdash.dashboard.figures import BarHistory, Marker
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.bars import BAR_FLOAT_FIELDS, decode_bar_entries
from tickerdash.ingest.contract.fields import as_text, text_fields
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import SymbolUpdate, decode_updates

BACKFILL_BARS = 600
EVENTS_SCANNED = 2_000


def read_bars(client: AnyRedis, keys: Keys, symbol: str, interval: str, limit: int = BACKFILL_BARS) -> BarHistory:
    """The last `limit` closed bars of a symbol at an interval, oldest first, with their overlay values."""
    entries: Any = client.xrevrange(keys.bars(interval, symbol), count=limit) or []
    bars = decode_bar_entries(entries[::-1])
    history = BarHistory(start=bars.start_ms.tolist())
    for column in BAR_FLOAT_FIELDS:
        getattr(history, column).extend(bars.column(column).tolist())
    for line in overlay_lines():  # a field left out of an entry is not defined at that bar
        values = bars.extra.get(line.field)
        history.overlays[line.field] = (
            [None] * len(history.start)
            if values is None
            else [None if value != value else value for value in values.tolist()]
        )
    return replace(history, closed_until=history.start[-1] if history.start else None)


def read_snapshot(client: AnyRedis, keys: Keys) -> dict[str, SymbolUpdate]:
    """Every symbol's latest update, by symbol (from every partition's snapshot)."""
    pipe = client.pipeline(transaction=False)
    for snapshot in keys.snapshots:
        pipe.hgetall(snapshot)
    replies: list[Any] = pipe.execute()
    return {as_text(symbol): decode_updates(value)[0] for raw in replies for symbol, value in (raw or {}).items()}


def read_open_bar(client: AnyRedis, keys: Keys, symbol: str, interval: str) -> list[float] | None:
    """The symbol's open bar at the interval from the snapshot, if it has one."""
    raw: Any = client.hget(keys.snapshot(keys.partition_of(symbol)), symbol)
    if raw is None:
        return None
    return decode_updates(raw)[0].bars.get(interval)


def _recent_for_symbol(client: AnyRedis, stream: str, symbol: str) -> list[tuple[str, dict[str, str]]]:
    entries: Any = client.xrevrange(stream, count=EVENTS_SCANNED) or []
    out = []
    for entry_id, raw in reversed(entries):
        fields = text_fields(raw)
        if fields.get("symbol") == symbol:
            out.append((as_text(entry_id), fields))
    return out


def _float(fields: dict[str, Any], name: str) -> float:
    try:
        return float(fields[name])
    except (KeyError, ValueError):
        return float("nan")


def read_alert_markers(client: AnyRedis, keys: Keys, symbol: str) -> list[Marker]:
    """Markers for the symbol's recent alerts (from the last EVENTS_SCANNED entries of the stream)."""
    return [
        Marker(int(_float(f, "ts")), _float(f, "price"), f.get("message", "alert"))
        for _, f in _recent_for_symbol(client, keys.alerts(keys.partition_of(symbol)), symbol)
        if f.get("ts", "").isdigit()
    ]


def read_anomaly_markers(client: AnyRedis, keys: Keys, symbol: str) -> list[Marker]:
    """Markers for the symbol's recent anomalies, with score and reasons as hover text."""
    return [
        Marker(
            int(_float(f, "ts")),
            _float(f, "price"),
            f"score {_float(f, 'score'):.2f}: {f.get('reasons', '')}",
            score=_float(f, "score"),
        )
        for _, f in _recent_for_symbol(client, keys.anomalies(keys.partition_of(symbol)), symbol)
        if f.get("ts", "").isdigit()
    ]
