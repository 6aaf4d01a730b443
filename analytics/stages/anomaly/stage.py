"""The worker stage `anomaly`: features then scores for every trade, and an entry per flagged one."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from tickerdash.analytics.engine.segments import pack_state, unpack_state
from tickerdash.analytics.engine.stage import AppendMany, Effects
from tickerdash.analytics.stages.anomaly.calibration import Calibrator
from tickerdash.analytics.stages.anomaly.feature_config import FeatureConfig
from tickerdash.analytics.stages.anomaly.features import F, FeatureFrame, Features
from tickerdash.analytics.stages.anomaly.scorer import AnomalyScorer
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.scores import Scores
from tickerdash.analytics.stages.anomaly.tails import TAIL_FEATURES
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.anomalies import encode_anomalies
from tickerdash.ingest.contract.batch_entries import both_forms
from tickerdash.ingest.contract.fields import fields_json
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_ids import tick_ids
from tickerdash.ingest.ticks import TickBatch

if TYPE_CHECKING:  # the pure core never imports the worker (and so never Redis) at run time
    pass


def reasons(scores: Scores, frame: FeatureFrame, rows: np.ndarray) -> list[str]:
    """Why each of `rows` scored as it did: the rules it broke, then its most surprising features.

    Columns are pulled out for all rows at once, so a flagged trade costs a few string formats.
    """
    rows = np.asarray(rows, np.int64)
    values = frame.values[rows]
    price_z = values[:, F["price_z"]].tolist()
    round_trips = values[:, F["round_trips"]].tolist()
    hits = scores.rule_hits[rows].tolist()
    tail = scores.tail_parts[rows]
    top_two = np.argsort(-tail, axis=1)[:, :2].tolist()
    tail_rows, value_rows = tail.tolist(), values.tolist()
    forest = scores.parts[rows, 2].tolist()
    out = []
    for k in range(len(rows)):
        parts = []
        offmarket, wash, self_trade = hits[k]
        if offmarket:
            parts.append(f"off-market print {price_z[k]:+.1f} sigma from VWAP")
        if wash:
            parts.append(f"wash: {int(round_trips[k])} opposite legs, same pair and size")
        if self_trade:
            parts.append("self-trade: buyer is seller")
        for j in top_two[k]:
            surprise = tail_rows[k][j]
            if surprise >= 2.0:
                name = TAIL_FEATURES[j]
                parts.append(f"{name} {value_rows[k][F[name]]:+.2f} (1 in {10 ** min(surprise, 9.0):,.0f})")
        if forest[k] >= 2.0:
            parts.append(f"isolation forest (1 in {10 ** min(forest[k], 9.0):,.0f})")
        out.append("; ".join(parts) or "fused evidence")
    return out


class AnomalyDetector:
    """Features then scores for a batch of trades (pure): what the stage and `tickerdash evaluate` run."""

    def __init__(self, features: FeatureConfig | None = None, scorer: ScorerConfig | None = None) -> None:
        self.features = Features(features)
        self.scorer = AnomalyScorer(scorer)

    def process(self, batch: TickBatch) -> tuple[FeatureFrame, Scores]:
        """Score every trade of the batch (each before it is learnt), then learn the batch."""
        frame = self.features.process(batch)
        return frame, self.scorer.process(frame, batch.ts)

    def to_bytes(self) -> bytes:
        """Both states as one checkpoint."""
        blobs = {"features": self.features.to_bytes(), "scorer": self.scorer.to_bytes()}
        return pack_state({"kind": "anomaly"}, {k: np.frombuffer(v, np.uint8) for k, v in blobs.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> AnomalyDetector:
        """A detector restored from `to_bytes`."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != "anomaly":
            raise ValueError("checkpoint is not an anomaly detector")
        detector = cls()
        detector.features = Features.from_bytes(arrays["features"].tobytes())
        detector.scorer = AnomalyScorer.from_bytes(arrays["scorer"].tobytes())
        return detector


def anomaly_fields(batch: TickBatch, frame: FeatureFrame, scores: Scores) -> list[dict[str, str]]:
    """One `tickerdash:anomalies` entry (docs/design.md fields, strings) per flagged trade, in batch order."""
    rows = np.flatnonzero(scores.flagged)
    if not len(rows):
        return []
    has_origin = len(batch.entry_ids) > 0 and batch.entry_of.shape[0] == len(batch)
    return encode_anomalies(
        [batch.symbols[code] for code in batch.symbol_idx[rows].tolist()],
        batch.ts[rows],
        batch.price[rows],
        batch.size[rows],
        batch.trade_id.take(rows).to_pylist() if batch.trade_id is not None else [None] * len(rows),
        tick_ids(batch.entry_ids, batch.entry_of[rows], batch.row_in_entry[rows]).tolist()
        if has_origin
        else [""] * len(rows),
        scores.score[rows],
        reasons(scores, frame, rows),
    )


def anomaly_entries_json(batch: TickBatch, frame: FeatureFrame, scores: Scores) -> list[str]:
    """`anomaly_fields` as JSON arrays `[field, value, ...]` (what the engine's AppendMany writes)."""
    return [fields_json(fields) for fields in anomaly_fields(batch, frame, scores)]


class AnomalyStage:
    """Worker stage `anomaly`: scores every trade and adds an anomalies entry per flagged one."""

    name = "anomaly"
    outputs = ("anomalies",)
    concurrent = True  # reads only the batch

    def __init__(self, features: FeatureConfig | None = None, scorer: ScorerConfig | None = None) -> None:
        self.detector = AnomalyDetector(features, scorer)
        self.preload()

    @staticmethod
    def preload() -> None:
        """Import scikit-learn's forest now: the first fit runs on a thread a few thousand trades in, and
        importing it there (~0.5 s, mostly holding the GIL) would stall the stream; and load the compiled loops
        of the features, the tails (for in-memory and decoded, read-only, batches) and the calibrations'
        learning and lookups, which the stream first needs thousands of trades in (from numba's cache, or
        compiled once)."""
        import sklearn.ensemble  # noqa: F401

        for sample in both_forms(TickBatch.from_columns(["PRELOAD"], [1.0], [1.0], [0], buyer=["A"], seller=["B"])):
            AnomalyDetector().process(sample)
        calibrator = Calibrator(2, 1.0, 1.0)
        calibrator.learn(np.zeros(1))
        calibrator.surprise(np.zeros(1))

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Add one `tickerdash:anomalies` entry per flagged trade of the batch."""
        frame, scores = self.detector.process(batch)
        if scores.flagged.any():
            entries = functools.partial(anomaly_entries_json, batch, frame, scores)
            effects.outputs.append(AppendMany("anomalies", Keys.anomalies, entries))

    def to_bytes(self) -> bytes:
        """The stage's checkpoint (features, calibrations, training window, forests)."""
        return self.detector.to_bytes()

    def load(self, data: bytes) -> None:
        """Restore a checkpoint."""
        self.detector = AnomalyDetector.from_bytes(data)

    def refresh(self, client: AnyRedis, keys: Keys) -> None:
        """Nothing outside the stream changes the scores."""
