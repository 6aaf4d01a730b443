"""The market model: determinism, event-time order, scripted episodes and their labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tickerdash.ingest.field_rules import SIDE_BUY, SIDE_SELL
from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.config import MarketConfig, preset_config
from tickerdash.simulator.labels import LabelBatch
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, limited
from tickerdash.simulator.scenarios import PRESETS, Halt, Scenario, ScenarioError, Slump, Suspicious

START = 1_700_000_000_000


def tape(
    config: MarketConfig, scenario: Scenario | str | None = None, count: int = 50_000
) -> tuple[TickBatch, list[LabelBatch]]:
    """The first `count` trades of a market and the labels of each piece."""
    pieces = list(limited(generate(config, scenario), Limits(count=count), config.start_ms))
    return concat([t for t, _ in pieces]), [lab for _, lab in pieces]


def all_labels(pieces: list[LabelBatch]) -> pa.Table:
    """Every label of a run as one table."""
    return pa.Table.from_batches([p.to_arrow() for p in pieces])


def small(**overrides: object) -> MarketConfig:
    """A small, slow market (5 symbols, 20 trades/s) whose episodes finish within a short run."""
    values: dict[str, object] = {
        "universe": 5,
        "seed": 11,
        "start_ms": START,
        "chunk_size": 4_096,
        "trades_per_s": 20.0,
    }
    values.update(overrides)
    return MarketConfig(**values)  # type: ignore[arg-type]


class TestDeterminism:
    def test_same_seed_gives_identical_ticks_and_labels(self) -> None:
        """Two runs with the same config and scenario produce the same arrow bytes, ticks and labels."""
        a, la = tape(small(), "evaluation", 30_000)
        b, lb = tape(small(), "evaluation", 30_000)
        assert a.to_arrow().equals(b.to_arrow())
        assert all_labels(la).equals(all_labels(lb))
        assert len(all_labels(la)) > 0

    def test_different_seeds_differ(self) -> None:
        """Another seed gives another tape (prices and symbols)."""
        a, _ = tape(small(seed=1), count=5_000)
        b, _ = tape(small(seed=2), count=5_000)
        assert a.symbols != b.symbols or not np.array_equal(a.price, b.price)

    def test_a_shorter_run_is_a_prefix_of_a_longer_one(self) -> None:
        """The count only cuts the tape: the first N trades never depend on how many follow."""
        short, _ = tape(small(), "evaluation", 7_000)
        long, _ = tape(small(), "evaluation", 20_000)
        assert short.to_arrow().equals(long.take(np.arange(7_000)).to_arrow())


class TestTape:
    def test_trades_are_in_global_event_time_order(self) -> None:
        """Timestamps never go backwards across symbols and chunks, and start at the configured start."""
        ticks, _ = tape(small(), "evaluation", 40_000)
        assert np.all(np.diff(ticks.ts) >= 0)
        assert ticks.ts[0] >= START

    def test_every_trade_has_id_accounts_and_side(self) -> None:
        """Trade ids are unique and seeded, buyer differs from seller, the side is buy or sell."""
        ticks, _ = tape(small(), "evaluation", 20_000)
        ids = ticks.trade_id.to_pylist()
        assert len(set(ids)) == len(ids) and ids[0] == "s11-0"
        assert ticks.buyer.null_count == 0 and ticks.seller.null_count == 0
        assert not pa.compute.any(pa.compute.equal(ticks.buyer, ticks.seller)).as_py()
        assert set(np.unique(ticks.side).tolist()) == {SIDE_SELL, SIDE_BUY}

    def test_prices_sit_on_the_tick_grid_and_sizes_cluster_on_round_lots(self) -> None:
        """Prices are positive multiples of 0.0001 at least; most sizes are multiples of 100."""
        ticks, _ = tape(small(), count=20_000)
        assert np.all(ticks.price > 0)
        assert np.allclose(np.rint(ticks.price * 10_000), ticks.price * 10_000)
        assert 0.6 < np.mean(ticks.size % 100 == 0) < 0.95

    def test_labels_never_ride_on_ticks(self) -> None:
        """The tick columns are exactly the public fields; labels name existing trades by id."""
        ticks, labels = tape(small(), "evaluation", 30_000)
        assert set(ticks.to_arrow().schema.names) == {
            "symbol",
            "price",
            "size",
            "ts",
            "side",
            "trade_id",
            "buyer",
            "seller",
        }
        label_ids = set(all_labels(labels).column("trade_id").to_pylist())
        assert label_ids and label_ids <= set(ticks.trade_id.to_pylist())

    def test_given_symbols_are_used_as_given(self) -> None:
        """--symbols names the market's tickers (normalised to upper case)."""
        ticks, _ = tape(small(symbols=("aapl", "MSFT")), count=2_000)
        assert ticks.symbols == ("AAPL", "MSFT")


