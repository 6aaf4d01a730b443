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

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickerdash.ingest.contract.labels import encode_labels
from tickerdash.ingest.ticks import SIDE_BUY, SIDE_SELL, TickBatch, TickError, normalise_symbol
from tickerdash.simulator.scenarios import (
    HARD_NEGATIVE_KINDS,
    PRESETS,
    SUSPICIOUS_KINDS,
    HardNegatives,
    Rally,
    Scenario,
    ScenarioError,
    Slump,
    Suspicious,
    resolve,
)

DAY_MS = 86_400_000
TYPICAL_SIZE = 100.0  # median background trade (one round lot): the unit of size magnitudes
KIND_NAMES = (*SUSPICIOUS_KINDS, *HARD_NEGATIVE_KINDS)
KIND_CODE = {name: code for code, name in enumerate(KIND_NAMES)}

# Latent state: (standard deviation, half-life in event seconds) of its two AR(1) components.
SLOW_STD, SLOW_HALF_LIFE_S = 0.45, 900.0
FAST_STD, FAST_HALF_LIFE_S = 0.35, 20.0
ACTIVITY_LOADS = (1.0, 1.0)  # how much each component speeds up trading
VOLATILITY_LOADS = (1.0, 0.6)  # how much each component raises per-trade volatility
T_DF = 4.0  # Student-t degrees of freedom of per-trade innovations
JUMP_PROB, JUMP_SCALE = 1e-4, 10.0  # rare background jumps, in units of the per-trade volatility
SIDE_FOLLOWS_RETURN = 0.7  # probability the aggressor side has the sign of the trade's return
SIZE_TAIL = 1.45  # Pareto exponent of trade sizes
STATE_STEP = 16  # trades per step of the latent state


def _now_ms() -> int:
    return int(time.time()) * 1000


