"""The slump-alert stage: fire, cooldown and re-arm per (rule, symbol), checked against a brute-force oracle."""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.analytics.stages.alerts.alert import Alert, actual_drop_pct
from tickerdash.analytics.stages.alerts.backtest import backtest
from tickerdash.analytics.stages.alerts.bad_prints import DEFAULT_BAND, DEFAULT_CONFIRM, BadPrintFilter
from tickerdash.analytics.stages.alerts.kernels import RangeMax, first_of_ranks, max_after, prefix_counts
from tickerdash.analytics.stages.alerts.rules import Rule, RuleError
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, limited
from tickerdash.simulator.scenarios import Scenario, Slump, Suspicious

DESIGN_ALERT_FIELDS = {"rule_id", "symbol", "ts", "price", "reference_price", "drop_pct", "window_s", "message"}


@dataclass(frozen=True)
class Firing:
    """What an alert says, comparable between the stage and the oracle."""

    row: int
    rule_id: str
    symbol: str
    ts: int
    price: float
    reference_price: float
    drop_pct: float


def good_prints(symbols: list[str], prices: list[float], band: float = 0.01, confirm: int = 3) -> list[bool]:
    """docs/design.md's bad-print filter the obvious way: per symbol, the last good price and the rejected run."""
    last_good: dict[str, float] = {}
    rejected_run: dict[str, list[float]] = {}
    good = []
    for symbol, price in zip(symbols, prices, strict=True):
        g = last_good.get(symbol)
        if g is None or g * (1 - band) <= price <= g * (1 + band):
            accepted = True
        else:
            run = rejected_run.setdefault(symbol, [])
            run.append(price)
            last = run[-confirm:]
            accepted = len(run) >= confirm and max(last) <= min(last) * (1 + band)
        if accepted:
            last_good[symbol] = price
            rejected_run[symbol] = []
        good.append(accepted)
    return good


def oracle(
    rules: list[Rule],
    symbols: list[str],
    prices: list[float],
    ts: list[int],
    active_from: dict[str, int] | None = None,
    band: float = 0.01,
    confirm: int = 3,
) -> list[Firing]:
    """docs/design.md semantics the slow, obvious way: O(n^2), one trade and one rule at a time.

    A rule sees its tape: the good trades only, or every trade with `include_bad_prints`; a trade off its
    tape does not exist for it. `active_from[rule_id]` is the row from which a rule is evaluated (it starts
    armed there), while every trade of its tape counts in every window.
    """
    active_from = active_from or {}
    good = good_prints(symbols, prices, band, confirm)
    clock: dict[tuple[bool, str], int] = {}  # keyed (tape, symbol): tape True is every trade, False the good ones
    history: dict[tuple[bool, str], list[tuple[int, float]]] = {}
    waiting_since: dict[tuple[str, str], int] = {}
    firings = []
    for i, (symbol, price, t_raw) in enumerate(zip(symbols, prices, ts, strict=True)):
        for tape in (True, False) if good[i] else (True,):
            clock[tape, symbol] = max(clock.get((tape, symbol), -1), t_raw)
            history.setdefault((tape, symbol), []).append((clock[tape, symbol], price))
        for rule in sorted(rules, key=lambda r: r.id):
            if not rule.enabled or rule.symbol not in ("*", symbol) or i < active_from.get(rule.id, 0):
                continue
            if not good[i] and not rule.include_bad_prints:
                continue
            tape = rule.include_bad_prints
            t = clock[tape, symbol]
            window_ms = round(rule.window_s * 1000)
            cooldown_ms = round((rule.window_s if rule.cooldown_s is None else rule.cooldown_s) * 1000)
            reference = max(p for (tj, p) in history[tape, symbol] if tj > t - window_ms)
            below = price <= reference * (1 - rule.drop_pct / 100)
            key = (rule.id, symbol)
            if key not in waiting_since:
                if below:
                    waiting_since[key] = t
                    drop = 100.0 * (1.0 - price / reference)
                    firings.append(Firing(i, rule.id, symbol, t_raw, price, reference, drop))
            elif t >= waiting_since[key] + cooldown_ms and not below:
                del waiting_since[key]
    return firings


def firings_of(alerts: list[Alert], row_offset: int = 0) -> list[Firing]:
    """The stage's alerts as Firings (rows shifted by where their batch started)."""
    return [
        Firing(a.row + row_offset, a.rule_id, a.symbol, a.ts, a.price, a.reference_price, a.drop_pct) for a in alerts
    ]


