"""Per-trade features for anomaly scoring: causal per symbol, O(1) per trade, one compiled pass over a batch.

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
- `log_gap`: log1p of the ms since the symbol's latest trade time so far (0 for a trade older than that).
- `burst`: log of (long-run mean gap / recent mean gap): how much faster than usual the symbol trades.
- `aggressor_share`: share of the symbol's recent volume (last `ring` trades) that the aggressor
  account traded as aggressor; `passive_share`: share in which the passive account took part.
- `round_trips`: earlier trades in the ring, within `wash_window_ms`, of the same pair on the opposite
  legs at the same size (the wash pattern); `same_pair`: earlier trades of the same pair, any leg or size.

Account features are 0 where the batch has no buyer/seller (a public tape). `self_trade` (buyer ==
seller) and `warming_up` (fewer than `warmup` earlier trades of the symbol) are boolean columns.

The per-trade loop is `feature_kernel.py` (numba): each symbol's state is updated by its own trades in
their order whatever the batch boundaries, so results (and the `to_bytes` checkpoint) are bit-for-bit
independent of how the stream was batched.
Limits: the ring sees only the symbol's last `ring` trades, so a wash leg that comes back after more
than that many other trades is not matched; ranges of weights are set in trades, not seconds, so a
quiet symbol's "recent" spans more event time than a busy one's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tickerdash.analytics.engine.segments import SymbolSlots, grow, pack_state, unpack_state
from tickerdash.analytics.stages.anomaly.accounts import NO_ACCOUNT, account_codes
from tickerdash.analytics.stages.anomaly.feature_config import FeatureConfig, bias_table, config_dict
from tickerdash.ingest.field_rules import SIDE_SELL
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


def bias_tables(decay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every average's `bias_table` as one zero-padded (averages, longest) array, and each table's length (0:
    none, too long; the loop computes those per trade)."""
    tables = [bias_table(float(d)) for d in decay]
    lengths = np.array([0 if table is None else len(table) for table in tables], np.int64)
    out = np.zeros((len(tables), max(int(lengths.max()), 1)), np.float64)
    for k, table in enumerate(tables):
        if table is not None:
            out[k, : len(table)] = table
    return out, lengths


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
        self._bias_tables = bias_tables(self.decay)

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
        buyer = account_codes(batch.buyer, n)
        seller = account_codes(batch.seller, n)
        # numba costs ~0.5 s to import: commands that merely import this module (the dashboard, --help) skip it
        from tickerdash.analytics.stages.anomaly.feature_kernel import extract

        values, warming = extract(
            slot_of_local[batch.symbol_idx],
            batch.price,
            batch.size,
            batch.ts,
            batch.side,
            buyer,
            seller,
            has_accounts,
            NO_ACCOUNT,
            SIDE_SELL,
            self.decay,
            *self._bias_tables,
            MAD_TO_SIGMA,
            TINY,
            MIN_SCALE,
            self.config.warmup,
            self.config.wash_window_ms,
            *(getattr(self, name) for name in self._STATE),
        )
        self_trade = (buyer == seller) & (buyer != NO_ACCOUNT)
        return FeatureFrame(values, warming, self_trade, has_accounts)

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
