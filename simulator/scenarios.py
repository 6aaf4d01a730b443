"""Scenarios: what the simulator is asked to script on top of its market, from flags or a YAML/JSON file.

A `Scenario` lists price episodes (slumps, rallies, halts) at fixed event times, and the rates at which
labelled suspicious episodes (spike, size, wash, ramp) and unlabelled hard negatives (news jumps, block
trades, volatility regime changes) are injected. Everything is validated by pydantic; `ScenarioError`
messages name the flag, file, field and value at fault.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tickerdash.ingest.field_rules import TickError, normalise_symbol

SUSPICIOUS_KINDS = ("spike", "size", "wash", "ramp")
HARD_NEGATIVE_KINDS = ("news", "block")

PositiveSeconds = Annotated[float, Field(gt=0, le=10 * 86_400)]
OffsetSeconds = Annotated[float, Field(ge=0, le=365 * 86_400)]


class ScenarioError(ValueError):
    """A scenario (flag or file) is invalid; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A closed interval [low, high] from which a magnitude is drawn uniformly."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"a range is two numbers [low, high], got {len(value)} values")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


def _symbol(value: str) -> str:
    try:
        return normalise_symbol(value)
    except TickError as exc:
        raise ValueError(str(exc)) from None


Symbol = Annotated[str, AfterValidator(_symbol)]


def _check_weights(weights: dict[str, float], known: tuple[str, ...]) -> dict[str, float]:
    for kind, weight in weights.items():
        if kind not in known:
            raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(known)}")
        if weight < 0:
            raise ValueError(f"weight of {kind!r} is negative ({weight})")
    if weights and sum(weights.values()) <= 0:
        raise ValueError("at least one kind needs a positive weight")
    return weights


class Slump(_Strict):
    """The price of `symbol` falls by `drop_pct` over `duration_s`, then recovers over `recovery_s` (0: never)."""

    symbol: Symbol
    start_s: OffsetSeconds = Field(description="Seconds of event time after the market start.")
    drop_pct: float = Field(gt=0, lt=100)
    duration_s: PositiveSeconds
    recovery_s: float = Field(default=0.0, ge=0, le=10 * 86_400)


class Rally(_Strict):
    """The price of `symbol` rises by `rise_pct` over `duration_s`, then gives it back over `recovery_s` (0: never)."""

    symbol: Symbol
    start_s: OffsetSeconds
    rise_pct: float = Field(gt=0, le=1000)
    duration_s: PositiveSeconds
    recovery_s: float = Field(default=0.0, ge=0, le=10 * 86_400)


class Halt(_Strict):
    """No trades in `symbol` from `start_s` for `duration_s`; the price reopens wherever it drifted."""

    symbol: Symbol
    start_s: OffsetSeconds
    duration_s: PositiveSeconds


class Suspicious(_Strict):
    """Labelled suspicious episodes: `rate` is the share of all trades that belong to one."""

    rate: float = Field(default=0.005, ge=0, le=0.2)
    kinds: dict[str, float] = Field(
        default_factory=lambda: {"spike": 1.0, "size": 1.0, "wash": 1.0, "ramp": 1.0},
        description="Relative weight of each kind's share of the labelled trades.",
    )
    spike_pct: Range = Range(low=2, high=10)  # off-market print: % away from the market price
    size_multiple: Range = Range(low=30, high=300)  # fat-finger size: multiple of a typical trade
    wash_legs: Range = Range(low=4, high=12)  # trades back and forth between one account pair
    wash_size_multiple: Range = Range(low=3, high=30)
    ramp_pct: Range = Range(low=2, high=8)  # how far the pump's buys move the price up
    ramp_buys: Range = Range(low=8, high=30)
    ramp_duration_s: Range = Range(low=20, high=180)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_weights(value, SUSPICIOUS_KINDS)


class HardNegatives(_Strict):
    """Unlabelled look-alikes: news jumps and block trades (share `rate` of trades), volatility regimes."""

    rate: float = Field(default=0.005, ge=0, le=0.2)
    kinds: dict[str, float] = Field(default_factory=lambda: {"news": 1.0, "block": 1.0})
    news_jump_pct: Range = Range(low=1.5, high=6)
    block_size_multiple: Range = Range(low=10, high=150)
    regimes_per_million: float = Field(default=5.0, ge=0, le=10_000, description="Volatility regime changes.")
    regime_vol_multiple: Range = Range(low=1.8, high=3.5)
    regime_duration_s: Range = Range(low=300, high=3600)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_weights(value, HARD_NEGATIVE_KINDS)


