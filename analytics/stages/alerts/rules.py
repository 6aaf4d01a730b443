"""Slump-alert rules: what a user asks to be told about, validated, with durations and JSON.

A rule says "tell me when SYMBOL (or any symbol, `*`) trades `drop_pct` % below its highest price
of the last `window_s` seconds"; `analytics.stages.alerts.slump` evaluates it. Every check here fails with a
`RuleError` whose message names the field and says what to fix, so the CLI and the dashboard can
show it as it is.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from tickerdash.analytics.stages.indicators import window_name
from tickerdash.ingest.field_rules import TickError, normalise_symbol

ANY_SYMBOL = "*"
MAX_WINDOW_S = 7 * 86_400.0  # a week: longer windows keep a lot of history for little use
ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_NAME_LEN = 200
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}


class RuleError(ValueError):
    """A rule (or an operation on one) is invalid; the message says what to fix."""


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in a duration such as '60s', '5m', '1h', '500ms', '1d' or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(str(text))
        if not match:
            raise RuleError(f"{what}: {str(text)[:40]!r} is not a duration: write e.g. 60s, 5m, 1h or 500ms")
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0:
        raise RuleError(f"{what}: must be a finite duration >= 0, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as people write it: 60 -> '1m', 90 -> '90s', 0.5 -> '500ms'."""
    return window_name(round(seconds * 1000))


def new_rule_id() -> str:
    """A short random rule id (8 hex digits)."""
    return uuid.uuid4().hex[:8]


