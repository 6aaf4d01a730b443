"""Draw docs/simulator_vs_lobster.png: simulated vs real (LOBSTER NASDAQ, 2012-06-21) one-minute return
distributions and intraday activity profiles.

    .venv/bin/pip install matplotlib   # docs only: not a runtime dependency
    .venv/bin/python docs/make_simulator_figure.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tickerdash.ingest.ticks import concat  # noqa: E402
from tickerdash.simulator.config import MarketConfig  # noqa: E402
from tickerdash.simulator.market import generate  # noqa: E402
from tickerdash.simulator.run import Limits, limited  # noqa: E402

SESSION_S = 23_400
BUCKET_S = 900  # activity profile in 15-minute buckets


def standardised_minute_returns(seconds: np.ndarray, price: np.ndarray, symbol: np.ndarray) -> np.ndarray:
    """Per symbol, log returns between the last trades of consecutive minutes, each symbol scaled to sd 1."""
    out = []
    for name in np.unique(symbol):
        rows = symbol == name
        minute = (seconds[rows] // 60).astype(np.int64)
        last = np.flatnonzero(np.diff(minute, append=minute[-1] + 1))
        returns = np.diff(np.log(price[rows][last]))[np.diff(minute[last]) == 1]
        if len(returns) > 30:
            out.append((returns - returns.mean()) / returns.std())
    return np.concatenate(out)


def activity_profile(seconds: np.ndarray) -> np.ndarray:
    """Share of the session's trades in each bucket, relative to an even spread (1 = average)."""
    counts = np.histogram(seconds, bins=SESSION_S // BUCKET_S, range=(0, SESSION_S))[0]
    return counts / counts.mean()


def real(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(returns, activity profile) of the LOBSTER sample: AAPL, AMZN, GOOG executions over one day."""
    frame = pd.read_csv(
        data / "lobster" / "lobster_trades_2012-06-21.csv", usecols=["symbol", "price", "sec_after_midnight_et"]
    )
    seconds = frame["sec_after_midnight_et"].to_numpy() - 34_200  # 09:30 ET is the open
    returns = standardised_minute_returns(seconds, frame["price"].to_numpy(), frame["symbol"].to_numpy())
    return returns, activity_profile(seconds)


def simulated(days: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(returns, activity profile) of a few simulated sessions of a 10-symbol market."""
    config = MarketConfig(universe=10, seed=7, start_ms=1_700_000_000_000, trades_per_s=40.0)
    count = int(days * config.trades_per_s * SESSION_S)
    ticks = concat([t for t, _ in limited(generate(config), Limits(count=count), config.start_ms)])
    into_day_ms = (ticks.ts - config.start_ms) % 86_400_000
    day = (ticks.ts - config.start_ms) // 86_400_000
    seconds = into_day_ms / 1000 + day * 100_000  # keep days apart so no minute spans the night
    returns = standardised_minute_returns(seconds, ticks.price, ticks.symbol_idx)
    return returns, activity_profile(into_day_ms / 1000)


def excess_kurtosis(x: np.ndarray) -> float:
    return float(np.mean(x**4) - 3)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "simulator_vs_lobster.png")
    args = parser.parse_args()

    real_returns, real_profile = real(args.data)
    sim_returns, sim_profile = simulated()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(-8, 8, 65)
    for returns, label, colour in (
        (real_returns, "LOBSTER (AAPL, AMZN, GOOG)", "tab:blue"),
        (sim_returns, "simulated (10 symbols, 3 sessions)", "tab:orange"),
    ):
        left.hist(
            returns,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.8,
            color=colour,
            label=f"{label}: excess kurtosis {excess_kurtosis(returns):.1f}",
        )
    grid = np.linspace(-8, 8, 400)
    left.plot(grid, np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi), "k--", lw=1, label="normal")
    left.set_yscale("log")
    left.set_ylim(1e-4, 1)
    left.set_xlabel("one-minute log return (standardised per symbol)")
    left.set_ylabel("density (log scale)")
    left.set_title("Return distribution: fat tails")
    left.legend(fontsize=8)

    hours = 9.5 + (np.arange(len(real_profile)) + 0.5) * BUCKET_S / 3600
    right.plot(hours, real_profile, "o-", color="tab:blue", label="LOBSTER")
    right.plot(hours, sim_profile, "s-", color="tab:orange", label="simulated")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_xlabel("time of day (ET, 15-minute buckets)")
    right.set_ylabel("trades relative to the day's average")
    right.set_title("Intraday activity: U-shape")
    right.legend(fontsize=8)

    fig.suptitle("Tickerdash simulator vs real NASDAQ executions (LOBSTER sample, 2012-06-21)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
