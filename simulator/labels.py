"""The ground truth beside a tape: which trades were injected as suspicious, of what kind and size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tickerdash.ingest.contract.labels import encode_labels


@dataclass(frozen=True, slots=True)
class LabelBatch:
    """Ground truth of injected suspicious trades, columnar; `row` is each trade's row in its TickBatch."""

    trade_id: pa.Array
    kind: pa.Array
    episode_id: pa.Array
    magnitude: np.ndarray  # float64, meaning by kind: spike = fraction off market; size/wash = size
    # multiple of a typical trade; ramp = fractional price rise of the pump
    row: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.magnitude.shape[0])

    @classmethod
    def empty(cls) -> LabelBatch:
        """No labels."""
        text = pa.array([], pa.string())
        return cls(text, text, text, np.zeros(0), np.zeros(0, np.int64))

    def take(self, rows: np.ndarray) -> LabelBatch:
        """The labels at these indices (or boolean mask)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        index = pa.array(rows, pa.int64())
        return LabelBatch(
            self.trade_id.take(index),
            self.kind.take(index),
            self.episode_id.take(index),
            self.magnitude[rows],
            self.row[rows],
        )

    def to_arrow(self) -> pa.RecordBatch:
        """The labels as an Arrow record batch (without the chunk-local row)."""
        return pa.RecordBatch.from_pydict(
            {
                "trade_id": self.trade_id,
                "kind": self.kind,
                "episode_id": self.episode_id,
                "magnitude": pa.array(self.magnitude, pa.float64()),
            }
        )

    def to_fields(self) -> list[dict[str, str]]:
        """One `tickerdash:labels` entry per label (wire strings)."""
        return encode_labels(
            self.trade_id.to_pylist(), self.kind.to_pylist(), self.episode_id.to_pylist(), self.magnitude
        )
