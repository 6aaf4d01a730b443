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


def _number_texts(values: np.ndarray, *, nan_as_null: bool) -> pa.StringArray:
    """Each float as JSON text in one vectorised Arrow pass; NaN as null where allowed, else refused."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all() and (not nan_as_null or np.isinf(values).any()):
        raise ValueError("Out of range float values are not JSON compliant")
    text = pc.cast(pa.array(values), pa.string())
    if not finite.all():
        text = pc.if_else(pa.array(finite), text, "null")
    return text


def json_numbers(values: np.ndarray, *, nan_as_null: bool = False) -> list[str]:
    """Each float as JSON text, formatted in one vectorised pass (Arrow's shortest round-trip form).

    The text may differ from Python's repr (`1.7672256e+12`, `119200`) but parses back to exactly
    the same double. JSON has no NaN or infinity: NaN becomes null where allowed, anything else raises.
    """
    return _number_texts(values, nan_as_null=nan_as_null).to_pylist()


def json_keys(names: Sequence[str]) -> list[str]:
    """Each name as a JSON object key with its colon."""
    return [json.dumps(name) + ":" for name in names]


def encode_update_rows(symbol_json: Sequence[str], ts: np.ndarray, trades: np.ndarray, numbers: np.ndarray,
                       present: np.ndarray, indicator_names: Sequence[str],
                       bar_intervals: Sequence[str]) -> list[str]:  # fmt: skip
    """Each row's `SymbolUpdate` JSON (as `to_dict` gives it, key order included), built column-wise.

    Row k is a symbol (`symbol_json[k]` its JSON string) with `numbers[k]` = price, change_pct, volume,
    each indicator (NaN becomes null), then start, open, high, low, close, volume of each open bar of
    `bar_intervals`; `present[k, j]` says whether it has an open bar of interval j (if not, the interval
    is left out). Every number goes through one Arrow format and every row through one element-wise
    join: no per-symbol Python work but the final strings (a busy worker writes hundreds per round,
    dozens of rounds a second).
    """
    rows = len(ts)
    if rows == 0:
        return []
    head = 3 + len(indicator_names)
    fixed = np.column_stack([numbers[:, :3], np.where(np.repeat(present, 6, axis=1), numbers[:, head:], 0.0)])
    if not np.isfinite(fixed).all():  # only an indicator may be null; a missing bar's NaNs are left out
        raise ValueError("Out of range float values are not JSON compliant")
    text = _number_texts(np.ascontiguousarray(numbers.T).reshape(-1), nan_as_null=True)  # column after column

    def column(j: int) -> pa.StringArray:
        return text.slice(j * rows, rows)

    def integers(values: np.ndarray) -> pa.StringArray:
        return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())

    parts: list[Any] = ['{"symbol":', pa.array(list(symbol_json), pa.string()), ',"ts":', integers(ts),
                        ',"price":', column(0), ',"change_pct":', column(1), ',"trades":', integers(trades),
                        ',"volume":', column(2), ',"indicators":{']  # fmt: skip
    for k, key in enumerate(json_keys(indicator_names)):
        parts += [("," if k else "") + key, column(3 + k)]
    parts.append('},"bars":{')
    if bar_intervals:
        pieces = []
        for j, key in enumerate(json_keys(bar_intervals)):  # each with a leading comma; the first one goes
            first = head + 6 * j
            piece: list[Any] = ["," + key + "["]
            for m in range(6):
                piece += [column(first + m), "," if m < 5 else "]"]
            joined = pc.binary_join_element_wise(*piece, "")
            pieces.append(joined if present[:, j].all() else pc.if_else(pa.array(present[:, j]), joined, ""))
        parts.append(pc.utf8_ltrim(pc.binary_join_element_wise(*pieces, ""), characters=","))
    parts.append("}}")
    return pc.binary_join_element_wise(*parts, "").to_pylist()


def encode_updates(updates: list[SymbolUpdate]) -> str:
    """The `u` field of one live entry."""
    return json.dumps([u.to_dict() for u in updates], separators=(",", ":"), allow_nan=False)


def decode_updates(payload: bytes | str) -> list[SymbolUpdate]:
    """The updates of one live entry."""
    return [SymbolUpdate.from_dict(item) for item in json.loads(payload)]
