"""The rule editor's errors are in the form's words: what the field takes, never a CLI flag or a field's code name."""

from __future__ import annotations

import pytest

from tickerdash.analytics.stages.alerts.rules import RuleError, make_rule
from tickerdash.dashboard.rules_panel import field_of, page_message

GOOD = {"symbol": "AAPL", "drop": "5", "window": "60s", "cooldown": None, "name": ""}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"drop": "150"}, "drop_pct", "Drop must be a number between 0 and 100 (percent), e.g. 5; “150” is not."),
        ({"drop": "lots"}, "drop_pct", "Drop must be a number between 0 and 100 (percent), e.g. 5; “lots” is not."),
        ({"window": "soon"}, "window_s", "Window must be a duration from 1ms to 7d, e.g. 60s, 5m or 1h; “soon”"),
        ({"cooldown": "-5"}, "cooldown_s", "Cooldown must be a duration such as 30s or 5m, or empty to use the window"),
        ({"symbol": "not a ticker!"}, "symbol", "Symbol must be a ticker such as AAPL, or * for every symbol"),
    ],
)
def test_a_refused_field_is_explained_in_the_forms_words(changes: dict[str, str], field: str, words: str) -> None:
    """The rule's own check refuses the value; the form says what the field takes, with what was typed."""
    typed = {**GOOD, **changes}
    with pytest.raises(RuleError) as refused:
        make_rule(**typed)  # type: ignore[arg-type]
    assert field_of(refused.value) == field
    message = page_message(field, str(refused.value), next(iter(changes.values())))
    assert message.startswith(words)
    assert "--" not in message
    assert "_" not in message, "a field's code name (drop_pct, window_s...) is not the form's word"


def test_a_message_about_no_known_field_loses_its_cli_flags() -> None:
    """A message the form has no sentence for (a field added later) keeps its text without the CLI's flags."""
    message = page_message("", "bad_print_pct: must be a number; e.g. --bad-print 10")
    assert "--" not in message and "e.g. bad print 10" in message
