"""`SlumpScan`: slump rules evaluated over one tape of trades, vectorised over a batch.

What a rule means is said in `analytics.stages.alerts.slump`. How a scan stays fast: the rolling maxima
are shared by every rule with the same window. Per symbol the scan carries a monotonic deque (trades not
dominated by a later, higher-or-equal price, within the longest window); within a batch a sparse table
answers "highest price of rows [a, b]" in O(1) after O(n log n) set-up, and the carried deque's maximum
inside a window is its first entry in the window. The state of every (rule, symbol) pair is one dense
array of "due" times (armed, or when a waiting pair may re-arm), so the pairs that can change state in a
batch - armed ones, and waiting ones whose cooldown ends in it - are found with a gather. A row is a
candidate only when it is below the loosest threshold of those pairs on its symbol (during an alert
storm most pairs wait, so few rows are); for candidates a vectorised binary search over the rules
(sorted loosest first) finds which they are below. The fire/re-arm state machine then runs over the
pairs with such events or a due cooldown, in vectorised rounds (one round per state change, so usually
one or two). Alerts come out as columns (`FiredAlerts`) whose entry fields are formatted in bulk, once
per (trade, window) however many rules fire on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tickerdash.analytics.engine.segments import (
    NO_TIME,
    TS_BITS,
    Grouping,
    SymbolSlots,
    exclusive_cumsum,
    grow,
    ragged_arange,
    segment_of_row,
    segmented_cummax,
)
from tickerdash.analytics.stages.alerts.firing import NO_FIRES, PairFiring
from tickerdash.analytics.stages.alerts.kernels import History, Scans, Segments, objects, pad
from tickerdash.analytics.stages.alerts.rule_table import ARMED, FiredAlerts, RuleTable
from tickerdash.analytics.stages.alerts.rules import Rule, RuleError
from tickerdash.ingest.contract.tick_ids import tick_ids
from tickerdash.ingest.ticks import TickBatch


class SlumpScan:
    """Rules evaluated over one tape: `evaluate(batch)` gives the alerts the batch fires as columns."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.slots = SymbolSlots()
        self.history_ms = 0  # how long trades are remembered: the longest window ever had
        self.clock = np.zeros(0, np.int64)
        # Per slot, the monotonic deque of remembered trades, laid end to end
        # (slot s owns deque_ts/deque_price[deque_offsets[s]:deque_offsets[s+1]]; prices strictly fall).
        self.deque_offsets = np.zeros(1, np.int64)
        self.deque_ts = np.zeros(0, np.int64)
        self.deque_price = np.zeros(0, np.float64)
        # Per (rule, symbol) pair (numbered as in RuleTable): ARMED, or the event time from which the
        # waiting pair may re-arm (its firing trade's time + cooldown). Dense, so that state is one gather.
        self.pair_due = np.zeros(0, np.int64)
        self._table = RuleTable.compile((), self.slots)
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The enabled rules being evaluated, sorted by id."""
        return self._table.rules

    @property
    def waiting_rule(self) -> np.ndarray:
        """Rule index (into `rules`) of every waiting (rule, symbol) pair, in checkpoint order."""
        return self._waiting()[0]

    @property
    def waiting_slot(self) -> np.ndarray:
        """Symbol slot of every waiting pair."""
        return self._waiting()[1]

    @property
    def waiting_since(self) -> np.ndarray:
        """Event time of every waiting pair's firing trade."""
        return self._waiting()[2]

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Evaluate these rules from now on; unchanged rules keep their state, changed ones restart armed."""
        enabled = sorted((r for r in rules if r.enabled), key=lambda r: r.id)
        ids = [r.id for r in enabled]
        if len(set(ids)) != len(ids):
            raise RuleError("two enabled rules share an id: give every rule its own id")
        old = {rule.id: i for i, rule in enumerate(self._table.rules)}
        remap = np.full(len(self._table.rules), -1, np.int64)
        for new_index, rule in enumerate(enabled):
            old_index = old.get(rule.id)
            if old_index is not None and self._table.rules[old_index] == rule:
                remap[old_index] = new_index
        waiting_rule, waiting_slot, waiting_since = self._waiting()
        new_rule = remap[waiting_rule]
        keep = new_rule >= 0
        self.history_ms = max([self.history_ms, *(r.window_ms for r in enabled)])
        self._table = RuleTable.compile(enabled, self.slots)
        self._grow_symbols(len(self.slots))
        self._set_waiting(new_rule[keep], waiting_slot[keep], waiting_since[keep])

    def _waiting(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Waiting pairs as (rule index, slot, time of the firing trade), in a canonical order."""
        pair = np.flatnonzero(self.pair_due != ARMED)
        rule, slot = self._table.pair_rule_slot(pair, len(self.clock))
        since = self.pair_due[pair] - self._table.cooldown_ms[rule]
        order = np.lexsort((slot, rule))  # canonical order, so checkpoints do not depend on history
        return rule[order], slot[order], since[order]

    def _set_waiting(self, rule: np.ndarray, slot: np.ndarray, since: np.ndarray) -> None:
        """Every pair armed but these, which wait (rule indices of the current table)."""
        table, n_slots = self._table, len(self.clock)
        star_pairs = len(table.star_rules) * n_slots
        self.pair_due = np.full(star_pairs + len(table.single_rules), ARMED, np.int64)
        position = table.rule_position[rule]
        pair = np.where(table.rule_is_star[rule], position * n_slots + slot, star_pairs + position)
        self.pair_due[pair] = since + table.cooldown_ms[rule]

    def _grow_symbols(self, n: int) -> None:
        fresh = n - len(self.clock)
        if fresh <= 0:
            return
        self.clock = grow(self.clock, n, NO_TIME)
        self.deque_offsets = np.concatenate([self.deque_offsets, np.full(fresh, self.deque_offsets[-1])])

    def _add_slots(self, n: int) -> None:
        """Room for symbols seen for the first time: their pairs start armed."""
        if n <= len(self.clock):
            return
        waiting = self._waiting()
        self._grow_symbols(n)
        self._set_waiting(*waiting)

    def _tape_rows(self, row_slot: np.ndarray, tape: np.ndarray | None) -> np.ndarray | None:
        """Rows of watched symbols that are on the scan's tape (None: every row)."""
        table = self._table
        mask = tape if table.watch_all else pad(table.watched, row_slot, False) & (True if tape is None else tape)
        return None if mask is None or mask.all() else np.flatnonzero(mask)

    def evaluate(self, batch: TickBatch, tape: np.ndarray | None = None) -> FiredAlerts:
        """Update every watched symbol with the batch's trades on the tape (a row mask; None: every row);
        the alerts they fire, as columns."""
        table = self._table
        if len(batch) == 0 or not table.rules:
            return self._fired(batch, None, NO_FIRES)
        if int(batch.ts.max()) >= 2**TS_BITS or int(batch.ts.min()) < 0:
            raise ValueError("ts must be epoch milliseconds in [0, 2**42)")
        slot_of_local = self.slots.slots_for(batch.symbols)
        self._add_slots(len(self.slots))
        rows = self._tape_rows(slot_of_local[batch.symbol_idx], tape)
        symbol_idx = batch.symbol_idx if rows is None else batch.symbol_idx[rows]
        if len(symbol_idx) == 0:
            return self._fired(batch, None, NO_FIRES)
        group = Grouping.of(symbol_idx, len(batch.symbols))
        batch_row = group.order if rows is None else rows[group.order]
        price = batch.price[batch_row]
        seg_slot = slot_of_local[group.local_symbol]
        segs = Segments(
            batch_row=batch_row,
            slot=seg_slot,
            start=group.starts,
            end=group.starts + group.lengths,
            row_seg=group.segment,
            price=price,
            clock=segmented_cummax(batch.ts[batch_row], group.lengths, self.clock[seg_slot]),
        )
        history = self._history(segs)
        seg_max = np.maximum.reduceat(price, segs.start)
        scans = Scans(segs)
        firing = PairFiring(table, self.pair_due, len(self.clock))
        fires = firing.fire(segs, history, scans, np.maximum(seg_max, history.top))
        self._keep_history(segs, history, scans, seg_max)
        self.clock[segs.slot] = segs.last_clock
        return self._fired(batch, segs, fires)

    def _history(self, segs: Segments) -> History:
        """The remembered trades of the batch's symbols, and the keys that find window starts."""
        deque_start = self.deque_offsets[segs.slot]
        deque_len = self.deque_offsets[segs.slot + 1] - deque_start
        carried = ragged_arange(deque_start, deque_len)
        ts, price, seg = self.deque_ts[carried], self.deque_price[carried], segment_of_row(deque_len)
        top = np.full(len(segs.slot), -np.inf)
        has_deque = deque_len > 0
        top[has_deque] = price[exclusive_cumsum(deque_len)[has_deque]]
        clock = segs.clock
        lowest = min(int(clock.min()), int(ts.min()) if len(ts) else int(clock.min()))
        base = lowest - self.history_ms - 1
        span = int(clock.max()) - base + 2  # one spare value: a key beyond every row of its segment
        if span * (len(segs.slot) + 1) >= 2**62:
            raise ValueError("event times span too wide to scan segments in one int64 key")
        return History(
            ts=ts,
            price=price,
            seg=seg,
            top=top,
            base=base,
            span=span,
            row_key=segs.row_seg * span + (clock - base),
            key=seg * span + (ts - base),
        )

    def _keep_history(self, segs: Segments, history: History, scans: Scans, seg_max: np.ndarray) -> None:
        """Replace the deques of touched symbols: trades not dominated by a later one, inside the history."""
        price, clock, row_seg, seg_slot = segs.price, segs.clock, segs.row_seg, segs.slot
        horizon = segs.last_clock - self.history_ms  # keep times > horizon
        keep_carried = (history.price > seg_max[history.seg]) & (history.ts > horizon[history.seg])
        keep_new = scans.later_lower() & (clock > horizon[row_seg])
        seg = np.concatenate([history.seg[keep_carried], row_seg[keep_new]])
        order = np.argsort(seg, kind="stable")  # carried entries come before new ones of the same symbol
        new_ts = np.concatenate([history.ts[keep_carried], clock[keep_new]])[order]
        new_price = np.concatenate([history.price[keep_carried], price[keep_new]])[order]
        new_len = np.bincount(seg, minlength=len(seg_slot))

        lengths = np.diff(self.deque_offsets)
        old_start = self.deque_offsets[:-1]
        lengths_after = lengths.copy()
        lengths_after[seg_slot] = new_len
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths_after, out=offsets[1:])
        untouched = np.ones(len(lengths), bool)
        untouched[seg_slot] = False
        kept_slots = np.flatnonzero(untouched)
        deque_ts = np.empty(int(offsets[-1]), np.int64)
        deque_price = np.empty(int(offsets[-1]), np.float64)
        dest = ragged_arange(offsets[kept_slots], lengths[kept_slots])
        src = ragged_arange(old_start[kept_slots], lengths[kept_slots])
        deque_ts[dest], deque_price[dest] = self.deque_ts[src], self.deque_price[src]
        dest = ragged_arange(offsets[seg_slot], new_len)
        deque_ts[dest], deque_price[dest] = new_ts, new_price
        self.deque_offsets, self.deque_ts, self.deque_price = offsets, deque_ts, deque_price

    def _fired(self, batch: TickBatch, segs: Segments | None, fires: tuple[np.ndarray, ...]) -> FiredAlerts:
        """The fired (rule, sorted row, reference) triples as columns, in batch-row order then rule id order."""
        rule, sorted_row, reference = fires
        table = self._table
        if segs is None or len(rule) == 0:
            empty = np.zeros(0, np.int64)
            return FiredAlerts(
                table, empty, empty, empty, objects(()), empty, np.zeros(0), np.zeros(0), np.zeros(0), None
            )
        row = segs.batch_row[sorted_row]
        order = np.lexsort((rule, row))
        rule, sorted_row, reference, row = rule[order], sorted_row[order], reference[order], row[order]
        # one group per (trade, window): alerts of a group share the reference and so every number
        _, first, group = np.unique(
            sorted_row * len(table.windows_ms) + table.rule_window[rule], return_index=True, return_inverse=True
        )
        row, reference = row[first], reference[first]
        price = batch.price[row]
        tick_id = None
        if batch.entry_of.shape[0] == len(batch):
            tick_id = tick_ids(batch.entry_ids, batch.entry_of[row], batch.row_in_entry[row])
        return FiredAlerts(
            table=table,
            rule=rule,
            group=group.reshape(-1),
            row=row,
            symbol=objects(self.slots.names)[segs.slot[segs.row_seg[sorted_row[first]]]],
            ts=batch.ts[row],
            price=price,
            reference=reference,
            drop=100.0 * (1.0 - price / reference),
            tick_id=tick_id,
        )

    # -- checkpoint --

    @property
    def pristine(self) -> bool:
        """Whether the scan has neither rules nor state (a checkpoint need not mention it)."""
        return not self._table.rules and not self.slots.names and self.history_ms == 0

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The scan (rules and state) as checkpoint metadata and arrays."""
        meta = {
            "rules": [r.to_dict() for r in self._table.rules],
            "symbols": self.slots.names,
            "history_ms": self.history_ms,
        }
        arrays = {name: getattr(self, name) for name in self._SYMBOL_STATE}
        arrays.update(zip(self._WAITING_STATE, self._waiting(), strict=True))
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SlumpScan:
        """A scan restored from `state`, continuing exactly where the original stood."""
        scan = cls()
        scan.slots = SymbolSlots(tuple(meta["symbols"]))
        scan.history_ms = int(meta["history_ms"])
        scan._table = RuleTable.compile([Rule.from_dict(r) for r in meta["rules"]], scan.slots)
        for name in cls._SYMBOL_STATE:
            setattr(scan, name, arrays[name])
        scan._set_waiting(*(arrays[name] for name in cls._WAITING_STATE))
        return scan

    _SYMBOL_STATE = ("clock", "deque_offsets", "deque_ts", "deque_price")
    _WAITING_STATE = ("waiting_rule", "waiting_slot", "waiting_since")
