"""`check_stage`: the battery every registered stage passes (river's `estimator_checks`, for Tickerdash stages).

A stage runs in a partition's chain (the core stages, then it), exactly as a worker runs it. Whatever way
a tape is cut into batches, and wherever the chain is checkpointed and restored from its bytes between
batches, the run must give the same outputs, bit for bit, as the tape in one batch:
- every entry of every output, in each stream's order (`AppendMany` entries, `AppendWithIds` IDs and fields);
  `AppendOne` entries are one per batch by nature and are compared through what they carry (the closed
  bars, which are also compared as a product);
- the dead letters (tick ID, fields, reason);
- the row-aligned products: per-trade columns (`columns`, e.g. the indicator frame), concatenated over
  the batches, and per-bar tables (`table` and `extra`, e.g. the closed bars), as sets of rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.stage import AppendMany, AppendOne, AppendWithIds, Effects
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.analytics.stages.registry import StageEntry
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.ticks import TickBatch

KEYS = Keys()


@dataclass
class Run:
    """Everything a run over a tape wrote and handed on, in order."""

    entries: dict[str, list[Any]] = field(default_factory=dict)
    rejected: list[tuple[str, dict[str, bytes | str], str]] = field(default_factory=list)
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per-trade product columns, by batch
    records: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # per-bar product rows

    def add(self, effects: Effects) -> None:
        """Record one batch's effects."""
        for output in effects.outputs:
            written = self.entries.setdefault(output.name, [])
            if isinstance(output, AppendMany):
                written.extend((output.stream(KEYS, 0), entry) for entry in output.encode())
            elif isinstance(output, AppendWithIds):  # each stream's entries in order (streams interleave by batch)
                for stream, _, entry_id, flat in output.encode(KEYS):
                    self.entries.setdefault(f"{output.name} {stream}", []).append((entry_id, [str(v) for v in flat]))
            else:
                assert isinstance(output, AppendOne)
                written.append(output.stream(KEYS, 0))  # one per batch: counted by stream, compared through products
        self.rejected.extend((r.entry_id, dict(r.fields), r.reason) for r in effects.rejected)
        for name, product in effects.products.items():
            columns = getattr(product, "columns", None)
            if isinstance(columns, dict):  # per trade: in tape order
                for column, values in columns.items():
                    self.rows.setdefault(f"{name}.{column}", []).append(np.asarray(values))
            table = getattr(product, "table", None)
            if table is not None and hasattr(table, "to_dict"):  # per bar: batches order them differently
                named = {**table.to_dict(), **getattr(product, "extra", {})}
                columns = (np.asarray(values).tolist() for values in named.values())
                self.records.setdefault(name, []).extend(  # floats by repr: exact, and NaN equals NaN
                    tuple(repr(value) if isinstance(value, float) else value for value in row)
                    for row in zip(*columns, strict=True)
                )


def config_for(entry: StageEntry) -> WorkerConfig:
    """A worker config whose chain is the core stages, then `entry` (a core stage: the core stages alone)."""
    if entry.core:
        return WorkerConfig()
    assert entry.factory is not None
    return WorkerConfig(stages=(entry.factory,))


def run(
    entry: StageEntry,
    tape: TickBatch,
    cuts: list[int],
    restore_after: set[int],
    prepare: Callable[[PartitionState], None] = lambda state: None,
) -> Run:
    """The tape cut at `cuts` into batches, the chain checkpointed and restored after the batches numbered in
    `restore_after`."""
    config = config_for(entry)
    state = PartitionState(config)
    prepare(state)
    seen = Run()
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(tape))), len(tape)]
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        seen.add(state.apply(tape.take(np.arange(lo, hi))))
        if k in restore_after:
            state = PartitionState.from_bytes(state.to_bytes(), config)
    return seen


def check_stage(
    entry: StageEntry,
    tape: TickBatch,
    cuts: list[int],
    restore_after: set[int],
    prepare: Callable[[PartitionState], None] = lambda state: None,
) -> Run:
    """Assert that the cut, checkpointed and restored run gives what the tape in one batch gives; the latter."""
    whole = run(entry, tape, [], set(), prepare)
    pieces = run(entry, tape, cuts, restore_after, prepare)
    assert set(pieces.entries) == set(whole.entries), entry.name
    for name, written in whole.entries.items():
        if all(isinstance(item, str) for item in written):  # AppendOne: one per batch
            assert set(pieces.entries[name]) == set(written), name
        else:
            assert pieces.entries[name] == written, name
    assert pieces.rejected == whole.rejected
    assert set(pieces.records) == set(whole.records)
    for name, records in whole.records.items():
        assert sorted(pieces.records[name]) == sorted(records), name  # floats compared exactly
    assert set(pieces.rows) == set(whole.rows)
    for name, parts in whole.rows.items():
        expected, got = np.concatenate(parts), np.concatenate(pieces.rows[name])
        if expected.dtype.kind in "OUS":  # names: compared as text
            assert expected.tolist() == got.tolist(), name
        else:
            assert expected.dtype == got.dtype and expected.tobytes() == got.tobytes(), name
    return whole
