"""Gap filling: a page's `bars` request to the gateway after a reconnect, and the reply from the bar stream.

The request (JSON text) is `{"type": "bars", "symbol", "interval", "since"}`; the reply is `{"type": "bars",
"symbol", "interval", "bars": [[start, o, h, l, c, v, vwap, trades], ...], "overlays": [{field: value, ...}
per bar], "open": [start, o, h, l, c, v] | null}` (`overlays`: the fields each bar entry carries after its
own seven).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tickerdash.dashboard.feed_reads import AsyncRedis
from tickerdash.ingest.contract.bars import decode_bar_entries
from tickerdash.ingest.contract.keys import Keys

INTERVALS = ("1s", "1m")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9./_\-]{1,16}$")
MAX_BARS_REPLY = 5_000


@dataclass(frozen=True, slots=True)
class BarsRequest:
    """A page asks for the closed bars of `symbol` at `interval` that start at or after `since_ms`."""

    symbol: str
    interval: str
    since_ms: int


def parse_bars_request(message: str | bytes) -> BarsRequest | None:
    """The page's `bars` request, or None when the message is not a well-formed one."""
    try:
        request = json.loads(message)
        if not isinstance(request, dict) or request.get("type") != "bars":
            return None
        symbol, interval = str(request["symbol"]), str(request["interval"])
        since = int(request.get("since") or 0)
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: "since": Infinity
        return None
    if not SYMBOL_PATTERN.match(symbol) or interval not in INTERVALS:
        return None
    return BarsRequest(symbol, interval, since)


async def bars_reply(
    client: AsyncRedis, keys: Keys, request: BarsRequest, latest: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """The reply to `request`: its closed bars from the bar stream, and the symbol's open bar from `latest`
    (the gateway's latest update per symbol)."""
    entries: Any = await client.xrange(
        keys.bars(request.interval, request.symbol), min=str(max(request.since_ms, 0)), max="+", count=MAX_BARS_REPLY
    )
    decoded = decode_bar_entries(entries)
    bars = decoded.rows()
    extra = [(name, column.tolist()) for name, column in decoded.extra.items()]
    overlays = [{name: values[k] for name, values in extra if values[k] == values[k]} for k in range(len(bars))]
    # looked up after the read, so that the open bar is no older than the closed bars sent with it
    open_bar = latest.get(request.symbol, {}).get("bars", {}).get(request.interval)
    return {
        "type": "bars",
        "symbol": request.symbol,
        "interval": request.interval,
        "bars": bars,
        "overlays": overlays,
        "open": open_bar,
    }
