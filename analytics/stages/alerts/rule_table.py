"""The enabled rules compiled to arrays, (rule, symbol) pairs numbered, and a batch's alerts as columns."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tickerdash.analytics.engine.segments import SymbolSlots
from tickerdash.analytics.stages.alerts.alert import MESSAGE_HEAD, Alert, entry_fields, message_tail
from tickerdash.analytics.stages.alerts.kernels import objects
from tickerdash.analytics.stages.alerts.rules import ANY_SYMBOL, Rule

ARMED = -1  # the due time of a pair that may fire: below every clock, so an armed pair is always "due"
MAX_COOLDOWN_MS = 2**60  # longer cooldowns (millions of years) all mean "never"; keeps due times in int64


@dataclass(frozen=True, slots=True)
class RuleTable:
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
    def compile(cls, rules: Sequence[Rule], slots: SymbolSlots) -> RuleTable:
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
            ids=objects(r.id for r in rules),
            window_texts=objects(f"{r.window_s:g}" for r in rules),
            message_tails=objects(message_tail(r) for r in rules),
        )

    def pair_rule_slot(self, pair: np.ndarray, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
        """Rule index and slot of these pairs, numbered over `n_slots` symbol slots."""
        star_pairs = len(self.star_rules) * n_slots
        slots = max(n_slots, 1)
        star = pair < star_pairs
        single = pair[~star] - star_pairs
        rule = np.empty(len(pair), np.int64)
        slot = np.empty(len(pair), np.int64)
        rule[star], slot[star] = self.star_rules[pair[star] // slots], pair[star] % slots
        rule[~star], slot[~star] = self.single_rules[single], self.single_slot[single]
        return rule, slot


@dataclass(frozen=True, slots=True)
class FiredAlerts:
    """One batch's alerts as columns, in batch-row order, then rule id order.

    In an alert storm many rules fire on one trade against the same reference (one per window at
    most), so everything that depends only on (trade, window) - the numbers as text, the head of the
    message - is held and formatted once per such *group* and shared by its alerts.
    """

    table: RuleTable
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
                MESSAGE_HEAD.format,
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


def merge_alerts(parts: Sequence[FiredAlerts], table: RuleTable) -> FiredAlerts:
    """Alerts of one batch from several rule tables as one, on `table` (every part's rules), rows then rule ids."""
    position = {rule_id: i for i, rule_id in enumerate(table.ids.tolist())}
    rule = np.concatenate(
        [np.array([position[i] for i in part.table.ids.tolist()], np.int64)[part.rule] for part in parts]
    )
    offsets = np.cumsum([0, *(len(part.row) for part in parts)])[:-1]
    group = np.concatenate([part.group + offset for part, offset in zip(parts, offsets, strict=True)])
    row = np.concatenate([part.row for part in parts])
    order = np.lexsort((rule, row[group]))
    tick_ids = [part.tick_id for part in parts]
    return FiredAlerts(
        table=table,
        rule=rule[order],
        group=group[order],
        row=row,
        symbol=np.concatenate([part.symbol for part in parts]),
        ts=np.concatenate([part.ts for part in parts]),
        price=np.concatenate([part.price for part in parts]),
        reference=np.concatenate([part.reference for part in parts]),
        drop=np.concatenate([part.drop for part in parts]),
        tick_id=None if any(t is None for t in tick_ids) else np.concatenate(tick_ids),  # type: ignore[arg-type]
    )
