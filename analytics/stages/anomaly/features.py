"""Per-trade features for anomaly scoring: causal per symbol, O(1) per trade, vectorised over a batch.

Every feature of a trade is computed from the symbol's state *before* that trade (score before learn),
then the trade updates the state. The state is a handful of exponentially weighted averages per symbol
(in trade time, started at zero and bias-corrected like Adam's moments, so a new symbol needs no special
first value) and, where accounts are present, a ring of the symbol's last `ring` trades.

Features (columns of `FeatureFrame.values`, in `FEATURES` order):

- `price_z`: log price minus log of the exponentially weighted VWAP, in robust sigmas (the scale is
  the weighted mean absolute deviation, times sqrt(pi/2), which is sigma for a normal and is moved
  far less than a variance by one wild print).
- `jump_z`: log return from the symbol's previous trade, in robust sigmas of its returns.
- `momentum_z`: a short exponentially weighted sum of returns, in the sigmas a random walk would give it.
- `size_z`: robust z of log size against the symbol's history.
- `log_gap`: log1p of the inter-arrival time in ms.
- `burst`: log of (long-run mean gap / recent mean gap): how much faster than usual the symbol trades.
- `aggressor_share`: share of the symbol's recent volume (last `ring` trades) that the aggressor
  account traded as aggressor; `passive_share`: share in which the passive account took part.
- `round_trips`: earlier trades in the ring, within `wash_window_ms`, of the same pair on the opposite
  legs at the same size (the wash pattern); `same_pair`: earlier trades of the same pair, any leg or size.

Account features are 0 where the batch has no buyer/seller (a public tape). `self_trade` (buyer ==
seller) and `warming_up` (fewer than `warmup` earlier trades of the symbol) are boolean columns.

The scans are the same sequential additions and `lfilter` recursions whatever the batch boundaries, so
results (and the `to_bytes` checkpoint) are bit-for-bit independent of how the stream was batched.
Limits: the ring sees only the symbol's last `ring` trades, so a wash leg that comes back after more
than that many other trades is not matched; ranges of weights are set in trades, not seconds, so a
quiet symbol's "recent" spans more event time than a busy one's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tickerdash.analytics.engine.segments import Grouping, RaggedScan, SymbolSlots, grow, pack_state, unpack_state
from tickerdash.analytics.stages.anomaly.account_features import ACCOUNT_FEATURES, Ring, Trades, account_features
from tickerdash.analytics.stages.anomaly.accounts import NO_ACCOUNT, account_codes
from tickerdash.analytics.stages.anomaly.feature_config import FeatureConfig, bias_table, config_dict
from tickerdash.ingest.ticks import TickBatch

FEATURES = (
    "price_z",
    "jump_z",
    "momentum_z",
    "size_z",
    "log_gap",
    "burst",
    "aggressor_share",
    "passive_share",
    "round_trips",
    "same_pair",
)
F = {name: k for k, name in enumerate(FEATURES)}
MAD_TO_SIGMA = float(np.sqrt(np.pi / 2))  # E|x| = sigma * sqrt(2/pi) for a normal
NO_TIME = -(2**62)
TINY = 1e-12
# No relative scale below a tenth of a basis point: a symbol whose price has not moved yet (or not for a
# long run) has scales of zero, and its first one-tick move read as hundreds of millions of sigmas. A move
# of 0.1 bp is far below any quoted tick on a share; a spike of 1% is still 800 sigmas.
MIN_SCALE = 1e-5

# the exponentially weighted averages each symbol carries (one column of `Features.ema` each)
EMAS = (
    "notional",
    "volume",
    "dev_abs",
    "ret_abs",
    "momentum",
    "size_mean",
    "size_abs",
    "gap_short",
    "gap_long",
    "moves",  # share of trades that move the price: with ret_abs, the mean size of a move (the price grid)
)
E = {name: k for k, name in enumerate(EMAS)}


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """Features of every row of one batch (batch row order)."""

    values: np.ndarray  # float64 (n, len(FEATURES))
    warming_up: np.ndarray  # bool
    self_trade: np.ndarray  # bool
    has_accounts: bool = False
    names: tuple[str, ...] = field(default=FEATURES)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        """One feature for every row."""
        return self.values[:, F[name]]


class Features:
    """The feature extractor: `process(batch)` returns each trade's features, then learns the batch."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self.slots = SymbolSlots()
        k = self.config.ring
        self.count = np.zeros(0, np.int64)
        self.last_log_price = np.zeros(0, np.float64)
        self.last_ts = np.zeros(0, np.int64)
        self.ema = np.zeros((0, len(EMAS)), np.float64)
        self.ring_buyer = np.zeros((0, k), np.int64)
        self.ring_seller = np.zeros((0, k), np.int64)
        self.ring_aggressor = np.zeros((0, k), np.int64)
        self.ring_size = np.zeros((0, k), np.float64)
        self.ring_ts = np.zeros((0, k), np.int64)
        self.decay = np.array([1.0 - self.config.alpha(name) for name in EMAS])

    _STATE = (
        "count",
        "last_log_price",
        "last_ts",
        "ema",
        "ring_buyer",
        "ring_seller",
        "ring_aggressor",
        "ring_size",
        "ring_ts",
    )

    def _add_slots(self, n: int) -> None:
        for name, fill in (
            ("count", 0),
            ("last_log_price", 0.0),
            ("last_ts", NO_TIME),
            ("ema", 0.0),
            ("ring_buyer", NO_ACCOUNT),
            ("ring_seller", NO_ACCOUNT),
            ("ring_aggressor", NO_ACCOUNT),
            ("ring_size", 0.0),
            ("ring_ts", NO_TIME),
        ):
            setattr(self, name, grow(getattr(self, name), n, fill))

    def process(self, batch: TickBatch) -> FeatureFrame:
        """Features of every trade from the state before it, then the state after the whole batch."""
        n = len(batch)
        values = np.zeros((n, len(FEATURES)), np.float64)
        has_accounts = batch.buyer is not None or batch.seller is not None
        if n == 0:
            return FeatureFrame(values, np.zeros(0, bool), np.zeros(0, bool), has_accounts)
        slot_of_local = self.slots.slots_for(batch.symbols)
        if len(self.slots) > len(self.count):
            self._add_slots(len(self.slots))
        group = Grouping.of(batch.symbol_idx, len(batch.symbols))
        slot = slot_of_local[group.local_symbol]
        seg = group.segment
        first = group.starts
        last = group.starts + group.lengths - 1
        is_first = np.zeros(n, bool)
        is_first[first] = True
        scan = RaggedScan(group.lengths)
        rows = np.arange(n)
        count_before = self.count[slot][seg] + (rows - first[seg])  # symbol trades before this one

        price = batch.price[group.order]
        size = batch.size[group.order]
        ts = batch.ts[group.order]
        log_price = np.log(price)
        log_size = np.log(size)

        def previous(after: np.ndarray, before_batch: np.ndarray) -> np.ndarray:
            """Each row's value of a per-row series at the previous trade of its symbol."""
            out = np.empty_like(after)
            out[1:] = after[:-1]
            out[first] = before_batch
            return out

        bias_by_power: dict[tuple[float, int], np.ndarray] = {}

        def bias(decay: float, ahead: int) -> np.ndarray:
            """1 - decay**(trades averaged), once per half-life, looked up rather than a pow per row."""
            key = (decay, ahead)
            if key not in bias_by_power:
                table = bias_table(decay)
                if table is None:
                    bias_by_power[key] = 1.0 - decay ** (count_before + ahead)
                else:
                    bias_by_power[key] = table.take(np.minimum(count_before + ahead, len(table) - 1))
            return bias_by_power[key]

        def emas(inputs: dict[str, np.ndarray], including_row: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
            """Bias-corrected averages of some of the EMAS before each row (or after it, `including_row`),
            from one scan of them all."""
            k = [E[name] for name in inputs]
            state = self.ema[slot[:, None], k]  # (read as written below: one gather of the k columns)
            after, self.ema[slot[:, None], k] = scan.emas(np.stack(list(inputs.values())), 1.0 - self.decay[k], state)
            out = {}
            with np.errstate(divide="ignore", invalid="ignore"):
                for j, name in enumerate(inputs):
                    decay = float(self.decay[k[j]])
                    if name in including_row:
                        out[name] = after[j] / bias(decay, 1)
                    else:
                        out[name] = previous(after[j], state[:, j]) / bias(decay, 0)
            return out

        # the EMAs whose inputs need no other EMA, in one scan: then the two that need one of these
        last_log = previous(log_price, self.last_log_price[slot])
        ret = np.where(count_before > 0, log_price - last_log, 0.0)
        last_ts = previous(ts, self.last_ts[slot])
        gap = np.where(count_before > 0, np.maximum(ts - last_ts, 0), 0).astype(np.float64)
        first_pass = emas(
            {
                "notional": price * size,
                "volume": size,
                "ret_abs": np.abs(ret),
                "moves": (ret != 0.0).astype(np.float64),
                "momentum": ret,
                "size_mean": log_size,
                "gap_short": gap,
                "gap_long": gap,
            },
            including_row=("momentum", "gap_short"),
        )
        # price against the weighted VWAP, and against the previous trade
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation = np.where(
                count_before > 0, log_price - np.log(first_pass["notional"] / first_pass["volume"]), 0.0
            )
        size_dev = np.where(count_before > 0, log_size - first_pass["size_mean"], 0.0)
        second_pass = emas({"dev_abs": np.abs(deviation), "size_abs": np.abs(size_dev)})
        dev_scale, size_scale = second_pass["dev_abs"], second_pass["size_abs"]
        ret_scale, moves, momentum = first_pass["ret_abs"], first_pass["moves"], first_pass["momentum"]
        alpha_m = 1.0 - float(self.decay[E["momentum"]])
        with np.errstate(divide="ignore", invalid="ignore"):
            # On a coarse price grid most trades do not move the price, and a long run of them shrinks the
            # scales towards zero, so that a one-tick move would read as hundreds of sigmas: no scale is
            # taken below half the symbol's mean move (one tick, where the grid is what moves it).
            floor = np.maximum(0.5 * np.nan_to_num(ret_scale / np.maximum(moves, TINY)), MIN_SCALE)
            values[:, F["price_z"]] = deviation / (MAD_TO_SIGMA * np.maximum(dev_scale, floor) + TINY)
            ret_sigma = MAD_TO_SIGMA * np.maximum(ret_scale, floor) + TINY
            values[:, F["jump_z"]] = ret / ret_sigma
            values[:, F["momentum_z"]] = momentum / (ret_sigma * np.sqrt(alpha_m / (2.0 - alpha_m)))
        # size against the symbol's own history, on the log scale
        with np.errstate(divide="ignore", invalid="ignore"):
            values[:, F["size_z"]] = size_dev / (MAD_TO_SIGMA * size_scale + TINY)
        # arrivals: the gap to the previous trade, and recent gaps against the long-run mean gap
        values[:, F["log_gap"]] = np.log1p(gap)
        gap_short, gap_long = first_pass["gap_short"], first_pass["gap_long"]
        with np.errstate(divide="ignore", invalid="ignore"):
            values[:, F["burst"]] = np.log((gap_long + 1.0) / (gap_short + 1.0))

        buyer = account_codes(batch.buyer, n)[group.order]
        seller = account_codes(batch.seller, n)[group.order]
        self_trade = (buyer == seller) & (buyer != NO_ACCOUNT)
        if has_accounts:
            ring = Ring(self.ring_buyer, self.ring_seller, self.ring_aggressor, self.ring_size, self.ring_ts)
            trades = Trades(batch.side[group.order], buyer, seller, size, ts)
            columns, after = account_features(ring, trades, slot, group, self.config.wash_window_ms)
            for name, column in zip(ACCOUNT_FEATURES, columns.T, strict=True):
                values[:, F[name]] = column
            for state, last_trades in zip(ring, after, strict=True):
                state[slot] = last_trades

        warming = count_before < self.config.warmup
        np.copyto(values, 0.0, where=~np.isfinite(values))
        values[warming, : F["burst"] + 1] = 0.0  # averages of too few trades say nothing yet
        self.count[slot] += group.lengths
        self.last_log_price[slot] = log_price[last]
        self.last_ts[slot] = np.maximum(self.last_ts[slot], ts[last])

        # back to batch order by gathering rows: twice as fast as scattering them through group.order
        sorted_row = np.empty(n, np.int64)
        sorted_row[group.order] = rows
        return FeatureFrame(
            values.take(sorted_row, axis=0), warming.take(sorted_row), self_trade.take(sorted_row), has_accounts
        )

    def to_bytes(self) -> bytes:
        """The whole extractor (config and state) as one checkpoint byte string."""
        meta = {"kind": "features", "config": config_dict(self.config), "symbols": self.slots.names}
        return pack_state(meta, {name: getattr(self, name) for name in self._STATE})

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        """An extractor restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "features":
            raise ValueError("checkpoint is not a feature extractor")
        features = cls(FeatureConfig(**meta["config"]))
        features.slots = SymbolSlots(tuple(meta["symbols"]))
        for name in cls._STATE:
            setattr(features, name, arrays[name])
        missing = len(EMAS) - features.ema.shape[1]  # averages added since the checkpoint was written
        if missing > 0:  # ("moves": 1.0, every trade a move, leaves the scales as they were until it learns)
            features.ema = np.hstack([features.ema, np.ones((len(features.ema), missing))])
        return features
