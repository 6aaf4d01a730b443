"""The slump-alert stage as a plug-in of the analytics worker: the pure stage plus live rule refresh.

`process` and the checkpoint are the pure `SlumpAlerts`; `refresh` (called by the worker every
~0.25 s) is one GET of the rules version, and a reload of the rules only when it changed. Because
the worker writes the alerts, the checkpoint and the XACK of a batch in one transaction, firings
are exactly-once across restarts.
"""

from __future__ import annotations

import logging

from tickerdash.analytics.engine.stage import AppendMany, Effects
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.analytics.stages.alerts.store import load_if_changed
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.ticks import TickBatch

log = logging.getLogger(__name__)


class SlumpAlertStage:
    """Worker stage `alerts`: evaluates the stored rules on every trade and adds alert entries to the effects."""

    name = "alerts"
    outputs = ("alerts",)
    concurrent = True  # reads only the batch

    def __init__(self) -> None:
        self.alerts = SlumpAlerts()
        self.rules_version: int | None = None  # None: load the rules on the next refresh

    def process(self, batch: TickBatch, effects: Effects) -> None:
        """Add one `tickerdash:alerts` entry per alert the batch fires (built in bulk as JSON, no Alert objects)."""
        fired = self.alerts.evaluate(batch)
        if len(fired):
            effects.outputs.append(AppendMany("alerts", Keys.alerts, fired.to_entries_json))

    def to_bytes(self) -> bytes:
        """The stage's checkpoint (rules in force and per-symbol state)."""
        return self.alerts.to_bytes()

    def load(self, data: bytes) -> None:
        """Restore a checkpoint; the stored rules are re-read on the next refresh (unchanged ones keep state)."""
        self.alerts = SlumpAlerts.from_bytes(data)
        self.rules_version = None

    def refresh(self, client: AnyRedis, keys: Keys) -> None:
        """Take rule changes: cheap when nothing changed."""
        snapshot = load_if_changed(client, self.rules_version, keys)
        if snapshot is None:
            return
        self.alerts.set_rules(snapshot.rules)
        if self.rules_version is not None:
            log.info("alert rules now at version %d: %d enabled", snapshot.version, len(self.alerts.rules))
        self.rules_version = snapshot.version
