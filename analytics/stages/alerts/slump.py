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
window. The state of every (rule, symbol) pair is one dense array of "due" times (armed, or when a
waiting pair may re-arm), so the pairs that can change state in a batch - armed ones, and waiting
ones whose cooldown ends in it - are found with a gather. A row is a candidate only when it is
below the loosest threshold of those pairs on its symbol (during an alert storm most pairs wait, so
few rows are); for candidates a vectorised binary search over the rules (sorted loosest first)
finds which they are below. The fire/re-arm state machine then runs over the pairs with such
events or a due cooldown, in vectorised rounds (one round per state change, so usually one or two).
Alerts come out as columns (`FiredAlerts`) whose entry fields are formatted in bulk, once per
(trade, window) however many rules fire on it.
Everything is a function of each symbol's trade sequence only: batch boundaries and checkpoints do
not change a single alert.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tickerdash.analytics.engine.segments import (
    NO_TIME,
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
from tickerdash.analytics.stages.alerts.rules import ANY_SYMBOL, Rule, RuleError, format_duration
from tickerdash.ingest.contract.tick_entries import as_text
from tickerdash.ingest.ticks import TickBatch

ARMED = -1  # the due time of a pair that may fire: below every clock, so an armed pair is always "due"
_INF_BITS = 0x7FF0_0000_0000_0000  # bits of +inf: positive finite doubles are the int64s in (0, this)
MAX_COOLDOWN_MS = 2**60  # longer cooldowns (millions of years) all mean "never"; keeps due times in int64
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
            "rule_id": self.rule_id,
            "symbol": self.symbol,
            "ts": self.ts,
            "price": self.price,
            "reference_price": self.reference_price,
            "drop_pct": self.drop_pct,
            "window_s": self.window_s,
            "message": self.message,
            "tick_id": self.tick_id,
        }


def alert_message(rule: Rule, symbol: str, price: float, reference: float, drop_pct: float) -> str:
    """A readable sentence for an alert."""
    return _message(symbol, price, reference, drop_pct, _message_tail(rule))


def _message_tail(rule: Rule) -> str:
    return f"within {format_duration(rule.window_s)} (rule {rule.title}: -{rule.drop_pct:g}%)"


_MESSAGE_HEAD = "{} fell {:.2f}% to {:.10g} from {:.10g} "  # symbol, drop, price, reference


def _message(symbol: str, price: float, reference: float, drop_pct: float, tail: str) -> str:
    return _MESSAGE_HEAD.format(symbol, drop_pct, price, reference) + tail


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


