"""The real trade files beside the repo, read independently of Tickerdash's importers (pandas only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_lobster(shared_data: Path) -> pd.DataFrame:
    """All LOBSTER trades in file order, ts in epoch ms."""
    raw = pd.read_csv(shared_data / "lobster" / "lobster_trades_2012-06-21.csv")
    return pd.DataFrame(
        {
            "symbol": raw["symbol"],
            "price": raw["price"],
            "size": raw["size"].astype(float),
            "ts": raw["ts_ns"] // 1_000_000,
        }
    )


def read_binance(shared_data: Path) -> pd.DataFrame:
    """The Binance BTCUSDT trades in file order, ts in epoch ms, size = amount."""
    raw = pd.read_csv(shared_data / "binance" / "binance-futures_BTCUSDT_trades_2020-02-22.csv")
    return pd.DataFrame(
        {
            "symbol": raw["symbol"],
            "price": raw["price"].astype(float),
            "size": raw["amount"],
            "ts": raw["timestamp"] // 1000,
        }
    )
