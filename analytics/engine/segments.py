"""Vectorised per-symbol work: group a batch by symbol, scan each group in order, checkpoint state.

Every result here is a function of each symbol's own sequence of trades only, never of where the
batch boundaries fell: sums are sequential left-to-right additions carried across batches, so a
run split at any point (and restored from a checkpoint) gives the same bits as one uninterrupted run.
"""

from __future__ import annotations

import functools
import io
import json
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickerdash.ingest.contract.text_tables import exclusive_cumsum as exclusive_cumsum  # one definition, shared

NARROW_BLOCK = 16  # blocks this wide or narrower run the EMA a column at a time (lfilter's call costs more)
TS_BITS = 42  # event times below 2**42 ms (year 2109) leave room for a group rank in an int64 key
NO_TIME = -1  # a symbol's clock before its first trade (every real ts is >= 0)


@functools.cache
def _lfilter() -> Callable[..., Any]:
    # scipy.signal costs 1-2 s to import: every command that merely imports this module would pay it
    from scipy.signal import lfilter

    return lfilter


def _ema_columns(padded: np.ndarray, alpha: Any, decay: Any, previous: np.ndarray) -> np.ndarray:
    """lfilter([alpha, 0], [1, -decay]) along the last axis, one column at a time: the same products and
    sums in the same order (its delay is exactly decay * y), so the same bits, without its per-call
    overhead."""
    out = np.empty_like(padded)
    last = previous
    for column in range(padded.shape[-1]):
        last = alpha * padded[..., column] + decay * last
        out[..., column] = last
    return out


def preload() -> None:
    """Import scipy.signal now, so a service pays for it at start-up rather than in its first batch."""
    _lfilter()


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + length) for every (start, length) pair."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    out_starts = np.cumsum(lengths) - lengths
    return np.repeat(starts.astype(np.int64) - out_starts, lengths) + np.arange(total, dtype=np.int64)


def segment_of_row(lengths: np.ndarray) -> np.ndarray:
    """For contiguous segments of these lengths, the segment number of every row."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def segmented_cummax(values: np.ndarray, lengths: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Running maximum of int64 values within each contiguous segment, starting from `initial`.

    One `np.maximum.accumulate` over the whole array: adding rank * span to each segment keeps
    every segment above all earlier ones, so the running maximum never leaks across segments.
    """
    if len(values) == 0:
        return values.astype(np.int64)
    seeded = values.astype(np.int64, copy=True)
    starts = exclusive_cumsum(lengths)
    seeded[starts] = np.maximum(seeded[starts], initial)
    base = int(seeded.min())
    span = int(seeded.max()) - base + 1
    if span * len(lengths) >= 2**62:
        raise ValueError("event times span too wide to scan segments in one int64 key")
    offset = segment_of_row(lengths) * span - base
    return np.maximum.accumulate(seeded + offset) - offset


