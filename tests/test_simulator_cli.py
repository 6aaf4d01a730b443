"""The `simulate` command and its run loop: Redis and file output, labels, pacing, refusals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
import typer
from processes import catches_sigterm, wait_until
from typer.testing import CliRunner

from tickerdash.ingest import stopping
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch, concat
from tickerdash.simulator.cli import register
from tickerdash.simulator.config import MarketConfig
from tickerdash.simulator.labels import LabelBatch
from tickerdash.simulator.market import generate
from tickerdash.simulator.run import Limits, limited, paced, run
from tickerdash.simulator.scenarios import ScenarioError, from_flags, load_scenario

START = "1700000000000"


@pytest.fixture
def cli() -> typer.Typer:
    """The simulate command on its own app, as `python -m tickerdash.simulator` builds it."""
    app = typer.Typer()
    register(app)
    return app


def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    """Run the command; (exit code, everything it printed, unboxed and on one line)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


class TestToRedis:
    def test_batches_and_labels_reach_redis_and_decode_to_the_generated_tape(
        self, cli: typer.Typer, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """Every simulated trade is on the tick stream, and every label on tickerdash:labels."""
        code, output = invoke(
            cli,
            "--count",
            "30000",
            "--seed",
            "4",
            "--start",
            START,
            "--scenario",
            "evaluation",
            "--redis-url",
            str(settings.redis_url),
            "-q",
        )
        assert code == 0, output
        keys = Keys(settings.prefix)
        entries = [
            (eid, [x for pair in fields.items() for x in pair]) for eid, fields in redis_client.xrange(keys.ticks())
        ]
        ticks = decode_entries(entries).ticks
        config = MarketConfig(universe=20, seed=4, start_ms=int(START), trades_per_s=50.0)
        pieces = limited(generate(config, "evaluation"), Limits(count=30_000), config.start_ms)
        expected = concat([t for t, _ in pieces])
        assert len(ticks) == 30_000
        assert ticks.trade_id.equals(expected.trade_id) and np.array_equal(ticks.price, expected.price)
        labels = redis_client.xrange(keys.labels)
        assert labels and {k.decode() for k in labels[0][1]} == {
            "trade_id",
            "kind",
            "episode_id",
            "magnitude",
            "producer",
            "seq",
        }
        on_tape = set(ticks.trade_id.to_pylist())
        assert all(fields[b"trade_id"].decode() in on_tape for _, fields in labels)
        run = redis_client.hgetall(keys.simulator_run)  # what exports record as provenance
        assert run[b"seed"] == b"4" and run[b"scenario"] == b"evaluation" and run[b"start_ms"] == START.encode()

    def test_per_tick_writes_one_public_entry_per_trade(
        self, cli: typer.Typer, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """--per-tick writes the interoperable form: symbol, price, size, ts, side, ids per entry, and the
        simulator's declared event clock."""
        code, output = invoke(
            cli, "--count", "500", "--per-tick", "--start", START, "--redis-url", str(settings.redis_url), "-q"
        )
        assert code == 0, output
        entries = redis_client.xrange(Keys(settings.prefix).ticks())
        assert len(entries) == 500
        assert set(entries[0][1]) == {
            b"symbol",
            b"price",
            b"size",
            b"ts",
            b"side",
            b"trade_id",
            b"buyer",
            b"seller",
            b"clock",
            b"producer",
            b"seq",
        }


class TestToFile:
    def test_same_seed_and_flags_write_byte_identical_files(self, cli: typer.Typer, tmp_path: Path) -> None:
        """Two runs with the same flags write the same bytes, ticks and labels alike."""
        for name in ("a", "b"):
            code, output = invoke(
                cli,
                "--count",
                "40000",
                "--seed",
                "9",
                "--start",
                START,
                "--scenario",
                "evaluation",
                "--out",
                str(tmp_path / name / "t.parquet"),
                "-q",
            )
            assert code == 0, output
        assert (tmp_path / "a/t.parquet").read_bytes() == (tmp_path / "b/t.parquet").read_bytes()
        assert (tmp_path / "a/t.labels.parquet").read_bytes() == (tmp_path / "b/t.labels.parquet").read_bytes()
        assert pq.read_metadata(tmp_path / "a/t.labels.parquet").num_rows > 0

    def test_csv_has_the_public_columns_and_a_labels_file_beside_it(self, cli: typer.Typer, tmp_path: Path) -> None:
        """The CSV speaks the tick field vocabulary (side B/S) and the labels sit in t.labels.csv."""
        out = tmp_path / "t.csv"
        code, output = invoke(cli, "--count", "3000", "--start", START, "--out", str(out), "-q")
        assert code == 0, output
        lines = out.read_text().splitlines()
        assert lines[0] == '"symbol","price","size","ts","side","trade_id","buyer","seller"'
        assert len(lines) == 3001 and lines[1].split(",")[4] in ('"B"', '"S"')
        assert (tmp_path / "t.labels.csv").read_text().startswith('"trade_id","kind","episode_id","magnitude"')

    def test_duration_stops_at_that_much_event_time(self, cli: typer.Typer, tmp_path: Path) -> None:
        """--duration 120 keeps exactly the trades of the first 120 s of event time."""
        out = tmp_path / "t.parquet"
        code, output = invoke(cli, "--duration", "120", "--start", START, "--out", str(out), "-q")
        assert code == 0, output
        ts = pq.read_table(out).column("ts").to_numpy()
        assert ts.max() < int(START) + 120_000 and ts.max() > int(START) + 110_000


class TestRefusals:
    @pytest.mark.parametrize(
        ("args", "named"),
        [
            (["--rate", "100", "--fast"], "--rate and --fast"),
            (["--slump", "AAPL:10:150:60", "--symbols", "AAPL"], "drop_pct"),
            (["--slump", "AAPL:10"], "SYMBOL:START_S:DROP_PCT:DURATION_S"),
            (["--halt", "MSFT:10:60", "--symbols", "AAPL"], "MSFT"),
            (["--symbols", "AAPL,AAPL"], "AAPL given more than once"),
            (["--symbols", "BAD SYMBOL"], "must be 1-16 chars"),
            (["--start", "yesterday"], "--start"),
            (["--scenario", "no/such/file.yaml"], "not found"),
            (["--out", "trades.xlsx"], ".parquet or .csv"),
            (["--universe", "0"], "--universe"),
        ],
    )
    def test_invalid_flags_exit_2_with_a_message_naming_the_problem(
        self, cli: typer.Typer, args: list[str], named: str
    ) -> None:
        """A bad flag stops the command before any output, with exit code 2 and the problem named."""
        code, output = invoke(cli, *args)
        assert code == 2
        assert named in output

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("slumps:\n  - {symbol: AAPL, start_s: 10, drop_pct: 150, duration_s: 60}\n", "slumps.0.drop_pct"),
            ("slumps:\n  - {symbol: AAPL, start_s: 10, drop_pct: 5}\n", "slumps.0.duration_s: Field required"),
            ("slumpz: []\n", "slumpz: Extra inputs are not permitted"),
            ("suspicious: {rate: 0.01, kinds: {wash: 1, layering: 2}}\n", "unknown kind 'layering'"),
            ("suspicious: {spike_pct: [10, 2]}\n", "low 10.0 is above high 2.0"),
            ("halts: [{symbol: AAPL, start_s: -5, duration_s: 10}]\n", "halts.0.start_s"),
            ("slumps: [oops\n", "not valid yaml"),
            ("- just a list\n", "must be a mapping"),
        ],
    )
    def test_invalid_scenario_files_are_refused_naming_field_and_file(
        self, tmp_path: Path, text: str, named: str
    ) -> None:
        """Each problem of a scenario file is reported with the file name and the field path."""
        path = tmp_path / "scenario.yaml"
        path.write_text(text)
        with pytest.raises(ScenarioError) as error:
            load_scenario(path)
        assert named in str(error.value) and str(path) in str(error.value)

    def test_the_cli_refuses_an_invalid_scenario_file_with_exit_code_2(self, cli: typer.Typer, tmp_path: Path) -> None:
        """A broken scenario file is a usage error of --scenario."""
        path = tmp_path / "bad.json"
        path.write_text('{"rallies": [{"symbol": "AAPL", "start_s": 1, "rise_pct": 0, "duration_s": 5}]}')
        code, output = invoke(cli, "--scenario", str(path), "--symbols", "AAPL")
        assert code == 2 and "rise_pct" in output