def run_stage(
    rules: list[Rule],
    symbols: list[str],
    prices: list[float],
    ts: list[int],
    cuts: Sequence[int] = (),
    restores: Collection[int] = (),
    band: float = DEFAULT_BAND,
    confirm: int = DEFAULT_CONFIRM,
) -> list[Firing]:
    """Feed the trades in batches split at `cuts`, checkpointing and restoring at `restores`."""
    stage = SlumpAlerts(rules, band=band, confirm=confirm)
    bounds = [0, *sorted(set(cuts)), len(prices)]
    out: list[Firing] = []
    for lo, hi in itertools.pairwise(bounds):
        if lo in restores:
            stage = SlumpAlerts.from_bytes(stage.to_bytes())
        if hi > lo:
            out += firings_of(
                stage.process(TickBatch.from_columns(symbols[lo:hi], prices[lo:hi], [1.0] * (hi - lo), ts[lo:hi])), lo
            )
    return out


def rule(
    rule_id: str = "r1",
    symbol: str = "AAPL",
    drop: float = 5.0,
    window_s: float = 60.0,
    cooldown_s: float | None = None,
    **more: object,
) -> Rule:
    """A rule with readable defaults."""
    return Rule(id=rule_id, symbol=symbol, drop_pct=drop, window_s=window_s, cooldown_s=cooldown_s, **more)  # type: ignore[arg-type]


def every_trade_rule(*args: object, **more: object) -> Rule:
    """A rule that sees every trade: the tests of window, cooldown and re-arm use one-trade moves, bad prints."""
    return rule(*args, include_bad_prints=True, **more)  # type: ignore[arg-type]


def one_symbol(prices: list[float], seconds: list[float], symbol: str = "AAPL") -> TickBatch:
    """Trades of one symbol at these event times (seconds from an arbitrary epoch start)."""
    start = 1_700_000_000_000
    return TickBatch.from_columns(
        [symbol] * len(prices), prices, [100.0] * len(prices), [start + round(s * 1000) for s in seconds]
    )


# -- random price paths -------------------------------------------------------------------------

SYMBOLS = ["A", "B", "C"]
GRID = [5.0, 8.0, 9.0, 9.5, 10.0, 10.5, 12.0, 0.1 * 97]
# prices a symbol cannot hold in one batch for the stage's integer scans: it falls back to a sparse table
WIDE_GRID = [*GRID, 1e-60, 1e-60 * 0.95, 2e60, 2e60 * 0.93]


@st.composite
def price_paths(draw: st.DrawFn, grid: Sequence[float] = tuple(GRID)) -> tuple[list[str], list[float], list[int]]:
    """Trades of a few symbols on a coarse price grid (ties and slumps are common), mostly in time order."""
    n = draw(st.integers(1, 90))
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=n, max_size=n))
    prices = draw(st.lists(st.sampled_from(grid), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(-2, 4), min_size=n, max_size=n))  # negative: an out-of-order trade
    ts, t = [], 1_000
    for step in steps:
        t = max(0, t + step)
        ts.append(t)
    return symbols, prices, ts


@st.composite
def rule_sets(draw: st.DrawFn, max_rules: int = 5) -> list[Rule]:
    """A few rules on one symbol or `*`, windows and cooldowns of a few ms."""
    count = draw(st.integers(1, max_rules))
    return [
        Rule(
            id=f"r{i}",
            symbol=draw(st.sampled_from([*SYMBOLS, "*"])),
            drop_pct=draw(st.sampled_from([1.0, 5.0, 10.0, 20.0, 50.0, 0.1 * 3])),
            window_s=draw(st.integers(1, 12)) / 1000,
            cooldown_s=draw(st.one_of(st.none(), st.integers(0, 15).map(lambda ms: ms / 1000))),
            enabled=draw(st.booleans()) or i == 0,
        )
        for i in range(count)
    ]


@st.composite
def long_cooldown_rule_sets(draw: st.DrawFn, max_rules: int = 5) -> list[Rule]:
    """Rules whose cooldown often outlasts a whole batch, as in production (minutes against a fraction of a second)."""
    count = draw(st.integers(1, max_rules))
    return [
        Rule(
            id=f"r{i}",
            symbol=draw(st.sampled_from([*SYMBOLS, "*"])),
            drop_pct=draw(st.sampled_from([1.0, 5.0, 10.0, 20.0, 50.0])),
            window_s=draw(st.integers(1, 120)) / 1000,
            cooldown_s=draw(st.one_of(st.none(), st.integers(0, 400).map(lambda ms: ms / 1000))),
        )
        for i in range(count)
    ]


