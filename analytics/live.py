"""The live view: the contract between the analytics worker (writer) and the dashboard gateway (reader).

Two keys, both internal to Tickerdash (not part of DESIGN.md's public contract):
- `<prefix>:_:snapshot`, a hash: symbol -> JSON of its latest `SymbolUpdate` (what a page shows on load);
- `<prefix>:_:live`, a stream: each entry has one field `u`, a JSON list of `SymbolUpdate`s, written by a
  worker at most `LIVE_HZ` times a second, holding each symbol that traded since its last entry once
  (so no symbol is updated more than `LIVE_HZ` times a second). Capped at about `LIVE_MAXLEN` entries.
Alerts and anomalies are read by the gateway from their public streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ingest.keys import Keys

LIVE_HZ = 10
LIVE_MAXLEN = 10_000


def snapshot_key(keys: Keys) -> str:
    """Hash of each symbol's latest update."""
    return keys.internal("snapshot")


def live_key(keys: Keys) -> str:
    """Stream of coalesced updates for the dashboard gateway."""
    return keys.internal("live")


@dataclass(frozen=True, slots=True)
class SymbolUpdate:
    """One symbol's state after its latest trade: price, change, indicators and its open bars.

    `bars` maps an interval name ('1s', '1m') to the open bar `[start_ms, open, high, low, close, volume]`.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain data, NaN replaced by None (JSON has no NaN)."""
        return {
            "symbol": self.symbol, "ts": self.ts, "price": self.price, "change_pct": self.change_pct,
            "trades": self.trades, "volume": self.volume,
            "indicators": {k: (None if v != v else v) for k, v in self.indicators.items()},
            "bars": self.bars,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolUpdate:
        """The inverse of `to_dict` (None indicators come back as NaN)."""
        indicators = {k: (float("nan") if v is None else float(v)) for k, v in data.get("indicators", {}).items()}
        return cls(
            symbol=str(data["symbol"]), ts=int(data["ts"]), price=float(data["price"]),
            change_pct=float(data["change_pct"]), trades=int(data["trades"]), volume=float(data["volume"]),
            indicators=indicators, bars={k: [float(x) for x in v] for k, v in data.get("bars", {}).items()},
        )  # fmt: skip


def encode_updates(updates: list[SymbolUpdate]) -> str:
    """The `u` field of one live entry."""
    return json.dumps([u.to_dict() for u in updates], separators=(",", ":"), allow_nan=False)


def decode_updates(payload: bytes | str) -> list[SymbolUpdate]:
    """The updates of one live entry."""
    return [SymbolUpdate.from_dict(item) for item in json.loads(payload)]
