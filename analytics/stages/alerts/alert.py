"""An alert: one firing of a rule on one trade, its readable message and its `tickerdash:alerts` entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from tickerdash.analytics.stages.alerts.rules import Rule, format_duration
from tickerdash.ingest.contract.tick_entries import as_text


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing of a rule on one trade; `row` is the trade's row in the batch it came in."""

    rule_id: str
    symbol: str
    ts: int
    price: float
    reference_price: float
    drop_pct: float
    window_s: float
    message: str
    tick_id: str = ""
    row: int = -1

    def to_fields(self) -> dict[str, str]:
        """The entry of `tickerdash:alerts` (docs/design.md fields, plus `tick_id` when known)."""
        fields = {
            "rule_id": self.rule_id,
            "symbol": self.symbol,
            "ts": str(self.ts),
            "price": repr(self.price),
            "reference_price": repr(self.reference_price),
            "drop_pct": repr(self.drop_pct),
            "window_s": f"{self.window_s:g}",
            "message": self.message,
        }
        if self.tick_id:
            fields["tick_id"] = self.tick_id
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Alert:
        """An alert read back from a stream entry (bytes or text fields)."""
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        return cls(
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

    def to_json_dict(self) -> dict[str, object]:
        """The alert as typed JSON data (webhook bodies, `--json` output)."""
        return {
            "rule_id": self.rule_id,
            "symbol": self.symbol,
            "ts": self.ts,
            "price": self.price,
            "reference_price": self.reference_price,
            "drop_pct": self.drop_pct,
            "window_s": self.window_s,
            "message": self.message,
            "tick_id": self.tick_id,
        }


def alert_message(rule: Rule, symbol: str, price: float, reference: float, drop_pct: float) -> str:
    """A readable sentence for an alert."""
    return _message(symbol, price, reference, drop_pct, message_tail(rule))


def message_tail(rule: Rule) -> str:
    """The end of a rule's alert messages: its window and its own words."""
    return f"within {format_duration(rule.window_s)} (rule {rule.title}: -{rule.drop_pct:g}%)"


MESSAGE_HEAD = "{} fell {:.2f}% to {:.10g} from {:.10g} "  # symbol, drop, price, reference


def _message(symbol: str, price: float, reference: float, drop_pct: float, tail: str) -> str:
    return MESSAGE_HEAD.format(symbol, drop_pct, price, reference) + tail


def actual_drop_pct(price: float, reference: float) -> float:
    """How far below the reference a price is, in percent (the `drop_pct` of an alert)."""
    return 100.0 * (1.0 - price / reference)


def entry_fields(entry: str) -> dict[str, str]:
    """One alert entry as `to_entries_json` writes it (a JSON array of field, value, ...) as a dict."""
    flat = json.loads(entry)
    return dict(zip(flat[::2], flat[1::2], strict=True))