OFF_MARKET = [-0.10, -0.05, -0.03, -0.02, 0.02, 0.03, 0.05, 0.10]  # an off-market print's distance, 2-10%
IN_BAND = [-0.008, -0.005, -0.002, 0.0, 0.002, 0.005, 0.008]  # a normal step, inside a 1% band


@st.composite
def tapes_with_bad_prints(draw: st.DrawFn) -> tuple[list[str], list[float], list[int]]:
    """A few symbols' random walks in small steps, with injected off-market prints: single trades, pairs,
    confirmed gaps (a new level held for a few trades), and fast slumps of in-band steps."""
    level = dict.fromkeys(SYMBOLS, 100.0)
    symbols: list[str] = []
    prices: list[float] = []
    ts: list[int] = []
    t = 1_000
    for _ in range(draw(st.integers(1, 30))):
        symbol = draw(st.sampled_from(SYMBOLS))
        kind = draw(st.sampled_from(["walk", "walk", "single", "pair", "gap", "slump"]))
        if kind == "walk":
            episode = []
            for step in draw(st.lists(st.sampled_from(IN_BAND), min_size=1, max_size=5)):
                level[symbol] *= 1 + step
                episode.append(level[symbol])
        elif kind == "single":
            episode = [level[symbol] * (1 + draw(st.sampled_from(OFF_MARKET)))]
        elif kind == "pair":
            off = draw(st.sampled_from(OFF_MARKET))
            episode = [level[symbol] * (1 + off), level[symbol] * (1 + off + draw(st.sampled_from(IN_BAND)))]
        elif kind == "gap":
            level[symbol] *= 1 + draw(st.sampled_from(OFF_MARKET))
            wiggles = draw(st.lists(st.sampled_from([0.0, 0.002, -0.004, 0.01]), min_size=1, max_size=5))
            episode = [level[symbol] * (1 + w) for w in wiggles]
        else:
            episode = []
            for _ in range(draw(st.integers(2, 12))):
                level[symbol] *= 0.992
                episode.append(level[symbol])
        for price in episode:
            t = max(0, t + draw(st.integers(-2, 4)))
            symbols.append(symbol)
            prices.append(price)
            ts.append(t)
    return symbols, prices, ts


@st.composite
def rules_for_bad_prints(draw: st.DrawFn, max_rules: int = 4) -> list[Rule]:
    """Rules of a few percent over windows of a few trades, some of them seeing every trade."""
    return [
        Rule(
            id=f"r{i}",
            symbol=draw(st.sampled_from([*SYMBOLS, "*"])),
            drop_pct=draw(st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0])),
            window_s=draw(st.integers(1, 40)) / 1000,
            cooldown_s=draw(st.one_of(st.none(), st.integers(0, 40).map(lambda ms: ms / 1000))),
            include_bad_prints=draw(st.booleans()),
        )
        for i in range(draw(st.integers(1, max_rules)))
    ]