class TestScriptedEpisodes:
    def test_an_eight_percent_slump_over_sixty_seconds_shows_in_prices(self) -> None:
        """Within 60 s of the slump start the price is ~8% below where it stood, and stays down."""
        config = MarketConfig(symbols=("AAPL", "MSFT"), seed=5, start_ms=START, trades_per_s=20)
        scenario = Scenario(slumps=[Slump(symbol="AAPL", start_s=1800, drop_pct=8, duration_s=60)])
        ticks, _ = tape(config, scenario, 120_000)
        aapl = ticks.symbol_idx == ticks.symbols.index("AAPL")
        ts, price = ticks.ts[aapl], ticks.price[aapl]
        assert ts[-1] > START + 2_500_000, "the run must cover the slump and what follows"
        before = price[(ts >= START + 1_790_000) & (ts < START + 1_800_000)].mean()
        after = price[(ts >= START + 1_860_000) & (ts < START + 1_870_000)].mean()
        assert after / before - 1 == pytest.approx(-0.08, abs=0.02)
        later = price[(ts >= START + 2_400_000) & (ts < START + 2_410_000)].mean()
        assert later / before < 0.95

    def test_a_halt_stops_trading_in_that_symbol_only(self) -> None:
        """No trade of the halted symbol inside the halt window; others trade on."""
        config = MarketConfig(symbols=("AAPL", "MSFT"), seed=5, start_ms=START, trades_per_s=20)
        scenario = Scenario(halts=[Halt(symbol="MSFT", start_s=1000, duration_s=200)])
        ticks, _ = tape(config, scenario, 60_000)
        assert ticks.ts[-1] > START + 1_300_000
        inside = (ticks.ts >= START + 1_000_000) & (ticks.ts < START + 1_200_000)
        names = ticks.symbol[inside]
        assert "MSFT" not in set(names) and "AAPL" in set(names)

    def test_wash_legs_match_in_size_and_alternate_one_account_pair(self) -> None:
        """Every wash episode trades one size back and forth between the same two accounts."""
        scenario = Scenario(suspicious=Suspicious(rate=0.01, kinds={"wash": 1}))
        ticks, labels = tape(small(), scenario, 40_000)
        table = all_labels(labels).to_pandas()
        assert (table["kind"] == "wash").all() and table["episode_id"].nunique() >= 5
        rows = {tid: i for i, tid in enumerate(ticks.trade_id.to_pylist())}
        for _, legs in table.groupby("episode_id"):
            idx = np.array([rows[t] for t in legs["trade_id"]])
            if len(idx) < 2:
                continue
            assert len(np.unique(ticks.size[idx])) == 1
            pairs = {
                frozenset((b, s))
                for b, s in zip(ticks.buyer.take(idx).to_pylist(), ticks.seller.take(idx).to_pylist(), strict=True)
            }
            assert len(pairs) == 1
            assert ticks.buyer[int(idx[0])] == ticks.seller[int(idx[1])]

    def test_ramp_is_buys_that_lift_the_price_then_a_dump_by_the_same_account(self) -> None:
        """One account buys (the price rises), then the same account sells its position."""
        scenario = Scenario(suspicious=Suspicious(rate=0.004, kinds={"ramp": 1}))
        ticks, labels = tape(small(), scenario, 150_000)
        table = all_labels(labels).to_pandas()
        rows = {tid: i for i, tid in enumerate(ticks.trade_id.to_pylist())}
        complete, lifted = 0, []
        for _, legs in table.groupby("episode_id"):
            idx = np.array(sorted(rows[t] for t in legs["trade_id"]))
            side = ticks.side[idx]
            buys, sells = idx[side == SIDE_BUY], idx[side == SIDE_SELL]
            if len(sells) < 2 or len(buys) < 8:
                continue  # cut by the end of the run
            complete += 1
            assert buys.max() < sells.min()
            assert set(ticks.buyer.take(buys).to_pylist()) == set(ticks.seller.take(sells).to_pylist())
            assert len(set(ticks.buyer.take(buys).to_pylist())) == 1
            rise = ticks.price[buys[-1]] / ticks.price[buys[0]] - 1
            lifted.append(rise / float(legs["magnitude"].iloc[0]))
        assert complete >= 10
        assert np.median(lifted) > 0.6  # single episodes can overlap others on the same symbol

    def test_off_market_prints_stand_apart_but_do_not_move_the_market(self) -> None:
        """A spike prints far from its neighbours, while the next trade is back near the market."""
        scenario = Scenario(suspicious=Suspicious(rate=0.005, kinds={"spike": 1}))
        ticks, labels = tape(small(universe=2), scenario, 40_000)
        table = all_labels(labels).to_pandas()
        assert len(table) > 50
        rows = {tid: i for i, tid in enumerate(ticks.trade_id.to_pylist())}
        deviations, recoveries = [], []
        for tid, magnitude in zip(table["trade_id"], table["magnitude"], strict=True):
            row = rows[tid]
            same = np.flatnonzero(ticks.symbol_idx == ticks.symbol_idx[row])
            pos = np.searchsorted(same, row)
            if pos == 0 or pos + 1 >= len(same):
                continue
            prev_price, next_price = ticks.price[same[pos - 1]], ticks.price[same[pos + 1]]
            deviations.append(abs(ticks.price[row] / prev_price - 1) / magnitude)
            recoveries.append(abs(next_price / prev_price - 1))
        assert np.median(deviations) == pytest.approx(1.0, abs=0.2)
        assert np.median(recoveries) < 0.005

    def test_evaluation_preset_has_enough_trades_and_about_half_a_percent_labelled(self) -> None:
        """The preset is 20 symbols and >= 200k trades with ~0.5% labelled trades of all four kinds."""
        preset = PRESETS["evaluation"]
        config = preset_config("evaluation", seed=0)
        ticks, labels = tape(config, "evaluation", preset.count)
        table = all_labels(labels)
        assert len(ticks.symbols) == 20 and len(ticks) >= 200_000
        assert 0.003 < len(table) / len(ticks) < 0.008
        assert set(table.column("kind").to_pylist()) == {"spike", "size", "wash", "ramp"}

    def test_a_scenario_naming_an_unknown_symbol_is_refused(self) -> None:
        """Scripting a symbol the market does not trade is an error that names it."""
        scenario = Scenario(slumps=[Slump(symbol="ZZZZ", start_s=1, drop_pct=5, duration_s=10)])
        with pytest.raises(ScenarioError, match="ZZZZ"):
            generate(small(symbols=("AAPL",)), scenario)
