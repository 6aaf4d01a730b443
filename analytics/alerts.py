"""The slump-alert stage: every enabled rule evaluated on every trade, vectorised over a batch.

Semantics (DESIGN.md, made precise). Per symbol, a trade's event time t is the symbol's clock: the
largest `ts` the stage has seen for it so far (so an out-of-order trade counts at that time, as in
the indicator stage). For a rule with window W and drop d, on each trade of a matching symbol:

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

How it stays fast: the rolling maxima are shared by every rule with the same window. Per symbol
the stage carries a monotonic deque (trades not dominated by a later, higher-or-equal price, within
the longest window); within a batch a sparse table answers "highest price of rows [a, b]" in O(1)
after O(n log n) set-up, and the carried deque's maximum inside a window is its first entry in the
window. Per window, a row is a candidate only when it is below the loosest rule watching its
symbol; for candidates a vectorised binary search over the rules (sorted loosest first) finds which
are below. The fire/re-arm state machine then runs over (rule, symbol) pairs that have below rows
or are waiting, in vectorised rounds (one round per state change, so usually one or two).
Everything is a function of each symbol's trade sequence only: batch boundaries and checkpoints do
not change a single alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analytics.rules import ANY_SYMBOL, Rule, RuleError, format_duration
from analytics.segments import (
    TS_BITS,
    Grouping,
    SymbolSlots,
    exclusive_cumsum,
    grow,
    pack_state,
    ragged_arange,
    segment_of_row,
    segmented_cummax,
    unpack_state,
)
from ingest.codecs import as_text
from ingest.ticks import TickBatch

NO_TIME = -1  # a symbol's clock before its first trade (every real ts is >= 0)
KIND = "slump_alerts"


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing of a rule on one trade; `row` is the trade's row in the batch it came in."""

    rule_id: str
    symbol: str
    ts: int
    price: float
    reference_price: float
    drop_pct: float
    window_s: float
    message: str
    tick_id: str = ""
    row: int = -1

    def to_fields(self) -> dict[str, str]:
        """The entry of `tickerdash:alerts` (DESIGN.md fields, plus `tick_id` when known)."""
        fields = {
            "rule_id": self.rule_id,
            "symbol": self.symbol,
            "ts": str(self.ts),
            "price": repr(self.price),
            "reference_price": repr(self.reference_price),
            "drop_pct": repr(self.drop_pct),
            "window_s": f"{self.window_s:g}",
            "message": self.message,
        }
        if self.tick_id:
            fields["tick_id"] = self.tick_id
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Alert:
        """An alert read back from a stream entry (bytes or text fields)."""
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        return cls(
            rule_id=text["rule_id"],
            symbol=text["symbol"],
            ts=int(text["ts"]),
            price=float(text["price"]),
            reference_price=float(text["reference_price"]),
            drop_pct=float(text["drop_pct"]),
            window_s=float(text["window_s"]),
            message=text.get("message", ""),
            tick_id=text.get("tick_id", ""),
        )

    def to_json_dict(self) -> dict[str, object]:
        """The alert as typed JSON data (webhook bodies, `--json` output)."""
        return {
            "rule_id": self.rule_id, "symbol": self.symbol, "ts": self.ts, "price": self.price,
            "reference_price": self.reference_price, "drop_pct": self.drop_pct, "window_s": self.window_s,
            "message": self.message, "tick_id": self.tick_id,
        }  # fmt: skip



def alert_message(rule: Rule, symbol: str, price: float, reference: float, drop_pct: float) -> str:
    """A readable sentence for an alert."""
    return _message(symbol, price, reference, drop_pct, _message_tail(rule))


def _message_tail(rule: Rule) -> str:
    return f"within {format_duration(rule.window_s)} (rule {rule.title}: -{rule.drop_pct:g}%)"


def _message(symbol: str, price: float, reference: float, drop_pct: float, tail: str) -> str:
    return f"{symbol} fell {drop_pct:.2f}% to {price:.10g} from {reference:.10g} {tail}"


def actual_drop_pct(price: float, reference: float) -> float:
    """How far below the reference a price is, in percent (the `drop_pct` of an alert)."""
    return 100.0 * (1.0 - price / reference)


