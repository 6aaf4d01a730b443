"""The live view: the contract between the analytics worker (writer) and the dashboard gateway (reader).

Two keys per partition, both internal to Tickerdash (not part of the public contract in docs/design.md):
- `Keys.snapshot` (`<prefix>:_:snapshot`; `<prefix>:_:{p}:snapshot` with P > 1), a hash: symbol -> its
  latest `SymbolUpdate` (what a page shows on load);
- `Keys.live` (`<prefix>:_:live`; `<prefix>:_:{p}:live`), a stream: each entry has one field `u` (`LIVE_FIELD`),
  the `SymbolUpdate`s of every symbol of the partition that traded since the previous entry, each once, written at
  most `LIVE_HZ` times a second (so no symbol is updated more than `LIVE_HZ` times a second). Capped at
  about `LIVE_MAXLEN` entries.
Updates travel in a compact binary form (`encode_update_rows`, `decode_updates`): numbers are copied
as float64, not formatted, by the worker, which writes far more of them than any reader needs.
Alerts and anomalies are read by the gateway from their public streams.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LIVE_HZ = 20  # with the gateway's 20 frames a second: a trade is on the page ~100 ms after its XADD at worst
LIVE_MAXLEN = 10_000
LIVE_FIELD = "u"  # the one field of a live-feed entry: the encoded updates


@dataclass(frozen=True, slots=True)
class SymbolUpdate:
    """One symbol's state after its latest trade: price, change, indicators and its open bars.

    `bars` maps an interval name ('1s', '1m') to the open bar `[start_ms, open, high, low, close, volume]`.
    `overlays` maps an interval name to the latest closed bar's `{"start": start_ms, "count": n, <overlay
    field>: value, ...}` (the values its bar entry carries; `count`: how many bars of the symbol at that
    interval have closed so far), so a page extends its overlay lines when a bar closes, and knows from
    a count that grew by more than one that it missed a bar.
    `change_pct` is against the first price the worker saw for the symbol (its session open).
    """

    symbol: str
    ts: int
    price: float
    change_pct: float
    trades: int
    volume: float
    indicators: dict[str, float] = field(default_factory=dict)
    bars: dict[str, list[float]] = field(default_factory=dict)
    overlays: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, NaN replaced by None (JSON has no NaN)."""
        data: dict[str, Any] = {
            "symbol": self.symbol,
            "ts": self.ts,
            "price": self.price,
            "change_pct": self.change_pct,
            "trades": self.trades,
            "volume": self.volume,
            "indicators": {k: (None if v != v else v) for k, v in self.indicators.items()},
            "bars": self.bars,
        }
        if self.overlays:  # only a worker that computes overlays sends them
            data["overlays"] = {
                interval: {k: (None if v != v else v) for k, v in values.items()}
                for interval, values in self.overlays.items()
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolUpdate:
        """The inverse of `to_dict` (None indicators come back as NaN)."""
        indicators = {k: (float("nan") if v is None else float(v)) for k, v in data.get("indicators", {}).items()}
        return cls(
            symbol=str(data["symbol"]),
            ts=int(data["ts"]),
            price=float(data["price"]),
            change_pct=float(data["change_pct"]),
            trades=int(data["trades"]),
            volume=float(data["volume"]),
            indicators=indicators,
            bars={k: [float(x) for x in v] for k, v in data.get("bars", {}).items()},
            overlays={
                interval: {k: (float("nan") if v is None else float(v)) for k, v in values.items()}
                for interval, values in data.get("overlays", {}).items()
            },
        )


@dataclass(frozen=True, slots=True)
class UpdateLayout:
    """The columns of a row of updates: ts, price, change_pct, trades, volume, each indicator, then
    start, open, high, low, close, volume of each bar interval (NaN start: no open bar of it), then,
    when there are overlay fields, for each bar interval the latest closed bar's start, the count of
    closed bars, and each overlay's value (NaN start: no closed bar of it yet)."""

    indicators: tuple[str, ...]
    bars: tuple[str, ...]
    overlays: tuple[str, ...] = ()

    @property
    def columns(self) -> int:
        """Numbers per row."""
        closed = (2 + len(self.overlays)) * len(self.bars) if self.overlays else 0
        return 5 + len(self.indicators) + 6 * len(self.bars) + closed


_HEAD = struct.Struct("<4sHH")  # magic, layout length, symbol length
UPDATE_MAGIC = b"TDu1"


@functools.lru_cache(maxsize=64)
def _layout_bytes(layout: UpdateLayout) -> bytes:
    text: dict[str, Any] = {"indicators": layout.indicators, "bars": layout.bars}
    if layout.overlays:  # absent without overlays: such a layout reads as before
        text["overlays"] = layout.overlays
    return json.dumps(text, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=64)
def _layout_of(text: bytes) -> UpdateLayout:
    data = json.loads(text)
    return UpdateLayout(
        tuple(str(x) for x in data["indicators"]),
        tuple(str(x) for x in data["bars"]),
        tuple(str(x) for x in data.get("overlays", ())),
    )


@functools.lru_cache(maxsize=64)
def _prefixes(layout: UpdateLayout) -> dict[str, bytes]:
    """Symbol -> the head of its values in this layout (filled as symbols come)."""
    return {}


def encode_update_rows(layout: UpdateLayout, symbols: Sequence[str], rows: np.ndarray) -> list[bytes]:
    """Each symbol's update (row k of `rows`, columns as `layout` says) as one self-describing binary value.

    A value is magic, layout length, symbol length (little-endian "<4sHH"), the layout as JSON, the
    symbol in UTF-8, then the row as little-endian float64s; values concatenate into a feed entry. The
    worker writes hundreds of these per round, dozens of rounds a second, so the numbers are copied,
    never formatted: the dashboard gateway, which reads each symbol at most `LIVE_HZ` times a second,
    turns them into JSON for browsers.
    """
    if rows.shape != (len(symbols), layout.columns):
        raise ValueError(f"rows of shape {rows.shape} do not match {len(symbols)} symbols of {layout.columns} columns")
    body = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    width = 8 * layout.columns
    prefixes = _prefixes(layout)
    out = []
    for k, symbol in enumerate(symbols):
        prefix = prefixes.get(symbol)
        if prefix is None:
            layout_text, name = _layout_bytes(layout), symbol.encode()
            prefix = prefixes[symbol] = _HEAD.pack(UPDATE_MAGIC, len(layout_text), len(name)) + layout_text + name
        out.append(prefix + body[k * width : (k + 1) * width])
    return out


def encode_updates(updates: Sequence[SymbolUpdate]) -> bytes:
    """The updates as a live feed entry's `u` field (each also a valid snapshot value on its own)."""
    values = []
    for update in updates:
        fields = tuple(
            dict.fromkeys(k for values in update.overlays.values() for k in values if k not in ("start", "count"))
        )
        layout = UpdateLayout(tuple(update.indicators), tuple(update.bars), fields)
        row = [update.ts, update.price, update.change_pct, update.trades, update.volume, *update.indicators.values()]
        for name in layout.bars:
            row += update.bars[name]
        if fields:
            nan = float("nan")
            for name in layout.bars:
                closed = update.overlays.get(name, {})
                row += [closed.get("start", nan), closed.get("count", nan), *(closed.get(k, nan) for k in fields)]
        values += encode_update_rows(layout, [update.symbol], np.array([row], dtype=np.float64))
    return b"".join(values)


def decode_updates(payload: bytes | str) -> list[SymbolUpdate]:
    """The updates of a live feed entry or of a snapshot value (binary; JSON as older workers wrote it)."""
    if isinstance(payload, str) or payload[:1] in (b"[", b"{"):
        data = json.loads(payload)
        return [SymbolUpdate.from_dict(item) for item in (data if isinstance(data, list) else [data])]
    out = []
    at = 0
    try:
        while at < len(payload):
            magic, layout_length, name_length = _HEAD.unpack_from(payload, at)
            if magic != UPDATE_MAGIC:
                raise ValueError("no update starts here")
            at += _HEAD.size
            layout = _layout_of(bytes(payload[at : at + layout_length]))
            at += layout_length
            symbol = bytes(payload[at : at + name_length]).decode()
            at += name_length
            row = np.frombuffer(payload, "<f8", count=layout.columns, offset=at).tolist()
            at += 8 * layout.columns
            first_bar = 5 + len(layout.indicators)
            bars = {name: row[first_bar + 6 * j : first_bar + 6 * j + 6] for j, name in enumerate(layout.bars)}
            first_closed, names = first_bar + 6 * len(layout.bars), ("start", "count", *layout.overlays)
            closed: dict[str, dict[str, float]] = {}
            for j, name in enumerate(layout.bars if layout.overlays else ()):
                at_closed = first_closed + len(names) * j
                values = dict(zip(names, row[at_closed : at_closed + len(names)], strict=True))
                if values["start"] == values["start"]:  # NaN start: no closed bar of it yet
                    closed[name] = values
            out.append(
                SymbolUpdate(
                    symbol=symbol,
                    ts=int(row[0]),
                    price=row[1],
                    change_pct=row[2],
                    trades=int(row[3]),
                    volume=row[4],
                    indicators=dict(zip(layout.indicators, row[5:first_bar], strict=True)),
                    bars={name: bar for name, bar in bars.items() if bar[0] == bar[0]},  # NaN start: none open
                    overlays=closed,
                )
            )
    except (struct.error, ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"truncated or corrupt live update at byte {at}: {exc}") from exc
    return out


def live_entry_fields(payload: bytes) -> dict[str, bytes]:
    """The fields of one live-feed entry carrying these encoded updates (pieces joined by the writer)."""
    return {LIVE_FIELD: payload}


def live_entry_payload(fields: Mapping[Any, Any]) -> bytes | str | None:
    """The encoded updates of a live-feed entry (bytes or text field names), None when it has none."""
    return fields.get(LIVE_FIELD.encode()) or fields.get(LIVE_FIELD)
