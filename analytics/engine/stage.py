"""What a stage is: the `Stage` protocol, the `Effects` of one batch, and the outputs a stage asks the engine to write.

A stage is pure: it folds a batch of trades into its state and describes what to write; the engine
(the worker) owns every Redis write, the transaction, the checkpoint and the replay. Stages run in
the registry's order (`analytics/stages/registry.py`) and talk to later stages through
`Effects.products`, by name: the bars stage hands on its closed bars ("bars") and a view of its open
bars ("open_bars"), the indicators stage its `IndicatorFrame` ("indicators"), which the live view reads.

Outputs are appended to streams by the engine after every stage has run, and encoded only then (the
`encode` callables below are called at write time), so that a later stage can still add to an earlier
stage's product (e.g. extra per-bar columns on the closed bars) and a replay, whose outputs are
dropped, never encodes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.text_tables import TextTable
from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.ticks import TickBatch

if TYPE_CHECKING:
    from tickerdash.ingest.contract.keys import Keys

OUTPUT_MAXLEN = 100_000  # default trim of the streams that AppendMany writes (alerts, anomalies)

# the stream's key from the worker's Keys and the batch's partition, e.g. `Keys.alerts`
StreamName = Callable[["Keys", int], str]


@dataclass(frozen=True, slots=True)
class AppendMany:
    """Entries appended in order to one stream (IDs by Redis) by one script call, trimmed once to about `maxlen`.

    `encode()` returns each entry's fields as a JSON array `[field, value, ...]` of strings.
    """

    name: str  # what the stage declares in `outputs`
    stream: StreamName
    encode: Callable[[], list[str]]
    maxlen: int = OUTPUT_MAXLEN


@dataclass(frozen=True, slots=True)
class AppendOne:
    """One entry (binary values allowed) appended to one stream, trimmed to about `maxlen`."""

    name: str
    stream: StreamName
    encode: Callable[[], dict[str, Any]]
    maxlen: int


# (stream, maxlen, entry ID, flat [field, value, ...]) of one entry with an explicit ID
IdEntry = tuple[str, int, str, Sequence[Any]]


@dataclass(frozen=True, slots=True)
class IdEntries:
    """Entries with explicit IDs as columns, each to one of `streams`: entry k goes to `streams[stream_at[k]]`
    (trimmed to about `maxlens[stream_at[k]]`) with ID `ids` row k and, for each name j of `names` in order,
    the field `names[j]` = `values` text (k, j) (left out where that text is absent).

    Columns, so that the engine encodes every entry of a batch in a few array operations, not entry by
    entry. IDs and values are ASCII text tables. Iterating gives `IdEntry` tuples.
    """

    streams: Sequence[str]
    maxlens: Sequence[int]
    stream_at: np.ndarray  # int, per entry
    ids: TextTable  # one column
    names: Sequence[str]  # field names
    values: TextTable  # a column per name

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[IdEntry]:
        rows = self.values.flat_rows(self.names)
        for at, entry_id, flat in zip(self.stream_at.tolist(), self.ids.column(0), rows, strict=True):
            yield self.streams[at], self.maxlens[at], str(entry_id), flat


@dataclass(frozen=True, slots=True)
class AppendWithIds:
    """Entries with explicit IDs, each to the stream it names (e.g. a bar to its symbol's stream, ID = bar start)."""

    name: str
    encode: Callable[[Keys], IdEntries]


Output = AppendMany | AppendOne | AppendWithIds


@dataclass(slots=True)
class Effects:
    """What the stages made of one batch, for the engine to write (nothing here touches Redis).

    `batch` is the batch as the stages see it (a stage's `admit` may narrow it: the bars stage drops
    late trades); `products` is what a stage hands to later stages and to the live view, by name;
    `outputs` is what the engine appends to streams; `rejected` are the batch's dead letters.
    """

    batch: TickBatch
    products: dict[str, Any] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def written(self, name: str) -> list[Output]:
        """The outputs of one declared name (tests, tools)."""
        return [output for output in self.outputs if output.name == name]

    def take(self, other: Effects) -> None:
        """Add another lane's products, outputs and dead letters after this one's (stages run beside the loop)."""
        self.products.update(other.products)
        self.outputs.extend(other.outputs)
        self.rejected.extend(other.rejected)


class Stage(Protocol):
    """A stage: pure `process` on each batch, and a state that checkpoints to bytes and back.

    Optional members the engine looks for: `concurrent = True` (the stage reads only the batch and no
    stage reads its products, so on a large batch it may run on a helper thread beside the stages on
    the loop's thread), `admit` (see `Admits`) and a `preload()` on the factory (imports done before
    the first batch).
    """

    @property
    def name(self) -> str:
        """Unique in a chain; its checkpoint blob is named after it."""

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the outputs it writes (docs, registry)."""

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Fold `batch` (never empty) into the state; add products and outputs to `effects`."""

    def to_bytes(self) -> bytes:
        """The stage's whole state."""

    def load(self, data: bytes) -> None:
        """Replace the state with one from `to_bytes`."""

    def refresh(self, client: AnyRedis, keys: Keys) -> None:
        """Pick up outside changes (e.g. rules); called often, must be cheap when nothing changed."""


@runtime_checkable
class Admits(Protocol):
    """A stage that decides, before any stage processes the batch, which trades go on (the bars stage
    refuses late trades): it returns the trades let through, and adds the others to `effects.rejected`.

    Every stage's `admit` runs before any `process`; when nothing is let through, no `process` runs,
    so such a stage finishes its own part of the batch in `admit`.
    """

    def admit(self, batch: TickBatch, effects: Effects) -> TickBatch:
        """The trades of `batch` that every stage is to see."""


StageFactory = Callable[[], Stage]
