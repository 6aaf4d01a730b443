"""What market to simulate: `MarketConfig`, its generated tickers, and the market each preset was made for."""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickerdash.ingest.field_rules import TickError, normalise_symbol
from tickerdash.simulator.scenarios import PRESETS, ScenarioError


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


def preset_config(name: str, seed: int = 0, start_ms: int = 1_700_000_000_000) -> MarketConfig:
    """The market a preset was designed for (e.g. `evaluation`: 20 symbols), at a fixed start."""
    if name not in PRESETS:
        raise ScenarioError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return MarketConfig(universe=preset.universe, trades_per_s=preset.trades_per_s, seed=seed, start_ms=start_ms)