class Scenario(_Strict):
    """Everything scripted on top of the background market."""

    slumps: list[Slump] = Field(default_factory=list)
    rallies: list[Rally] = Field(default_factory=list)
    halts: list[Halt] = Field(default_factory=list)
    suspicious: Suspicious | None = None
    hard_negatives: HardNegatives | None = None

    def symbols_used(self) -> set[str]:
        """Every ticker the scripted episodes name."""
        return {item.symbol for group in (self.slumps, self.rallies, self.halts) for item in group}

    def merged(self, other: Scenario) -> Scenario:
        """This scenario plus the episodes of `other`; `other`'s rates win where it sets them."""
        return Scenario(
            slumps=[*self.slumps, *other.slumps],
            rallies=[*self.rallies, *other.rallies],
            halts=[*self.halts, *other.halts],
            suspicious=other.suspicious or self.suspicious,
            hard_negatives=other.hard_negatives or self.hard_negatives,
        )


class Preset(_Strict):
    """A named scenario with the market size and trade count it was designed for."""

    name: str
    description: str
    universe: int
    count: int
    trades_per_s: float  # market-wide, event time: sets how many minutes of market the count spans
    scenario: Scenario


PRESETS: dict[str, Preset] = {
    "evaluation": Preset(
        name="evaluation",
        description="Ground truth for the anomaly detector: 20 symbols, 250k trades, ~0.5% labelled "
        "spike/size/wash/ramp trades, plus unlabelled news jumps, block trades and volatility regimes.",
        universe=20,
        count=250_000,
        trades_per_s=50.0,
        scenario=Scenario(suspicious=Suspicious(rate=0.005), hard_negatives=HardNegatives(rate=0.005)),
    ),
    "calm": Preset(
        name="calm",
        description="Background market only: no injected episodes.",
        universe=10,
        count=100_000,
        trades_per_s=1_000.0,
        scenario=Scenario(),
    ),
}


def _describe(error: ValidationError, source: str) -> str:
    """One line per problem: where (source and field path), what is wrong, and the value given."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        given = problem.get("input")
        shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
        lines.append(f"{source}: {where}: {problem['msg']}{shown}")
    return "\n".join(lines)


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    """Validate a scenario given as plain data (parsed YAML/JSON); ScenarioError names each problem."""
    if data is None:
        return Scenario()
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{source}: must be a mapping with keys slumps, rallies, halts, suspicious, "
            f"hard_negatives; got {type(data).__name__}"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, source)) from None


def load_scenario(path: Path) -> Scenario:
    """Read a YAML (.yaml/.yml) or JSON (.json) scenario file; ScenarioError names the file and the problem."""
    if not path.is_file():
        raise ScenarioError(f"scenario file {path}: not found (or a preset name: {', '.join(PRESETS)})")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"scenario file {path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    return parse_scenario(data, f"scenario file {path}")


def resolve(name_or_path: str) -> Scenario:
    """A preset by name (`evaluation`, `calm`) or a scenario file by path."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path].scenario
    return load_scenario(Path(name_or_path))


_FLAG_FIELDS: dict[str, tuple[type[_Strict], Sequence[str], int]] = {
    "--slump": (Slump, ("symbol", "start_s", "drop_pct", "duration_s", "recovery_s"), 4),
    "--rally": (Rally, ("symbol", "start_s", "rise_pct", "duration_s", "recovery_s"), 4),
    "--halt": (Halt, ("symbol", "start_s", "duration_s"), 3),
}


def parse_flag(flag: str, value: str) -> _Strict:
    """Parse `--slump AAPL:600:8:60[:300]` style values into their model; ScenarioError names the problem."""
    model, names, required = _FLAG_FIELDS[flag]
    parts = value.split(":")
    usage = ":".join(n.upper() for n in names[:required]) + "".join(f"[:{n.upper()}]" for n in names[required:])
    if not required <= len(parts) <= len(names):
        raise ScenarioError(f"{flag} {value!r}: expected {usage}")
    try:
        return model.model_validate(dict(zip(names, parts, strict=False)))
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, f"{flag} {value!r}")) from None


def from_flags(slumps: Sequence[str] = (), rallies: Sequence[str] = (), halts: Sequence[str] = ()) -> Scenario:
    """A scenario from the repeatable `--slump`, `--rally`, `--halt` flag values."""
    return Scenario(
        slumps=[parse_flag("--slump", v) for v in slumps],  # type: ignore[misc]
        rallies=[parse_flag("--rally", v) for v in rallies],  # type: ignore[misc]
        halts=[parse_flag("--halt", v) for v in halts],  # type: ignore[misc]
    )
