"""Alert entries of `<prefix>:alerts`: one per firing of a slump-alert rule.

Fields, in this order: `rule_id`, `symbol`, `ts` (epoch ms), `price`, `reference_price`, `drop_pct`
(floats written as `repr`), `window_s` (written with `%g`), `message`, then `tick_id` (the trade's tick
id, see `tick_ids`) when the worker knows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tickerdash.ingest.contract.fields import EntryFields, text_fields, typed_event

ALERT_FIELDS = ("rule_id", "symbol", "ts", "price", "reference_price", "drop_pct", "window_s", "message", "tick_id")
# numeric fields and the type a reader parses each as; the others are text
ALERT_NUMBERS: dict[str, type] = {
    "ts": int,
    "price": float,
    "reference_price": float,
    "drop_pct": float,
    "window_s": float,
}
ALERT_TEXT_FIELDS = tuple(name for name in ALERT_FIELDS if name not in ALERT_NUMBERS)


def encode_alert(
    rule_id: str,
    symbol: str,
    ts: int,
    price: float,
    reference_price: float,
    drop_pct: float,
    window_s: float,
    message: str,
    tick_id: str = "",
) -> dict[str, str]:
    """One alert entry's fields (`tick_id` only when known)."""
    fields = {
        "rule_id": rule_id,
        "symbol": symbol,
        "ts": str(int(ts)),
        "price": repr(float(price)),
        "reference_price": repr(float(reference_price)),
        "drop_pct": repr(float(drop_pct)),
        "window_s": f"{float(window_s):g}",
        "message": message,
    }
    if tick_id:
        fields["tick_id"] = tick_id
    return fields


@dataclass(frozen=True, slots=True)
class AlertEntry:
    """One alert as read from, or written to, the alerts stream."""

    rule_id: str
    symbol: str
    ts: int
    price: float
    reference_price: float
    drop_pct: float
    window_s: float
    message: str = ""
    tick_id: str = ""

    def to_fields(self) -> dict[str, str]:
        """The entry's fields, as `encode_alert` writes them."""
        return encode_alert(**asdict(self))

    def to_json_dict(self) -> dict[str, Any]:
        """The alert as typed JSON data (webhook bodies, `--json` output)."""
        return asdict(self)


def decode_alert(fields: EntryFields) -> AlertEntry:
    """An alert entry's fields (bytes or text) as an `AlertEntry`; raises KeyError or ValueError if malformed."""
    text = text_fields(fields)
    return AlertEntry(
        rule_id=text["rule_id"],
        symbol=text["symbol"],
        ts=int(text["ts"]),
        price=float(text["price"]),
        reference_price=float(text["reference_price"]),
        drop_pct=float(text["drop_pct"]),
        window_s=float(text["window_s"]),
        message=text.get("message", ""),
        tick_id=text.get("tick_id", ""),
    )


def alert_event(entry_id: str, fields: EntryFields) -> dict[str, Any]:
    """An alert entry as plain data for a page: `id` plus its fields, numbers parsed where they parse."""
    return typed_event(entry_id, fields, ALERT_NUMBERS)
