"""The rule editor's model: form text in, validated rules out, through the same code as the CLI.

Validation is `analytics.stages.alerts.rules` (the CLI's `make_rule`); storage is `analytics.stages.alerts.store`, so a
rule saved here is exactly what `tickerdash alerts add` would have saved. A `RuleError` names its
field at the start of its message ("drop_pct: ..."); the editor uses that to show it beside the field.
"""

from __future__ import annotations

import re
from typing import Any

from tickerdash.analytics.stages.alerts.rules import MAX_NAME_LEN, Rule, RuleError, format_duration, make_rule
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys

FORM_FIELDS = ("id", "symbol", "drop_pct", "window_s", "cooldown_s", "name")
# What each field of the form takes, said as the page says it (the rule's own checks stay in rules.py).
FIELD_RULES = {
    "id": "Id must be 1 to 64 letters, digits, _ . or -, or empty for a random id",
    "symbol": "Symbol must be a ticker such as AAPL, or * for every symbol",
    "drop_pct": "Drop must be a number between 0 and 100 (percent), e.g. 5",
    "window_s": "Window must be a duration from 1ms to 7d, e.g. 60s, 5m or 1h",
    "cooldown_s": "Cooldown must be a duration such as 30s or 5m, or empty to use the window",
    "name": f"Name must be text of at most {MAX_NAME_LEN} characters",
}
CLI_FLAG = re.compile(r"--([a-z][a-z-]*)")


class RuleFormError(ValueError):
    """A form value was refused; `field` is the form field to show `message` beside ('' for the form)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def field_of(error: RuleError) -> str:
    """The form field a rule error is about (from its 'field: ...' prefix), or '' when it names none."""
    head = str(error).split(":", 1)[0].strip()
    return head if head in FORM_FIELDS else ""


def page_message(field: str, message: str, value: Any = None) -> str:
    """A rule error in the form's words: the field's own sentence (with what was typed), else the message with
    CLI flags and field names said plainly."""
    typed = "" if value is None else str(value).strip()
    if field in FIELD_RULES:
        return FIELD_RULES[field] + (f"; “{typed[:40]}” is not." if typed else ".")
    text = message.split(":", 1)[1].strip() if field and message.startswith(f"{field}:") else message
    text = CLI_FLAG.sub(lambda flag: flag.group(1).replace("-", " "), text)
    label = field.removesuffix("_s").removesuffix("_pct").replace("_", " ")
    return f"{label.capitalize()}: {text}" if label else text[:1].upper() + text[1:]


def _blank_to_none(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


class RuleEditor:
    """List, save, toggle and remove rules in Redis for the dashboard's editor."""

    def __init__(self, client: AnyRedis, keys: Keys) -> None:
        self.store = RuleStore(client, keys)

    def list(self) -> list[dict[str, Any]]:
        """Every rule as the table shows it (text for durations), ordered by id."""
        return [
            {
                "id": r.id,
                "symbol": r.symbol,
                "drop_pct": f"{r.drop_pct:g}",
                "window": format_duration(r.window_s),
                "cooldown": "= window" if r.cooldown_s is None else format_duration(r.cooldown_s),
                "name": r.name,
                "enabled": r.enabled,
            }
            for r in sorted(self.store.list(), key=lambda rule: rule.id)
        ]

    def form_values(self, rule_id: str) -> dict[str, Any] | None:
        """A stored rule as form text, for editing; None when it is gone."""
        rule = self.store.get(rule_id)
        if rule is None:
            return None
        return {
            "id": rule.id,
            "symbol": rule.symbol,
            "drop_pct": f"{rule.drop_pct:g}",
            "window_s": format_duration(rule.window_s),
            "cooldown_s": "" if rule.cooldown_s is None else format_duration(rule.cooldown_s),
            "name": rule.name,
            "enabled": rule.enabled,
            "include_bad_prints": rule.include_bad_prints,
        }

    def save(self, form: dict[str, Any], *, enabled: bool, include_bad_prints: bool = False) -> Rule:
        """Validate the form and add the rule (or update it when its id exists); RuleFormError if refused."""
        rule_id = _blank_to_none(form.get("id"))
        try:
            rule = make_rule(
                symbol=_blank_to_none(form.get("symbol")) or "",
                drop=_blank_to_none(form.get("drop_pct")) or "",
                window=_blank_to_none(form.get("window_s")) or "",
                cooldown=_blank_to_none(form.get("cooldown_s")),
                name=_blank_to_none(form.get("name")) or "",
                rule_id=rule_id,
                enabled=enabled,
                include_bad_prints=include_bad_prints,
            )
            if rule_id is not None and self.store.get(rule_id) is not None:
                return self.store.update(rule)
            return self.store.add(rule)
        except RuleError as exc:
            field = field_of(exc)
            raise RuleFormError(field, page_message(field, str(exc), form.get(field))) from None

    def set_enabled(self, rule_id: str, enabled: bool) -> str:
        """Enable or disable a rule (nothing to do when it already is); says what it did."""
        rule = self.store.get(rule_id)
        if rule is None:
            return f"rule {rule_id} is gone"
        word = "enabled" if enabled else "disabled"
        if rule.enabled == enabled:
            return f"rule {rule_id} is {word}"
        try:
            self.store.set_enabled(rule_id, enabled)
        except RuleError as exc:  # removed by someone else in between
            return str(exc)
        return f"{word} rule {rule_id}"

    def remove(self, rule_id: str) -> bool:
        """Delete a rule; False when it was already gone."""
        return self.store.remove(rule_id) is not None
