"""What the commands print: tables keep every id and time whole at any width, and `--json` gives the same rows."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import redis
from click.testing import Result
from rich.console import Console
from rich.table import Table

from tickerdash.analytics.commands.alerts import register as register_alerts
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.cli import register as register_ingest
from tickerdash.ingest.cli_output import iso_ms, print_table
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.webhook_failures import encode_webhook_failure
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

KEYS = Keys()
LONG_ID = "demo-slump-of-the-first-symbol-with-a-long-id-0123456789"
LONG_URL = "https://hooks.example.com/services/T0000000/B0000000/" + "x" * 48
BOX_AND_SPACE = re.compile(r"[\u2500-\u257f\s]")


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """An 80-column setting, which rich would otherwise cut tables to even when the output is piped."""
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def alerts_cli(run_cli: Callable[..., Result], narrow: None) -> Callable[..., Result]:
    """Invoke `alerts ...` (as under the front door) against the test Redis, at COLUMNS=80."""
    return lambda *args: run_cli(register_alerts, "alerts", *args)


def store_long_rule(client: redis.Redis) -> Rule:
    """A rule whose id, name and webhook together are far wider than 80 columns."""
    return RuleStore(client).add(
        Rule(id=LONG_ID, symbol="AAPL", drop_pct=5.125, window_s=90, name="the scripted slump", webhook=LONG_URL)
    )


def slide(symbol: str, start_ms: int) -> TickBatch:
    """An 8% slide over 60 s, one trade a second."""
    seconds = np.arange(61)
    prices = 100.0 * (1 - 0.08 * seconds / 60)
    return TickBatch.from_columns(
        [symbol] * len(seconds), prices, np.full(len(seconds), 100.0), start_ms + seconds * 1000
    )


class TestTablesKeepEveryValueWhole:
    def test_alerts_list_through_a_pipe_shows_the_whole_id(self, redis_server: EmbeddedRedis, redis_client) -> None:
        """`tickerdash alerts list | cat` at COLUMNS=80 prints the full id that `alerts remove` needs, and no "…"."""
        store_long_rule(redis_client)
        listed = subprocess.run(
            [sys.executable, "-m", "tickerdash", "alerts", "list"],
            env={**os.environ, "TICKERDASH_REDIS_URL": redis_server.url, "COLUMNS": "80"},
            capture_output=True,  # stdout is a pipe, as in `| cat`
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert LONG_ID in listed.stdout and LONG_URL in listed.stdout and "5.125%" in listed.stdout
        assert "…" not in listed.stdout

    def test_backtest_table_shows_whole_times_and_tick_ids(
        self, alerts_cli, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The backtest's six columns are wider than 80 together; every firing's ISO time and tick id is whole."""
        Producer(redis_client, settings).publish(slide("AAPL", 1_700_000_000_000))
        table = alerts_cli("backtest", "--symbol", "AAPL", "--drop", "5", "--window", "60s")
        report = json.loads(
            alerts_cli("backtest", "--symbol", "AAPL", "--drop", "5", "--window", "60s", "--json").stdout
        )
        assert table.exit_code == 0, table.output
        assert report["firings"], "the slide fires the rule"
        for firing in report["firings"]:
            assert firing["tick_id"] in table.stdout and iso_ms(firing["ts"]) in table.stdout
        assert "…" not in table.stdout

    def test_failures_table_shows_whole_urls_and_its_json_the_same_rows(
        self, alerts_cli, redis_client: redis.Redis
    ) -> None:
        """`alerts failures` keeps a long webhook URL whole; `--json` gives the rows typed (ms and ISO time)."""
        failure = encode_webhook_failure(
            "1-0", LONG_ID, LONG_URL, 6, "HTTP 503 Service Unavailable", 1_700_000_000_250, "AAPL"
        )
        redis_client.xadd(KEYS.webhook_failures(), failure)  # type: ignore[arg-type]
        table = alerts_cli("failures")
        assert table.exit_code == 0, table.output
        assert LONG_ID in table.stdout and LONG_URL in table.stdout and "2023-11-14T22:13:20.250Z" in table.stdout
        (row,) = json.loads(alerts_cli("failures", "--json").stdout)
        assert row["rule_id"] == LONG_ID and row["url"] == LONG_URL
        assert (row["ts"], row["time"], row["attempts"]) == (1_700_000_000_250, "2023-11-14T22:13:20.250Z", 6)

    def test_status_table_shows_whole_group_names(
        self, run_cli: Callable[..., Result], narrow: None, redis_client: redis.Redis
    ) -> None:
        """A consumer group named longer than the terminal is printed whole by `status`."""
        group = "a-consumer-group-with-a-name-longer-than-eighty-columns-" + "g" * 30
        redis_client.xgroup_create(KEYS.ticks(), group, id="0", mkstream=True)
        result = run_cli(register_ingest, "status")
        assert result.exit_code == 0, result.output
        assert group in result.stdout and "…" not in result.stdout

    def test_a_table_at_a_narrow_terminal_folds_long_values_instead_of_cutting_them(self) -> None:
        """At a terminal narrower than a value, the value continues on the next line: no character is lost."""
        out = io.StringIO()
        table = Table(title="Alert rules")
        table.add_column("id")
        table.add_row(LONG_ID)
        print_table(table, Console(file=out, force_terminal=True, width=24, color_system=None))
        assert "…" not in out.getvalue()
        assert LONG_ID in BOX_AND_SPACE.sub("", out.getvalue())


class TestJson:
    def test_alerts_list_json_is_a_list_of_the_stored_rules_at_full_precision(
        self, alerts_cli, redis_client: redis.Redis
    ) -> None:
        """`alerts list --json` is one object per rule, with the id whole, drop_pct unrounded, and whether it
        counts bad prints spelled out."""
        rule = store_long_rule(redis_client)
        (listed,) = json.loads(alerts_cli("list", "--json").stdout)
        assert listed == {**rule.to_dict(), "include_bad_prints": False}
        assert (listed["id"], listed["drop_pct"], listed["window_s"]) == (LONG_ID, 5.125, 90)

    def test_failures_json_with_none_is_an_empty_list(self, alerts_cli) -> None:
        """With no failed deliveries `--json` prints `[]` (a script can always parse it)."""
        result = alerts_cli("failures", "--json")
        assert result.exit_code == 0 and json.loads(result.stdout) == []

    def test_status_json_names_every_group(
        self, run_cli: Callable[..., Result], narrow: None, redis_client: redis.Redis
    ) -> None:
        """`status --json` lists the streams with their groups, as the table does."""
        redis_client.xgroup_create(KEYS.ticks(), "analytics", id="0", mkstream=True)
        report = json.loads(run_cli(register_ingest, "status", "--json").stdout)
        (stream,) = [s for s in report["streams"] if s["stream"] == KEYS.ticks()]
        assert [g["name"] for g in stream["groups"]] == ["analytics"] and stream["length"] == 0
