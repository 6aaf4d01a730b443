"""Rolling source bars up to a coarser interval, their overlays, and the daily statistics of `--interval 1d` rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.overlays.stage import OverlayStage
from tickerdash.ingest.contract.bars import BAR_FIELDS, BAR_FLOAT_FIELDS


def rollup(bars: pa.Table, bucket_ms: np.ndarray) -> dict[str, np.ndarray]:
    """Bars sorted by (symbol, start) folded into one row per (symbol, bucket): OHLCV, VWAP, trades.

    Also returns `first` and `group` (each input bar's output row) for the daily statistics.
    """
    symbol_code = pc.index_in(bars["symbol"], value_set=pc.unique(bars["symbol"])).to_numpy()
    n = len(bucket_ms)
    new_group = np.ones(n, bool)
    new_group[1:] = (symbol_code[1:] != symbol_code[:-1]) | (bucket_ms[1:] != bucket_ms[:-1])
    first = np.flatnonzero(new_group)
    last = np.append(first[1:], n) - 1
    col = {name: bars[name].to_numpy() for name in BAR_FIELDS}
    volume = np.add.reduceat(col["volume"], first)
    notional = np.add.reduceat(col["vwap"] * col["volume"], first)
    return {
        "first": first,
        "group": np.cumsum(new_group) - 1,
        "start": bucket_ms[first],
        "open": col["open"][first],
        "high": np.maximum.reduceat(col["high"], first),
        "low": np.minimum.reduceat(col["low"], first),
        "close": col["close"][last],
        "volume": volume,
        "vwap": np.divide(notional, volume, out=np.full(len(first), np.nan), where=volume > 0),
        "trades": np.add.reduceat(col["trades"], first),
    }


def daily_statistics(close: np.ndarray, group: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Realised volatility and max drawdown per day group, from the closes of its source bars (in order)."""
    log_close = np.log(close)
    same_day = group[1:] == group[:-1]
    squared = np.where(same_day, np.diff(log_close) ** 2, 0.0)
    realized = np.sqrt(np.bincount(group[1:], weights=squared, minlength=groups))
    peak = pd.Series(close).groupby(group).cummax().to_numpy()
    drawdown = np.zeros(groups)
    np.maximum.at(drawdown, group, 1.0 - close / peak)
    return realized, drawdown


def rolled_overlays(
    overlays: OverlayStage, symbols: pa.Array | pa.ChunkedArray, rolled: dict[str, np.ndarray], interval_ms: int
) -> dict[str, np.ndarray]:
    """Every overlay field of rolled-up bars (sorted by symbol and start; NaN: not defined yet), each symbol's
    series continuing from the bars `overlays` advanced it over before (an earlier chunk's)."""
    names = pc.unique(symbols)
    codes = pc.index_in(symbols, value_set=names).to_numpy().astype(np.int64)
    bars = BarTable(
        tuple(names.to_pylist()),
        codes,
        np.full(len(codes), interval_ms, np.int64),
        start_ms=rolled["start"],
        trades=rolled["trades"],
        **{name: rolled[name] for name in BAR_FLOAT_FIELDS},
    )
    return overlays.update(bars)
