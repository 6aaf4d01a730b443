"""Closed-bar entries: one entry per bar on `<prefix>:bars:<interval>:<SYMBOL>`, and the closed-bars feed.

A bar entry's ID is the bar's start (`<start_ms>-0`); its fields are the seven contract fields
`BAR_FIELDS` (the six prices and amounts written as `repr` of a float, so a rewrite is byte-identical,
and `trades` as an integer), optionally followed by more per-bar numbers (overlays such as `sma20`),
each a float written the same way. Readers return those as extra columns.

The closed-bars feed (`Keys.closed_bars`) carries every batch of closed bars as one entry: field
`bars`, an Arrow IPC stream of the columns `FEED_COLUMNS`, and `rows`, its row count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from tickerdash.ingest.contract.fields import EntryFields, field_map
from tickerdash.ingest.contract.text_tables import TextTable, hstack, int_texts

BAR_FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
BAR_FIELDS = (*BAR_FLOAT_FIELDS, "trades")
FEED_COLUMNS = ("symbol", "interval_ms", "start_ms", *BAR_FIELDS)
FEED_PAYLOAD_FIELD = "bars"
FEED_ROWS_FIELD = "rows"


def bar_entry_id(start_ms: int) -> str:
    """The stream ID of the bar that starts at `start_ms`."""
    return f"{start_ms}-0"


def bar_entry_ids(start_ms: np.ndarray) -> TextTable:
    """`bar_entry_id` of every start, as a one-column text table (formatted in one pass)."""
    return int_texts(start_ms, suffix=b"-0")


def encode_bar(
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    vwap: float,
    trades: int,
    extra: Mapping[str, float] | None = None,
) -> list[str | int]:
    """One bar's fields as XADD arguments [field, value, ...]: floats as repr, `trades` as an int, then `extra`
    (each extra value that is NaN, undefined at this bar, is left out)."""
    fields: list[str | int] = [
        "open",
        repr(float(open)),
        "high",
        repr(float(high)),
        "low",
        repr(float(low)),
        "close",
        repr(float(close)),
        "volume",
        repr(float(volume)),
        "vwap",
        repr(float(vwap)),
        "trades",
        int(trades),
    ]
    for name, value in (extra or {}).items():
        if value == value:  # NaN: not defined at this bar (an overlay before its window fills), left out
            fields += [name, repr(float(value))]
    return fields


def float_reprs(values: np.ndarray | Sequence[float]) -> list[str]:
    """`repr(float(v))` of every value, formatted in one pass in C.

    orjson writes a float64 array with the shortest digits that read back as the same float, as `repr` does,
    and in `repr`'s own notation for zero and for magnitudes in [1e-4, 1e16) (`484.0`, `0.0001`,
    `9999999999999998.0`): about 8x faster than `repr` of a list. Outside that range (exponent notation,
    which the two spell differently) and for NaN and infinities, the value is `repr`'d on its own.
    """
    floats = np.ascontiguousarray(values, np.float64)
    if not len(floats):
        return []
    texts = orjson.dumps(floats, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")
    for at in np.flatnonzero(~spelled_as_repr(floats)).tolist():
        texts[at] = repr(float(floats[at]))
    return texts


def spelled_as_repr(floats: np.ndarray) -> np.ndarray:
    """Whether orjson writes each value as `repr` does: zero and magnitudes in [1e-4, 1e16) (NaN: False)."""
    magnitude = np.abs(floats)
    return (magnitude == 0) | ((magnitude >= 1e-4) & (magnitude < 1e16))


def float_texts(columns: Sequence[np.ndarray], nan_absent: Sequence[bool] = ()) -> TextTable:
    """`float_reprs` of equal-length columns as a text table, in one orjson call; NaNs of the columns flagged in
    `nan_absent` are absent texts.

    orjson's output is split where it stands when every value is in the range where it spells floats as
    `repr` does (the common case); otherwise the values go through `float_reprs`.
    """
    values = np.stack([np.asarray(column, np.float64) for column in columns], axis=1)
    rows, width = values.shape
    if not rows:
        return TextTable.empty(width)
    absent = np.zeros(values.shape, bool)
    flagged = [j for j, flag in enumerate(nan_absent) if flag]
    if flagged:
        absent[:, flagged] = np.isnan(values[:, flagged])
        values[absent] = 0.0
    by_column = values.T.ravel()
    if spelled_as_repr(by_column).all():
        joined = orjson.dumps(by_column, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    else:
        joined = ",".join(float_reprs(by_column)).encode()
    texts = TextTable.from_joined(joined, rows)
    return texts.without(absent) if flagged else texts


def encode_bar_columns(columns: Mapping[str, np.ndarray], extra: Sequence[str] = ()) -> tuple[list[str], TextTable]:
    """Every bar's fields as text, as a table with a column per field: the field names and the table, in the
    order `encode_bar` writes them (floats as repr, `trades` as an integer, then the `extra` fields, absent
    where an extra value is undefined (NaN): that bar leaves the field out).

    Numbers are formatted a table at a time into bytes, not bar by bar into str: on a tape where a bar
    closes every few trades, formatting each value on its own was most of what encoding bars cost.
    """
    floats = float_texts(
        [columns[name] for name in (*BAR_FLOAT_FIELDS, *extra)],
        nan_absent=[False] * len(BAR_FLOAT_FIELDS) + [True] * len(extra),
    )
    table = hstack([floats, int_texts(columns["trades"])])
    base = len(BAR_FLOAT_FIELDS)
    order = [*range(base), table.width - 1, *range(base, base + len(extra))]
    return [*BAR_FIELDS, *extra], table.take_columns(order)


def encode_bars(columns: Mapping[str, np.ndarray], extra: Sequence[str] = ()) -> list[list[str]]:
    """Every bar's fields as text, bar by bar: `encode_bar_columns` as one flat [field, value, ...] list per bar."""
    names, table = encode_bar_columns(columns, extra)
    return table.flat_rows(names)


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Bars read back from a bar stream, as columns: start (ms), the contract fields, and any extra fields."""

    start_ms: np.ndarray  # int64
    open: np.ndarray  # float64, like every column but start_ms and trades
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    trades: np.ndarray  # int64
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.start_ms.shape[0])

    def column(self, name: str) -> np.ndarray:
        """A contract or extra column by field name."""
        if name in BAR_FIELDS:
            column: np.ndarray = getattr(self, name)
            return column
        return self.extra[name]

    def rows(self) -> list[list[float | int]]:
        """Each bar as [start_ms, open, high, low, close, volume, vwap, trades] (the gateway's reply rows)."""
        columns = [self.start_ms.tolist(), *(getattr(self, n).tolist() for n in BAR_FLOAT_FIELDS), self.trades.tolist()]
        return [list(row) for row in zip(*columns, strict=True)]


def _floats(values: np.ndarray) -> np.ndarray:
    """Text values as float64; a value that is not a number becomes NaN (only then is it parsed one by one)."""
    try:
        return values.astype(np.float64)
    except ValueError:
        out = np.full(len(values), np.nan)
        for i, value in enumerate(values.tolist()):
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(value)
        return out


def decode_bar_entries(entries: Sequence[tuple[Any, EntryFields]]) -> BarColumns:
    """Bar stream entries (XRANGE replies, raw or parsed, bytes or text) as columns, in entry order.

    A contract field an entry lacks reads as NaN (`trades` as 0); extra fields are floats, NaN where absent.
    """
    if not entries:
        empty = np.zeros(0)
        return BarColumns(np.zeros(0, np.int64), empty, empty, empty, empty, empty, empty, np.zeros(0, np.int64))
    ids = np.array([entry[0] for entry in entries])
    start = np.char.partition(ids, b"-" if ids.dtype.kind == "S" else "-")[:, 0].astype(np.int64)
    flat: list[Any]
    if isinstance(entries[0][1], Mapping):  # a parsed reply (one client returns one form throughout)
        flat = [[x for pair in field_map(entry[1]).items() for x in pair] for entry in entries]
    else:
        flat = [entry[1] for entry in entries]
    names = flat[0][0::2]
    try:
        grid: np.ndarray = np.array(flat)  # fast path: every entry has the same fields in the same order
        uniform = grid.ndim == 2 and bool((grid[:, 0::2] == np.array(names)).all())
    except ValueError:
        uniform = False
    values: dict[str, np.ndarray]
    if uniform:
        values = {(n.decode() if isinstance(n, bytes) else n): grid[:, 2 * i + 1] for i, n in enumerate(names)}
    else:  # a foreign writer's field order, or fields that differ between entries: the slow, general way
        rows = [{(k.decode() if isinstance(k, bytes) else k): v for k, v in field_map(f).items()} for f in flat]
        every = list(dict.fromkeys(name for row in rows for name in row))
        values = {
            name: np.array([row.get(name, "0" if name == "trades" else "nan") for row in rows], dtype=object)
            for name in every
        }
    n = len(entries)
    floats = [_floats(values[name]) if name in values else np.full(n, np.nan) for name in BAR_FLOAT_FIELDS]
    trades = _floats(values["trades"]).astype(np.int64) if "trades" in values else np.zeros(n, np.int64)
    extra = {name: _floats(column) for name, column in values.items() if name not in BAR_FIELDS}
    open_, high, low, close, volume, vwap = floats
    return BarColumns(start, open_, high, low, close, volume, vwap, trades, extra)


# --- the closed-bars feed ------------------------------------------------------------------------


def encode_bar_feed(columns: Mapping[str, Any]) -> bytes:
    """Closed bars as an Arrow IPC stream: `symbol` (one ticker per bar), then every other column as given."""
    table = pa.table(
        {
            "symbol": pa.array(list(columns["symbol"]), pa.string()),
            **{name: pa.array(values) for name, values in columns.items() if name != "symbol"},
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def bar_feed_fields(columns: Mapping[str, Any]) -> dict[str, bytes | int]:
    """The fields of one feed entry holding these bars."""
    return {FEED_PAYLOAD_FIELD: encode_bar_feed(columns), FEED_ROWS_FIELD: len(columns["symbol"])}


def decode_bar_feed(payload: bytes) -> pa.Table:
    """The inverse of `encode_bar_feed`, as an Arrow table."""
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def feed_entry_table(fields: EntryFields) -> pa.Table:
    """The bars of one feed entry (fields raw or parsed, bytes names or text)."""
    mapping = field_map(fields)
    payload = mapping.get(FEED_PAYLOAD_FIELD.encode(), mapping.get(FEED_PAYLOAD_FIELD))
    if payload is None:
        raise ValueError(f"closed-bars feed entry without a {FEED_PAYLOAD_FIELD!r} field")
    return decode_bar_feed(payload)


def feed_entry_rows(fields: EntryFields | None) -> int:
    """The row count a feed entry declares (0 for an entry trimmed while pending)."""
    if not fields:
        return 0
    mapping = field_map(fields)
    return int(mapping.get(FEED_ROWS_FIELD.encode(), mapping.get(FEED_ROWS_FIELD, 0)))