class TestAgainstOracle:
    @settings(max_examples=400, deadline=None)
    @given(path=price_paths(), rules=rule_sets(), data=st.data())
    def test_firings_match_brute_force_for_any_batching_and_restores(self, path, rules, data) -> None:
        """Rows, reference prices and drops equal the oracle's for any batch split and checkpoint/restore points."""
        symbols, prices, ts = path
        cuts = data.draw(st.lists(st.integers(0, len(prices)), max_size=6))
        restores = set(data.draw(st.lists(st.sampled_from([0, *cuts]), max_size=3)))
        assert run_stage(rules, symbols, prices, ts, cuts, restores) == oracle(rules, symbols, prices, ts)

    @settings(max_examples=300, deadline=None)
    @given(path=price_paths(WIDE_GRID), rules=long_cooldown_rule_sets(), data=st.data())
    def test_long_cooldowns_and_wide_price_ranges_match_brute_force(self, path, rules, data) -> None:
        """Pairs that fire once per batch (closed form) and prices too far apart for the integer scans match too."""
        symbols, prices, ts = path
        cuts = data.draw(st.lists(st.integers(0, len(prices)), max_size=6))
        restores = set(data.draw(st.lists(st.sampled_from([0, *cuts]), max_size=3)))
        assert run_stage(rules, symbols, prices, ts, cuts, restores) == oracle(rules, symbols, prices, ts)

    @settings(max_examples=400, deadline=None)
    @given(path=tapes_with_bad_prints(), rules=rules_for_bad_prints(), data=st.data())
    def test_tapes_with_off_market_prints_match_brute_force_for_any_batching_and_restores(self, path, rules, data):
        """With single bad prints, pairs and confirmed gaps, default and opted-out rules fire as the oracle says,
        for any filter parameters, batch split and checkpoint/restore points (the filter's state included)."""
        symbols, prices, ts = path
        band = data.draw(st.sampled_from([0.01, 0.025, 0.06]))
        confirm = data.draw(st.sampled_from([1, 2, 3, 4]))
        cuts = data.draw(st.lists(st.integers(0, len(prices)), max_size=6))
        restores = set(data.draw(st.lists(st.sampled_from([0, *cuts]), max_size=3)))
        expected = oracle(rules, symbols, prices, ts, band=band, confirm=confirm)
        assert run_stage(rules, symbols, prices, ts, cuts, restores, band, confirm) == expected

    @settings(max_examples=300, deadline=None)
    @given(path=tapes_with_bad_prints(), data=st.data())
    def test_the_filter_flags_the_trades_the_naive_filter_flags_for_any_batching(self, path, data) -> None:
        """BadPrintFilter.accepted, batch by batch with restores in between, equals the naive per-trade loop."""
        symbols, prices, ts = path
        band = data.draw(st.sampled_from([0.01, 0.025, 0.06]))
        confirm = data.draw(st.sampled_from([1, 2, 3, 4, 7]))
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(prices) - 1)), max_size=6))))
        stage = SlumpAlerts(band=band, confirm=confirm)
        flags: list[bool] = []
        for lo, hi in itertools.pairwise([0, *cuts, len(prices)]):
            stage = SlumpAlerts.from_bytes(stage.to_bytes()) if data.draw(st.booleans()) else stage
            batch = TickBatch.from_columns(symbols[lo:hi], prices[lo:hi], [1.0] * (hi - lo), ts[lo:hi])
            flags += stage.bad_prints.accepted(batch).tolist()
        assert flags == good_prints(symbols, prices, band, confirm)

    @settings(max_examples=200, deadline=None)
    @given(path=price_paths(), rules=rule_sets(max_rules=3), data=st.data())
    def test_set_rules_keeps_unchanged_rules_and_restarts_changed_ones(self, path, rules, data) -> None:
        """Mid-stream rule changes: unchanged rules go on as before; added and edited rules start armed there."""
        symbols, prices, ts = path
        at = data.draw(st.integers(0, len(prices)))
        watcher = Rule(id="zz-watch-all", symbol="*", drop_pct=99.0, window_s=0.012)  # keeps every symbol's history
        edited = data.draw(st.sampled_from(rules))
        edited_later = edited.evolve(drop_pct=edited.drop_pct / 2, version=edited.version + 1, enabled=True)
        added = Rule(id="r-added", symbol=data.draw(st.sampled_from([*SYMBOLS, "*"])), drop_pct=5.0, window_s=0.004)
        before = [watcher, *rules]
        after = [watcher, *(edited_later if r.id == edited.id else r for r in rules), added]

        stage = SlumpAlerts(before)
        got = firings_of(stage.process(TickBatch.from_columns(symbols[:at], prices[:at], [1.0] * at, ts[:at])))
        stage.set_rules(after)
        rest = len(prices) - at
        got += firings_of(stage.process(TickBatch.from_columns(symbols[at:], prices[at:], [1.0] * rest, ts[at:])), at)

        expected = [f for f in oracle(before, symbols, prices, ts) if f.row < at]
        expected += [f for f in oracle(after, symbols, prices, ts, {edited.id: at, added.id: at}) if f.row >= at]
        # an unchanged rule's state carries across the change; the oracle for `after` must agree on it
        assert sorted(got, key=lambda f: (f.row, f.rule_id)) == expected


