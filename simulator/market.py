"""The market model: a pure, seeded, vectorised generator of trade tapes (numpy in, numpy out, no I/O).

How a chunk of trades is made (all steps are array operations over the whole chunk):

1. A latent market state (two AR(1) components in trade time, via `scipy.signal.lfilter`) drives both
   activity and volatility, which gives bursty arrivals and volatility clustering together.
2. Arrivals run on a business clock: unit exponential gaps, shrunk when activity is high, are mapped to
   event time through the inverse of the cumulative intraday profile (U-shaped, with open/close
   surges); sessions repeat every 24 h, so the tape has overnight gaps unless `session_s` is a full day.
3. Each trade picks a symbol by activity weight; its log-return is Student-t scaled by the symbol's
   volatility and the market state, plus rare jumps; prices are the per-symbol cumulative sums
   (a grouped cumsum after a radix argsort), times scripted slump/rally overlays, rounded to the tick.
4. Sizes are Pareto-tailed with round-lot clustering; the aggressor side leans with the return; the
   two accounts come from a few market makers (large shares) and many Zipf-weighted small traders.
5. Scripted episodes (suspicious: labelled; hard negatives: not) are merged in at their event times.
   Their rows carry a log-price innovation (ramps move the price) and a print offset (fat-fingers
   print off-market without moving it). Labels are returned beside the ticks, never on them.

The same `MarketConfig` (seed included) and scenario give the same chunks, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from tickerdash.ingest.field_rules import SIDE_BUY, SIDE_SELL
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.episodes import KIND_NAMES, EpisodePlanner, InjectedRows
from tickerdash.simulator.ids import consecutive_ids, string_ids
from tickerdash.simulator.labels import LabelBatch
from tickerdash.simulator.sampling import T_DF, Categorical, preload, scipy_lfilter, student_t_table
from tickerdash.simulator.scenarios import Rally, Scenario, ScenarioError, Slump, resolve

DAY_MS = 86_400_000

# Latent state: (standard deviation, half-life in event seconds) of its two AR(1) components.
SLOW_STD, SLOW_HALF_LIFE_S = 0.45, 900.0
FAST_STD, FAST_HALF_LIFE_S = 0.35, 20.0
ACTIVITY_LOADS = (1.0, 1.0)  # how much each component speeds up trading
VOLATILITY_LOADS = (1.0, 0.6)  # how much each component raises per-trade volatility
JUMP_PROB, JUMP_SCALE = 1e-4, 10.0  # rare background jumps, in units of the per-trade volatility
SIDE_FOLLOWS_RETURN = 0.7  # probability the aggressor side has the sign of the trade's return
SIZE_TAIL = 1.45  # Pareto exponent of trade sizes
STATE_STEP = 16  # trades per step of the latent state


def _intraday_profile(points: int = 2049) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of the session, fraction of the day's expected trades by then): a U with open/close surges."""
    x = np.linspace(0.0, 1.0, points)
    intensity = (
        1.0
        + 2.2 * np.exp(-x / 0.07)
        + 1.6 * np.exp(-(1 - x) / 0.07)
        + 2.5 * np.exp(-x / 0.004)
        + 3.0 * np.exp(-(1 - x) / 0.004)
    )
    cumulative = np.concatenate([[0.0], np.cumsum((intensity[1:] + intensity[:-1]) / 2)])
    return x, cumulative / cumulative[-1]


def _ar1_coefficient(half_life_s: float, trades_per_s: float) -> float:
    return float(0.5 ** (1.0 / max(half_life_s * trades_per_s, 1.0)))


