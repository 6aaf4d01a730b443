"""Which (rule, symbol) pairs fire on which trades of a batch, and the fire/re-arm state machine.

A pass over one batch reads the rule table and moves the stage's pair states (`pair_due`, changed in
place); the windows' references come from the batch's running maxima and the symbols' carried deques.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tickerdash.analytics.engine.segments import ragged_arange
from tickerdash.analytics.stages.alerts.kernels import History, Scans, Segments, first_of_ranks, pad, prefix_counts
from tickerdash.analytics.stages.alerts.rule_table import ARMED, RuleTable

NO_FIRES = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))


@dataclass(frozen=True, slots=True)
class Below:
    """One window's rows below the loosest live threshold, and how many rules of each list they are below."""

    rows: np.ndarray  # sorted rows, so grouped by segment
    seg: np.ndarray
    star: np.ndarray  # how many of the window's `*` rules (loosest first) the row is below
    single_lo: np.ndarray  # where the window's rules of the row's symbol start in single_rules
    single: np.ndarray  # how many of those (loosest first) the row is below


class PairFiring:
    """One batch's pass over the pairs that may change state: fired (rule, sorted row, reference) arrays."""

    __slots__ = ("n_slots", "pair_due", "table")

    def __init__(self, table: RuleTable, pair_due: np.ndarray, n_slots: int) -> None:
        self.table = table
        self.pair_due = pair_due  # the stage's array: the pass updates the pairs it moves
        self.n_slots = n_slots

    def fire(self, segs: Segments, history: History, scans: Scans, seg_top: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run every pair that may change state in this batch; fired (rule, sorted row, reference) arrays.

        Every window's reference is at most the highest price remembered or seen in the batch, so a
        symbol none of whose trades is below that bound's loosest threshold cannot fire, and a row
        above the loosest threshold of the pairs that may fire cannot either: most rows stop there.
        A pair armed at the start whose cooldown after its first below trade outlasts the batch
        (the usual case: cooldowns are minutes, batches a fraction of a second) fires on that trade
        and is done, so it needs only that trade, which a running maximum per symbol finds for all
        such pairs at once. Only the others (due to re-arm in this batch, or able to re-arm after
        firing) go through the state machine with every below trade.
        """
        table = self.table
        n_slots, n_star = self.n_slots, len(table.star_rules)
        price, row_seg, seg_slot = segs.price, segs.row_seg, segs.slot
        # a waiting pair's due time as unsigned: ARMED (-1) is the largest, so min() is the first re-arm
        due_any = int(self.pair_due.view(np.uint64).min(initial=2**64 - 1)) <= int(segs.clock.max())
        seg_low = np.minimum.reduceat(price, segs.start)
        loosest_static = np.maximum(table.loosest_star, pad(table.loosest_of_slot, seg_slot, -np.inf))
        if not due_any and not (seg_low <= seg_top * loosest_static).any():
            return NO_FIRES
        seg_of_slot = np.full(n_slots, -1, np.int64)
        seg_of_slot[seg_slot] = np.arange(len(seg_slot))
        star_due = self.pair_due[: n_star * n_slots].reshape(n_star, n_slots)[:, seg_slot]
        loosest = self._live_loosest(segs, star_due, seg_of_slot)
        maybe = np.flatnonzero(price <= (seg_top * loosest.max(axis=0))[row_seg])

        refs = np.full((len(table.windows_ms), len(price)), np.nan)  # filled where a rule could fire
        below: dict[int, Below] = {}
        first_pair, first_row = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for w, window in enumerate(table.windows_ms.tolist()):
            rows = maybe[loosest[w, row_seg[maybe]] > -np.inf]
            if len(rows) == 0:
                continue
            ref = self._reference(rows, window, segs, history, scans)
            refs[w, rows] = ref
            hit = np.flatnonzero(price[rows] <= ref * loosest[w, row_seg[rows]])
            below[w] = found = self._below(w, rows[hit], ref[hit], segs)
            at, rank = first_of_ranks(found.seg, found.star)
            first_pair.append((table.star_bounds[w] + rank) * n_slots + seg_slot[found.seg[at]])
            first_row.append(found.rows[at])
            at, rank = first_of_ranks(found.seg, found.single)
            first_pair.append(n_star * n_slots + found.single_lo[at] + rank)
            first_row.append(found.rows[at])
        due_pairs = self._due_pairs(segs, star_due, seg_of_slot) if due_any else np.zeros(0, np.int64)
        pair, row = np.concatenate(first_pair), np.concatenate(first_row)
        rule, _ = self.table.pair_rule_slot(pair, self.n_slots)
        armed = self.pair_due[pair] == ARMED
        due = segs.clock[row] + table.cooldown_ms[rule]
        done = armed & (due > segs.last_clock[row_seg[row]])
        self.pair_due[pair[done]] = due[done]
        more_rule, more_row = self._run_state_machine(
            np.concatenate([pair[armed & ~done], due_pairs]), below, segs, history, seg_of_slot
        )
        rule, row = np.concatenate([rule[done], more_rule]), np.concatenate([row[done], more_row])
        return rule, row, refs[table.rule_window[rule], row]

    def _live_loosest(self, segs: Segments, star_due: np.ndarray, seg_of_slot: np.ndarray) -> np.ndarray:
        """Per window and segment: the loosest factor of the pairs that may fire in this batch (-inf: none).

        A pair may fire when it is armed or due (its cooldown ends by the symbol's last trade here).
        """
        table = self.table
        last = segs.last_clock
        loosest = np.full((len(table.windows_ms), len(segs.slot)), -np.inf)
        has_star = np.flatnonzero(np.diff(table.star_bounds) > 0)
        if len(has_star):
            live_factor = np.where(star_due <= last, table.star_factor[:, None], -np.inf)
            loosest[has_star] = np.maximum.reduceat(live_factor, table.star_bounds[has_star], axis=0)
        single_seg = seg_of_slot[table.single_slot]
        live = single_seg >= 0
        live[live] = self.pair_due[len(self.pair_due) - len(table.single_rules) :][live] <= last[single_seg[live]]
        np.maximum.at(loosest, (table.single_window[live], single_seg[live]), table.single_factor[live])
        return loosest

    def _below(self, w: int, rows: np.ndarray, ref: np.ndarray, segs: Segments) -> Below:
        """How many rules of window w each of these rows is below, per list (`*` rules, its symbol's rules)."""
        table = self.table
        seg = segs.row_seg[rows]
        price = segs.price[rows]
        none = np.zeros(len(rows), np.int64)
        lo, hi = table.star_bounds[w], table.star_bounds[w + 1]
        star = prefix_counts(ref, price, table.star_factor, none + lo, none + hi) if hi > lo else none
        offsets = table.slot_offsets[w]
        slot = segs.slot[seg]
        known = slot < len(offsets) - 1
        slot = np.minimum(slot, len(offsets) - 2)
        single_lo = np.where(known, offsets[slot], 0)
        single = none
        if offsets[-1] > offsets[0]:
            single = prefix_counts(ref, price, table.single_factor, single_lo, np.where(known, offsets[slot + 1], 0))
        return Below(rows=rows, seg=seg, star=star, single_lo=single_lo, single=single)

    def _due_pairs(self, segs: Segments, star_due: np.ndarray, seg_of_slot: np.ndarray) -> np.ndarray:
        """Waiting pairs of the batch's symbols whose cooldown ends by their symbol's last trade here."""
        table, n_slots = self.table, self.n_slots
        last = segs.last_clock
        j, seg = np.nonzero((star_due >= 0) & (star_due <= last))
        single = self.pair_due[len(self.pair_due) - len(table.single_rules) :]
        single_seg = seg_of_slot[table.single_slot]
        due = (single >= 0) & (single_seg >= 0)
        due[due] = single[due] <= last[single_seg[due]]
        return np.concatenate([j * n_slots + segs.slot[seg], len(table.star_rules) * n_slots + np.flatnonzero(due)])

    def _events(
        self, pairs: np.ndarray, below: dict[int, Below], segs: Segments, seg_of_slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every below trade of these pairs that can matter, as (pair, sorted row) arrays.

        A waiting pair's below trades before its due time cannot matter: they are left out.
        """
        table, n_slots = self.table, self.n_slots
        star_pairs = len(table.star_rules) * n_slots
        rule, slot = self.table.pair_rule_slot(pairs, self.n_slots)
        window, seg = table.rule_window[rule], seg_of_slot[slot]
        event_pair, event_row = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for w, found in below.items():
            mine = np.flatnonzero(window == w)
            pair, star = pairs[mine], pairs[mine] < star_pairs
            rank = np.empty(len(pair), np.int64)  # the pair's place in its list: below where count > rank
            rank[star] = pair[star] // n_slots - table.star_bounds[w]
            single = pair[~star] - star_pairs
            rank[~star] = single - table.slot_offsets[w][table.single_slot[single]]
            lo = np.searchsorted(found.seg, seg[mine], side="left")
            hi = np.searchsorted(found.seg, seg[mine], side="right")
            at = ragged_arange(lo, hi - lo)  # the window's below rows of each pair's symbol
            of = np.repeat(np.arange(len(pair)), hi - lo)
            hit = np.where(star[of], found.star[at], found.single[at]) > rank[of]
            event_pair.append(pair[of[hit]])
            event_row.append(found.rows[at[hit]])
        pair, row = np.concatenate(event_pair), np.concatenate(event_row)
        keep = self.pair_due[pair] <= segs.clock[row]
        return pair[keep], row[keep]

    def _reference(self, rows: np.ndarray, window: int, segs: Segments, history: History, scans: Scans) -> np.ndarray:
        """The exact reference of these (sorted) rows for one window: the highest price in (t - W, t]."""
        seg, clock = segs.row_seg[rows], segs.clock[rows]
        query = seg * history.span + (clock - window - history.base)
        # a window reaching back past the symbol's first row in the batch covers a prefix of its rows
        whole = segs.clock[segs.start[seg]] > clock - window
        ref = scans.prefix()[rows] if whole.all() else np.empty(len(rows))
        if not whole.all():
            part = ~whole
            ref[whole] = scans.prefix()[rows[whole]]
            ref[part] = scans.table().query(np.searchsorted(history.row_key, query[part], side="right"), rows[part])
        if len(history.key):
            at = np.searchsorted(history.key, query, side="right")
            inside = at < len(history.key)
            at = np.minimum(at, len(history.key) - 1)
            inside &= history.seg[at] == seg
            ref = np.maximum(ref, np.where(inside, history.price[at], -np.inf))
        return ref

    def _run_state_machine(
        self, pairs: np.ndarray, below: dict[int, Below], segs: Segments, history: History, seg_of_slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fire and re-arm these pairs over every below trade of theirs; fired (rule, sorted row) arrays.

        Each round moves every pair still in play by one state change, vectorised: usually one or two rounds.
        """
        if len(pairs) == 0:
            return NO_FIRES[:2]
        event_pair, event_row = self._events(pairs, below, segs, seg_of_slot)
        stride = len(segs.price) + 1
        events = np.sort(event_pair * stride + event_row)
        event_pair = events // stride
        first_of_pair = np.flatnonzero(np.diff(event_pair, prepend=-1) != 0)
        event_pairs = event_pair[first_of_pair]  # sorted, distinct
        pair_keys = np.unique(pairs)  # every pair with events is one of these
        n_pairs = len(pair_keys)
        pair_rule, pair_slot = self.table.pair_rule_slot(pair_keys, self.n_slots)
        pair_seg = seg_of_slot[pair_slot]
        pair_end = segs.end[pair_seg]
        pos = segs.start[pair_seg].copy()
        due = self.pair_due[pair_keys].copy()
        waiting = due != ARMED
        cooldown = self.table.cooldown_ms[pair_rule]
        clock, span, base = segs.clock, history.span, history.base

        # below events keyed (pair id, row), sorted; and where each run of consecutive below rows ends
        per_pair = np.diff(np.append(first_of_pair, len(events)))
        events = np.repeat(np.searchsorted(pair_keys, event_pairs), per_pair) * stride + events % stride
        n_events = len(events)
        run_breaks = np.flatnonzero(np.diff(events) != 1)
        run_last = np.concatenate([run_breaks, [n_events - 1]]) if n_events else np.zeros(0, np.int64)
        run_of = np.concatenate([[0], np.cumsum(np.diff(events) != 1)]) if n_events else np.zeros(0, np.int64)
        run_end_row = events[run_last[run_of]] % stride if n_events else np.zeros(0, np.int64)

        def lookup(probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            at = np.searchsorted(events, probe)
            clamped = np.minimum(at, max(n_events - 1, 0))
            return at, clamped

        fired_pair, fired_row = [], []
        alive = np.ones(n_pairs, bool)
        while alive.any():
            wait = np.flatnonzero(alive & waiting)
            if len(wait):
                at_due = np.clip(due[wait] - base, 0, span - 1)
                start = np.maximum(pos[wait], np.searchsorted(history.row_key, pair_seg[wait] * span + at_due))
                probe = wait * stride + start
                at, clamped = lookup(probe)
                hit = (at < n_events) & (events[clamped] == probe) if n_events else np.zeros(len(wait), bool)
                above = np.where(hit, run_end_row[clamped] + 1, start) if n_events else start
                rearm = (start < pair_end[wait]) & (above < pair_end[wait])
                waiting[wait[rearm]] = False
                pos[wait[rearm]] = above[rearm] + 1  # the re-arming trade is not below: it cannot fire
                alive[wait[~rearm]] = False
            armed = np.flatnonzero(alive & ~waiting)
            if len(armed):
                if n_events == 0:
                    alive[armed] = False
                    continue
                at, clamped = lookup(armed * stride + pos[armed])
                found = (at < n_events) & (events[clamped] < (armed + 1) * stride)
                fire, row = armed[found], events[clamped[found]] - armed[found] * stride
                fired_pair.append(fire)
                fired_row.append(row)
                waiting[fire], due[fire], pos[fire] = True, clock[row] + cooldown[fire], row + 1
                alive[armed[~found]] = False

        self.pair_due[pair_keys] = np.where(waiting, due, ARMED)
        if not fired_pair:
            return NO_FIRES[:2]
        return pair_rule[np.concatenate(fired_pair)], np.concatenate(fired_row)