class TestHandMade:
    def test_scripted_slump_of_8_percent_in_60s_fires_a_5_percent_rule_once_at_the_first_trade_5_percent_down(
        self,
    ) -> None:
        """A steady 8% slide over 60 s fires a 5%/60 s rule exactly once, on the first trade at or below 95%."""
        seconds = list(range(0, 61))
        prices = [100.0 * (1 - 0.08 * s / 60) for s in seconds] + [92.0] * 30
        seconds += list(range(61, 91))
        alerts = SlumpAlerts([rule()]).process(one_symbol(prices, seconds))
        first_down = next(i for i, p in enumerate(prices) if p <= 100.0 * (1 - 5 / 100))
        assert [a.row for a in alerts] == [first_down]
        assert alerts[0].reference_price == 100.0
        assert alerts[0].drop_pct == pytest.approx(100 * (1 - prices[first_down] / 100.0))

    def test_a_trade_is_its_own_reference_so_a_lone_trade_never_fires(self) -> None:
        """The window includes the trade itself: a first trade (or a new high) cannot be below its reference."""
        assert SlumpAlerts([rule(drop=0.001)]).process(one_symbol([50.0, 60.0, 70.0], [0, 1, 2])) == []

    def test_window_is_open_at_its_start(self) -> None:
        """A trade exactly window_s earlier is out of the window (t - W, t]."""
        stage = SlumpAlerts([every_trade_rule(window_s=10)])
        assert stage.process(one_symbol([100.0, 90.0], [0, 10])) == []
        fired = SlumpAlerts([every_trade_rule(window_s=10)]).process(one_symbol([100.0, 90.0], [0, 9.999]))
        assert [a.row for a in fired] == [1]

    def test_a_slump_that_lasts_through_the_cooldown_fires_once(self) -> None:
        """While every trade stays below the threshold the rule stays silent, however long that is."""
        seconds = list(range(0, 300, 5))
        prices = [100.0] + [90.0 - 0.01 * s for s in seconds[1:]]
        alerts = SlumpAlerts([every_trade_rule(window_s=600, cooldown_s=30)]).process(one_symbol(prices, seconds))
        assert [a.row for a in alerts] == [1]

    def test_recovery_during_the_cooldown_does_not_rearm(self) -> None:
        """A bounce inside the cooldown does not count: re-arming needs a trade above the threshold after it."""
        # fire at 1 s, bounce at 2 s (inside a 30 s cooldown), fall again and stay down past the cooldown
        prices = [100.0, 90.0, 99.0, 90.0, 90.0, 89.0]
        seconds = [0, 1, 2, 3, 40, 45]
        alerts = SlumpAlerts([every_trade_rule(window_s=600, cooldown_s=30)]).process(one_symbol(prices, seconds))
        assert [a.row for a in alerts] == [1]

    def test_recovery_after_the_cooldown_rearms_and_the_next_slump_fires(self) -> None:
        """After the cooldown a trade above the threshold re-arms the rule; the next slump fires again."""
        prices = [100.0, 90.0, 99.0, 90.0]
        seconds = [0, 1, 40, 41]
        alerts = SlumpAlerts([every_trade_rule(window_s=600, cooldown_s=30)]).process(one_symbol(prices, seconds))
        assert [a.row for a in alerts] == [1, 3]

    def test_a_price_that_settles_lower_rearms_once_the_old_high_leaves_the_window(self) -> None:
        """A fresh window without the old high has a lower reference, so a flat price re-arms, then a new fall fires."""
        prices = [100.0, 90.0, 90.0, 90.0, 84.0]
        seconds = [0, 1, 30, 61, 62]
        alerts = SlumpAlerts([every_trade_rule(window_s=60, cooldown_s=0)]).process(one_symbol(prices, seconds))
        assert [a.row for a in alerts] == [1, 4]
        assert alerts[1].reference_price == 90.0

    def test_star_rule_fires_for_each_symbol_on_its_own(self) -> None:
        """A `*` rule keeps one state per symbol: a slump in each fires once for each."""
        batch = TickBatch.from_columns(["A", "B", "A", "B"], [10.0, 20.0, 9.0, 18.0], [1.0] * 4, [0, 0, 1, 1])
        alerts = SlumpAlerts([every_trade_rule(symbol="*")]).process(batch)
        assert [(a.symbol, a.row) for a in alerts] == [("A", 2), ("B", 3)]

    def test_disabled_rule_stays_silent(self) -> None:
        """A disabled rule is not evaluated at all."""
        alerts = SlumpAlerts([rule(enabled=False)]).process(one_symbol([100.0, 50.0], [0, 1]))
        assert alerts == []

    def test_out_of_order_trade_counts_at_the_symbols_clock(self) -> None:
        """A late trade lives at the symbol's latest time, so an old high it carries stays in later windows."""
        prices = [100.0, 100.0, 120.0, 100.0]
        seconds = [0, 100, 50, 150]  # the 120 arrives late: it counts as at 100 s
        alerts = SlumpAlerts([every_trade_rule(window_s=60, drop=10)]).process(one_symbol(prices, seconds))
        assert [(a.row, a.reference_price) for a in alerts] == [(3, 120.0)]

    def test_rules_with_the_same_window_fire_on_the_same_trade_in_id_order(self) -> None:
        """Several rules firing on one trade come out in rule id order, each with its own threshold."""
        rules = [every_trade_rule("b", drop=5), every_trade_rule("a", drop=8), every_trade_rule("c", drop=20)]
        alerts = SlumpAlerts(rules).process(one_symbol([100.0, 91.0], [0, 1]))
        assert [(a.rule_id, a.row) for a in alerts] == [("a", 1), ("b", 1)]

    def test_rows_of_unwatched_symbols_are_skipped(self) -> None:
        """A rule on one symbol never fires for another symbol's slump."""
        batch = TickBatch.from_columns(["MSFT", "AAPL", "MSFT"], [100.0, 100.0, 10.0], [1.0] * 3, [0, 0, 1])
        assert SlumpAlerts([rule(symbol="AAPL")]).process(batch) == []