class MarketConfig(BaseModel):
    """What market to simulate. Every field is part of the seed: change one and the tape changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] | None = Field(default=None, description="Tickers; None: `universe` generated ones.")
    universe: int = Field(default=10, ge=1, le=20_000, description="How many tickers to generate.")
    seed: int = Field(default=0, ge=0, lt=2**63)
    start_ms: int = Field(default_factory=_now_ms, ge=0, lt=2**53, description="Event time of the first open.")
    trades_per_s: float = Field(default=1_000.0, gt=0, le=1e9, description="Mean market-wide trade rate.")
    session_s: float = Field(default=23_400.0, ge=60, le=86_400, description="Trading session length.")
    accounts: int = Field(default=5_000, ge=2, le=10_000_000, description="Small traders in the population.")
    market_makers: int = Field(default=8, ge=1, le=1_000)
    chunk_size: int = Field(default=65_536, ge=256, le=4_000_000, description="Background trades per chunk.")

    @field_validator("symbols")
    @classmethod
    def _valid_symbols(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("symbols: give at least one ticker")
        try:
            cleaned = tuple(normalise_symbol(s) for s in value)
        except TickError as exc:
            raise ValueError(str(exc)) from None
        duplicates = sorted({s for s in cleaned if cleaned.count(s) > 1})
        if duplicates:
            raise ValueError(f"symbols: {', '.join(duplicates)} given more than once")
        return cleaned

    @model_validator(mode="after")
    def _universe_matches(self) -> MarketConfig:
        if self.symbols is not None:
            object.__setattr__(self, "universe", len(self.symbols))
        return self

    @property
    def tickers(self) -> tuple[str, ...]:
        """The traded symbols: the given ones, or `universe` made-up tickers derived from the seed."""
        return self.symbols if self.symbols is not None else generated_tickers(self.universe, self.seed)

    @property
    def id_prefix(self) -> str:
        """Prefix of trade and episode ids, so runs with different seeds never share an id."""
        return f"s{self.seed}-"


def generated_tickers(count: int, seed: int) -> tuple[str, ...]:
    """`count` distinct 3-4 letter tickers, the same for the same seed."""
    rng = np.random.default_rng([seed, 0x7111C])
    letters = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)
    names: dict[str, None] = {}
    while len(names) < count:
        need = count - len(names)
        lengths = rng.choice([3, 4], size=2 * need + 8, p=[0.4, 0.6])
        codes = letters[rng.integers(0, 26, size=(len(lengths), 4))]
        for code, length in zip(codes, lengths, strict=True):  # runs once per ticker, at start-up only
            names.setdefault(code[:length].tobytes().decode(), None)
    return tuple(list(names)[:count])


@dataclass(frozen=True, slots=True)
class LabelBatch:
    """Ground truth of injected suspicious trades, columnar; `row` is each trade's row in its TickBatch."""

    trade_id: pa.Array
    kind: pa.Array
    episode_id: pa.Array
    magnitude: np.ndarray  # float64, meaning by kind: spike = fraction off market; size/wash = size
    # multiple of a typical trade; ramp = fractional price rise of the pump
    row: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.magnitude.shape[0])

    @classmethod
    def empty(cls) -> LabelBatch:
        """No labels."""
        text = pa.array([], pa.string())
        return cls(text, text, text, np.zeros(0), np.zeros(0, np.int64))

    def take(self, rows: np.ndarray) -> LabelBatch:
        """The labels at these indices (or boolean mask)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        index = pa.array(rows, pa.int64())
        return LabelBatch(
            self.trade_id.take(index),
            self.kind.take(index),
            self.episode_id.take(index),
            self.magnitude[rows],
            self.row[rows],
        )

    def to_arrow(self) -> pa.RecordBatch:
        """The labels as an Arrow record batch (without the chunk-local row)."""
        return pa.RecordBatch.from_pydict(
            {
                "trade_id": self.trade_id,
                "kind": self.kind,
                "episode_id": self.episode_id,
                "magnitude": pa.array(self.magnitude, pa.float64()),
            }
        )

    def to_fields(self) -> list[dict[str, str]]:
        """One `tickerdash:labels` entry per label (wire strings)."""
        return encode_labels(
            self.trade_id.to_pylist(), self.kind.to_pylist(), self.episode_id.to_pylist(), self.magnitude
        )


def _string_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """`prefix` + decimal number, for a whole array at once."""
    digits = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, digits, "")


_FOUR_DIGITS = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), np.uint8).reshape(10_000, 4)


def consecutive_ids(prefix: str, first: int, count: int) -> pa.Array:
    """Ids `prefix` + str(first + i) for i < count, built from byte tables: the hot path of trade ids.

    Within a run of 10,000 consecutive numbers only the last four digits change, so each run is one
    head (formatted once) next to a slice of the four-digit table.
    """
    if first < 10_000:  # short numbers have no head; Arrow's own formatting handles the first few
        return _string_ids(prefix, np.arange(first, first + count, dtype=np.int64))
    blocks, offsets, position = [], [np.zeros(1, np.int32)], 0
    number, end = first, first + count
    while number < end:
        head_value, low = divmod(number, 10_000)
        run = min(10_000 - low, end - number)
        head = np.frombuffer(f"{prefix}{head_value}".encode(), np.uint8)
        block = np.empty((run, len(head) + 4), np.uint8)
        block[:, : len(head)] = head
        block[:, len(head) :] = _FOUR_DIGITS[low : low + run]
        blocks.append(block.reshape(-1))
        offsets.append(position + np.arange(1, run + 1, dtype=np.int32) * block.shape[1])
        position += block.size
        number += run
    data = np.concatenate(blocks) if blocks else np.zeros(0, np.uint8)
    return pa.StringArray.from_buffers(count, pa.py_buffer(np.concatenate(offsets)), pa.py_buffer(data))


class Categorical:
    """Draws category indices by inverse-CDF table lookup: one random integer and one gather per draw.

    The table has at least 16 entries per category (2**16 at least), so the weights are honoured to
    within 1/len(table); a category lighter than that is drawn rarely or never, which is fine here.
    """

    __slots__ = ("bits", "table")

    def __init__(self, weights: np.ndarray) -> None:
        self.bits = int(np.clip(np.ceil(np.log2(len(weights) * 16)), 16, 24))
        cdf = np.cumsum(weights / weights.sum())
        quantiles = (np.arange(2**self.bits) + 0.5) / 2**self.bits
        self.table = np.minimum(np.searchsorted(cdf, quantiles, side="right"), len(weights) - 1).astype(np.int32)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` category indices (int32)."""
        return self.table[rng.integers(0, 2**self.bits, n, dtype=np.uint32)]