def prefix_counts(
    ref: np.ndarray, price: np.ndarray, factors: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
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
    """Enabled rules (sorted by id) as arrays, grouped by window and by the symbol slot they watch.

    A (rule, symbol) *pair* has a number: a `*` rule at position j of `star_rules` and slot s is
    pair j * n_slots + s; single-symbol rule k of `single_rules` is pair n_star * n_slots + k.
    """

    rules: tuple[Rule, ...]
    windows_ms: np.ndarray  # distinct windows
    rule_window: np.ndarray  # index into windows_ms, per rule
    factor: np.ndarray  # 1 - drop/100, per rule
    cooldown_ms: np.ndarray
    star_rules: np.ndarray  # `*` rules by window, loosest (largest factor) first within a window
    star_bounds: np.ndarray  # window w's `*` rules are star_rules[star_bounds[w]:star_bounds[w + 1]]
    star_factor: np.ndarray
    single_rules: np.ndarray  # single-symbol rules by window, then slot, loosest first within a slot
    single_slot: np.ndarray
    single_window: np.ndarray
    single_factor: np.ndarray
    slot_offsets: tuple[np.ndarray, ...]  # per window: CSR offsets over slots into single_rules
    rule_is_star: np.ndarray
    rule_position: np.ndarray  # per rule: its index in star_rules or in single_rules
    loosest_of_slot: np.ndarray  # per slot: loosest factor of any rule watching it (-inf when none)
    loosest_star: float
    watched: np.ndarray  # per slot: some rule watches it
    watch_all: bool
    ids: np.ndarray  # per rule, as objects (gathered per alert)
    window_texts: np.ndarray  # per rule: window_s as the alert field
    message_tails: np.ndarray  # per rule: the end of its alert messages (built once)

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
        rule_window = rule_window.astype(np.int64).reshape(n_rules)
        factor = np.array([r.factor for r in rules], np.float64)
        is_star = rule_slot < 0
        star = np.flatnonzero(is_star)
        star = star[np.lexsort((-factor[star], rule_window[star]))]
        single = np.flatnonzero(~is_star)
        single = single[np.lexsort((-factor[single], rule_slot[single], rule_window[single]))]
        single_window = rule_window[single]
        window_ids = np.arange(len(windows_ms) + 1)
        star_bounds = np.searchsorted(rule_window[star], window_ids)
        single_bounds = np.searchsorted(single_window, window_ids)
        offsets = tuple(
            np.concatenate([[0], np.cumsum(np.bincount(rule_slot[single[lo:hi]], minlength=n_slots))]).astype(np.int64)
            + lo
            for lo, hi in itertools.pairwise(single_bounds.tolist())
        )
        position = np.zeros(n_rules, np.int64)
        position[star] = np.arange(len(star))
        position[single] = np.arange(len(single))
        loosest = np.full(n_slots, -np.inf)
        np.maximum.at(loosest, rule_slot[single], factor[single])
        watched = np.zeros(n_slots, bool)
        watched[rule_slot[single]] = True
        return cls(
            rules=tuple(rules),
            windows_ms=windows_ms,
            rule_window=rule_window,
            factor=factor,
            cooldown_ms=np.array([min(r.cooldown_ms, MAX_COOLDOWN_MS) for r in rules], np.int64),
            star_rules=star,
            star_bounds=star_bounds,
            star_factor=factor[star],
            single_rules=single,
            single_slot=rule_slot[single],
            single_window=single_window,
            single_factor=factor[single],
            slot_offsets=offsets,
            rule_is_star=is_star,
            rule_position=position,
            loosest_of_slot=loosest,
            loosest_star=float(factor[star].max()) if len(star) else -np.inf,
            watched=watched,
            watch_all=bool(len(star)),
            ids=_objects(r.id for r in rules),
            window_texts=_objects(f"{r.window_s:g}" for r in rules),
            message_tails=_objects(_message_tail(r) for r in rules),
        )


def _objects(items: Iterable[str]) -> np.ndarray:
    """Strings as a 1-D object array (fancy indexing gathers them without a Python loop)."""
    values = list(items)
    out = np.empty(len(values), object)
    out[:] = values
    return out


@dataclass(frozen=True, slots=True)
class FiredAlerts:
    """One batch's alerts as columns, in batch-row order, then rule id order.

    In an alert storm many rules fire on one trade against the same reference (one per window at
    most), so everything that depends only on (trade, window) - the numbers as text, the head of the
    message - is held and formatted once per such *group* and shared by its alerts.
    """

    table: _RuleTable
    rule: np.ndarray  # per alert: index into table.rules
    group: np.ndarray  # per alert: its (trade, window) group
    row: np.ndarray  # per group: the trade's row in the batch
    symbol: np.ndarray  # per group (objects)
    ts: np.ndarray
    price: np.ndarray
    reference: np.ndarray
    drop: np.ndarray
    tick_id: np.ndarray | None  # per group (objects); None when the batch has no stream origin

    def __len__(self) -> int:
        return len(self.rule)

    def _heads(self) -> list[str]:
        """Per group: the message up to the rule's own words."""
        return list(
            map(
                _MESSAGE_HEAD.format,
                self.symbol.tolist(),
                self.drop.tolist(),
                self.price.tolist(),
                self.reference.tolist(),
            )
        )

    def messages(self) -> list[str]:
        """The readable sentence of every alert."""
        heads = self._heads()
        return [
            heads[g] + tail
            for g, tail in zip(self.group.tolist(), self.table.message_tails[self.rule].tolist(), strict=True)
        ]

    def to_fields(self) -> list[dict[str, str]]:
        """Every alert's `tickerdash:alerts` entry as a dict, equal to `Alert.to_fields` of `to_alerts()`."""
        return [entry_fields(entry) for entry in self.to_entries_json()]

    def to_entries_json(self) -> list[str]:
        """Every alert's entry as a JSON array `[field, value, ...]` (`Alert.to_fields` flattened), without a
        dict or list per alert (in an alert storm building those, then encoding them, cost more than the stage).

        The pieces are escaped once per group and once per rule, and joined per alert: JSON escapes each
        character on its own, so the escaped head and tail of a message join into the escaped message.
        """
        if not len(self):
            return []
        dumps = json.dumps
        tick_ids = self.tick_id.tolist() if self.tick_id is not None else None
        middles = [
            f',"symbol",{dumps(symbol)},"ts","{ts}","price","{price!r}","reference_price","{reference!r}",'
            f'"drop_pct","{drop!r}"'
            for symbol, ts, price, reference, drop in zip(
                self.symbol.tolist(),
                self.ts.tolist(),
                self.price.tolist(),
                self.reference.tolist(),
                self.drop.tolist(),
                strict=True,
            )
        ]
        ends = [',"tick_id",' + dumps(t) + "]" for t in tick_ids] if tick_ids is not None else ["]"] * len(middles)
        heads = [dumps(head)[:-1] for head in self._heads()]  # the opening quote and the escaped head
        table = self.table
        rules, rule_at = np.unique(self.rule, return_inverse=True)  # the pieces of the rules that fired, by rank
        starts = ['["rule_id",' + dumps(i) for i in table.ids[rules].tolist()]
        windows = [',"window_s",' + dumps(w) + ',"message",' for w in table.window_texts[rules].tolist()]
        tails = [dumps(t)[1:] for t in table.message_tails[rules].tolist()]
        return [  # one f-string builds each entry in one allocation (chained + made five)
            f"{starts[r]}{middles[g]}{windows[r]}{heads[g]}{tails[r]}{ends[g]}"
            for g, r in zip(self.group.tolist(), rule_at.tolist(), strict=True)
        ]

    def to_alerts(self) -> list[Alert]:
        """The alerts as `Alert` objects."""
        if not len(self):
            return []
        g, rules = self.group, self.table.rules
        tick_ids = self.tick_id[g].tolist() if self.tick_id is not None else [""] * len(self)
        return [
            Alert(
                rule_id=rules[r].id,
                symbol=symbol,
                ts=ts,
                price=price,
                reference_price=reference,
                drop_pct=drop,
                window_s=rules[r].window_s,
                message=message,
                tick_id=tick_id,
                row=row,
            )
            for r, symbol, ts, price, reference, drop, message, tick_id, row in zip(
                self.rule.tolist(),
                self.symbol[g].tolist(),
                self.ts[g].tolist(),
                self.price[g].tolist(),
                self.reference[g].tolist(),
                self.drop[g].tolist(),
                self.messages(),
                tick_ids,
                self.row[g].tolist(),
                strict=True,
            )
        ]


def entry_fields(entry: str) -> dict[str, str]:
    """One alert entry as `to_entries_json` writes it (a JSON array of field, value, ...) as a dict."""
    flat = json.loads(entry)
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class _Segments:
    """The batch's watched trades grouped by symbol (arrival order kept), with each symbol's clock."""

    batch_row: np.ndarray  # batch row of each sorted row
    slot: np.ndarray  # per segment: symbol slot
    start: np.ndarray
    end: np.ndarray
    row_seg: np.ndarray  # per sorted row: its segment
    price: np.ndarray
    clock: np.ndarray

    @property
    def last_clock(self) -> np.ndarray:
        """Per segment: the symbol's clock after the batch."""
        return self.clock[self.end - 1]


@dataclass(frozen=True, slots=True)
class _History:
    """The carried deques of a batch's symbols in segment order, and the batch's (segment, time) keys.

    A (segment, time) pair packed into one int64 key sorts across segments, so window starts are
    one binary search.
    """

    ts: np.ndarray
    price: np.ndarray
    seg: np.ndarray
    top: np.ndarray  # per segment: highest remembered price (-inf when none)
    base: int
    span: int
    row_key: np.ndarray
    key: np.ndarray


@dataclass(frozen=True, slots=True)
class _Below:
    """One window's rows below the loosest live threshold, and how many rules of each list they are below."""

    rows: np.ndarray  # sorted rows, so grouped by segment
    seg: np.ndarray
    star: np.ndarray  # how many of the window's `*` rules (loosest first) the row is below
    single_lo: np.ndarray  # where the window's rules of the row's symbol start in single_rules
    single: np.ndarray  # how many of those (loosest first) the row is below


class _Scans:
    """Running maxima of the batch's prices within each symbol's rows, exact and in a few array passes.

    The int64 bit pattern of a positive finite double orders like the double, so within a segment
    a price becomes a small integer (its bits minus the segment's lowest bits); lifting each segment
    above the next (or the previous) lets one `maximum.accumulate` scan all segments at once. When a
    symbol's prices in the batch span too wide a range for that (beyond a factor of ~4 with 500
    symbols), a sparse table and a doubling scan give the same results more slowly.
    """

    __slots__ = ("_prefix", "_table", "order", "segs")

    def __init__(self, segs: _Segments) -> None:
        self.segs = segs
        self._prefix: np.ndarray | None = None
        self._table: RangeMax | None = None
        bits = segs.price.view(np.int64)
        low, high = np.minimum.reduceat(bits, segs.start), np.maximum.reduceat(bits, segs.start)
        width = int((high - low).max()) + 1
        fits = int(low.min()) > 0 and int(high.max()) < _INF_BITS and width * (len(low) + 1) < 2**62
        low_of_row = low[segs.row_seg] if fits else bits
        # (rank within the segment, segment lift, lowest bits of the row's segment, rank width)
        self.order = (bits - low_of_row, segs.row_seg * width, low_of_row, width) if fits else None

    def later_lower(self) -> np.ndarray:
        """Per row: whether every later price of its segment is lower."""
        segs = self.segs
        if self.order is None:
            return segs.price > max_after(segs.price, segs.end[segs.row_seg])
        rank, lift, _, width = self.order
        key = (len(segs.start) - 1) * width - lift + rank  # later segments below earlier ones
        highest_from = np.maximum.accumulate(key[::-1])[::-1]
        return key > np.append(highest_from[1:], -1)

    def prefix(self) -> np.ndarray:
        """Per row: the highest price of its segment's rows up to it."""
        if self._prefix is None:
            if self.order is None:
                segs = self.segs
                self._prefix = self.table().query(segs.start[segs.row_seg], np.arange(len(segs.price)))
            else:
                rank, lift, low_of_row, _ = self.order
                self._prefix = (np.maximum.accumulate(lift + rank) - lift + low_of_row).view(np.float64)
        return self._prefix

    def table(self) -> RangeMax:
        """A sparse table over the batch's prices (for ranges that start inside a segment)."""
        if self._table is None:
            self._table = RangeMax(self.segs.price)
        return self._table


class SlumpAlerts:
    """The alert stage: `evaluate(batch)` gives the alerts the batch fires as columns, `process` as objects."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.slots = SymbolSlots()
        self.history_ms = 0  # how long trades are remembered: the longest window ever had
        self.clock = np.zeros(0, np.int64)
        # Per slot, the monotonic deque of remembered trades, laid end to end
        # (slot s owns deque_ts/deque_price[deque_offsets[s]:deque_offsets[s+1]]; prices strictly fall).
        self.deque_offsets = np.zeros(1, np.int64)
        self.deque_ts = np.zeros(0, np.int64)
        self.deque_price = np.zeros(0, np.float64)
        # Per (rule, symbol) pair (numbered as in _RuleTable): ARMED, or the event time from which the
        # waiting pair may re-arm (its firing trade's time + cooldown). Dense, so that state is one gather.
        self.pair_due = np.zeros(0, np.int64)
        self._table = _RuleTable.compile((), self.slots)
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
        self._table = _RuleTable.compile(enabled, self.slots)
        self._grow_symbols(len(self.slots))
        self._set_waiting(new_rule[keep], waiting_slot[keep], waiting_since[keep])

    def _pair_rule_slot(self, pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rule index and slot of these pairs."""
        table, n_slots = self._table, max(len(self.clock), 1)
        star_pairs = len(table.star_rules) * len(self.clock)
        star = pair < star_pairs
        single = pair[~star] - star_pairs
        rule = np.empty(len(pair), np.int64)
        slot = np.empty(len(pair), np.int64)
        rule[star], slot[star] = table.star_rules[pair[star] // n_slots], pair[star] % n_slots
        rule[~star], slot[~star] = table.single_rules[single], table.single_slot[single]
        return rule, slot

    def _waiting(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Waiting pairs as (rule index, slot, time of the firing trade), in a canonical order."""
        pair = np.flatnonzero(self.pair_due != ARMED)
        rule, slot = self._pair_rule_slot(pair)
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

    def _watched_rows(self, row_slot: np.ndarray) -> np.ndarray | None:
        """Rows of watched symbols (None: every row)."""
        table = self._table
        if table.watch_all:
            return None
        mask = _pad(table.watched, row_slot, False)
        return None if mask.all() else np.flatnonzero(mask)

    def process(self, batch: TickBatch) -> list[Alert]:
        """Update every watched symbol with the batch's trades and return the alerts they fire, in row order."""
        return self.evaluate(batch).to_alerts()

    def evaluate(self, batch: TickBatch) -> FiredAlerts:
        """Update every watched symbol with the batch's trades; the alerts they fire, as columns."""
        table = self._table
        if len(batch) == 0 or not table.rules:
            return self._fired(batch, None, _NO_FIRES)
        if int(batch.ts.max()) >= 2**TS_BITS or int(batch.ts.min()) < 0:
            raise ValueError("ts must be epoch milliseconds in [0, 2**42)")
        slot_of_local = self.slots.slots_for(batch.symbols)
        self._add_slots(len(self.slots))
        rows = self._watched_rows(slot_of_local[batch.symbol_idx])
        symbol_idx = batch.symbol_idx if rows is None else batch.symbol_idx[rows]
        if len(symbol_idx) == 0:
            return self._fired(batch, None, _NO_FIRES)
        group = Grouping.of(symbol_idx, len(batch.symbols))
        batch_row = group.order if rows is None else rows[group.order]
        price = batch.price[batch_row]
        seg_slot = slot_of_local[group.local_symbol]
        segs = _Segments(
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
        scans = _Scans(segs)
        fires = self._fire(segs, history, scans, np.maximum(seg_max, history.top))
        self._keep_history(segs, history, scans, seg_max)
        self.clock[segs.slot] = segs.last_clock
        return self._fired(batch, segs, fires)

    def _history(self, segs: _Segments) -> _History:
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
        return _History(
            ts=ts,
            price=price,
            seg=seg,
            top=top,
            base=base,
            span=span,
            row_key=segs.row_seg * span + (clock - base),
            key=seg * span + (ts - base),
        )

    def _live_loosest(self, segs: _Segments, star_due: np.ndarray, seg_of_slot: np.ndarray) -> np.ndarray:
        """Per window and segment: the loosest factor of the pairs that may fire in this batch (-inf: none).

        A pair may fire when it is armed or due (its cooldown ends by the symbol's last trade here).
        """
        table = self._table
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

    def _fire(self, segs: _Segments, history: _History, scans: _Scans, seg_top: np.ndarray) -> tuple[np.ndarray, ...]:
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
        table = self._table
        n_slots, n_star = len(self.clock), len(table.star_rules)
        price, row_seg, seg_slot = segs.price, segs.row_seg, segs.slot
        # a waiting pair's due time as unsigned: ARMED (-1) is the largest, so min() is the first re-arm
        due_any = int(self.pair_due.view(np.uint64).min(initial=2**64 - 1)) <= int(segs.clock.max())
        seg_low = np.minimum.reduceat(price, segs.start)
        loosest_static = np.maximum(table.loosest_star, _pad(table.loosest_of_slot, seg_slot, -np.inf))
        if not due_any and not (seg_low <= seg_top * loosest_static).any():
            return _NO_FIRES
        seg_of_slot = np.full(n_slots, -1, np.int64)
        seg_of_slot[seg_slot] = np.arange(len(seg_slot))
        star_due = self.pair_due[: n_star * n_slots].reshape(n_star, n_slots)[:, seg_slot]
        loosest = self._live_loosest(segs, star_due, seg_of_slot)
        maybe = np.flatnonzero(price <= (seg_top * loosest.max(axis=0))[row_seg])

        refs = np.full((len(table.windows_ms), len(price)), np.nan)  # filled where a rule could fire
        below: dict[int, _Below] = {}
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
        rule, _ = self._pair_rule_slot(pair)
        armed = self.pair_due[pair] == ARMED
        due = segs.clock[row] + table.cooldown_ms[rule]
        done = armed & (due > segs.last_clock[row_seg[row]])
        self.pair_due[pair[done]] = due[done]
        more_rule, more_row = self._run_state_machine(
            np.concatenate([pair[armed & ~done], due_pairs]), below, segs, history, seg_of_slot
        )
        rule, row = np.concatenate([rule[done], more_rule]), np.concatenate([row[done], more_row])
        return rule, row, refs[table.rule_window[rule], row]

    def _below(self, w: int, rows: np.ndarray, ref: np.ndarray, segs: _Segments) -> _Below:
        """How many rules of window w each of these rows is below, per list (`*` rules, its symbol's rules)."""
        table = self._table
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
        return _Below(rows=rows, seg=seg, star=star, single_lo=single_lo, single=single)

    def _due_pairs(self, segs: _Segments, star_due: np.ndarray, seg_of_slot: np.ndarray) -> np.ndarray:
        """Waiting pairs of the batch's symbols whose cooldown ends by their symbol's last trade here."""
        table, n_slots = self._table, len(self.clock)
        last = segs.last_clock
        j, seg = np.nonzero((star_due >= 0) & (star_due <= last))
        single = self.pair_due[len(self.pair_due) - len(table.single_rules) :]
        single_seg = seg_of_slot[table.single_slot]
        due = (single >= 0) & (single_seg >= 0)
        due[due] = single[due] <= last[single_seg[due]]
        return np.concatenate([j * n_slots + segs.slot[seg], len(table.star_rules) * n_slots + np.flatnonzero(due)])

    def _events(
        self, pairs: np.ndarray, below: dict[int, _Below], segs: _Segments, seg_of_slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every below trade of these pairs that can matter, as (pair, sorted row) arrays.

        A waiting pair's below trades before its due time cannot matter: they are left out.
        """
        table, n_slots = self._table, len(self.clock)
        star_pairs = len(table.star_rules) * n_slots
        rule, slot = self._pair_rule_slot(pairs)
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

    def _reference(
        self, rows: np.ndarray, window: int, segs: _Segments, history: _History, scans: _Scans
    ) -> np.ndarray:
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
        self, pairs: np.ndarray, below: dict[int, _Below], segs: _Segments, history: _History, seg_of_slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fire and re-arm these pairs over every below trade of theirs; fired (rule, sorted row) arrays.

        Each round moves every pair still in play by one state change, vectorised: usually one or two rounds.
        """
        if len(pairs) == 0:
            return _NO_FIRES[:2]
        event_pair, event_row = self._events(pairs, below, segs, seg_of_slot)
        stride = len(segs.price) + 1
        events = np.sort(event_pair * stride + event_row)
        event_pair = events // stride
        first_of_pair = np.flatnonzero(np.diff(event_pair, prepend=-1) != 0)
        event_pairs = event_pair[first_of_pair]  # sorted, distinct
        pair_keys = np.unique(pairs)  # every pair with events is one of these
        n_pairs = len(pair_keys)
        pair_rule, pair_slot = self._pair_rule_slot(pair_keys)
        pair_seg = seg_of_slot[pair_slot]
        pair_end = segs.end[pair_seg]
        pos = segs.start[pair_seg].copy()
        due = self.pair_due[pair_keys].copy()
        waiting = due != ARMED
        cooldown = self._table.cooldown_ms[pair_rule]
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
            return _NO_FIRES[:2]
        return pair_rule[np.concatenate(fired_pair)], np.concatenate(fired_row)

    def _keep_history(self, segs: _Segments, history: _History, scans: _Scans, seg_max: np.ndarray) -> None:
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

    def _fired(self, batch: TickBatch, segs: _Segments | None, fires: tuple[np.ndarray, ...]) -> FiredAlerts:
        """The fired (rule, sorted row, reference) triples as columns, in batch-row order then rule id order."""
        rule, sorted_row, reference = fires
        table = self._table
        if segs is None or len(rule) == 0:
            empty = np.zeros(0, np.int64)
            return FiredAlerts(
                table, empty, empty, empty, _objects(()), empty, np.zeros(0), np.zeros(0), np.zeros(0), None
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
            entries = _objects(batch.entry_ids)[batch.entry_of[row]].tolist()
            offsets = batch.row_in_entry[row].tolist()
            tick_id = _objects(
                entry if offset < 0 else f"{entry}#{offset}" for entry, offset in zip(entries, offsets, strict=True)
            )
        return FiredAlerts(
            table=table,
            rule=rule,
            group=group.reshape(-1),
            row=row,
            symbol=_objects(self.slots.names)[segs.slot[segs.row_seg[sorted_row[first]]]],
            ts=batch.ts[row],
            price=price,
            reference=reference,
            drop=100.0 * (1.0 - price / reference),
            tick_id=tick_id,
        )

    # -- checkpoint --

    def to_bytes(self) -> bytes:
        """The whole stage (rules and state) as one checkpoint byte string."""
        meta = {
            "kind": KIND,
            "rules": [r.to_dict() for r in self._table.rules],
            "symbols": self.slots.names,
            "history_ms": self.history_ms,
        }
        arrays = {name: getattr(self, name) for name in self._SYMBOL_STATE}
        arrays.update(zip(self._WAITING_STATE, self._waiting(), strict=True))
        return pack_state(meta, arrays)

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
        for name in cls._SYMBOL_STATE:
            setattr(stage, name, arrays[name])
        stage._set_waiting(*(arrays[name] for name in cls._WAITING_STATE))
        return stage

    _SYMBOL_STATE = ("clock", "deque_offsets", "deque_ts", "deque_price")
    _WAITING_STATE = ("waiting_rule", "waiting_slot", "waiting_since")


_NO_FIRES = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))


def first_of_ranks(seg: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each rank is first reached: rows grouped by segment, row i below the first count[i] rules of a list.

    Returns (row index, rank) pairs: for every rank q some row of a segment reaches (count > q), the
    first such row of that segment. A running maximum per segment does it: the ranks a row adds are
    those between the segment's maximum before it and its own count.
    """
    if len(count) == 0:
        return count, count
    width = int(count.max()) + 1
    offset = seg * width  # segments ascend, so the running maximum never leaks into the next one
    before = np.zeros(len(count), np.int64)
    before[1:] = np.maximum.accumulate(offset + count)[:-1] - offset[1:]
    before = np.maximum(before, 0)  # a segment's first row: nothing before it
    new = np.maximum(count - before, 0)
    at = np.flatnonzero(new)
    return np.repeat(at, new[at]), ragged_arange(before[at], new[at])


def max_after(values: np.ndarray, segment_end: np.ndarray) -> np.ndarray:
    """For each row, the highest value of the later rows of its contiguous segment (-inf for a last row).

    `segment_end[i]` is the end (exclusive) of row i's segment. Doubling: after the step with stride d
    each row covers the next min(2d, remaining) rows, so it takes log2(longest segment) vectorised steps.
    """
    n = len(values)
    later = np.full(n, -np.inf)
    later[:-1] = values[1:]
    remaining = segment_end - np.arange(n) - 1  # rows after this one in its segment
    later[remaining == 0] = -np.inf
    stride, longest = 1, int(remaining.max(initial=0))
    while stride < longest:
        np.maximum(later[:-stride], later[stride:], out=later[:-stride], where=remaining[:-stride] > stride)
        stride *= 2
    return later


def backtest(rules: Rule | Sequence[Rule], batches: Iterable[TickBatch]) -> list[Alert]:
    """Every alert the rules (enabled or not) would have fired over these batches: the live stage's code."""
    chosen = [rules] if isinstance(rules, Rule) else list(rules)
    stage = SlumpAlerts([r if r.enabled else r.evolve(enabled=True) for r in chosen])
    alerts: list[Alert] = []
    for batch in batches:
        alerts.extend(stage.process(batch))
    return alerts