class TestBadPrints:
    def test_a_lone_off_market_print_sets_no_high_and_fires_nothing(self) -> None:
        """A print 6% above the market is not the window's high: the next normal trade does not fire."""
        prices, seconds = [100.0, 100.2, 106.0, 100.1, 100.0], [0, 1, 2, 3, 4]
        assert SlumpAlerts([rule()]).process(one_symbol(prices, seconds)) == []
        included = SlumpAlerts([every_trade_rule()]).process(one_symbol(prices, seconds))
        assert [(a.row, a.reference_price) for a in included] == [(3, 106.0)]

    def test_an_off_market_pair_below_the_market_fires_nothing(self) -> None:
        """Two prints 6% below, then the market again: both are rejected, so no slump is seen."""
        prices, seconds = [100.0, 94.0, 94.1, 100.0], [0, 1, 2, 3]
        assert SlumpAlerts([rule()]).process(one_symbol(prices, seconds)) == []
        assert [a.row for a in SlumpAlerts([every_trade_rule()]).process(one_symbol(prices, seconds))] == [1]

    def test_a_real_gap_down_fires_on_its_confirming_trade(self) -> None:
        """Three trades that agree on a level 7% lower are a real gap: the third is accepted and fires."""
        prices, seconds = [100.0, 93.0, 93.2, 93.1, 93.0], [0, 1, 2, 3, 4]
        alerts = SlumpAlerts([rule()]).process(one_symbol(prices, seconds))
        assert [(a.row, a.reference_price) for a in alerts] == [(3, 100.0)]

    def test_confirmed_levels_fire_and_rearm_and_a_spike_between_them_counts_for_nothing(self) -> None:
        """Gaps confirmed on their third trade fire and re-arm the rule; the 106 print is no high for it."""
        prices = [100.0, 94.0, 94.2, 94.1, 99.0, 99.2, 99.1, 106.0, 93.0, 93.1, 93.2, 93.3]
        seconds = [0, 1, 2, 3, 70, 71, 72, 73, 74, 75, 76, 77]
        alerts = SlumpAlerts([rule(cooldown_s=30)]).process(one_symbol(prices, seconds))
        assert [(a.row, a.reference_price) for a in alerts] == [(3, 100.0), (10, 99.1)]
        included = SlumpAlerts([every_trade_rule(cooldown_s=30)]).process(one_symbol(prices, seconds))
        assert [(a.row, a.reference_price) for a in included] == [(1, 100.0), (8, 106.0)]

    def test_a_bad_value_for_the_option_is_refused_with_what_to_write(self) -> None:
        """include_bad_prints takes true or false only; the filter's parameters are checked too."""
        with pytest.raises(RuleError, match="include_bad_prints: must be true or false"):
            Rule.from_dict({"id": "x", "symbol": "A", "drop_pct": 5, "window_s": 60, "include_bad_prints": "yes"})
        with pytest.raises(ValueError, match="band"):
            BadPrintFilter(band=1.5)
        with pytest.raises(ValueError, match="confirm"):
            BadPrintFilter(confirm=0)

    def test_on_a_simulated_tape_the_rule_fires_in_the_slump_not_at_the_spikes(self) -> None:
        """The demo: off-market spikes and a scripted 8% slump over 60 s. A 5%-in-60 s rule fires once, in the
        slump; the same rule with bad prints included fires at spikes (a spike's trade, or a spike as its high)."""
        start_ms = 1_767_225_600_000
        config = MarketConfig(symbols=("AAPL", "MSFT"), seed=5, start_ms=start_ms, trades_per_s=20)
        scenario = Scenario(
            slumps=[Slump(symbol="AAPL", start_s=300, drop_pct=8, duration_s=60)],
            suspicious=Suspicious(rate=0.005, kinds={"spike": 1}),
        )
        pieces = list(limited(generate(config, scenario), Limits(count=40_000), config.start_ms))
        ticks = concat([t for t, _ in pieces])
        labelled = {trade_id for _, labels in pieces for trade_id in labels.trade_id.to_pylist()}
        spike = np.isin(np.array(ticks.trade_id.to_pylist(), object), list(labelled))
        spike_prices = set(ticks.price[spike & (ticks.symbol_idx == ticks.symbols.index("AAPL"))].tolist())
        assert ticks.ts.max() > start_ms + 400_000 and spike.sum() > 50  # the tape covers the slump and many spikes

        def at_a_spike(alert: Alert) -> bool:
            return bool(spike[alert.row]) or alert.reference_price in spike_prices

        demo = rule("demo-slump", symbol="AAPL", drop=5, window_s=60)
        fired = SlumpAlerts([demo]).process(ticks)
        assert len(fired) == 1 and not at_a_spike(fired[0])
        assert start_ms + 300_000 <= fired[0].ts <= start_ms + 360_000
        with_bad_prints = SlumpAlerts([demo.evolve(include_bad_prints=True)]).process(ticks)
        assert len(with_bad_prints) > 1 and all(at_a_spike(alert) for alert in with_bad_prints)


