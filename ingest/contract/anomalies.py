"""Anomaly entries of `<prefix>:anomalies`: one per flagged trade.

Fields, in this order: `symbol`, `ts` (epoch ms), `price`, `size` (floats written as `repr`),
`trade_id` (empty when the producer gave none), `tick_id` (the trade's tick id, see `tick_ids`; empty
when unknown), `score` (0-1, six decimals) and `reasons` (readable text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickerdash.ingest.contract.fields import EntryFields, text_fields, typed_event

ANOMALY_FIELDS = ("symbol", "ts", "price", "size", "trade_id", "tick_id", "score", "reasons")
ANOMALY_NUMBERS: dict[str, type] = {"ts": int, "price": float, "size": float, "score": float}
ANOMALY_TEXT_FIELDS = tuple(name for name in ANOMALY_FIELDS if name not in ANOMALY_NUMBERS)


def encode_anomaly(
    symbol: str, ts: int, price: float, size: float, trade_id: str, tick_id: str, score: float, reasons: str
) -> dict[str, str]:
    """One anomaly entry's fields."""
    return {
        "symbol": symbol,
        "ts": str(int(ts)),
        "price": repr(float(price)),
        "size": repr(float(size)),
        "trade_id": trade_id or "",
        "tick_id": tick_id,
        "score": f"{float(score):.6f}",
        "reasons": reasons,
    }


def encode_anomalies(
    symbol: Sequence[str],
    ts: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    trade_id: Sequence[str | None],
    tick_id: Sequence[str],
    score: np.ndarray,
    reasons: Sequence[str],
) -> list[dict[str, str]]:
    """Many anomaly entries' fields from columns (one per flagged trade, in order)."""
    return [
        {
            "symbol": s,
            "ts": str(t),
            "price": repr(p),
            "size": repr(q),
            "trade_id": trade or "",
            "tick_id": tick,
            "score": f"{value:.6f}",
            "reasons": why,
        }
        for s, t, p, q, trade, tick, value, why in zip(
            symbol,
            np.asarray(ts, np.int64).tolist(),
            np.asarray(price, np.float64).tolist(),
            np.asarray(size, np.float64).tolist(),
            trade_id,
            tick_id,
            np.asarray(score, np.float64).tolist(),
            reasons,
            strict=True,
        )
    ]


@dataclass(frozen=True, slots=True)
class AnomalyEntry:
    """One flagged trade as read from the anomalies stream."""

    symbol: str
    ts: int
    price: float
    size: float
    trade_id: str
    tick_id: str
    score: float
    reasons: str

    def to_fields(self) -> dict[str, str]:
        """The entry's fields, as `encode_anomaly` writes them."""
        return encode_anomaly(
            self.symbol, self.ts, self.price, self.size, self.trade_id, self.tick_id, self.score, self.reasons
        )


def decode_anomaly(fields: EntryFields) -> AnomalyEntry:
    """An anomaly entry's fields (bytes or text) as an `AnomalyEntry`; raises KeyError or ValueError if malformed."""
    text = text_fields(fields)
    return AnomalyEntry(
        symbol=text["symbol"],
        ts=int(text["ts"]),
        price=float(text["price"]),
        size=float(text["size"]),
        trade_id=text.get("trade_id", ""),
        tick_id=text.get("tick_id", ""),
        score=float(text["score"]),
        reasons=text.get("reasons", ""),
    )


def anomaly_event(entry_id: str, fields: EntryFields) -> dict[str, Any]:
    """An anomaly entry as plain data for a page: `id` plus its fields, numbers parsed where they parse."""
    return typed_event(entry_id, fields, ANOMALY_NUMBERS)
