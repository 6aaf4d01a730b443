"""Label entries of `<prefix>:labels`: the simulator's ground truth of injected suspicious trades.

Fields: `trade_id` (the labelled trade's producer id), `kind` (`spike`, `size`, `wash`, `ramp`, ...),
`episode_id` (trades of one injected episode share it) and `magnitude` (a float written as `repr`).
No model reads them; only evaluation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickerdash.ingest.contract.fields import EntryFields, text_fields

LABEL_FIELDS = ("trade_id", "kind", "episode_id", "magnitude")


def encode_labels(
    trade_id: Sequence[str], kind: Sequence[str], episode_id: Sequence[str], magnitude: np.ndarray
) -> list[dict[str, str]]:
    """One label entry's fields per labelled trade, in order."""
    return [
        {"trade_id": t, "kind": k, "episode_id": e, "magnitude": repr(m)}
        for t, k, e, m in zip(trade_id, kind, episode_id, np.asarray(magnitude, np.float64).tolist(), strict=True)
    ]


@dataclass(frozen=True, slots=True)
class LabelColumns:
    """Label entries read back, as columns."""

    trade_id: list[str]
    kind: list[str]
    episode_id: list[str]
    magnitude: np.ndarray  # float64, NaN where an entry has none

    def __len__(self) -> int:
        return len(self.trade_id)


def decode_labels(entries: Sequence[tuple[Any, EntryFields]]) -> LabelColumns:
    """Label stream entries (bytes or text) as columns, in entry order."""
    rows = [text_fields(fields) for _, fields in entries]
    magnitude = np.array([float(row.get("magnitude", "nan")) for row in rows], np.float64)
    return LabelColumns(
        trade_id=[row.get("trade_id", "") for row in rows],
        kind=[row.get("kind", "") for row in rows],
        episode_id=[row.get("episode_id", "") for row in rows],
        magnitude=magnitude,
    )
