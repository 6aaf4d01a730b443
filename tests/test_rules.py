"""Slump-alert rules: validation that says what to fix, durations, JSON, and the Redis rule store."""

from __future__ import annotations

import json

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.analytics.stages.alerts.rules import Rule, RuleError, format_duration, make_rule, parse_duration
from tickerdash.analytics.stages.alerts.store import RuleStore, load_if_changed
from tickerdash.dashboard.rules_panel import RuleEditor
from tickerdash.ingest.contract.keys import Keys


def rule(**changes: object) -> Rule:
    """A valid rule with some fields changed."""
    fields: dict[str, object] = {"id": "r1", "symbol": "AAPL", "drop_pct": 5.0, "window_s": 60.0}
    return Rule(**{**fields, **changes})  # type: ignore[arg-type]


class TestValidation:
    def test_symbol_is_normalised_to_upper_case_and_star_is_kept(self) -> None:
        """A ticker is upper-cased and trimmed; `*` means every symbol."""
        assert rule(symbol=" aapl ").symbol == "AAPL"
        assert rule(symbol="*").symbol == "*"

    @pytest.mark.parametrize("drop", [0, -1, 100, 150, float("nan")])
    def test_drop_outside_0_to_100_is_refused_with_the_range(self, drop: float) -> None:
        """drop_pct must be > 0 and < 100; the message names the field and gives an example."""
        with pytest.raises(RuleError, match=r"^drop_pct: .*(> 0 and < 100|finite).*--drop 5"):
            rule(drop_pct=drop)

    @pytest.mark.parametrize("window", [0, -5, 0.0001])
    def test_window_must_be_at_least_a_millisecond(self, window: float) -> None:
        """window_s <= 0 (or below 1 ms) is refused, saying how to write a window."""
        with pytest.raises(RuleError, match=r"^window_s: .*--window 60s"):
            rule(window_s=window)

    @pytest.mark.parametrize("symbol", ["", "TOO-LONG-SYMBOL-NAME", "AA PL", "$$"])
    def test_bad_symbol_is_refused_naming_the_allowed_characters(self, symbol: str) -> None:
        """A symbol outside the tick rules is refused with those rules (and the `*` alternative)."""
        with pytest.raises(RuleError, match=r"^symbol: .*A-Z 0-9.*or \* for every symbol"):
            rule(symbol=symbol)

    def test_negative_cooldown_is_refused_and_none_means_the_window(self) -> None:
        """cooldown_s >= 0; left out, the cooldown equals the window."""
        with pytest.raises(RuleError, match=r"^cooldown_s: "):
            rule(cooldown_s=-1)
        assert rule(window_s=90).cooldown_ms == 90_000
        assert rule(cooldown_s=0).cooldown_ms == 0

    @pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "https:///path"])
    def test_webhook_must_be_an_http_url_with_a_host(self, url: str) -> None:
        """Only http:// and https:// URLs with a host are accepted as webhooks."""
        with pytest.raises(RuleError, match=r"^webhook: .*http:// or https://"):
            rule(webhook=url)

    def test_bad_id_is_refused(self) -> None:
        """Ids are 1-64 characters of letters, digits, _ . -."""
        with pytest.raises(RuleError, match=r"^id: "):
            rule(id="has space")

    def test_make_rule_reads_cli_words(self) -> None:
        """`make_rule` takes the CLI's words: a drop in percent, durations like 5m, a random id when none is given."""
        made = make_rule("msft", "2.5", "5m", cooldown="90s")
        assert (made.symbol, made.drop_pct, made.window_s, made.cooldown_s) == ("MSFT", 2.5, 300.0, 90.0)
        assert made.id and made.id != make_rule("msft", "2.5", "5m").id


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("500ms", 0.5), ("1d", 86400.0), ("90", 90.0), ("1.5m", 90.0)],
    )
    def test_parse_duration_understands_units(self, text: str, seconds: float) -> None:
        """Durations take ms, s, m, h, d, or plain seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "5x", "m5", "-5s", "five"])
    def test_parse_duration_refuses_nonsense_with_an_example(self, text: str) -> None:
        """An unreadable duration is refused with examples of readable ones."""
        with pytest.raises(RuleError, match="60s, 5m, 1h"):
            parse_duration(text)

    @given(ms=st.integers(1, 10**9))
    def test_format_then_parse_round_trips(self, ms: int) -> None:
        """format_duration writes what parse_duration reads back to the same milliseconds."""
        assert round(parse_duration(format_duration(ms / 1000)) * 1000) == ms


class TestJson:
    @settings(max_examples=100)
    @given(
        drop=st.floats(0.01, 99.99),
        window_ms=st.integers(1, 10**8),
        cooldown=st.none() | st.integers(0, 10**8),
        symbol=st.sampled_from(["AAPL", "*", "BTC/USDT"]),
        enabled=st.booleans(),
        include_bad_prints=st.booleans(),
    )
    def test_json_round_trip_is_exact(
        self, drop: float, window_ms: int, cooldown: int | None, symbol: str, enabled: bool, include_bad_prints: bool
    ) -> None:
        """Rule.from_json(rule.to_json()) gives back an equal rule."""
        original = rule(
            drop_pct=drop,
            window_s=window_ms / 1000,
            symbol=symbol,
            enabled=enabled,
            cooldown_s=None if cooldown is None else cooldown / 1000,
            webhook="https://h.example/x",
            include_bad_prints=include_bad_prints,
        )
        assert Rule.from_json(original.to_json()) == original

    def test_a_rule_stored_before_the_bad_print_option_reads_as_ignoring_bad_prints(self) -> None:
        """Old JSON has no include_bad_prints: it reads as the default, and a default rule writes the same JSON."""
        old = (
            '{"cooldown_s":null,"drop_pct":5.0,"enabled":true,"id":"demo-slump","name":"","symbol":"AAPL",'
            '"updated_at":1,"version":1,"webhook":null,"window_s":60.0}'
        )
        read = Rule.from_json(old)
        assert read.include_bad_prints is False
        assert read.to_json() == old
        assert json.loads(read.evolve(include_bad_prints=True).to_json())["include_bad_prints"] is True

    @pytest.mark.parametrize("value", ["yes", 1, None, "true"])
    def test_include_bad_prints_must_be_true_or_false(self, value: object) -> None:
        """Anything but a JSON boolean is refused, naming the field and the default."""
        with pytest.raises(RuleError, match=r"include_bad_prints: must be true or false.*default"):
            Rule.from_dict({"id": "a", "symbol": "X", "drop_pct": 5, "window_s": 60, "include_bad_prints": value})

    def test_json_missing_fields_are_named_and_unknown_fields_ignored(self) -> None:
        """A stored rule without drop_pct says so; fields from a newer writer are ignored."""
        with pytest.raises(RuleError, match="missing drop_pct"):
            Rule.from_json('{"id": "a", "symbol": "X", "window_s": 1}')
        assert Rule.from_json('{"id": "a", "symbol": "X", "window_s": 1, "drop_pct": 2, "colour": "red"}').id == "a"

    def test_bad_json_is_a_rule_error(self) -> None:
        """Text that is not JSON is refused as a RuleError, not a crash."""
        with pytest.raises(RuleError, match="not valid JSON"):
            Rule.from_json("{nope")


class TestRuleStore:
    def test_add_list_update_remove_bump_the_version_each_time(self, redis_client: redis.Redis) -> None:
        """Every change is stored as JSON under its id and increments the rules version."""
        store = RuleStore(redis_client)
        start = store.version()
        store.add(rule())
        assert [r.id for r in store.list()] == ["r1"]
        updated = store.update(rule(drop_pct=7.0))
        assert updated.version == 2 and store.require("r1").drop_pct == 7.0
        assert store.disable("r1").enabled is False and store.enable("r1").enabled is True
        assert store.remove("r1") is not None
        assert store.list() == () and store.version() == start + 5
        assert Rule.from_json(updated.to_json()) == updated

    def test_include_bad_prints_is_stored_with_the_rule(self, redis_client: redis.Redis) -> None:
        """A rule that counts bad prints reads back so; changing the option is a new version of the rule."""
        store = RuleStore(redis_client)
        store.add(rule(include_bad_prints=True))
        assert store.require("r1").include_bad_prints is True
        changed = store.update(rule(include_bad_prints=False))
        assert changed.version == 2 and store.require("r1").include_bad_prints is False

    def test_adding_an_existing_id_or_changing_an_unknown_one_is_refused(self, redis_client: redis.Redis) -> None:
        """add refuses a taken id; update/enable/require refuse an unknown id; remove of nothing returns None."""
        store = RuleStore(redis_client)
        store.add(rule())
        with pytest.raises(RuleError, match="exists already"):
            store.add(rule())
        for change in (
            lambda: store.update(rule(id="nope")),
            lambda: store.enable("nope"),
            lambda: store.require("nope"),
        ):
            with pytest.raises(RuleError, match="no rule with id 'nope'"):
                change()
        assert store.remove("nope") is None and store.get("nope") is None

    def test_load_if_changed_is_none_until_something_changes(self, redis_client: redis.Redis) -> None:
        """The worker's poll returns the rules once per change and None in between."""
        first = load_if_changed(redis_client, None)
        assert first is not None and first.rules == ()
        assert load_if_changed(redis_client, first.version) is None
        RuleStore(redis_client).add(rule())
        changed = load_if_changed(redis_client, first.version)
        assert changed is not None and [r.id for r in changed.rules] == ["r1"]
        assert load_if_changed(redis_client, changed.version) is None

    def test_an_invalid_stored_rule_is_reported_not_fatal(self, redis_client: redis.Redis) -> None:
        """A hash entry written by hand that is not a valid rule is listed as invalid; the others load."""
        store = RuleStore(redis_client)
        store.add(rule())
        redis_client.hset(Keys().rules, "broken", '{"id": "broken", "symbol": "X", "drop_pct": 500, "window_s": 1}')
        snapshot = store.snapshot()
        assert [r.id for r in snapshot.rules] == ["r1"]
        assert "drop_pct" in snapshot.invalid["broken"]


class TestRuleEditor:
    def test_the_editors_checkbox_stores_include_bad_prints_and_fills_the_form_back(
        self, redis_client: redis.Redis
    ) -> None:
        """A rule saved from the dashboard with the box ticked counts bad prints; editing it shows the box ticked."""
        editor = RuleEditor(redis_client, Keys())
        form = {"id": "dash", "symbol": "aapl", "drop_pct": "5", "window_s": "60s", "cooldown_s": "", "name": ""}
        assert editor.save(form, enabled=True, include_bad_prints=True).include_bad_prints is True
        values = editor.form_values("dash")
        assert values is not None and values["include_bad_prints"] is True
        assert editor.save(form, enabled=True).include_bad_prints is False  # unticked: the default
