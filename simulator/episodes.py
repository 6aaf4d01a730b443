"""Scripted episodes: suspicious ones (labelled) and hard negatives (not), as rows waiting for their time.

Episodes start beside random background trades of the chunk being made, so they follow activity over the
day and across symbols; their rows wait in `pending` until a chunk's event time reaches them, and
volatility regimes (a hard negative with no rows of its own) scale the background returns for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tickerdash.ingest.field_rules import SIDE_BUY, SIDE_SELL
from tickerdash.simulator.sampling import Categorical
from tickerdash.simulator.scenarios import HARD_NEGATIVE_KINDS, SUSPICIOUS_KINDS, HardNegatives, Suspicious

TYPICAL_SIZE = 100.0  # median background trade (one round lot): the unit of size magnitudes
KIND_NAMES = (*SUSPICIOUS_KINDS, *HARD_NEGATIVE_KINDS)
KIND_CODE = {name: code for code, name in enumerate(KIND_NAMES)}


@dataclass(slots=True)
class InjectedRows:
    """Injected trades waiting for their event time (columnar, kept sorted by ts)."""

    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sym: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    innovation: np.ndarray = field(default_factory=lambda: np.zeros(0))  # added to the log price state
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))  # relative print offset, not state
    size: np.ndarray = field(default_factory=lambda: np.zeros(0))
    side: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    buyer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    seller: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    magnitude: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labelled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    COLUMNS = (
        "ts",
        "sym",
        "kind",
        "episode",
        "innovation",
        "offset",
        "size",
        "side",
        "buyer",
        "seller",
        "magnitude",
        "labelled",
    )

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def build(cls, **columns: np.ndarray | float | int | bool) -> InjectedRows:
        """Rows from columns, broadcasting scalars to the length of `ts`."""
        ts = np.asarray(columns["ts"], np.int64)
        rows = cls()
        for name in cls.COLUMNS:
            dtype = getattr(rows, name).dtype
            setattr(rows, name, np.broadcast_to(np.asarray(columns.get(name, 0), dtype), ts.shape).copy())
        return rows

    @classmethod
    def concat(cls, parts: list[InjectedRows]) -> InjectedRows:
        """All rows of `parts`, sorted by ts (stable, so earlier parts win ties)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        joined = cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in cls.COLUMNS))
        return joined.take(np.argsort(joined.ts, kind="stable"))

    def take(self, rows: np.ndarray | slice) -> InjectedRows:
        """A subset of rows."""
        return InjectedRows(*(getattr(self, n)[rows] for n in self.COLUMNS))