class TestStage:
    def test_alert_fields_are_the_design_fields_plus_tick_id(self) -> None:
        """`to_fields` gives the docs/design.md fields as strings, and reads back to the same alert."""
        alert = SlumpAlerts([every_trade_rule()]).process(one_symbol([100.0, 94.0], [0, 1]))[0]
        fields = alert.to_fields()
        assert set(fields) == DESIGN_ALERT_FIELDS
        assert all(isinstance(v, str) for v in fields.values())
        assert Alert.from_fields(fields) == replace(alert, row=-1, tick_id="")
        assert "AAPL" in alert.message and "6.00%" in alert.message

    def test_checkpoint_round_trip_is_bit_identical(self) -> None:
        """from_bytes(to_bytes()) restores a stage whose own checkpoint is the same bytes."""
        stage = SlumpAlerts([every_trade_rule(), every_trade_rule("r2", symbol="*", window_s=5)])
        fired = stage.process(TickBatch.from_columns(["AAPL", "X", "AAPL"], [100.0, 5.0, 90.0], [1.0] * 3, [0, 1, 2]))
        data = stage.to_bytes()
        assert SlumpAlerts.from_bytes(data).to_bytes() == data
        assert stage.waiting_pairs == len(fired) == 2  # both firings wait to re-arm, in the checkpoint

    def test_removing_and_readding_a_rule_restarts_it_armed(self) -> None:
        """set_rules without a rule forgets its state; adding it back lets the ongoing slump fire again."""
        stage = SlumpAlerts([every_trade_rule()])
        assert len(stage.process(one_symbol([100.0, 90.0], [0, 1]))) == 1
        stage.set_rules([])
        stage.set_rules([every_trade_rule()])
        assert [a.row for a in stage.process(one_symbol([89.0], [2]))] == [0]

    def test_backtest_equals_the_stage_over_the_same_batches(self) -> None:
        """`backtest` is the live stage run over batches (a disabled rule is tested as if enabled)."""
        batch = one_symbol([100.0, 90.0, 100.0, 80.0], [0, 1, 100, 101])
        assert [a.row for a in backtest(every_trade_rule(enabled=False), [batch])] == [1, 3]

    @settings(max_examples=100, deadline=None)
    @given(path=price_paths(), rules=rule_sets())
    def test_bulk_entry_fields_are_each_alerts_fields(self, path, rules) -> None:
        """The worker's `evaluate(batch).to_fields()` is every alert's `to_fields()`, tick ids and order included."""
        symbols, prices, ts = path
        n = len(prices)
        rows = np.arange(n, dtype=np.int32)
        batch = TickBatch.from_columns(symbols, prices, [1.0] * n, ts).with_origin(
            tuple(f"{i}-0" for i in range(n)), rows // 2, np.where(rows % 3 == 0, -1, rows % 2).astype(np.int32)
        )
        fired = SlumpAlerts(rules).evaluate(batch)
        fields = fired.to_fields()
        expected = [alert.to_fields() for alert in SlumpAlerts(rules).process(batch)]
        assert [list(f.items()) for f in fields] == [list(f.items()) for f in expected]
        flat = [[x for pair in f.items() for x in pair] for f in expected]
        assert [json.loads(entry) for entry in fired.to_entries_json()] == flat  # what the worker writes
        without_origin = SlumpAlerts(rules).evaluate(TickBatch.from_columns(symbols, prices, [1.0] * n, ts))
        assert [json.loads(entry) for entry in without_origin.to_entries_json()] == [
            [x for pair in f.items() for x in pair] for f in without_origin.to_fields()
        ]

    def test_entries_json_escapes_names_and_ids_as_json_does(self) -> None:
        """Quotes, backslashes, newlines and non-ASCII in a rule's name survive the pieced-together JSON."""
        tricky = every_trade_rule(rule_id="r.1-x_2", name='Dip "alert" \\ é ✓\n日本')
        fired = SlumpAlerts([tricky]).evaluate(one_symbol([100.0, 90.0], [0, 1]))
        assert len(fired) == 1
        assert json.loads(fired.to_entries_json()[0]) == [x for pair in fired.to_fields()[0].items() for x in pair]

    def test_alerts_carry_the_stream_id_of_their_trade(self) -> None:
        """An alert on a trade read from the stream names that trade's tick id."""
        batch = one_symbol([100.0, 90.0], [0, 1]).with_origin(
            ("5-0",), np.zeros(2, np.int32), np.arange(2, dtype=np.int32)
        )
        assert SlumpAlerts([every_trade_rule()]).process(batch)[0].tick_id == "5-0#1"


