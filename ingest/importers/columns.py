"""Which file column feeds each tick field: explicit flags, else common names (case-insensitive)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tickerdash.ingest.field_rules import TickError, normalise_symbol
from tickerdash.ingest.importers.errors import ImportOptionError

TS_UNITS = ("auto", "s", "ms", "us", "ns", "iso")

# Column names recognised when no explicit column is given, in order of preference (case-insensitive).
AUTO_COLUMNS: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "price": ("price", "px"),
    "size": ("size", "qty", "quantity", "amount", "volume"),
    "ts": ("ts", "timestamp", "time", "ts_ns", "ts_us", "ts_ms", "datetime"),
    "side": ("side",),
    "trade_id": ("trade_id", "id", "tid"),
    "buyer": ("buyer",),
    "seller": ("seller",),
}
FLAG_OF_FIELD = {field: f"--{field.replace('_', '-')}-col" for field in AUTO_COLUMNS}


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which file column feeds each tick field; None means auto-detect from common names.

    `symbol` is a fixed ticker for single-symbol files (it wins over any symbol column);
    `ts_unit` is `auto` (by magnitude, or ISO-8601 for text), or one of s, ms, us, ns, iso.
    """

    symbol_col: str | None = None
    price_col: str | None = None
    size_col: str | None = None
    ts_col: str | None = None
    side_col: str | None = None
    trade_id_col: str | None = None
    buyer_col: str | None = None
    seller_col: str | None = None
    symbol: str | None = None
    ts_unit: str = "auto"

    def __post_init__(self) -> None:
        unit = "us" if self.ts_unit == "µs" else self.ts_unit
        if unit not in TS_UNITS:
            raise ImportOptionError(f"--ts-unit {self.ts_unit!r} is not a unit: use one of {', '.join(TS_UNITS)}")
        object.__setattr__(self, "ts_unit", unit)
        if self.symbol is not None:
            try:
                object.__setattr__(self, "symbol", normalise_symbol(self.symbol))
            except TickError as exc:
                raise ImportOptionError(f"--symbol: {exc}") from exc

    def resolve(self, columns: Sequence[str], source_name: str = "the file") -> ResolvedColumns:
        """Pick the file column of every tick field; raises ImportOptionError naming the flag to pass."""
        listing = ", ".join(columns) if columns else "(none)"
        by_lower: dict[str, str] = {}
        for name in columns:
            by_lower.setdefault(name.lower(), name)
        chosen: dict[str, str | None] = {}
        for field, candidates in AUTO_COLUMNS.items():
            explicit = getattr(self, f"{field}_col")
            if explicit is not None:
                found = explicit if explicit in columns else by_lower.get(explicit.lower())
                if found is None:
                    raise ImportOptionError(
                        f"{FLAG_OF_FIELD[field]} {explicit!r} is not a column of {source_name}; "
                        f"its columns are: {listing}"
                    )
                chosen[field] = found
            else:
                chosen[field] = next((by_lower[c] for c in candidates if c in by_lower), None)
        if self.symbol is not None:
            chosen["symbol"] = None
        for field in ("price", "size", "ts"):
            if chosen[field] is None:
                raise ImportOptionError(
                    f"no {field} column in {source_name} (looked for {', '.join(AUTO_COLUMNS[field])}): "
                    f"pass {FLAG_OF_FIELD[field]} NAME; its columns are: {listing}"
                )
        if chosen["symbol"] is None and self.symbol is None:
            raise ImportOptionError(
                f"no symbol column in {source_name} (looked for {', '.join(AUTO_COLUMNS['symbol'])}): "
                f"pass --symbol-col NAME, or --symbol TICKER for a single-symbol file; its columns are: {listing}"
            )
        return ResolvedColumns(fixed_symbol=self.symbol, ts_unit=self.ts_unit, **chosen)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ResolvedColumns:
    """The file column behind each tick field (None: the file has none), after auto-detection."""

    symbol: str | None
    price: str
    size: str
    ts: str
    side: str | None
    trade_id: str | None
    buyer: str | None
    seller: str | None
    fixed_symbol: str | None
    ts_unit: str

    @property
    def fields(self) -> dict[str, str]:
        """Tick field -> file column, for the fields the file provides."""
        return {f: c for f in AUTO_COLUMNS if (c := getattr(self, f)) is not None}

    @property
    def source_columns(self) -> list[str]:
        """The distinct file columns to read, in field order."""
        return list(dict.fromkeys(self.fields.values()))
