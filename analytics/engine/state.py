"""`PartitionState`: one partition's stage chain, run on each batch, and its checkpoint (generic over stages).

The chain is the registry's core stages (bars, indicators) made from the worker's config, then the
configured optional stages. A batch goes first through every stage's `admit` (the bars stage refuses
late trades there), then through every stage's `process` in order. Stages marked `concurrent` read
only the batch, so on a large batch they run on a helper thread beside the others (whose numpy steps
release the GIL); their effects are always added after the others', so the result is the same either way.

A checkpoint is one blob per stage, named after the stage (`stage:<name>`; the bars and indicators
stages keep the plain names `bars` and `indicators` that checkpoints have always used for them), plus
the progress marker and the live view's first price per symbol. A stage whose blob is missing starts
fresh (a stage added since the checkpoint was written).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.segments import pack_state, unpack_state
from tickerdash.analytics.engine.stage import Admits, Effects, Stage
from tickerdash.analytics.stages.registry import core_stages
from tickerdash.ingest.ticks import TickBatch

# below this many trades a batch's numpy steps are too small to release the GIL for long: the helper
# thread would only take turns with the loop's stages (and add switching delays to small, latency-bound batches)
CONCURRENT_STAGES_MIN_ROWS = 20_000
PLAIN_BLOB_NAMES = frozenset({"bars", "indicators"})  # the blob names checkpoints have used for these stages


def blob_name(stage_name: str) -> str:
    """The name of a stage's blob in a partition checkpoint."""
    return stage_name if stage_name in PLAIN_BLOB_NAMES else f"stage:{stage_name}"


@functools.cache
def _stage_thread() -> ThreadPoolExecutor:
    """The one thread that runs concurrent stages beside the loop's (made on first use)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="concurrent-stages")


class PartitionState:
    """Everything one partition's computation depends on, and its (de)serialisation."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stages: list[Stage] = [entry.make(config) for entry in core_stages()]
        self.stages += [make() for make in config.stages]
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self._admitting = [stage for stage in self.stages if isinstance(stage, Admits)]
        self._in_loop = [stage for stage in self.stages if not getattr(stage, "concurrent", False)]
        self._beside = [stage for stage in self.stages if getattr(stage, "concurrent", False)]
        self.session_open: dict[str, float] = {}  # first price seen per symbol, for the live view's change %
        self.last_id = "0-0"

    def has_stage(self, name: str) -> bool:
        """Whether the chain has a stage of this name."""
        return any(stage.name == name for stage in self.stages)

    def stage(self, name: str) -> Any:
        """The stage of this name (KeyError if the chain has none)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def apply(self, batch: TickBatch, meanwhile: Callable[[Effects], None] | None = None) -> Effects:
        """Run the stage chain on one batch (pure: no I/O).

        `meanwhile` is called with the effects of the stages on the loop's thread as soon as they are done,
        while the concurrent stages may still be running (the worker encodes and queues their writes then,
        instead of after); the effects returned hold those outputs first, then the concurrent stages'.
        """
        effects = Effects(batch)
        for stage in self._admitting:
            effects.batch = stage.admit(effects.batch, effects)
        batch = effects.batch
        if not len(batch):
            return effects
        beside = Effects(batch)
        helper = None
        if self._beside and len(batch) >= CONCURRENT_STAGES_MIN_ROWS:
            helper = _stage_thread().submit(self._run, self._beside, batch, beside)
        try:
            self._run(self._in_loop, batch, effects)
            if meanwhile is not None:
                meanwhile(effects)
            if helper is None:
                self._run(self._beside, batch, beside)
        finally:  # never leave the helper working on this state while the caller goes on
            if helper is not None:
                helper.result()
        effects.take(beside)
        frame = effects.products.get("indicators")
        if frame is not None:
            prices = frame.columns["price"]
            for symbol, row in zip(frame.latest_symbols, frame.latest_rows.tolist(), strict=True):
                self.session_open.setdefault(symbol, float(prices[row]))
        return effects

    @staticmethod
    def _run(stages: list[Stage], batch: TickBatch, effects: Effects) -> None:
        for stage in stages:
            stage.process(batch, effects)

    def to_bytes(self) -> bytes:
        """The whole partition state as one checkpoint."""
        meta = {
            "kind": "partition",
            "last_id": self.last_id,
            "session_open": self.session_open,
            "stages": [s.name for s in self.stages if s.name not in PLAIN_BLOB_NAMES],
        }
        blobs = {blob_name(s.name): np.frombuffer(s.to_bytes(), np.uint8) for s in self.stages}
        return pack_state(meta, blobs)

    @classmethod
    def from_bytes(cls, data: bytes, config: WorkerConfig) -> PartitionState:
        """A partition state restored from `to_bytes`."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "partition":
            raise ValueError("checkpoint is not a partition state")
        state = cls(config)
        for stage in state.stages:
            blob = arrays.get(blob_name(stage.name))
            if blob is not None:
                stage.load(blob.tobytes())
        state.session_open = {k: float(v) for k, v in meta["session_open"].items()}
        state.last_id = str(meta["last_id"])
        return state
