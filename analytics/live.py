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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def json_numbers(values: np.ndarray, *, nan_as_null: bool = False) -> list[str]:
    """Each float as JSON text, formatted in one vectorised pass (Arrow's shortest round-trip form).

    The text may differ from Python's repr (`1.7672256e+12`, `119200`) but parses back to exactly
    the same double. JSON has no NaN or infinity: NaN becomes null where allowed, anything else raises.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all() and (not nan_as_null or np.isinf(values).any()):
        raise ValueError("Out of range float values are not JSON compliant")
    text = pc.cast(pa.array(values), pa.string())
    if not finite.all():
        text = pc.if_else(pa.array(finite), text, "null")
    return text.to_pylist()


def json_keys(names: Sequence[str]) -> list[str]:
    """Each name as a JSON object key with its colon."""
    return [json.dumps(name) + ":" for name in names]


def update_template(indicator_names: Sequence[str], bar_intervals: Sequence[str] = ()) -> str:
    """A %-template of one `SymbolUpdate`'s JSON: fill with the symbol's JSON string, ts, price, change_pct,
    trades, volume, each indicator, then six numbers (start, open, high, low, close, volume) per open bar."""
    def literal(key: str) -> str:  # a name is template text: a % in it must not read as a placeholder
        return key.replace("%", "%%")

    indicators = ",".join(literal(key) + "%s" for key in json_keys(indicator_names))
    bars = ",".join(literal(key) + "[%s,%s,%s,%s,%s,%s]" for key in json_keys(bar_intervals))
    return ('{"symbol":%s,"ts":%d,"price":%s,"change_pct":%s,"trades":%d,"volume":%s,'
            '"indicators":{' + indicators + '},"bars":{' + bars + '}}')  # fmt: skip


def encode_updates(updates: list[SymbolUpdate]) -> str:
    """The `u` field of one live entry."""
    return json.dumps([u.to_dict() for u in updates], separators=(",", ":"), allow_nan=False)


def decode_updates(payload: bytes | str) -> list[SymbolUpdate]:
    """The updates of one live entry."""
    return [SymbolUpdate.from_dict(item) for item in json.loads(payload)]