class TestScenarioSources:
    def test_a_yaml_file_and_flags_describe_the_same_slump(self, tmp_path: Path) -> None:
        """`--slump AAPL:600:8:60:300` and the same slump in YAML parse to equal scenarios."""
        path = tmp_path / "s.yaml"
        path.write_text("slumps:\n  - {symbol: aapl, start_s: 600, drop_pct: 8, duration_s: 60, recovery_s: 300}\n")
        assert load_scenario(path) == from_flags(slumps=["AAPL:600:8:60:300"])


class TestPacing:
    def test_rate_releases_slices_on_the_wall_clock_schedule(self) -> None:
        """At 1000 ticks/s, 5000 ticks are released over five seconds of (fake) wall clock."""
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        config = MarketConfig(universe=3, seed=1, start_ms=int(START), chunk_size=2_048)
        chunks = limited(generate(config), Limits(count=5_000), config.start_ms)
        sizes = [len(t) for t, _ in paced(chunks, 1_000.0, clock=lambda: now[0], sleep=sleep)]
        assert sum(sizes) == 5_000 and max(sizes) == 50
        assert now[0] == pytest.approx(4.95, abs=0.06)

    def test_event_time_pacing_keeps_the_tape_in_step_with_the_wall_clock(self) -> None:
        """Released on its own clock, each slice goes out when the wall clock has moved as far as the tape
        (at the open the profile is busier than the mean rate, so a count pace would fall behind)."""
        now = [0.0]
        released: list[tuple[float, int]] = []

        def sleep(seconds: float) -> None:
            now[0] += seconds

        config = MarketConfig(universe=3, seed=1, start_ms=int(START), chunk_size=2_048, trades_per_s=200.0)
        chunks = limited(generate(config), Limits(count=5_000), config.start_ms)
        for ticks, _ in paced(chunks, 200.0, event_time=True, clock=lambda: now[0], sleep=sleep):
            released.append((now[0], int(ticks.ts[0])))
        first_ms = released[0][1]
        assert all(abs(wall - (ts - first_ms) / 1000) < 1e-9 for wall, ts in released)
        span_s = (released[-1][1] - first_ms) / 1000
        assert now[0] == pytest.approx(span_s) and span_s < 5_000 / 200.0  # the open is busier than the mean


