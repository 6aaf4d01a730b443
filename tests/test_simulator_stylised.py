"""Stylised facts of real markets, measured on one million simulated trades."""

from __future__ import annotations

import numpy as np
import pytest

from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, limited

START = 1_700_000_000_000
BAR_MS = 60_000


@pytest.fixture(scope="module")
def million() -> tuple[MarketConfig, TickBatch]:
    """One million trades of 10 symbols at 40 trades/s: a little more than one 6.5-hour session."""
    config = MarketConfig(universe=10, seed=7, start_ms=START, trades_per_s=40.0)
    pieces = limited(generate(config), Limits(count=1_000_000), START)
    return config, concat([t for t, _ in pieces])


def minute_returns(config: MarketConfig, ticks: TickBatch) -> list[np.ndarray]:
    """Per symbol: standardised log returns between the last trades of consecutive one-minute bars."""
    out = []
    for symbol in range(len(ticks.symbols)):
        rows = ticks.symbol_idx == symbol
        bar = (ticks.ts[rows] - config.start_ms) // BAR_MS
        last_of_bar = np.flatnonzero(np.diff(bar, append=bar[-1] + 1))
        returns = np.diff(np.log(ticks.price[rows][last_of_bar]))[np.diff(bar[last_of_bar]) == 1]
        if len(returns) > 100:
            out.append((returns - returns.mean()) / returns.std())
    return out


def lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def test_returns_are_heavy_tailed(million: tuple[MarketConfig, TickBatch]) -> None:
    """One-minute returns have excess kurtosis above 3 (a normal distribution has 0)."""
    returns = np.concatenate(minute_returns(*million))
    assert len(returns) > 2_000
    assert np.mean(returns**4) - 3 > 3


def test_returns_are_uncorrelated_but_their_size_clusters(million: tuple[MarketConfig, TickBatch]) -> None:
    """Lag-1 autocorrelation is near zero for returns and clearly positive for absolute returns."""
    per_symbol = minute_returns(*million)
    raw = np.mean([lag1(r) for r in per_symbol])
    absolute = np.mean([lag1(np.abs(r)) for r in per_symbol])
    assert abs(raw) < 0.1
    assert absolute > 0.15 and absolute > 3 * abs(raw)


def test_activity_is_u_shaped_over_the_day(million: tuple[MarketConfig, TickBatch]) -> None:
    """The first and last half hours of the session trade more than the middle of the day."""
    config, ticks = million
    into_session = (ticks.ts - config.start_ms) % 86_400_000
    counts = np.histogram(into_session, bins=13, range=(0, config.session_s * 1000))[0]
    middle = np.median(counts[3:10])
    assert counts[0] > 1.5 * middle and counts[-1] > 1.3 * middle
    assert counts[6] < counts[0] and counts[6] < counts[-1]