class RangeMax:
    """Highest value of any row range [lo, hi] in O(1), after an O(n log n) sparse-table build.

    Level l of the table holds the maximum of rows [i, i + 2**l) (clipped at the end), so a range is
    covered by two overlapping power-of-two blocks; max is exact, so results are exact.
    """

    __slots__ = ("table",)

    def __init__(self, values: np.ndarray) -> None:
        n = len(values)
        levels = max(1, int(n).bit_length())
        self.table = np.empty((levels, n), np.float64)
        self.table[0] = values
        for level in range(1, levels):
            half = 1 << (level - 1)
            prev, cur = self.table[level - 1], self.table[level]
            cur[:] = prev
            np.maximum(prev[: n - half], prev[half:], out=cur[: n - half])

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """max(values[lo[i] : hi[i] + 1]) for every i (needs lo <= hi)."""
        level = np.frexp((hi - lo + 1).astype(np.float64))[1] - 1
        return np.maximum(self.table[level, lo], self.table[level, hi - (1 << level) + 1])


def prefix_counts(ref: np.ndarray, price: np.ndarray, factors: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray) -> np.ndarray:  # fmt: skip
    """For each row, how many leading rules of factors[lo:hi] (loosest first) the price is below.

    `price <= ref * f` holds for a prefix of a descending list because rounding is monotonic,
    so a vectorised binary search finds its length with the exact comparison the rules use.
    """
    first = lo.copy()
    lo, hi = lo.copy(), hi.copy()  # invariant: rules before lo are below, rules from hi on are not
    if len(factors) == 0:
        return np.zeros(len(lo), np.int64)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo - first
        mid = np.minimum((lo + hi) // 2, len(factors) - 1)
        below = price <= ref * factors[mid]
        lo = np.where(open_ & below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)


def _pad(values: np.ndarray, index: np.ndarray, fill: float | int | bool) -> np.ndarray:
    """values[index] where index is in range, else `fill` (for slots added after a lookup table)."""
    out = np.full(len(index), fill, dtype=values.dtype)
    inside = index < len(values)
    out[inside] = values[index[inside]]
    return out


@dataclass(frozen=True, slots=True)
class _RuleTable:
    """Enabled rules (sorted by id) as arrays, grouped by window and by the symbol slot they watch."""

    rules: tuple[Rule, ...]
    windows_ms: np.ndarray  # distinct windows
    rule_window: np.ndarray  # index into windows_ms, per rule
    factor: np.ndarray  # 1 - drop/100, per rule
    cooldown_ms: np.ndarray
    star: tuple[np.ndarray, ...]  # per window: `*` rules, loosest (largest factor) first
    star_fmax: np.ndarray  # per window: loosest factor of its `*` rules (-inf when none)
    slot_offsets: tuple[np.ndarray, ...]  # per window: CSR offsets over slots into slot_rules
    slot_rules: tuple[np.ndarray, ...]  # per window: single-symbol rules by slot, loosest first
    slot_fmax: tuple[np.ndarray, ...]  # per window: loosest factor per slot (-inf when none)
    slot_fmax_any: np.ndarray  # loosest factor per slot over every window
    watched: np.ndarray  # per slot: some rule watches it
    watch_all: bool
    message_tails: tuple[str, ...]  # per rule: the end of its alert messages (built once)

    @classmethod
    def compile(cls, rules: Sequence[Rule], slots: SymbolSlots) -> _RuleTable:
        """Arrays for these (enabled, id-sorted) rules; adds their symbols to `slots`."""
        n_rules = len(rules)
        rule_slot = np.full(n_rules, -1, np.int64)
        named = [i for i, r in enumerate(rules) if r.symbol != ANY_SYMBOL]
        if named:
            rule_slot[named] = slots.slots_for(tuple(rules[i].symbol for i in named))
        n_slots = len(slots)
        window_of = np.array([r.window_ms for r in rules], np.int64)
        windows_ms, rule_window = np.unique(window_of, return_inverse=True)
        factor = np.array([r.factor for r in rules], np.float64)
        star, star_fmax, offsets, by_slot, slot_fmax = [], [], [], [], []
        for w in range(len(windows_ms)):
            mine = rule_window == w
            stars = np.flatnonzero(mine & (rule_slot < 0))
            star.append(stars[np.argsort(-factor[stars], kind="stable")])
            star_fmax.append(factor[stars].max() if len(stars) else -np.inf)
            single = np.flatnonzero(mine & (rule_slot >= 0))
            single = single[np.lexsort((-factor[single], rule_slot[single]))]
            counts = np.bincount(rule_slot[single], minlength=n_slots)
            offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            by_slot.append(single)
            fmax = np.full(n_slots, -np.inf)
            np.maximum.at(fmax, rule_slot[single], factor[single])
            slot_fmax.append(fmax)
        watched = np.zeros(n_slots, bool)
        watched[rule_slot[rule_slot >= 0]] = True
        return cls(
            rules=tuple(rules), windows_ms=windows_ms, rule_window=rule_window.astype(np.int64).reshape(n_rules),
            factor=factor, cooldown_ms=np.array([r.cooldown_ms for r in rules], np.int64),
            star=tuple(star), star_fmax=np.array(star_fmax, np.float64), slot_offsets=tuple(offsets),
            slot_rules=tuple(by_slot), slot_fmax=tuple(slot_fmax), watched=watched,
            slot_fmax_any=np.max(slot_fmax, axis=0) if slot_fmax else np.full(n_slots, -np.inf),
            watch_all=bool((rule_slot < 0).any()), message_tails=tuple(_message_tail(r) for r in rules),
        )  # fmt: skip


class SlumpAlerts:
    """The alert stage: `process(batch)` returns the alerts the batch fires, in row order."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.slots = SymbolSlots()
        self.history_ms = 0  # how long trades are remembered: the longest window ever had
        self.clock = np.zeros(0, np.int64)
        # Per slot, the monotonic deque of remembered trades, laid end to end
        # (slot s owns deque_ts/deque_price[deque_offsets[s]:deque_offsets[s+1]]; prices strictly fall).
        self.deque_offsets = np.zeros(1, np.int64)
        self.deque_ts = np.zeros(0, np.int64)
        self.deque_price = np.zeros(0, np.float64)
        # Waiting (rule, symbol) pairs: rule index into the table, slot, time of the firing trade.
        self.waiting_rule = np.zeros(0, np.int64)
        self.waiting_slot = np.zeros(0, np.int64)
        self.waiting_since = np.zeros(0, np.int64)
        self._table = _RuleTable.compile((), self.slots)
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The enabled rules being evaluated, sorted by id."""
        return self._table.rules

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
        new_rule = remap[self.waiting_rule]
        keep = new_rule >= 0
        self._set_waiting(new_rule[keep], self.waiting_slot[keep], self.waiting_since[keep])
        self.history_ms = max([self.history_ms, *(r.window_ms for r in enabled)])
        self._table = _RuleTable.compile(enabled, self.slots)
        self._add_slots(len(self.slots))

    def _set_waiting(self, rule: np.ndarray, slot: np.ndarray, since: np.ndarray) -> None:
        order = np.lexsort((slot, rule))  # canonical order, so checkpoints do not depend on history
        self.waiting_rule, self.waiting_slot, self.waiting_since = rule[order], slot[order], since[order]

    def _add_slots(self, n: int) -> None:
        fresh = n - len(self.clock)
        if fresh <= 0:
            return
        self.clock = grow(self.clock, n, NO_TIME)
        self.deque_offsets = np.concatenate([self.deque_offsets, np.full(fresh, self.deque_offsets[-1])])

    def _watched_rows(self, row_slot: np.ndarray) -> np.ndarray | None:
        """Rows of watched symbols (None: every row)."""
        table = self._table
        if table.watch_all:
            return None
        mask = _pad(table.watched, row_slot, False)
        return None if mask.all() else np.flatnonzero(mask)

    def process(self, batch: TickBatch) -> list[Alert]:
        """Update every watched symbol with the batch's trades and return the alerts they fire, in row order."""
        table = self._table
        if len(batch) == 0 or not table.rules:
            return []
        if int(batch.ts.max()) >= 2**TS_BITS or int(batch.ts.min()) < 0:
            raise ValueError("ts must be epoch milliseconds in [0, 2**42)")
        slot_of_local = self.slots.slots_for(batch.symbols)
        self._add_slots(len(self.slots))
        rows = self._watched_rows(slot_of_local[batch.symbol_idx])
        symbol_idx = batch.symbol_idx if rows is None else batch.symbol_idx[rows]
        if len(symbol_idx) == 0:
            return []
        group = Grouping.of(symbol_idx, len(batch.symbols))
        batch_row = group.order if rows is None else rows[group.order]  # batch row of each sorted row
        seg_slot = slot_of_local[group.local_symbol]
        seg_end = group.starts + group.lengths
        row_seg = group.segment
        price = batch.price[batch_row]
        clock = segmented_cummax(batch.ts[batch_row], group.lengths, self.clock[seg_slot])
        n = len(price)
        rows_max = RangeMax(price)

        # carried deques of the touched symbols, in segment order
        deque_start = self.deque_offsets[seg_slot]
        deque_len = self.deque_offsets[seg_slot + 1] - deque_start
        carried = ragged_arange(deque_start, deque_len)
        carried_ts, carried_price = self.deque_ts[carried], self.deque_price[carried]
        carried_seg = segment_of_row(deque_len)

        # (segment, time) packed into one int64 key sorted across segments: window starts by binary search
        lowest = min(int(clock.min()), int(carried_ts.min()) if len(carried_ts) else int(clock.min()))
        base = lowest - self.history_ms - 1
        span = int(clock.max()) - base + 2  # one spare value: a key beyond every row of its segment
        if span * (len(seg_slot) + 1) >= 2**62:
            raise ValueError("event times span too wide to scan segments in one int64 key")
        row_key = row_seg * span + (clock - base)
        carried_key = carried_seg * span + (carried_ts - base)

        refs = np.full((len(table.windows_ms), n), np.nan)  # filled where a rule could fire
        event_rule, event_row = [], []
        row_slot = seg_slot[row_seg]
        # Every window's reference is at most the highest price remembered or seen so far in the batch, so
        # rows above that bound's loosest threshold cannot fire: most rows stop here, at O(1) each.
        carried_top = np.full(len(seg_slot), -np.inf)
        has_deque = deque_len > 0
        carried_top[has_deque] = carried_price[exclusive_cumsum(deque_len)[has_deque]]
        bound = np.maximum(rows_max.query(group.starts[row_seg], np.arange(n)), carried_top[row_seg])
        loosest_any = np.maximum(table.star_fmax.max(), _pad(table.slot_fmax_any, row_slot, -np.inf))
        maybe = np.flatnonzero(price <= bound * loosest_any)
        m_seg, m_clock, m_price, m_slot = row_seg[maybe], clock[maybe], price[maybe], row_slot[maybe]
        for w, window in enumerate(table.windows_ms.tolist() if len(maybe) else ()):
            query = m_seg * span + (m_clock - window - base)
            first = np.searchsorted(row_key, query, side="right")
            ref = rows_max.query(first, maybe)
            if len(carried_key):
                at = np.searchsorted(carried_key, query, side="right")
                inside = at < len(carried_key)
                at = np.minimum(at, len(carried_key) - 1)
                inside &= carried_seg[at] == m_seg
                ref = np.maximum(ref, np.where(inside, carried_price[at], -np.inf))
            refs[w, maybe] = ref
            loosest = np.maximum(table.star_fmax[w], _pad(table.slot_fmax[w], m_slot, -np.inf))
            below_loosest = np.flatnonzero(m_price <= ref * loosest)
            if len(below_loosest) == 0:
                continue
            cand = maybe[below_loosest]
            c_ref, c_price = ref[below_loosest], m_price[below_loosest]
            stars = table.star[w]
            if len(stars):
                count = prefix_counts(c_ref, c_price, table.factor[stars], np.zeros(len(cand), np.int64),
                                      np.full(len(cand), len(stars), np.int64))  # fmt: skip
                event_rule.append(stars[ragged_arange(np.zeros(len(cand), np.int64), count)])
                event_row.append(np.repeat(cand, count))
            offsets = table.slot_offsets[w]
            if len(table.slot_rules[w]):
                c_slot = np.minimum(row_slot[cand], len(offsets) - 2)
                known = row_slot[cand] < len(offsets) - 1
                lo = np.where(known, offsets[c_slot], 0)
                hi = np.where(known, offsets[c_slot + 1], 0)
                count = prefix_counts(c_ref, c_price, table.factor[table.slot_rules[w]], lo, hi)
                event_rule.append(table.slot_rules[w][ragged_arange(lo, count)])
                event_row.append(np.repeat(cand, count))

        fires = self._run_state_machine(
            np.concatenate(event_rule) if event_rule else np.zeros(0, np.int64),
            np.concatenate(event_row) if event_row else np.zeros(0, np.int64),
            clock, row_key, span, base, seg_slot, group.starts, seg_end,
        )  # fmt: skip
        self._keep_history(rows_max, price, clock, seg_slot, group.starts, seg_end, row_seg,
                           carried_ts, carried_price, carried_seg)
        self.clock[seg_slot] = clock[seg_end - 1]
        return self._alerts(batch, fires, batch_row, refs, seg_slot[row_seg])

    def _run_state_machine(self, event_rule: np.ndarray, event_row: np.ndarray, clock: np.ndarray,
                           row_key: np.ndarray, span: int, base: int, seg_slot: np.ndarray,
                           seg_start: np.ndarray, seg_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Fire and re-arm every involved (rule, symbol) pair; returns fired (rule, sorted row) arrays."""
        n_slots = len(self.slots)
        seg_of_slot = np.full(n_slots, -1, np.int64)
        seg_of_slot[seg_slot] = np.arange(len(seg_slot))
        row_slot = np.repeat(seg_slot, seg_end - seg_start)
        touched = seg_of_slot[self.waiting_slot] >= 0
        waiting_keys = self.waiting_rule[touched] * n_slots + self.waiting_slot[touched]
        # one sort puts the below events in (pair, row) order; pair ids then follow the sorted pair keys
        stride = len(clock) + 1
        ordered = np.sort((event_rule * n_slots + row_slot[event_row]) * stride + event_row)
        event_pair_key, event_row = ordered // stride, ordered % stride
        first_of_pair = np.flatnonzero(np.diff(event_pair_key, prepend=-1) != 0)
        event_pairs = event_pair_key[first_of_pair]  # sorted, distinct
        pair_keys = np.union1d(event_pairs, waiting_keys)
        if len(pair_keys) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n_pairs = len(pair_keys)
        pair_rule, pair_slot = pair_keys // n_slots, pair_keys % n_slots
        pair_seg = seg_of_slot[pair_slot]
        pair_end = seg_end[pair_seg]
        pos = seg_start[pair_seg].copy()
        waiting = np.zeros(n_pairs, bool)
        since = np.full(n_pairs, NO_TIME, np.int64)
        waiting_pairs = np.searchsorted(pair_keys, waiting_keys)
        waiting[waiting_pairs] = True
        since[waiting_pairs] = self.waiting_since[touched]
        cooldown = self._table.cooldown_ms[pair_rule]

        # below events keyed (pair id, row), sorted; and where each run of consecutive below rows ends
        per_pair = np.diff(np.append(first_of_pair, len(ordered)))
        events = np.repeat(np.searchsorted(pair_keys, event_pairs), per_pair) * stride + event_row
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
                due = np.clip(since[wait] + cooldown[wait] - base, 0, span - 1)
                start = np.maximum(pos[wait], np.searchsorted(row_key, pair_seg[wait] * span + due, side="left"))
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
                waiting[fire], since[fire], pos[fire] = True, clock[row], row + 1
                alive[armed[~found]] = False

        # waiting pairs of untouched symbols stay; the involved ones are replaced by their new state
        self._set_waiting(np.concatenate([self.waiting_rule[~touched], pair_rule[waiting]]),
                          np.concatenate([self.waiting_slot[~touched], pair_slot[waiting]]),
                          np.concatenate([self.waiting_since[~touched], since[waiting]]))  # fmt: skip
        if not fired_pair:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = np.concatenate(fired_pair)
        return pair_rule[pairs], np.concatenate(fired_row)

    def _keep_history(self, rows_max: RangeMax, price: np.ndarray, clock: np.ndarray, seg_slot: np.ndarray,
                      seg_start: np.ndarray, seg_end: np.ndarray, row_seg: np.ndarray, carried_ts: np.ndarray,
                      carried_price: np.ndarray, carried_seg: np.ndarray) -> None:  # fmt: skip
        """Replace the deques of touched symbols: trades not dominated by a later one, inside the history."""
        n = len(price)
        horizon = clock[seg_end - 1] - self.history_ms  # keep times > horizon
        seg_max = rows_max.query(seg_start, seg_end - 1)
        keep_carried = (carried_price > seg_max[carried_seg]) & (carried_ts > horizon[carried_seg])
        positions = np.arange(n)
        last = seg_end[row_seg] - 1
        later = np.where(positions < last, rows_max.query(np.minimum(positions + 1, last), last), -np.inf)
        keep_new = (price > later) & (clock > horizon[row_seg])
        seg = np.concatenate([carried_seg[keep_carried], row_seg[keep_new]])
        order = np.argsort(seg, kind="stable")  # carried entries come before new ones of the same symbol
        new_ts = np.concatenate([carried_ts[keep_carried], clock[keep_new]])[order]
        new_price = np.concatenate([carried_price[keep_carried], price[keep_new]])[order]
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

    def _alerts(self, batch: TickBatch, fires: tuple[np.ndarray, np.ndarray], batch_row: np.ndarray,
                refs: np.ndarray, row_slot: np.ndarray) -> list[Alert]:  # fmt: skip
        """Alert objects for the fired (rule, sorted row) pairs, in batch-row order then rule id order."""
        rule_index, sorted_row = fires
        if len(rule_index) == 0:
            return []
        table = self._table
        rows = batch_row[sorted_row]
        order = np.lexsort((rule_index, rows))
        has_origin = batch.entry_of.shape[0] == len(batch)
        alerts = []
        for r, s, row in zip(rule_index[order].tolist(), sorted_row[order].tolist(), rows[order].tolist(),
                             strict=True):  # fmt: skip
            rule = table.rules[r]
            symbol = self.slots.names[int(row_slot[s])]
            price = float(batch.price[row])
            reference = float(refs[table.rule_window[r], s])
            drop = actual_drop_pct(price, reference)
            alerts.append(Alert(
                rule_id=rule.id, symbol=symbol, ts=int(batch.ts[row]), price=price, reference_price=reference,
                drop_pct=drop, window_s=rule.window_s,
                message=_message(symbol, price, reference, drop, table.message_tails[r]),
                tick_id=batch.tick_id(row) if has_origin else "", row=row,
            ))  # fmt: skip
        return alerts

    # -- checkpoint --

    def to_bytes(self) -> bytes:
        """The whole stage (rules and state) as one checkpoint byte string."""
        meta = {
            "kind": KIND,
            "rules": [r.to_dict() for r in self._table.rules],
            "symbols": self.slots.names,
            "history_ms": self.history_ms,
        }
        return pack_state(meta, {name: getattr(self, name) for name in self._STATE})

    @classmethod
    def from_bytes(cls, data: bytes) -> SlumpAlerts:
        """A stage restored from `to_bytes`, continuing exactly where the original stood."""
        meta, arrays = unpack_state(data)
        if meta.get("kind") != KIND:
            raise ValueError("checkpoint is not a slump-alert stage")
        stage = cls()
        stage.slots = SymbolSlots(tuple(meta["symbols"]))
        stage.history_ms = int(meta["history_ms"])
        stage._table = _RuleTable.compile([Rule.from_dict(r) for r in meta["rules"]], stage.slots)
        for name in cls._STATE:
            setattr(stage, name, arrays[name])
        return stage

    _STATE = ("clock", "deque_offsets", "deque_ts", "deque_price", "waiting_rule", "waiting_slot", "waiting_since")


def backtest(rules: Rule | Sequence[Rule], batches: Iterable[TickBatch]) -> list[Alert]:
    """Every alert the rules (enabled or not) would have fired over these batches: the live stage's code."""
    chosen = [rules] if isinstance(rules, Rule) else list(rules)
    stage = SlumpAlerts([r if r.enabled else r.evolve(enabled=True) for r in chosen])
    alerts: list[Alert] = []
    for batch in batches:
        alerts.extend(stage.process(batch))
    return alerts