class TestHelpers:
    @settings(max_examples=200, deadline=None)
    @given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), data=st.data())
    def test_range_max_equals_max_of_the_slice(self, values, data) -> None:
        """RangeMax.query(lo, hi) is max(values[lo:hi+1]) for any ranges."""
        n = len(values)
        lo = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)))
        hi = np.array([data.draw(st.integers(int(a), n - 1)) for a in lo])
        expected = [max(values[a : b + 1]) for a, b in zip(lo, hi, strict=True)]
        assert RangeMax(np.array(values)).query(lo, hi).tolist() == expected

    @settings(max_examples=200, deadline=None)
    @given(
        factors=st.lists(st.floats(0.01, 0.999), min_size=0, max_size=30),
        ref=st.floats(1, 1000),
        price=st.floats(0.5, 1000),
    )
    def test_prefix_counts_counts_rules_the_price_is_below(self, factors, ref, price) -> None:
        """The binary search counts exactly the rules with price <= ref * factor (rules loosest first)."""
        ordered = np.sort(np.array(factors, np.float64))[::-1]
        count = prefix_counts(np.array([ref]), np.array([price]), ordered, np.array([0]), np.array([len(ordered)]))
        assert count[0] == sum(price <= ref * f for f in ordered)

    @settings(max_examples=200, deadline=None)
    @given(rows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), max_size=40))
    def test_first_of_ranks_finds_the_first_row_below_each_rank(self, rows) -> None:
        """Per segment and rank q, the first row below more than q rules, each once."""
        seg = np.array(sorted(s for s, _ in rows), np.int64)
        count = np.array([c for _, c in rows], np.int64)
        at, rank = first_of_ranks(seg, count)
        expected = {
            (int(next(i for i in range(len(seg)) if seg[i] == g and count[i] > q)), q)
            for g in set(seg.tolist())
            for q in range(int(count[seg == g].max()))
        }
        assert sorted(zip(at.tolist(), rank.tolist(), strict=True)) == sorted(expected)

    @settings(max_examples=200, deadline=None)
    @given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6), data=st.data())
    def test_max_after_is_the_highest_later_value_of_the_segment(self, lengths, data) -> None:
        """max_after(values, segment end)[i] is max(values[i+1:end]), -inf for a segment's last row."""
        values = np.array(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=sum(lengths), max_size=sum(lengths))))
        ends = np.repeat(np.cumsum(lengths), lengths)
        expected = [max(values[i + 1 : e], default=-np.inf) for i, e in enumerate(ends.tolist())]
        assert max_after(values, ends).tolist() == expected

    def test_actual_drop_is_percent_below_reference(self) -> None:
        """drop_pct of an alert is 100 * (1 - price / reference)."""
        assert actual_drop_pct(95.0, 100.0) == pytest.approx(5.0)
