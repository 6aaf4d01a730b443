"""Slump-alert rules in Redis: the `tickerdash:rules` hash (rule id -> JSON) and a version counter.

Every change writes the hash and increments `Keys.rules_version` in one MULTI/EXEC, so a
worker polls one small GET (`load_if_changed`) a few times a second and reloads the hash only
when something changed: a change reaches every worker well within a second. Writers other than
this module (the dashboard) must go through `RuleStore` too, or bump the counter themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis

from tickerdash.analytics.stages.alerts.rules import Rule, RuleError, now_ms
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import as_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuleSnapshot:
    """All stored rules at one version; `invalid` maps ids whose JSON is unusable to the reason."""

    version: int
    rules: tuple[Rule, ...]
    invalid: dict[str, str]


def parse_rules(raw: dict[bytes, bytes] | dict[str, str]) -> tuple[tuple[Rule, ...], dict[str, str]]:
    """Rules from the hash's fields (sorted by id), and the reason for each entry that is not a valid rule."""
    rules, invalid = [], {}
    for key, value in raw.items():
        rule_id = as_text(key)
        try:
            rule = Rule.from_json(value)
        except RuleError as exc:
            invalid[rule_id] = str(exc)
            continue
        if rule.id != rule_id:
            invalid[rule_id] = f"stored under {rule_id!r} but its JSON says id {rule.id!r}"
            continue
        rules.append(rule)
    return tuple(sorted(rules, key=lambda r: r.id)), invalid


class RuleStore:
    """Add, change, remove and read slump-alert rules; every write bumps the rules version atomically."""

    def __init__(self, client: AnyRedis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    @property
    def version_key(self) -> str:
        return self.keys.rules_version

    def version(self) -> int:
        """The current rules version (0 before the first change)."""
        return int(self.client.get(self.version_key) or 0)

    def _write(self, rule_id: str, must_exist: bool, build: Callable[[Rule | None], Rule] | None) -> Rule | None:
        """WATCH the hash, check the rule's presence, write (or delete) and bump the version in one EXEC."""
        result: list[Rule | None] = [None]

        def attempt(pipe: redis.client.Pipeline) -> None:
            current = pipe.hget(self.keys.rules, rule_id)
            if must_exist and current is None:
                raise RuleError(f"no rule with id {rule_id!r}: see `tickerdash alerts list`")
            if not must_exist and current is not None:
                raise RuleError(f"a rule with id {rule_id!r} exists already: pick another --id")
            old = None if current is None or (build is None and not _readable(current)) else _stored(rule_id, current)
            new = None if build is None else build(old)
            pipe.multi()
            if new is None:
                pipe.hdel(self.keys.rules, rule_id)
            else:
                pipe.hset(self.keys.rules, rule_id, new.to_json())
            pipe.incr(self.version_key)
            result[0] = new if new is not None else old

        self.client.transaction(attempt, self.keys.rules)
        return result[0]

    def add(self, rule: Rule) -> Rule:
        """Store a new rule (version 1); refuses an id that exists."""
        stored = rule.evolve(version=1, updated_at=now_ms())
        self._write(rule.id, must_exist=False, build=lambda old: stored)
        return stored

    def update(self, rule: Rule) -> Rule:
        """Replace an existing rule; its version becomes the stored one + 1 (so workers restart its state)."""

        def build(old: Rule | None) -> Rule:
            return rule.evolve(version=(old.version if old else 0) + 1, updated_at=now_ms())

        written = self._write(rule.id, must_exist=True, build=build)
        assert written is not None
        return written

    def set_enabled(self, rule_id: str, enabled: bool) -> Rule:
        """Enable or disable a rule (a new version either way)."""

        def build(old: Rule | None) -> Rule:
            assert old is not None
            return old.evolve(enabled=enabled, version=old.version + 1, updated_at=now_ms())

        written = self._write(rule_id, must_exist=True, build=build)
        assert written is not None
        return written

    def enable(self, rule_id: str) -> Rule:
        """Turn a rule on."""
        return self.set_enabled(rule_id, True)

    def disable(self, rule_id: str) -> Rule:
        """Turn a rule off (it stays stored)."""
        return self.set_enabled(rule_id, False)

    def remove(self, rule_id: str) -> Rule | None:
        """Delete a rule; returns what was stored, or None when there was no (readable) rule with that id."""
        if not self.client.hexists(self.keys.rules, rule_id):
            return None
        try:
            return self._write(rule_id, must_exist=True, build=None)
        except RuleError:  # removed by someone else in between
            return None

    def get(self, rule_id: str) -> Rule | None:
        """One stored rule, or None when there is none with that id."""
        raw = self.client.hget(self.keys.rules, rule_id)
        return None if raw is None else _stored(rule_id, raw)

    def require(self, rule_id: str) -> Rule:
        """One stored rule, or RuleError saying the id is unknown."""
        rule = self.get(rule_id)
        if rule is None:
            raise RuleError(f"no rule with id {rule_id!r}: see `tickerdash alerts list`")
        return rule

    def snapshot(self) -> RuleSnapshot:
        """Every stored rule and the version they belong to, read in one MULTI/EXEC."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.version_key)
        pipe.hgetall(self.keys.rules)
        version, raw = pipe.execute()
        rules, invalid = parse_rules(raw)
        for rule_id, reason in invalid.items():
            log.warning("rule %s in %s is ignored: %s", rule_id, self.keys.rules, reason)
        return RuleSnapshot(int(version or 0), rules, invalid)

    def list(self) -> tuple[Rule, ...]:
        """Every valid stored rule, sorted by id."""
        return self.snapshot().rules

    def load_if_changed(self, last_version: int | None) -> RuleSnapshot | None:
        """The rules when the version differs from `last_version` (None: always), else None; one GET when unchanged."""
        if last_version is not None and self.version() == last_version:
            return None
        return self.snapshot()


def _readable(raw: bytes | str) -> bool:
    try:
        Rule.from_json(raw)
    except RuleError:
        return False
    return True


def _stored(rule_id: str, raw: bytes | str) -> Rule:
    try:
        return Rule.from_json(raw)
    except RuleError as exc:
        raise RuleError(f"stored rule {rule_id!r} is invalid ({exc}): remove it and add it again") from None


def load_if_changed(client: AnyRedis, last_version: int | None, keys: Keys | None = None) -> RuleSnapshot | None:
    """For the worker's poll: the stored rules if they changed since `last_version`, else None."""
    return RuleStore(client, keys).load_if_changed(last_version)
