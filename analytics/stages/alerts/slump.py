"""The slump-alert stage: every enabled rule evaluated on every trade, vectorised over a batch.

Semantics (docs/design.md, made precise). The bad-print filter (`analytics.stages.alerts.bad_prints`)
first marks each trade good or bad. A rule sees its symbol's *tape*: by default the good trades only (a
bad print does not exist for it: it sets no high, fires nothing, re-arms nothing, moves no clock); with
`include_bad_prints`, every trade. On its tape, per symbol, a trade's event time t is the symbol's clock:
the largest `ts` of the tape so far (so an out-of-order trade counts at that time, as in the indicator
stage). For a rule with window W and drop d, on each trade of a matching symbol:

- reference = the highest price among the symbol's trades so far whose time is in (t - W, t],
  the trade itself included;
- the trade is *below* when `price <= reference * (1 - d/100)`;
- an *armed* (rule, symbol) fires on its first below trade, and is then *waiting* from that trade's
  time t_f;
- a waiting (rule, symbol) re-arms on the first later trade that is at least `cooldown_s` after
  t_f (t >= t_f + cooldown) *and* is not below, i.e. whose price is above the firing threshold of
  its own fresh window. That trade itself never fires; the next below trade after it does.
  So one slump fires once, a slump that continues through the cooldown stays silent, and a
  price that settles at a new lower level re-arms once the old highs have left the window.

Every (rule, symbol) starts armed; a rule whose content changes (new version, enabled again)
starts armed again. Windows refer to trade history the stage keeps: a symbol's trades are
remembered while some enabled rule watches it, for the longest window of any rule the stage has
had. A rule added later with a longer window than any before sees, for its first window, only the
history kept until then.

`SlumpAlerts` is the stage: the filter, and one `SlumpScan` (`analytics.stages.alerts.slump_scan`) per tape
(the good trades, every trade), whose alerts it merges. A `SlumpScan` evaluates its rules over the one
tape it is given. Everything is a function of each symbol's trade sequence only: batch boundaries and
checkpoints do not change a single alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tickerdash.analytics.engine.segments import SymbolSlots, pack_state, unpack_state
from tickerdash.analytics.stages.alerts.alert import Alert
from tickerdash.analytics.stages.alerts.bad_prints import DEFAULT_BAND, DEFAULT_CONFIRM, BadPrintFilter
from tickerdash.analytics.stages.alerts.rule_table import FiredAlerts, RuleTable, merge_alerts
from tickerdash.analytics.stages.alerts.rules import Rule, RuleError
from tickerdash.analytics.stages.alerts.slump_scan import SlumpScan
from tickerdash.ingest.ticks import TickBatch

KIND = "slump_alerts"


class SlumpAlerts:
    """The alert stage: `evaluate(batch)` gives the alerts the batch fires as columns, `process` as objects.

    The bad-print filter sees every trade; rules that ignore bad prints (the default) run on the good
    trades, rules with `include_bad_prints` on every trade, each in a `SlumpScan` of its own.
    """

    def __init__(
        self, rules: Sequence[Rule] = (), *, band: float = DEFAULT_BAND, confirm: int = DEFAULT_CONFIRM
    ) -> None:
        self.bad_prints = BadPrintFilter(band, confirm)
        self.good_trades = SlumpScan()  # rules that ignore bad prints: they see the accepted trades only
        self.every_trade = SlumpScan()  # rules with include_bad_prints
        self._merged = RuleTable.compile((), SymbolSlots())  # every rule, for alerts of both scans at once
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The enabled rules being evaluated, sorted by id."""
        return self._merged.rules

    @property
    def waiting_pairs(self) -> int:
        """How many (rule, symbol) pairs wait to re-arm."""
        return len(self.good_trades.waiting_rule) + len(self.every_trade.waiting_rule)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Evaluate these rules from now on; unchanged rules keep their state, changed ones restart armed."""
        enabled = sorted((r for r in rules if r.enabled), key=lambda r: r.id)
        ids = [r.id for r in enabled]
        if len(set(ids)) != len(ids):
            raise RuleError("two enabled rules share an id: give every rule its own id")
        self.good_trades.set_rules([r for r in enabled if not r.include_bad_prints])
        self.every_trade.set_rules([r for r in enabled if r.include_bad_prints])
        self._merged = RuleTable.compile(enabled, SymbolSlots())

    def process(self, batch: TickBatch) -> list[Alert]:
        """Update every watched symbol with the batch's trades and return the alerts they fire, in row order."""
        return self.evaluate(batch).to_alerts()

    def evaluate(self, batch: TickBatch) -> FiredAlerts:
        """Filter the batch's trades and update every watched symbol; the alerts they fire, as columns."""
        good = self.good_trades.evaluate(batch, self.bad_prints.accepted(batch))
        every = self.every_trade.evaluate(batch)
        if not len(every):
            return good
        if not len(good):
            return every
        return merge_alerts((good, every), self._merged)

    # -- checkpoint --

    def to_bytes(self) -> bytes:
        """The whole stage (rules and state) as one checkpoint byte string.

        The good-trades scan is laid out as the whole stage was before the filter existed; the filter and the
        every-trade scan are added beside it only once they hold something, so an older checkpoint restores,
        and is written back byte for byte until trades arrive.
        """
        meta, arrays = self.good_trades.state()
        meta["kind"] = KIND
        for name, (part_meta, part_arrays) in self._parts().items():
            meta[name] = part_meta
            arrays.update({f"{name}.{key}": value for key, value in part_arrays.items()})
        return pack_state(meta, arrays)

    def _parts(self) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """The checkpoint's parts beside the good-trades scan, those that hold something."""
        parts = {}
        filtered = self.bad_prints
        if filtered.slots.names or (filtered.band, filtered.confirm) != (DEFAULT_BAND, DEFAULT_CONFIRM):
            parts["bad_prints"] = filtered.state()
        if not self.every_trade.pristine:
            parts["every_trade"] = self.every_trade.state()
        return parts

    @classmethod
    def from_bytes(cls, data: bytes) -> SlumpAlerts:
        """A stage restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != KIND:
            raise ValueError("checkpoint is not a slump-alert stage")
        stage = cls()

        def part(name: str) -> dict[str, np.ndarray]:
            return {key.removeprefix(f"{name}."): value for key, value in arrays.items() if key.startswith(f"{name}.")}

        stage.good_trades = SlumpScan.from_state(meta, arrays)
        if "every_trade" in meta:
            stage.every_trade = SlumpScan.from_state(meta["every_trade"], part("every_trade"))
        if "bad_prints" in meta:
            stage.bad_prints = BadPrintFilter.from_state(meta["bad_prints"], part("bad_prints"))
        stage._merged = RuleTable.compile(
            sorted((*stage.good_trades.rules, *stage.every_trade.rules), key=lambda r: r.id), SymbolSlots()
        )
        return stage