class TestStopping:
    @pytest.mark.slow
    @pytest.mark.parametrize(
        "moment", ["handler set", "handler set + 0.1 s", "handler set + 0.3 s", "handler set + 1 s", "ticks in Redis"]
    )
    def test_sigterm_at_any_moment_of_a_run_is_a_clean_exit(
        self, redis_server: EmbeddedRedis, redis_client: redis.Redis, moment: str
    ) -> None:
        """`tickerdash simulate` stopped by SIGTERM exits 0 whenever it comes: while it still imports and
        connects (the moments after its handler is set sample start-up), or while it writes ticks."""
        env = {**os.environ, "TICKERDASH_REDIS_URL": redis_server.url}
        command = [sys.executable, "-m", "tickerdash", "simulate", "--rate", "500", "--symbols", "AAPL,MSFT", "-q"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: proc.poll() is not None or catches_sigterm(proc.pid), "the SIGTERM handler", interval=0.001
            )
            if moment == "ticks in Redis":
                wait_until(lambda: proc.poll() is not None or redis_client.xlen(Keys().ticks()) > 0, "ticks")
            elif "+" in moment:
                time.sleep(float(moment.split("+ ")[1].removesuffix(" s")))  # a point of start-up, not a wait
            assert proc.poll() is None, f"simulate ended by itself: {proc.communicate()[1][-2000:]}"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"exit {proc.returncode} on SIGTERM ({moment}): {err[-2000:]}"

    def test_a_sigterm_whose_exception_was_swallowed_still_stops_the_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A signal handler's exception raised inside a finaliser is printed and dropped by Python: the run
        notices the signal at its next write and stops all the same, instead of running on unstoppable."""
        monkeypatch.setattr(stopping, "_received", False)
        written: list[int] = []

        class Sink:
            def write(self, ticks: TickBatch, labels: LabelBatch) -> None:
                written.append(len(ticks))
                if len(written) == 2:
                    with contextlib.suppress(stopping.Terminated):  # as a finaliser would swallow it
                        stopping._raise_terminated(signal.SIGTERM, None)

            def close(self) -> None:
                pass

        chunks = generate(MarketConfig(symbols=("AAPL",), start_ms=1_767_225_600_000, chunk_size=256))
        with pytest.raises(stopping.Terminated):
            run(chunks, Sink(), start_ms=1_767_225_600_000, limits=Limits(count=100_000))
        assert len(written) == 2