class EpisodePlanner:
    """Draws each chunk's episodes and holds their rows, and the volatility regimes, until they are due."""

    def __init__(
        self,
        suspicious: Suspicious | None,
        hard_negatives: HardNegatives | None,
        rng: np.random.Generator,
        trader_sampler: Categorical,
        sigma: np.ndarray,
        market_makers: int,
    ) -> None:
        self.suspicious, self.hard_negatives = suspicious, hard_negatives
        self.rng = rng
        self.trader_sampler = trader_sampler  # small traders, Zipf-weighted
        self.sigma = sigma  # per-trade volatility of each symbol
        self.market_makers = market_makers
        self.episodes = 0
        self.pending = InjectedRows()
        self.regimes: list[tuple[int, int, int, float]] = []  # (symbol, start ms, end ms, vol multiple)
        self._chunk_ts, self._chunk_sym = np.zeros(0, np.int64), np.zeros(0, np.int32)

    def take_due(self, until_ts: int) -> InjectedRows:
        """The pending rows at or before event time `until_ts` (the rest keep waiting)."""
        due = int(np.searchsorted(self.pending.ts, until_ts, side="right"))
        injected, self.pending = self.pending.take(slice(0, due)), self.pending.take(slice(due, None))
        return injected

    def apply_regimes(self, sym: np.ndarray, ts: np.ndarray, innovation: np.ndarray) -> None:
        """Scale returns of symbols inside a volatility regime (a hard negative: unusual but legitimate)."""
        self.regimes = [r for r in self.regimes if r[2] > ts[0]]
        for symbol, start, end, multiple in self.regimes:
            lo, hi = np.searchsorted(ts, [start, end])
            if hi > lo:
                window = slice(int(lo), int(hi))
                innovation[window] *= np.where(sym[window] == symbol, multiple, 1.0)

    def plan(self, ts: np.ndarray, sym: np.ndarray) -> None:
        """Start this chunk's episodes beside random background trades (so they follow activity over the
        day and across symbols); rows later than the chunk wait in `pending`."""
        self._chunk_ts, self._chunk_sym = ts, sym
        n = len(ts)
        parts = [self.pending]
        suspicious, negatives = self.suspicious, self.hard_negatives
        if suspicious is not None and suspicious.rate > 0:
            parts += self._suspicious(suspicious, n)
        if negatives is not None:
            parts += self._hard_negatives(negatives, n)
        self.pending = InjectedRows.concat(parts)

    def _episode_count(self, rate: float, n: int, share: float, rows_each: float) -> int:
        return int(self.rng.poisson(rate * n * share / rows_each))

    def _new_episodes(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode numbers, start times, symbols) of `count` new episodes."""
        rng = self.rng
        ids = np.arange(self.episodes, self.episodes + count, dtype=np.int64)
        self.episodes += count
        beside = rng.integers(0, len(self._chunk_ts), count)
        return ids, self._chunk_ts[beside], self._chunk_sym[beside].astype(np.int32)

    def _market_sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(np.rint(rng.lognormal(np.log(3.0), 0.6, n)), 1.0) * 100.0

    def _suspicious(self, spec: Suspicious, n: int) -> list[InjectedRows]:
        rng, total = self.rng, sum(spec.kinds.values())
        share = {kind: spec.kinds.get(kind, 0.0) / total for kind in SUSPICIOUS_KINDS}
        legs_mean = (spec.wash_legs.low + spec.wash_legs.high) / 2
        buys_mean = (spec.ramp_buys.low + spec.ramp_buys.high) / 2
        rows = []
        # fat-finger / off-market print: one trade far from the market; the market does not follow
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share["spike"], 1))
        pct = rng.uniform(spec.spike_pct.low, spec.spike_pct.high, len(ids)) / 100
        direction = np.where(rng.random(len(ids)) < 0.5, 1.0, -1.0)
        buyer, seller = self.trader_sampler.draw(rng, len(ids)), self.trader_sampler.draw(rng, len(ids))
        rows.append(
            InjectedRows.build(
                ts=starts,
                sym=symbols,
                kind=KIND_CODE["spike"],
                episode=ids,
                offset=direction * pct,
                size=self._market_sizes(rng, len(ids)),
                side=np.where(direction > 0, SIDE_BUY, SIDE_SELL),
                buyer=buyer,
                seller=np.where(seller == buyer, seller + 1, seller),
                magnitude=pct,
                labelled=True,
            )
        )
        # size spike: one trade many times the usual size, at the market price
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share["size"], 1))
        multiple = rng.uniform(spec.size_multiple.low, spec.size_multiple.high, len(ids))
        buyer, seller = self.trader_sampler.draw(rng, len(ids)), self.trader_sampler.draw(rng, len(ids))
        rows.append(
            InjectedRows.build(
                ts=starts,
                sym=symbols,
                kind=KIND_CODE["size"],
                episode=ids,
                size=np.rint(multiple) * TYPICAL_SIZE,
                side=np.where(rng.random(len(ids)) < 0.5, SIDE_BUY, SIDE_SELL),
                buyer=buyer,
                seller=np.where(seller == buyer, seller + 1, seller),
                magnitude=np.rint(multiple),
                labelled=True,
            )
        )
        # wash trades and ramps have several legs each: one small loop per episode (not per trade)
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share["wash"], legs_mean))
        for episode, start, symbol in zip(ids.tolist(), starts.tolist(), symbols.tolist(), strict=True):
            rows.append(self._wash(spec, episode, start, symbol))
        ids, starts, symbols = self._new_episodes(
            self._episode_count(spec.rate, n, share["ramp"], buys_mean + max(2.0, buys_mean / 3))
        )
        for episode, start, symbol in zip(ids.tolist(), starts.tolist(), symbols.tolist(), strict=True):
            rows.append(self._ramp(spec, episode, start, symbol))
        return rows

    def _wash(self, spec: Suspicious, episode: int, start: int, symbol: int) -> InjectedRows:
        """One account pair trading back and forth at one size, at the market price, within seconds."""
        rng = self.rng
        legs = int(rng.integers(int(spec.wash_legs.low), int(spec.wash_legs.high) + 1))
        first, second = self.trader_sampler.draw(rng, 2)
        second = second if second != first else first + 1
        multiple = float(np.rint(rng.uniform(spec.wash_size_multiple.low, spec.wash_size_multiple.high)))
        ts = start + np.cumsum(rng.integers(200, 5_000, legs)) - 200
        even = np.arange(legs) % 2 == 0
        return InjectedRows.build(
            ts=ts,
            sym=symbol,
            kind=KIND_CODE["wash"],
            episode=episode,
            size=multiple * TYPICAL_SIZE,
            side=np.where(even, SIDE_BUY, SIDE_SELL),
            buyer=np.where(even, first, second),
            seller=np.where(even, second, first),
            magnitude=multiple,
            labelled=True,
        )

    def _ramp(self, spec: Suspicious, episode: int, start: int, symbol: int) -> InjectedRows:
        """One account's burst of buys pushing the price up, then its dump of the whole position."""
        rng = self.rng
        buys = int(rng.integers(int(spec.ramp_buys.low), int(spec.ramp_buys.high) + 1))
        sells = max(2, buys // 3)
        rise = rng.uniform(spec.ramp_pct.low, spec.ramp_pct.high) / 100
        duration_ms = rng.uniform(spec.ramp_duration_s.low, spec.ramp_duration_s.high) * 1000
        buy_ts = start + np.sort(rng.uniform(0, duration_ms, buys)).astype(np.int64)
        dump_start = buy_ts[-1] + int(rng.uniform(2_000, 30_000))
        sell_ts = dump_start + np.sort(rng.uniform(0, duration_ms / 4, sells)).astype(np.int64)
        pumper = int(self.trader_sampler.draw(rng, 1)[0])
        others = self.trader_sampler.draw(rng, buys + sells)
        others = np.where(others == pumper, others + 1, others)
        step_up = np.log1p(rise) / buys * rng.uniform(0.6, 1.4, buys)
        step_up *= np.log1p(rise) / step_up.sum()  # the buys add up to exactly the drawn rise
        bought = np.maximum(np.rint(rng.lognormal(np.log(5.0), 0.5, buys)), 1.0) * 100.0
        dump_size = np.full(sells, np.ceil(bought.sum() / sells / 100.0) * 100.0)
        step_down = np.full(sells, -np.log1p(rise) * 0.9 / sells)  # the dump gives back most of the rise
        is_buy = np.arange(buys + sells) < buys
        return InjectedRows.build(
            ts=np.concatenate([buy_ts, sell_ts]),
            sym=symbol,
            kind=KIND_CODE["ramp"],
            episode=episode,
            innovation=np.concatenate([step_up, step_down]),
            size=np.concatenate([bought, dump_size]),
            side=np.where(is_buy, SIDE_BUY, SIDE_SELL),
            buyer=np.where(is_buy, pumper, others),
            seller=np.where(is_buy, others, pumper),
            magnitude=rise,
            labelled=True,
        )

    def _hard_negatives(self, spec: HardNegatives, n: int) -> list[InjectedRows]:
        rng, total = self.rng, sum(spec.kinds.values()) or 1.0
        rows = []
        # legitimate block trades: big, at the market, a market maker on one side
        share = spec.kinds.get("block", 0.0) / total
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share, 1))
        multiple = np.rint(rng.uniform(spec.block_size_multiple.low, spec.block_size_multiple.high, len(ids)))
        maker = rng.integers(0, self.market_makers, len(ids)).astype(np.int32)
        client = self.trader_sampler.draw(rng, len(ids))
        buy = rng.random(len(ids)) < 0.5
        rows.append(
            InjectedRows.build(
                ts=starts,
                sym=symbols,
                kind=KIND_CODE["block"],
                episode=ids,
                size=multiple * TYPICAL_SIZE,
                side=np.where(buy, SIDE_BUY, SIDE_SELL),
                buyer=np.where(buy, client, maker),
                seller=np.where(buy, maker, client),
                magnitude=multiple,
                labelled=False,
            )
        )
        # news: a permanent jump, then a burst of ordinary, more volatile trading
        share = spec.kinds.get("news", 0.0) / total
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share, 40))
        for episode, start, symbol in zip(ids.tolist(), starts.tolist(), symbols.tolist(), strict=True):
            burst = int(rng.integers(20, 60))
            jump = rng.uniform(spec.news_jump_pct.low, spec.news_jump_pct.high) / 100 * rng.choice([-1.0, 1.0])
            steps = rng.standard_normal(burst) * self.sigma[symbol] * 3.0
            steps[0] = np.log1p(jump)
            buyer, seller = self.trader_sampler.draw(rng, burst), self.trader_sampler.draw(rng, burst)
            rows.append(
                InjectedRows.build(
                    ts=start + np.sort(rng.integers(0, 90_000, burst)),
                    sym=symbol,
                    kind=KIND_CODE["news"],
                    episode=episode,
                    innovation=steps,
                    size=self._market_sizes(rng, burst),
                    side=np.where(steps >= 0, SIDE_BUY, SIDE_SELL),
                    buyer=buyer,
                    seller=np.where(seller == buyer, seller + 1, seller),
                    magnitude=abs(jump),
                    labelled=False,
                )
            )
        # volatility regimes: no rows of their own, they scale background returns for a while
        for _ in range(int(rng.poisson(spec.regimes_per_million * n / 1e6))):
            _, starts, symbols = self._new_episodes(1)
            symbol, begin = int(symbols[0]), int(starts[0])
            length_ms = int(rng.uniform(spec.regime_duration_s.low, spec.regime_duration_s.high) * 1000)
            vol_multiple = float(rng.uniform(spec.regime_vol_multiple.low, spec.regime_vol_multiple.high))
            self.regimes.append((symbol, begin, begin + length_ms, vol_multiple))
        return rows
