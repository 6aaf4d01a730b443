"""An alert: one firing of a rule on one trade, its readable message and its `tickerdash:alerts` entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from tickerdash.analytics.stages.alerts.rules import Rule, format_duration
from tickerdash.ingest.contract.alerts import AlertEntry, decode_alert


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
        return self.entry().to_fields()

    def entry(self) -> AlertEntry:
        """The alert as the contract's `AlertEntry` (its stream entry, without the batch row)."""
        return AlertEntry(
            self.rule_id,
            self.symbol,
            self.ts,
            self.price,
            self.reference_price,
            self.drop_pct,
            self.window_s,
            self.message,
            self.tick_id,
        )

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Alert:
        """An alert read back from a stream entry (bytes or text fields)."""
        return cls(**asdict(decode_alert(fields)))

    def to_json_dict(self) -> dict[str, object]:
        """The alert as typed JSON data (webhook bodies, `--json` output)."""
        return self.entry().to_json_dict()


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