def _number(value: Any, field: str, hint: str) -> float:
    if isinstance(value, bool):
        raise RuleError(f"{field}: must be a number, got {value!r}; {hint}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RuleError(f"{field}: must be a number, got {value!r}; {hint}") from None
    if not math.isfinite(number):
        raise RuleError(f"{field}: must be a finite number, got {value!r}; {hint}")
    return number


@dataclass(frozen=True, slots=True)
class Rule:
    """One slump-alert rule; construction validates and normalises every field.

    `symbol` is an upper-case ticker or `*` (every symbol). `cooldown_s` None means "= window_s".
    `version` counts the edits of the rule (the store bumps it); `updated_at` is epoch ms.
    `include_bad_prints` lets the trades the bad-print filter rejects (`analytics.stages.alerts.bad_prints`)
    set the window's high, fire and re-arm the rule; by default the rule does not see them.
    """

    id: str
    symbol: str
    drop_pct: float
    window_s: float
    cooldown_s: float | None = None
    enabled: bool = True
    name: str = ""
    webhook: str | None = None
    version: int = 1
    updated_at: int = 0
    include_bad_prints: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, at construction
        if not isinstance(self.id, str) or not ID_RE.match(self.id):
            raise RuleError(
                f"id: {str(self.id)[:70]!r} must be 1-64 chars of letters, digits, _ . - "
                "(leave --id out to get a random one)"
            )
        if not isinstance(self.symbol, str):
            raise RuleError(f"symbol: must be a ticker such as AAPL, or * for every symbol, got {self.symbol!r}")
        if self.symbol.strip() == ANY_SYMBOL:
            set_(self, "symbol", ANY_SYMBOL)
        else:
            try:
                set_(self, "symbol", normalise_symbol(self.symbol))
            except TickError as exc:
                raise RuleError(f"{exc} (or * for every symbol)") from None
        drop = _number(self.drop_pct, "drop_pct", "give the drop in percent, e.g. --drop 5")
        if not 0 < drop < 100:
            raise RuleError(f"drop_pct: {drop:g} is out of range: a drop must be > 0 and < 100 percent, e.g. --drop 5")
        set_(self, "drop_pct", drop)
        window = _number(self.window_s, "window_s", "give a window such as --window 60s")
        if window * 1000 < 1:
            raise RuleError(f"window_s: {window:g}s is too short: a window must be at least 1ms, e.g. --window 60s")
        if window > MAX_WINDOW_S:
            raise RuleError(f"window_s: {format_duration(window)} is too long: at most 7d")
        set_(self, "window_s", round(window * 1000) / 1000)  # event time is in whole ms
        if self.cooldown_s is not None:
            cooldown = _number(self.cooldown_s, "cooldown_s", "give a cooldown such as --cooldown 5m")
            if cooldown < 0:
                raise RuleError(f"cooldown_s: {cooldown:g} must be >= 0 (leave it out to use the window)")
            set_(self, "cooldown_s", round(cooldown * 1000) / 1000)
        if not isinstance(self.enabled, bool):
            raise RuleError(f"enabled: must be true or false, got {self.enabled!r}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_LEN:
            raise RuleError(f"name: must be text of at most {MAX_NAME_LEN} characters")
        if self.webhook is not None:
            set_(self, "webhook", _check_webhook(self.webhook))
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise RuleError(f"version: must be an integer >= 1, got {self.version!r}")
        if isinstance(self.updated_at, bool) or not isinstance(self.updated_at, int) or self.updated_at < 0:
            raise RuleError(f"updated_at: must be epoch milliseconds >= 0, got {self.updated_at!r}")
        if not isinstance(self.include_bad_prints, bool):
            raise RuleError(
                f"include_bad_prints: must be true or false, got {self.include_bad_prints!r} "
                "(leave it out to ignore bad prints, the default)"
            )

    # -- derived values the evaluation uses --

    @property
    def window_ms(self) -> int:
        """The window in whole milliseconds."""
        return round(self.window_s * 1000)

    @property
    def cooldown_ms(self) -> int:
        """The cooldown in whole milliseconds (the window when no cooldown was given)."""
        return round((self.window_s if self.cooldown_s is None else self.cooldown_s) * 1000)

    @property
    def factor(self) -> float:
        """The fraction of the reference at or below which a price fires: 1 - drop_pct/100."""
        return 1.0 - self.drop_pct / 100.0

    @property
    def title(self) -> str:
        """The rule's name, or a readable summary when it has none."""
        return self.name or f"{self.symbol} -{self.drop_pct:g}% in {format_duration(self.window_s)}"

    def matches(self, symbol: str) -> bool:
        """Whether the rule watches this (normalised) symbol."""
        return self.symbol in (ANY_SYMBOL, symbol)

    def evolve(self, **changes: Any) -> Rule:
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    # -- JSON --

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain JSON-able data (the stored form).

        Every field is a scalar, so this is `dataclasses.asdict` without its deep copies (a checkpoint
        holds every rule: with thousands of rules those copies were most of its cost).
        `include_bad_prints` is written only when true, so a default rule is stored, and checkpointed, byte
        for byte as before the field existed (old checkpoints restore and are written back the same).
        """
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if not self.include_bad_prints:
            del data["include_bad_prints"]
        return data

    def to_json(self) -> str:
        """The rule as compact JSON with sorted keys (the value in `tickerdash:rules`)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Rule:
        """A rule from plain data; unknown keys are ignored (newer writers), missing required ones named."""
        if not isinstance(data, dict):
            raise RuleError(f"a rule must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("id", "symbol", "drop_pct", "window_s") if k not in data]
        if missing:
            raise RuleError(f"rule is missing {', '.join(missing)}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def from_json(cls, text: str | bytes) -> Rule:
        """A rule from its JSON text; raises RuleError on bad JSON or bad fields."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RuleError(f"rule is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def make_rule(
    symbol: str,
    drop: float | str,
    window: str | float,
    *,
    cooldown: str | float | None = None,
    webhook: str | None = None,
    name: str = "",
    rule_id: str | None = None,
    enabled: bool = True,
    include_bad_prints: bool = False,
) -> Rule:
    """A rule from the CLI's words: durations like '60s', drop in percent; a random id when none is given."""
    return Rule(
        id=rule_id or new_rule_id(),
        symbol=symbol,
        drop_pct=_number(drop, "drop_pct", "give the drop in percent, e.g. --drop 5"),
        window_s=parse_duration(window, "window_s"),
        cooldown_s=None if cooldown is None else parse_duration(cooldown, "cooldown_s"),
        enabled=enabled,
        name=name,
        webhook=webhook,
        updated_at=now_ms(),
        include_bad_prints=include_bad_prints,
    )


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _check_webhook(url: Any) -> str:
    if not isinstance(url, str):
        raise RuleError(f"webhook: must be an http:// or https:// URL, got {url!r}")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RuleError(f"webhook: {url[:80]!r} must be an http:// or https:// URL with a host")
    return url
