"""`tickerdash alerts ...` against a real Redis: rule management, tail, and backtest equal to the live stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import Result
from effects_tools import entries_json

from tickerdash.analytics.commands.alerts import register
from tickerdash.analytics.commands.alerts.backtest import stream_batches
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.stages.alerts.alert import entry_fields
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import iter_chunks
from tickerdash.ingest.importers import ColumnMapping, TradeReader
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat

KEYS = Keys()
LOBSTER = ("lobster", "lobster_trades_2012-06-21.csv")


@pytest.fixture
def alerts_cli(run_cli: Callable[..., Result]) -> Callable[..., Result]:
    """Invoke `alerts ...` (as under the front door) against the test Redis."""
    return lambda *args: run_cli(register, "alerts", *args)


def slump(symbol: str = "AAPL", start_ms: int = 1_700_000_000_000) -> TickBatch:
    """An 8% slide over 60 s, one trade a second, then a flat minute at the low."""
    seconds = np.arange(121)
    prices = 100.0 * (1 - 0.08 * np.minimum(seconds, 60) / 60)
    return TickBatch.from_columns(
        [symbol] * len(seconds), prices, np.full(len(seconds), 100.0), start_ms + seconds * 1000
    )


class TestManage:
    def test_add_list_disable_enable_remove(self, alerts_cli, redis_client: redis.Redis) -> None:
        """A rule added by flags is listed (table and JSON), can be switched off and on, and removed."""
        added = alerts_cli(
            "add",
            "--symbol",
            "aapl",
            "--drop",
            "5",
            "--window",
            "60s",
            "--cooldown",
            "5m",
            "--id",
            "slump",
            "--name",
            "AAPL slump",
        )
        assert added.exit_code == 0, added.output
        assert "added rule slump" in added.stdout
        listed = json.loads(alerts_cli("list", "--json").stdout)
        assert [(r["id"], r["symbol"], r["drop_pct"], r["window_s"], r["cooldown_s"]) for r in listed] == [
            ("slump", "AAPL", 5.0, 60.0, 300.0)
        ]
        assert "AAPL slump" in alerts_cli("list").stdout
        assert alerts_cli("disable", "slump").exit_code == 0
        assert RuleStore(redis_client).require("slump").enabled is False
        assert alerts_cli("enable", "slump").exit_code == 0
        assert RuleStore(redis_client).require("slump").enabled is True
        assert alerts_cli("remove", "slump").exit_code == 0
        assert RuleStore(redis_client).list() == ()

    def test_a_rule_added_with_include_bad_prints_is_stored_and_listed_so(
        self, alerts_cli, redis_client: redis.Redis
    ) -> None:
        """`--include-bad-prints` is stored with the rule and shown by `list`; a rule without it ignores them."""
        assert "--include-bad-prints" in alerts_cli("add", "--help").stdout
        flags = ["--symbol", "AAPL", "--drop", "5", "--window", "60s"]
        added = alerts_cli("add", *flags, "--id", "raw", "--include-bad-prints")
        assert added.exit_code == 0, added.output
        assert "bad prints included" in added.stdout
        assert alerts_cli("add", *flags, "--id", "filtered").exit_code == 0
        listed = {r["id"]: r["include_bad_prints"] for r in json.loads(alerts_cli("list", "--json").stdout)}
        assert listed == {"filtered": False, "raw": True}
        table = alerts_cli("list").stdout
        assert "bad" in table and "count" in table and "ignore" in table
        assert RuleStore(redis_client).require("raw").include_bad_prints is True

    @pytest.mark.parametrize(
        ("flags", "says"),
        [
            (["--symbol", "AAPL", "--drop", "0", "--window", "60s"], "drop_pct"),
            (["--symbol", "AAPL", "--drop", "100", "--window", "60s"], "drop_pct"),
            (["--symbol", "AAPL", "--drop", "5", "--window", "0s"], "window_s"),
            (["--symbol", "AAPL", "--drop", "5", "--window", "soon"], "window_s"),
            (["--symbol", "NO SUCH", "--drop", "5", "--window", "60s"], "symbol"),
            (["--symbol", "AAPL", "--drop", "5"], "--window"),
        ],
    )
    def test_invalid_rules_are_refused_with_exit_2_and_what_to_fix(
        self, alerts_cli, flags, says, redis_client: redis.Redis
    ) -> None:
        """An invalid rule is not stored; the command exits 2 naming the field to fix."""
        result = alerts_cli("add", *flags)
        assert result.exit_code == 2
        assert says in result.output
        assert RuleStore(redis_client).list() == ()

    @pytest.mark.parametrize("command", ["remove", "enable", "disable", "backtest"])
    def test_unknown_id_is_refused_with_exit_2(self, alerts_cli, command: str) -> None:
        """Commands on a rule id that does not exist exit 2 and point at `alerts list`."""
        result = alerts_cli(command, "nope")
        assert result.exit_code == 2
        assert "no rule with id 'nope'" in result.output and "alerts list" in result.output


class TestLiveStage:
    def test_rules_added_disabled_and_changed_take_effect_on_refresh(self, redis_client: redis.Redis) -> None:
        """The worker stage picks up rule changes on its next refresh: a new rule fires on the next slump, a
        disabled one stays silent."""
        stage, store = SlumpAlertStage(), RuleStore(redis_client)
        stage.refresh(redis_client, KEYS)

        def run(batch: TickBatch) -> list[str]:
            effects = Effects(batch)
            stage.process(batch, effects)
            return [entry_fields(f)["rule_id"] for f in entries_json(effects, "alerts")]

        assert run(slump(start_ms=0)) == []  # no rules yet
        store.add(Rule(id="on", symbol="AAPL", drop_pct=5, window_s=60))
        store.add(Rule(id="off", symbol="AAPL", drop_pct=5, window_s=60, enabled=False))
        stage.refresh(redis_client, KEYS)
        assert run(slump(start_ms=1_000_000)) == ["on"]
        store.disable("on")
        stage.refresh(redis_client, KEYS)
        assert run(slump(start_ms=2_000_000)) == []

    def test_scripted_slump_fires_once_at_the_first_trade_5_percent_down(self, redis_client: redis.Redis) -> None:
        """8% over 60 s fires a 5%/60 s rule once, on the first trade at or below 95% of the high, with its fields."""
        RuleStore(redis_client).add(Rule(id="five", symbol="AAPL", drop_pct=5, window_s=60))
        stage = SlumpAlertStage()
        stage.refresh(redis_client, KEYS)
        batch = slump()
        effects = Effects(batch)
        stage.process(batch, effects)
        first = int(np.flatnonzero(batch.price <= 95.0)[0])
        assert [(f["rule_id"], f["ts"], f["price"]) for f in map(entry_fields, entries_json(effects, "alerts"))] == [
            ("five", str(batch.ts[first]), repr(float(batch.price[first])))
        ]


def publish(settings: Settings, client: redis.Redis, batch: TickBatch) -> None:
    """Put trades on the tick streams as the ingest command does."""
    Producer(client, settings).publish(batch)


class TestTailAndBacktest:
    def test_tail_prints_stored_alerts_and_stops_after_count(self, alerts_cli, redis_client: redis.Redis) -> None:
        """`tail --since 0 --count N` prints the first N alerts of the stream (JSON lines with --json)."""
        rule = Rule(id="t", symbol="*", drop_pct=5, window_s=60)
        stage = SlumpAlerts([rule])
        fired = stage.process(concat([slump("AAA"), slump("BBB"), slump("CCC", start_ms=1_700_000_500_000)]))
        for alert in fired:
            redis_client.xadd(KEYS.alerts(), alert.to_fields())  # type: ignore[arg-type]
        result = alerts_cli("tail", "--since", "0", "--count", "2", "--json")
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(x["symbol"], x["price"]) for x in lines] == [(a.symbol, a.price) for a in fired[:2]]

    @pytest.mark.parametrize("include_bad_prints", [False, True])
    def test_backtest_by_flags_over_the_tick_streams_lists_the_stage_firings(
        self, alerts_cli, settings: Settings, redis_client: redis.Redis, include_bad_prints: bool
    ) -> None:
        """A rule given by flags is backtested over the stored ticks; the firings are the stage's, with tick ids.
        An off-market print in MSFT fires only the rule given `--include-bad-prints`."""
        msft = slump("MSFT", start_ms=1_700_000_300_000)
        msft.price[3] *= 0.9
        trades = concat([slump("AAPL"), msft])
        publish(settings, redis_client, trades)
        flags = ["--include-bad-prints"] if include_bad_prints else []
        result = alerts_cli("backtest", "--symbol", "*", "--drop", "5", "--window", "60s", *flags, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        rule = Rule(id="x", symbol="*", drop_pct=5, window_s=60, include_bad_prints=include_bad_prints)
        expected = SlumpAlerts([rule]).process(trades)
        assert [(f["symbol"], f["ts"], f["price"]) for f in report["firings"]] == [
            (a.symbol, a.ts, a.price) for a in expected
        ]
        assert report["trades"] == len(trades) and all(f["tick_id"] for f in report["firings"])
        at_the_print = [f for f in report["firings"] if f["ts"] == int(msft.ts[3])]
        assert len(at_the_print) == int(include_bad_prints)

    @pytest.mark.realdata
    @pytest.mark.parametrize("include_bad_prints", [False, True])
    def test_lobster_backtest_equals_the_live_stage_replaying_the_stream(
        self, alerts_cli, settings: Settings, redis_client: redis.Redis, shared_data: Path, include_bad_prints: bool
    ) -> None:
        """On the LOBSTER day, backtesting a stored rule on the file and on the streams lists exactly the firings
        that the worker's stage makes when the same trades arrive from the stream in small batches, for a rule
        that ignores bad prints (the default) and one that includes them."""
        path = shared_data.joinpath(*LOBSTER)
        with TradeReader(path, ColumnMapping(ts_col="ts_ns")) as reader:
            trades = concat([ticks for ticks, _ in reader])
        publish(settings, redis_client, trades)
        rule = Rule(
            id="lob", symbol="*", drop_pct=0.3, window_s=60, cooldown_s=0, include_bad_prints=include_bad_prints
        )
        RuleStore(redis_client).add(rule)

        from_file = json.loads(alerts_cli("backtest", "lob", "--file", str(path), "--ts-col", "ts_ns", "--json").stdout)
        from_streams = json.loads(alerts_cli("backtest", "lob", "--json").stdout)

        stage = SlumpAlertStage()
        stage.refresh(redis_client, KEYS)
        live: list[dict[str, str]] = []
        for batch in stream_batches(redis_client, KEYS):
            for chunk in iter_chunks(batch, 777):  # batch boundaries unlike either backtest's
                effects = Effects(chunk)
                stage.process(chunk, effects)
                live.extend(map(entry_fields, entries_json(effects, "alerts")))

        def key(firings: list[dict[str, object]]) -> list[tuple[str, int, float, float]]:
            return [
                (str(f["symbol"]), int(f["ts"]), float(f["price"]), float(f["reference_price"]))  # type: ignore[arg-type]
                for f in firings
            ]

        assert len(live) >= 3  # the rule does fire on this day
        assert key(from_file["firings"]) == key(from_streams["firings"]) == key(live)  # type: ignore[arg-type]
        assert from_file["trades"] == from_streams["trades"] == len(trades)


class TestWorker:
    def test_worker_writes_the_scripted_slump_alert_once_to_the_alerts_stream(
        self, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The analytics worker with the alert stage turns the 8%/60 s slump into one `tickerdash:alerts` entry."""
        from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig

        RuleStore(redis_client).add(Rule(id="five", symbol="AAPL", drop_pct=5, window_s=60))
        batch = slump()
        publish(settings, redis_client, batch)
        config = WorkerConfig(checkpoint_every_s=0.2, stages=(SlumpAlertStage,))
        AnalyticsWorker(redis_client, settings, None, config).run(max_idle_reads=3)
        entries = redis_client.xrange(KEYS.alerts())
        first = int(np.flatnonzero(batch.price <= 95.0)[0])
        assert [(f[b"rule_id"], int(f[b"ts"]), float(f[b"price"])) for _, f in entries] == [
            (b"five", int(batch.ts[first]), float(batch.price[first]))
        ]
        assert entries[0][1][b"tick_id"]