class _QuantileTable:
    """Draws a continuous distribution by inverse-CDF table lookup (2**16 cells, midpoint quantiles)."""

    __slots__ = ("table",)

    def __init__(self, quantiles: np.ndarray) -> None:
        self.table = quantiles

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` draws (float64)."""
        return self.table[rng.integers(0, len(self.table), n, dtype=np.uint32)]


@functools.cache
def _student_t_table(df: float, cells: int = 2**16) -> _QuantileTable:
    """Unit-variance Student-t quantiles: its tails reach the 1/(2 cells) quantile (about 30 sd at df 4)."""
    from scipy.stats import t as student_t

    quantiles = student_t.ppf((np.arange(cells) + 0.5) / cells, df) * np.sqrt((df - 2) / df)
    return _QuantileTable(quantiles.astype(np.float64))


@functools.cache
def _lfilter() -> Callable[..., Any]:
    # scipy.signal and scipy.stats cost 1-2 s to import: built on first use, not when a command imports this
    from scipy.signal import lfilter

    return lfilter


def preload() -> None:
    """Import scipy and build the Student-t table now, so a simulator pays for them before it generates."""
    _lfilter()
    _student_t_table(T_DF)


@dataclass(slots=True)
class _Rows:
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
    def build(cls, **columns: np.ndarray | float | int | bool) -> _Rows:
        """Rows from columns, broadcasting scalars to the length of `ts`."""
        ts = np.asarray(columns["ts"], np.int64)
        rows = cls()
        for name in cls.COLUMNS:
            dtype = getattr(rows, name).dtype
            setattr(rows, name, np.broadcast_to(np.asarray(columns.get(name, 0), dtype), ts.shape).copy())
        return rows

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        """All rows of `parts`, sorted by ts (stable, so earlier parts win ties)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        joined = cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in cls.COLUMNS))
        return joined.take(np.argsort(joined.ts, kind="stable"))

    def take(self, rows: np.ndarray | slice) -> _Rows:
        """A subset of rows."""
        return _Rows(*(getattr(self, n)[rows] for n in self.COLUMNS))


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
        self.episodes = 0
        self.pending = _Rows()
        self.regimes: list[tuple[int, int, int, float]] = []  # (symbol, start ms, end ms, vol multiple)
        self._chunk_ts, self._chunk_sym = np.zeros(0, np.int64), np.zeros(0, np.int32)
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

    def _traders(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Account indices of small traders, Zipf-weighted."""
        return self.trader_sampler.draw(rng, n)

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
            components[k], _ = _lfilter()(
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
        z = _student_t_table(T_DF).draw(rng, n)
        jumps = np.flatnonzero(rng.random(n) < JUMP_PROB)
        z[jumps] += rng.laplace(0.0, JUMP_SCALE, len(jumps))
        innovation = self.sigma[sym] * volatility * z
        self._apply_regimes(sym, ts, innovation)
        # 4. sizes, sides, accounts
        size = self._sizes(rng, n)
        coin = rng.random(n)
        side_of_return = np.where(z >= 0, SIDE_BUY, SIDE_SELL)
        side_of_coin = np.where(coin < (1 + SIDE_FOLLOWS_RETURN) / 2, SIDE_BUY, SIDE_SELL)
        side = np.where(coin < SIDE_FOLLOWS_RETURN, side_of_return, side_of_coin).astype(np.int8)
        buyer, seller = self._counterparties(n, side)
        # 5. scripted episodes due in this chunk's event-time window
        window_end = int(ts[-1])
        self._plan_episodes(ts, sym)
        due = int(np.searchsorted(self.pending.ts, window_end, side="right"))
        injected, self.pending = self.pending.take(slice(0, due)), self.pending.take(slice(due, None))
        return self._assemble(ts, sym, innovation, size, side, buyer, seller, injected)

    def _counterparties(self, n: int, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buyer and seller accounts: aggressors are mostly small traders, passive sides mostly market makers."""
        aggressor = self.aggressor_sampler.draw(self.account_rng, n)
        passive = self.passive_sampler.draw(self.account_rng, n)
        total = self.config.market_makers + self.config.accounts
        passive = np.where(passive == aggressor, (passive + 1) % total, passive).astype(np.int32)
        is_buy = side == SIDE_BUY
        return np.where(is_buy, aggressor, passive), np.where(is_buy, passive, aggressor)

    def _apply_regimes(self, sym: np.ndarray, ts: np.ndarray, innovation: np.ndarray) -> None:
        """Scale returns of symbols inside a volatility regime (a hard negative: unusual but legitimate)."""
        self.regimes = [r for r in self.regimes if r[2] > ts[0]]
        for symbol, start, end, multiple in self.regimes:
            lo, hi = np.searchsorted(ts, [start, end])
            if hi > lo:
                window = slice(int(lo), int(hi))
                innovation[window] *= np.where(sym[window] == symbol, multiple, 1.0)

    def _assemble(
        self,
        ts: np.ndarray,
        sym: np.ndarray,
        innovation: np.ndarray,
        size: np.ndarray,
        side: np.ndarray,
        buyer: np.ndarray,
        seller: np.ndarray,
        injected: _Rows,
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
            episode_id=_string_ids(f"{self.config.id_prefix}e", injected.episode[labelled_from]),
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

    # --- scripted episodes ----------------------------------------------------------------------

    def _plan_episodes(self, ts: np.ndarray, sym: np.ndarray) -> None:
        """Start this chunk's episodes beside random background trades (so they follow activity over the
        day and across symbols); rows later than the chunk wait in `pending`."""
        self._chunk_ts, self._chunk_sym = ts, sym
        n = len(ts)
        parts = [self.pending]
        suspicious, negatives = self.scenario.suspicious, self.scenario.hard_negatives
        if suspicious is not None and suspicious.rate > 0:
            parts += self._suspicious(suspicious, n)
        if negatives is not None:
            parts += self._hard_negatives(negatives, n)
        self.pending = _Rows.concat(parts)

    def _episode_count(self, rate: float, n: int, share: float, rows_each: float) -> int:
        return int(self.episode_rng.poisson(rate * n * share / rows_each))

    def _new_episodes(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode numbers, start times, symbols) of `count` new episodes."""
        rng = self.episode_rng
        ids = np.arange(self.episodes, self.episodes + count, dtype=np.int64)
        self.episodes += count
        beside = rng.integers(0, len(self._chunk_ts), count)
        return ids, self._chunk_ts[beside], self._chunk_sym[beside].astype(np.int32)

    def _market_sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(np.rint(rng.lognormal(np.log(3.0), 0.6, n)), 1.0) * 100.0

    def _suspicious(self, spec: Suspicious, n: int) -> list[_Rows]:
        rng, total = self.episode_rng, sum(spec.kinds.values())
        share = {kind: spec.kinds.get(kind, 0.0) / total for kind in SUSPICIOUS_KINDS}
        legs_mean = (spec.wash_legs.low + spec.wash_legs.high) / 2
        buys_mean = (spec.ramp_buys.low + spec.ramp_buys.high) / 2
        rows = []
        # fat-finger / off-market print: one trade far from the market; the market does not follow
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share["spike"], 1))
        pct = rng.uniform(spec.spike_pct.low, spec.spike_pct.high, len(ids)) / 100
        direction = np.where(rng.random(len(ids)) < 0.5, 1.0, -1.0)
        buyer, seller = self._traders(rng, len(ids)), self._traders(rng, len(ids))
        rows.append(
            _Rows.build(
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
        buyer, seller = self._traders(rng, len(ids)), self._traders(rng, len(ids))
        rows.append(
            _Rows.build(
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

    def _wash(self, spec: Suspicious, episode: int, start: int, symbol: int) -> _Rows:
        """One account pair trading back and forth at one size, at the market price, within seconds."""
        rng = self.episode_rng
        legs = int(rng.integers(int(spec.wash_legs.low), int(spec.wash_legs.high) + 1))
        first, second = self._traders(rng, 2)
        second = second if second != first else first + 1
        multiple = float(np.rint(rng.uniform(spec.wash_size_multiple.low, spec.wash_size_multiple.high)))
        ts = start + np.cumsum(rng.integers(200, 5_000, legs)) - 200
        even = np.arange(legs) % 2 == 0
        return _Rows.build(
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

    def _ramp(self, spec: Suspicious, episode: int, start: int, symbol: int) -> _Rows:
        """One account's burst of buys pushing the price up, then its dump of the whole position."""
        rng = self.episode_rng
        buys = int(rng.integers(int(spec.ramp_buys.low), int(spec.ramp_buys.high) + 1))
        sells = max(2, buys // 3)
        rise = rng.uniform(spec.ramp_pct.low, spec.ramp_pct.high) / 100
        duration_ms = rng.uniform(spec.ramp_duration_s.low, spec.ramp_duration_s.high) * 1000
        buy_ts = start + np.sort(rng.uniform(0, duration_ms, buys)).astype(np.int64)
        dump_start = buy_ts[-1] + int(rng.uniform(2_000, 30_000))
        sell_ts = dump_start + np.sort(rng.uniform(0, duration_ms / 4, sells)).astype(np.int64)
        pumper = int(self._traders(rng, 1)[0])
        others = self._traders(rng, buys + sells)
        others = np.where(others == pumper, others + 1, others)
        step_up = np.log1p(rise) / buys * rng.uniform(0.6, 1.4, buys)
        step_up *= np.log1p(rise) / step_up.sum()  # the buys add up to exactly the drawn rise
        bought = np.maximum(np.rint(rng.lognormal(np.log(5.0), 0.5, buys)), 1.0) * 100.0
        dump_size = np.full(sells, np.ceil(bought.sum() / sells / 100.0) * 100.0)
        step_down = np.full(sells, -np.log1p(rise) * 0.9 / sells)  # the dump gives back most of the rise
        is_buy = np.arange(buys + sells) < buys
        return _Rows.build(
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

    def _hard_negatives(self, spec: HardNegatives, n: int) -> list[_Rows]:
        rng, total = self.episode_rng, sum(spec.kinds.values()) or 1.0
        rows = []
        # legitimate block trades: big, at the market, a market maker on one side
        share = spec.kinds.get("block", 0.0) / total
        ids, starts, symbols = self._new_episodes(self._episode_count(spec.rate, n, share, 1))
        multiple = np.rint(rng.uniform(spec.block_size_multiple.low, spec.block_size_multiple.high, len(ids)))
        maker = rng.integers(0, self.config.market_makers, len(ids)).astype(np.int32)
        client = self._traders(rng, len(ids))
        buy = rng.random(len(ids)) < 0.5
        rows.append(
            _Rows.build(
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
            buyer, seller = self._traders(rng, burst), self._traders(rng, burst)
            rows.append(
                _Rows.build(
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


def preset_config(name: str, seed: int = 0, start_ms: int = 1_700_000_000_000) -> MarketConfig:
    """The market a preset was designed for (e.g. `evaluation`: 20 symbols), at a fixed start."""
    if name not in PRESETS:
        raise ScenarioError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return MarketConfig(universe=preset.universe, trades_per_s=preset.trades_per_s, seed=seed, start_ms=start_ms)


def generate(config: MarketConfig, scenario: Scenario | str | None = None) -> Iterator[tuple[TickBatch, LabelBatch]]:
    """Endless chunks of (ticks in event-time order, labels of their injected suspicious trades)."""
    return Market(config, scenario_of(scenario)).chunks()