class Market:
    """The stateful generator behind `generate`: holds prices, clocks and pending episodes between chunks."""

    def __init__(self, config: MarketConfig, scenario: Scenario) -> None:
        self.config = config
        self.scenario = scenario
        self.symbols = config.tickers
        unknown = sorted(scenario.symbols_used() - set(self.symbols))
        if unknown:
            shown = ", ".join(self.symbols[:10]) + (" ..." if len(self.symbols) > 10 else "")
            raise ScenarioError(
                f"scenario names symbols that are not simulated: {', '.join(unknown)} (simulated: {shown})"
            )
        preload()  # before the first chunk: a producer's (or benchmark's) timed loop never imports scipy
        streams = np.random.SeedSequence(config.seed).spawn(4)
        params_rng, self.rng, self.episode_rng, self.account_rng = (np.random.default_rng(s) for s in streams)
        self._set_symbol_parameters(params_rng)
        self._set_accounts()
        n_sym = len(self.symbols)
        self.sym_dtype = np.int16 if n_sym < 2**15 else np.int32  # int16 sorts by radix: much faster
        self.log_price = np.log(self.price0)
        profile_x, profile_cum = _intraday_profile()
        # inverse of the cumulative profile on a uniform grid, so event times need no binary search
        self.profile_inverse = np.interp(np.linspace(0, 1, 2**16 + 2), profile_cum, profile_x)
        self.profile_inverse[-1] = 1.0
        self.trades_per_session = config.trades_per_s * config.session_s
        self.phi = np.array(
            [
                _ar1_coefficient(SLOW_HALF_LIFE_S, config.trades_per_s / STATE_STEP),
                _ar1_coefficient(FAST_HALF_LIFE_S, config.trades_per_s / STATE_STEP),
            ]
        )
        self.state_std = np.array([SLOW_STD, FAST_STD])
        self.state = self.rng.normal(0.0, self.state_std)  # start from the stationary distribution
        act, vol = np.array(ACTIVITY_LOADS), np.array(VOLATILITY_LOADS)
        self.activity_load, self.volatility_load = act, vol
        self.activity_var = float(np.sum((act * self.state_std) ** 2))
        self.volatility_var = float(np.sum((vol * self.state_std) ** 2))
        self.business_time = 0.0
        self.sequence = 0
        self.planner = EpisodePlanner(
            scenario.suspicious,
            scenario.hard_negatives,
            self.episode_rng,
            self.trader_sampler,
            self.sigma,
            config.market_makers,
        )
        self._overlays = self._build_overlays()

    # --- set-up ---------------------------------------------------------------------------------

    def _set_symbol_parameters(self, rng: np.random.Generator) -> None:
        n = len(self.symbols)
        self.price0 = np.exp(rng.normal(np.log(80.0), 0.8, n)).clip(0.5, 3_000.0)
        self.tick = np.where(self.price0 < 1.0, 0.0001, np.where(self.price0 > 1_000, 0.05, 0.01))
        rank = rng.permutation(n) + 1.0
        weights = rank**-0.8 * rng.uniform(0.7, 1.3, n)
        self.activity = weights / weights.sum()
        self.activity_cdf = np.cumsum(self.activity)
        self.activity_cdf[-1] = 1.0
        self.symbol_sampler = Categorical(self.activity)
        daily_vol = rng.uniform(0.012, 0.04, n)
        trades_per_day = self.config.trades_per_s * self.config.session_s * self.activity
        # per-trade volatility such that a session's variance is daily_vol**2 on average
        self.sigma = daily_vol / np.sqrt(np.maximum(trades_per_day, 1.0))

    def _set_accounts(self) -> None:
        makers, traders = self.config.market_makers, self.config.accounts
        names = [f"MM{i + 1:02d}" for i in range(makers)] + [f"T{i + 1:07d}" for i in range(traders)]
        self.account_names = pa.array(names, pa.string())
        zipf = 1.0 / (np.arange(traders) + 20.0) ** 1.1  # a few busy traders, a long tail of occasional ones
        zipf /= zipf.sum()
        makers_even = np.full(makers, 1.0 / makers)
        self.trader_sampler = Categorical(np.concatenate([np.zeros(makers), zipf]))
        # aggressors are mostly small traders; market makers sit on the passive side of most trades
        self.aggressor_sampler = Categorical(np.concatenate([0.12 * makers_even, 0.88 * zipf]))
        self.passive_sampler = Categorical(np.concatenate([0.6 * makers_even, 0.4 * zipf]))

    def _build_overlays(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per scripted slump/rally: (symbol index, event times ms, log-price shifts) for np.interp."""
        index = {s: i for i, s in enumerate(self.symbols)}
        start = self.config.start_ms
        overlays = []
        moves: list[tuple[Slump | Rally, float]] = [
            *((s, float(np.log1p(-s.drop_pct / 100))) for s in self.scenario.slumps),
            *((r, float(np.log1p(r.rise_pct / 100))) for r in self.scenario.rallies),
        ]
        for move, level in moves:
            t0 = start + move.start_s * 1000
            t1 = t0 + move.duration_s * 1000
            times, shifts = [t0, t1], [0.0, level]
            if move.recovery_s > 0:
                times.append(t1 + move.recovery_s * 1000)
                shifts.append(0.0)
            overlays.append((index[move.symbol], np.array(times, float), np.array(shifts)))
        return overlays

    # --- drawing helpers ------------------------------------------------------------------------

    def _sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Background sizes: Pareto tail (exp of an exponential), mostly round lots, some odd lots."""
        raw = np.minimum(55.0 * np.exp(rng.standard_exponential(n) / SIZE_TAIL), 500_000.0)
        pick = rng.random(n)
        round_lots = np.maximum(np.rint(raw / 100.0), 1.0) * 100.0
        odd = np.floor(1.0 + (pick - 0.72) * (99.0 / 0.18))  # reuses the draw: uniform on 1..99 in its band
        return np.where(pick < 0.72, round_lots, np.where(pick < 0.9, odd, np.maximum(np.rint(raw), 1.0)))

    def _event_times(self, business: np.ndarray) -> np.ndarray:
        """Event time (epoch ms) of business-clock readings, through the intraday profile."""
        day, into_day = np.divmod(business, self.trades_per_session)
        position = into_day * (len(self.profile_inverse) - 1) / self.trades_per_session
        cell = position.astype(np.int64)
        weight = position - cell
        x = self.profile_inverse[cell] * (1 - weight) + self.profile_inverse[cell + 1] * weight
        return (
            self.config.start_ms
            + day.astype(np.int64) * DAY_MS
            + (x * (self.config.session_s * 1000.0)).astype(np.int64)
        )

    # --- one chunk ------------------------------------------------------------------------------

    def next_chunk(self) -> tuple[TickBatch, LabelBatch]:
        """The next chunk of the tape, in event-time order, and the labels of its injected trades."""
        cfg, rng = self.config, self.rng
        n = cfg.chunk_size
        # 1. latent market state: two AR(1) components, continued from the previous chunk; they move
        #    slowly against the trade rate, so one step per STATE_STEP trades is plenty (and cheap)
        steps = -(-n // STATE_STEP)
        noise = rng.standard_normal((2, steps))
        components = np.empty((2, steps))
        for k in range(2):
            phi, std = self.phi[k], self.state_std[k]
            components[k], _ = scipy_lfilter()(
                [std * np.sqrt(1 - phi * phi)], [1.0, -phi], noise[k], zi=[phi * self.state[k]]
            )
            self.state[k] = components[k, -1]
        speed = np.repeat(np.exp(-self.activity_load @ components - self.activity_var / 2), STATE_STEP)[:n]
        volatility = np.repeat(np.exp(self.volatility_load @ components - self.volatility_var), STATE_STEP)[:n]
        # 2. arrivals on the business clock (mean one expected trade per gap), then event time
        business = self.business_time + np.cumsum(rng.standard_exponential(n) * speed)
        self.business_time = float(business[-1])
        ts = self._event_times(business)
        # 3. symbols and returns (Student-t by inverse-CDF table, plus rare jumps)
        sym = self.symbol_sampler.draw(rng, n).astype(self.sym_dtype)
        z = student_t_table(T_DF).draw(rng, n)
        jumps = np.flatnonzero(rng.random(n) < JUMP_PROB)
        z[jumps] += rng.laplace(0.0, JUMP_SCALE, len(jumps))
        innovation = self.sigma[sym] * volatility * z
        self.planner.apply_regimes(sym, ts, innovation)
        # 4. sizes, sides, accounts
        size = self._sizes(rng, n)
        coin = rng.random(n)
        side_of_return = np.where(z >= 0, SIDE_BUY, SIDE_SELL)
        side_of_coin = np.where(coin < (1 + SIDE_FOLLOWS_RETURN) / 2, SIDE_BUY, SIDE_SELL)
        side = np.where(coin < SIDE_FOLLOWS_RETURN, side_of_return, side_of_coin).astype(np.int8)
        buyer, seller = self._counterparties(n, side)
        # 5. scripted episodes due in this chunk's event-time window
        window_end = int(ts[-1])
        self.planner.plan(ts, sym)
        injected = self.planner.take_due(window_end)
        return self._assemble(ts, sym, innovation, size, side, buyer, seller, injected)

    def _counterparties(self, n: int, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buyer and seller accounts: aggressors are mostly small traders, passive sides mostly market makers."""
        aggressor = self.aggressor_sampler.draw(self.account_rng, n)
        passive = self.passive_sampler.draw(self.account_rng, n)
        total = self.config.market_makers + self.config.accounts
        passive = np.where(passive == aggressor, (passive + 1) % total, passive).astype(np.int32)
        is_buy = side == SIDE_BUY
        return np.where(is_buy, aggressor, passive), np.where(is_buy, passive, aggressor)

    def _assemble(
        self,
        ts: np.ndarray,
        sym: np.ndarray,
        innovation: np.ndarray,
        size: np.ndarray,
        side: np.ndarray,
        buyer: np.ndarray,
        seller: np.ndarray,
        injected: InjectedRows,
    ) -> tuple[TickBatch, LabelBatch]:
        """Merge injected rows into the background by event time; prices; halts; ids; labels."""
        n, k = len(ts), len(injected)
        # injected row j lands after every background trade at or before its time (ties: background first)
        inj_at = np.searchsorted(ts, injected.ts, side="right") + np.arange(k)
        is_bg = np.ones(n + k, bool)
        is_bg[inj_at] = False

        def merge(background: np.ndarray, extra: np.ndarray) -> np.ndarray:
            out = np.empty(n + k, np.result_type(background, extra))
            out[is_bg] = background
            out[inj_at] = extra
            return out

        ts_all = merge(ts, injected.ts)
        sym_all = merge(sym, injected.sym.astype(self.sym_dtype))
        step = merge(innovation, injected.innovation)
        # prices: grouped cumulative sum of log-returns per symbol, continued from the last chunk
        order = np.argsort(sym_all, kind="stable")
        running = np.cumsum(step[order])
        counts = np.bincount(sym_all, minlength=len(self.symbols))
        ends = np.cumsum(counts)
        before_group = np.concatenate([[0.0], running])[ends - counts]
        log_price = np.empty(n + k)
        log_price[order] = running - np.repeat(before_group, counts) + np.repeat(self.log_price, counts)
        traded = counts > 0
        self.log_price[traded] += running[ends[traded] - 1] - before_group[traded]
        for symbol, times, shifts in self._overlays:
            rows = sym_all == symbol
            log_price[rows] += np.interp(ts_all[rows].astype(float), times, shifts, left=0.0)
        price = np.exp(log_price)
        price[inj_at] *= 1.0 + injected.offset  # off-market prints: printed away, state untouched
        tick = self.tick[sym_all]
        price = np.round(np.maximum(np.rint(price / tick), 1.0) * tick, 4)

        keep = self._not_halted(sym_all, ts_all)
        labelled_rows = inj_at[injected.labelled]
        if keep is not None:
            new_row = np.cumsum(keep) - 1
            label_kept = keep[labelled_rows]
            labelled_rows = new_row[labelled_rows[label_kept]]
            labelled_from = np.flatnonzero(injected.labelled)[label_kept]
        else:
            labelled_from = np.flatnonzero(injected.labelled)

        def kept(column: np.ndarray) -> np.ndarray:
            return column if keep is None else column[keep]

        ts_all, sym_all, price = kept(ts_all), kept(sym_all), kept(price)
        size_all = kept(merge(size, injected.size))
        side_all = kept(merge(side, injected.side))
        buyer_all = kept(merge(buyer, injected.buyer))
        seller_all = kept(merge(seller, injected.seller))
        m = len(ts_all)
        self.sequence += m
        trade_id = consecutive_ids(self.config.id_prefix, self.sequence - m, m)
        ticks = TickBatch(
            symbols=self.symbols,
            symbol_idx=sym_all.astype(np.int32),
            price=price,
            size=size_all,
            ts=ts_all,
            side=side_all,
            trade_id=trade_id,
            buyer=self.account_names.take(pa.array(buyer_all)),
            seller=self.account_names.take(pa.array(seller_all)),
        )
        labels = LabelBatch(
            trade_id=trade_id.take(pa.array(labelled_rows, pa.int64())),
            kind=pa.array(KIND_NAMES, pa.string()).take(pa.array(injected.kind[labelled_from], pa.int8())),
            episode_id=string_ids(f"{self.config.id_prefix}e", injected.episode[labelled_from]),
            magnitude=injected.magnitude[labelled_from].astype(np.float64),
            row=labelled_rows.astype(np.int64),
        )
        return ticks, labels

    def _not_halted(self, sym: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
        """Mask of trades outside every halt (None when no halt touches this chunk)."""
        keep = None
        index = {s: i for i, s in enumerate(self.symbols)}
        for halt in self.scenario.halts:
            t0 = self.config.start_ms + halt.start_s * 1000
            t1 = t0 + halt.duration_s * 1000
            lo, hi = np.searchsorted(ts, [t0, t1])
            if hi > lo:
                keep = np.ones(len(ts), bool) if keep is None else keep
                keep[lo:hi] &= sym[lo:hi] != index[halt.symbol]
        return keep

    def chunks(self) -> Iterator[tuple[TickBatch, LabelBatch]]:
        """Chunks forever (the caller stops by count or duration)."""
        while True:
            yield self.next_chunk()


def scenario_of(scenario: Scenario | str | None) -> Scenario:
    """A Scenario from a Scenario, a preset name, a scenario file path, or None (background only)."""
    if scenario is None:
        return Scenario()
    if isinstance(scenario, str):
        return resolve(scenario)
    return scenario


def generate(config: MarketConfig, scenario: Scenario | str | None = None) -> Iterator[tuple[TickBatch, LabelBatch]]:
    """Endless chunks of (ticks in event-time order, labels of their injected suspicious trades)."""
    return Market(config, scenario_of(scenario)).chunks()
