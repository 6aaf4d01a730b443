"""Start-up: the front door loads no heavy library it does not need; a service loads its own before its loop.

Each check runs in a fresh interpreter (this test process has imported everything long ago) and reads
`sys.modules` there: which modules are loaded, not how long it took, so the checks hold on a busy machine.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from tickerdash.analytics.commands import history as export_cli
from tickerdash.analytics.history.export import INCLUDES, INTERVAL_MS
from tickerdash.ingest.contract.keys import ARCHIVE_GROUP
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.settings import Settings
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.market import generate

REPO = Path(__file__).resolve().parents[1]
# Each costs 0.5-2 s to import; none is needed to parse a command line or print its help.
HEAVY = ("scipy", "sklearn", "pandas", "dash", "plotly", "pyarrow.dataset")

LOADED = "sorted(m for m in HEAVY if m in sys.modules)"


def in_fresh_python(code: str, *args: str) -> Any:
    """Run `code` in a new interpreter (with `sys`, `json` and HEAVY defined); what it printed last, as JSON."""
    prelude = f"import json, sys\nHEAVY = {HEAVY!r}\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class TestFrontDoor:
    def test_importing_the_front_door_loads_no_heavy_library(self) -> None:
        """`import tickerdash.commands` (what every `tickerdash` command pays first) loads none of HEAVY."""
        assert in_fresh_python(f"import tickerdash.commands\nprint(json.dumps({LOADED}))") == []

    def test_help_of_every_command_loads_no_heavy_library(self) -> None:
        """`--help` of the front door and of each command loads none of HEAVY (checked after each one)."""
        loaded = in_fresh_python(f"""
            from tickerdash.commands import app
            seen = {{}}
            for argv in ([], ["status"], ["ingest"], ["simulate"], ["analytics"], ["alerts"], ["dashboard"],
                         ["export"], ["archive"], ["evaluate"], ["up"]):
                try:
                    app([*argv, "--help"])
                except SystemExit as done:
                    assert done.code == 0, (argv, done.code)
                seen[" ".join(argv) or "tickerdash"] = {LOADED}
            print(json.dumps(seen))
        """)
        assert loaded == {command: [] for command in loaded}
        assert len(loaded) == 11

    def test_export_help_names_the_choices_export_accepts(self) -> None:
        """The export and archive help texts (literals, to keep pandas out of start-up) agree with the code."""
        options = {name: p.default for name, p in inspect.signature(export_cli.export).parameters.items()}
        assert f"Bar interval: {', '.join(INTERVAL_MS)} (1d" in options["interval"].help
        assert f"Also write {', '.join(INCLUDES)} beside" in options["include"].help
        consumer = inspect.signature(export_cli.archive).parameters["consumer"].default
        assert f"group '{ARCHIVE_GROUP}'" in consumer.help


class TestServicesPreload:
    def test_an_analytics_worker_has_scipy_signal_once_constructed(self, settings: Settings) -> None:
        """Importing the worker leaves scipy.signal out; constructing one loads it (for its EMA scans)."""
        loaded = in_fresh_python(
            """
            import redis
            from tickerdash.analytics.engine.worker import AnalyticsWorker
            from tickerdash.ingest.settings import Settings
            imported = "scipy.signal" in sys.modules
            AnalyticsWorker(redis.Redis.from_url(sys.argv[1]), Settings(redis_url=sys.argv[1]))
            print(json.dumps([imported, "scipy.signal" in sys.modules]))
        """,
            str(settings.redis_url),
        )
        assert loaded == [False, True]

    @pytest.mark.slow
    @pytest.mark.parametrize("stages", ["default_stages()", "()"], ids=["default stages", "indicators and bars"])
    def test_an_analytics_worker_imports_nothing_heavy_in_its_loop(
        self, settings: Settings, redis_client: redis.Redis, stages: str
    ) -> None:
        """A worker with the stages `tickerdash analytics` runs (alerts, anomaly scores, forest refits), or
        with none (`--stages none`), loads every heavy library before its loop: none is first imported
        while it processes the stream (pyarrow imports pandas on its first array, for instance)."""
        ticks, _ = next(
            generate(MarketConfig(symbols=("AAPL", "MSFT", "GOOG"), seed=1, start_ms=1_700_000_000_000), "evaluation")
        )
        Producer(redis_client, settings).publish(ticks)
        during = in_fresh_python(
            """
            from pathlib import Path
            import redis
            from tickerdash.analytics.commands.worker import default_stages
            from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
            from tickerdash.ingest.settings import Settings
            settings = Settings(redis_url=sys.argv[1], data_dir=Path(sys.argv[2]), block_ms=50)
            worker = AnalyticsWorker(redis.Redis.from_url(sys.argv[1]), settings, None,
                                     WorkerConfig(checkpoint_every_s=0.5, stages=STAGES))
            before = set(sys.modules)
            worker.run(max_idle_reads=3)
            new = set(sys.modules) - before
            print(json.dumps(sorted(m for m in new if any(m == h or m.startswith(h + ".") for h in HEAVY))))
        """.replace("STAGES", stages),
            str(settings.redis_url),
            str(settings.data_dir),
        )
        assert during == []
        assert redis_client.xlen(f"{settings.prefix}:bars:1s:AAPL") > 0  # it did process the ticks

    def test_a_market_loads_scipy_when_built_not_in_its_first_chunk(self) -> None:
        """Importing the market model leaves scipy out; building a market loads it; generating imports nothing."""
        loaded = in_fresh_python("""
            from tickerdash.simulator.config import MarketConfig
            from tickerdash.simulator.market import generate
            imported = "scipy" in sys.modules
            chunks = generate(MarketConfig(universe=5, seed=1, start_ms=1_700_000_000_000), "evaluation")
            built = {"scipy.signal", "scipy.stats"} <= set(sys.modules)
            before = set(sys.modules)
            for _ in range(3):
                next(chunks)
            print(json.dumps([imported, built, sorted(m for m in set(sys.modules) - before if m.startswith("scipy"))]))
        """)
        assert loaded == [False, True, []]
