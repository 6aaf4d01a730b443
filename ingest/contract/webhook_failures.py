"""Entries of the internal stream `Keys.webhook_failures`: webhook deliveries that failed after every retry.

Fields: `alert_id` (the alert's entry ID), `rule_id`, `url`, `attempts`, `error` (the last one), `ts`
(epoch ms of giving up) and `symbol`.
"""

from __future__ import annotations

WEBHOOK_FAILURE_FIELDS = ("alert_id", "rule_id", "url", "attempts", "error", "ts", "symbol")


def encode_webhook_failure(
    alert_id: str, rule_id: str, url: str, attempts: int, error: str, ts: int, symbol: str
) -> dict[str, str]:
    """One failure entry's fields."""
    return {
        "alert_id": alert_id,
        "rule_id": rule_id,
        "url": url,
        "attempts": str(attempts),
        "error": error,
        "ts": str(ts),
        "symbol": symbol,
    }