class RaggedScan:
    """Contiguous segments packed into a few zero-padded 2-D blocks of rows of similar length.

    A sequential scan per segment (running sum, EMA recursion) then costs one numpy/scipy call per
    block instead of a Python loop per symbol. Rows are bucketed by the bit length of their length,
    so padding never more than doubles the work; segments that fit one block within that bound (a small
    batch's few trades per symbol) take one block, and skip the bucketing's calls.
    """

    __slots__ = ("_blocks", "lengths", "n_rows", "starts")

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = lengths.astype(np.int64, copy=False)
        self.starts = exclusive_cumsum(self.lengths)
        self.n_rows = int(self.lengths.sum())
        self._blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        nonempty = np.flatnonzero(self.lengths > 0)
        if len(nonempty) == 0:
            return
        if int(self.lengths.max()) * len(nonempty) <= 2 * self.n_rows:  # one block pads no more than classes would
            groups = [nonempty]
        else:
            size_class = np.frexp((self.lengths[nonempty] - 1).astype(np.float64))[1]
            by_class = np.argsort(size_class, kind="stable")
            bounds = np.flatnonzero(np.diff(size_class[by_class])) + 1
            groups = [nonempty[members] for members in np.split(by_class, bounds)]
        for segments in groups:
            seg_lengths = self.lengths[segments]
            width = int(seg_lengths.max())
            columns = np.arange(width, dtype=np.int64)
            valid = columns[None, :] < seg_lengths[:, None]
            # past a row's end the padding reads the 0.0 after the values (`_with_zero`): adding 0.0 leaves
            # a running sum unchanged
            source = np.where(valid, self.starts[segments][:, None] + columns[None, :], self.n_rows)
            # flat positions in the block, so results are read back with `take` rather than a boolean mask
            valid_at = np.flatnonzero(valid)
            last_at = np.arange(len(segments)) * width + seg_lengths - 1
            self._blocks.append((segments, source, valid_at, source.ravel()[valid_at], last_at))

    @staticmethod
    def _with_zero(values: np.ndarray) -> np.ndarray:
        return np.concatenate((values, np.zeros(1, values.dtype)))

    def cumsum(self, values: np.ndarray, initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Running sums `initial + v0 + v1 + ...` (added in order) per segment, and each segment's total."""
        out = np.empty(self.n_rows, np.float64)
        totals = initial.astype(np.float64, copy=True)
        padded_values = self._with_zero(values)
        for segments, source, valid_at, flat, last_at in self._blocks:
            padded = padded_values[source]
            padded[:, 0] += initial[segments]
            np.cumsum(padded, axis=1, out=padded)
            out[flat] = padded.ravel().take(valid_at)
            totals[segments] = padded.ravel().take(last_at)
        return out, totals

    def ema(self, values: np.ndarray, alpha: float, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """EMA recursion y = alpha*x + (1-alpha)*y_prev per segment from `previous`, and each final y."""
        decay = 1.0 - alpha
        out = np.empty(self.n_rows, np.float64)
        finals = previous.astype(np.float64, copy=True)
        padded_values = self._with_zero(values)
        for segments, source, valid_at, flat, last_at in self._blocks:
            padded = padded_values[source]
            if padded.shape[1] <= NARROW_BLOCK:  # a busy worker's small batches: a few trades per symbol
                smoothed = _ema_columns(padded, alpha, decay, previous[segments])
            else:  # lfilter's delay after y is exactly y*decay, so seeding it so continues a run bit for bit
                smoothed, _ = _lfilter()(
                    [alpha, 0.0], [1.0, -decay], padded, axis=1, zi=(previous[segments] * decay)[:, None]
                )
            smoothed = smoothed.ravel()
            out[flat] = smoothed.take(valid_at)
            finals[segments] = smoothed.take(last_at)
        return out, finals


@dataclass(frozen=True, slots=True)
class Grouping:
    """A batch's rows sorted by symbol (arrival order kept within a symbol), as contiguous segments."""

    order: np.ndarray  # batch row of each sorted row
    local_symbol: np.ndarray  # batch-local symbol index of each segment
    lengths: np.ndarray  # rows per segment
    starts: np.ndarray  # first sorted row of each segment
    segment: np.ndarray  # segment of each sorted row

    @classmethod
    def of(cls, symbol_idx: np.ndarray, n_symbols: int) -> Grouping:
        """Group rows by their batch-local symbol index with one stable sort.

        The stages of one batch (bars, indicators, alerts, features) group the same array: the last few
        groupings are kept by the array's identity and shared, read-only, so none can change another's.
        """
        key = (id(symbol_idx), n_symbols)
        kept = _RECENT_GROUPINGS.get(key)
        if kept is not None and kept[0]() is symbol_idx:
            return kept[1]
        # int16 keys get numpy's O(n) radix sort; wider ones fall back to timsort
        keys = symbol_idx.astype(np.int16) if n_symbols < 2**15 else symbol_idx
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(symbol_idx, minlength=n_symbols)
        local_symbol = np.flatnonzero(counts)
        lengths = counts[local_symbol].astype(np.int64)
        grouping = cls(order, local_symbol, lengths, exclusive_cumsum(lengths), segment_of_row(lengths))
        for array in (order, local_symbol, lengths, grouping.starts, grouping.segment):
            array.flags.writeable = False
        with _RECENT_LOCK:  # the plug-in stages' thread groups batches too
            while len(_RECENT_GROUPINGS) >= KEPT_GROUPINGS:  # oldest first (dicts keep insertion order)
                del _RECENT_GROUPINGS[next(iter(_RECENT_GROUPINGS))]
            _RECENT_GROUPINGS[key] = (weakref.ref(symbol_idx), grouping)
        return grouping


KEPT_GROUPINGS = 4
# (id of the symbol_idx array, n_symbols) -> (a weak reference to that array, its grouping); the weak
# reference tells a live array from a new one that took a dead one's id
_RECENT_GROUPINGS: dict[tuple[int, int], tuple[weakref.ref[np.ndarray], Grouping]] = {}
_RECENT_LOCK = threading.Lock()


class SymbolSlots:
    """Stable slot numbers for symbol names, so per-symbol state lives in plain arrays."""

    __slots__ = ("_cache_key", "_cache_value", "names", "slot_of")

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self.names: list[str] = list(names)
        self.slot_of: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self._cache_key: tuple[str, ...] | None = None
        self._cache_value = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def slots_for(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Slot of each name in a batch's symbol dictionary, adding unseen names at the end."""
        if symbols is self._cache_key or symbols == self._cache_key:
            return self._cache_value
        slots = np.empty(len(symbols), np.int64)
        for i, name in enumerate(symbols):
            slot = self.slot_of.get(name)
            if slot is None:
                slot = self.slot_of[name] = len(self.names)
                self.names.append(name)
            slots[i] = slot
        self._cache_key, self._cache_value = symbols, slots
        return slots


def grow(array: np.ndarray, n: int, fill: float | int) -> np.ndarray:
    """The array extended along axis 0 to n rows, new rows set to `fill`."""
    if array.shape[0] >= n:
        return array
    extra = np.full((n - array.shape[0], *array.shape[1:]), fill, dtype=array.dtype)
    return np.concatenate([array, extra])


MAGIC = b"TDSTATE1"


def pack_state(meta: Mapping[str, object], arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise JSON-able metadata and named numpy arrays to one deterministic byte string."""
    listing: list[list[object]] = []
    chunks, offset = [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        listing.append([name, array.dtype.str, list(array.shape), offset, len(data)])
        chunks.append(data)
        offset += len(data)
    head = json.dumps({"meta": meta, "arrays": listing}, sort_keys=True, separators=(",", ":")).encode()
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(len(head).to_bytes(8, "little"))
    out.write(head)
    for chunk in chunks:
        out.write(chunk)
    return out.getvalue()


def unpack_state(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of `pack_state`: the metadata and fresh (writable) copies of the arrays."""
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a Tickerdash state checkpoint")
    head_len = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    body = len(MAGIC) + 8 + head_len
    header = json.loads(data[len(MAGIC) + 8 : body])
    arrays = {}
    for name, dtype, shape, offset, size in header["arrays"]:
        raw = np.frombuffer(data, dtype=np.dtype(dtype), count=size // np.dtype(dtype).itemsize, offset=body + offset)
        arrays[name] = raw.reshape(shape).copy()
    return header["meta"], arrays
