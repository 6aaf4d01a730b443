"""`tickerdash up`: the whole system on one machine, as child processes of one supervisor.

Redis (embedded unless TICKERDASH_REDIS_URL is set), a live-rate simulator with a scripted slump and
some suspicious episodes, analytics workers, the Parquet archiver and the dashboard each run as the same commands a user
or docker-compose would run, so `up` exercises exactly what production runs. Ctrl-C (or SIGTERM)
stops them all, in reverse order, and then the embedded Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from tickerdash.ingest.clikit import console, fail, load_settings
from tickerdash.ingest.contract.keys import Keys

if TYPE_CHECKING:  # the rules and the Redis client load when `up` runs, not for `--help`
    from tickerdash.analytics.stages.alerts.rules import Rule
    from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)

DEMO_SYMBOLS = "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,NFLX"
DEMO_RATE = 200.0  # the session's mean; paced on event time, the open runs ~4x busier (~550/s over 10 min)
DEMO_SLUMP_AFTER_S = 120.0
# Share of trades in labelled suspicious episodes: ~8 off-market prints and fat-finger sizes in the first
# ten minutes, market-wide, so the chart reads as prices and each episode stands out.
DEMO_SUSPICIOUS_RATE = 3e-5
STOP_TIMEOUT_S = 15.0


@dataclass
class Service:
    """One child process of `up`."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


def seed_demo_rule(url: str, settings: Settings, symbol: str) -> Rule | None:
    """With no rules stored yet, add one that the scripted slump will fire, so a first run shows an alert."""
    from tickerdash.analytics.stages.alerts.rules import make_rule
    from tickerdash.analytics.stages.alerts.store import RuleStore
    from tickerdash.ingest.layout import check_layout
    from tickerdash.ingest.redis_server import client_for

    with contextlib.closing(client_for(url, cluster=True)) as client:
        keys = Keys(settings.prefix, settings.partitions)
        check_layout(client, keys)  # before anything is started: every process it starts would refuse
        store = RuleStore(client, keys)
        if store.list():
            return None
        return store.add(make_rule(symbol, 5, "60s", name="demo: the scripted slump", rule_id="demo-slump"))


def demo_market_args(symbols: str, rate: float = DEMO_RATE, slump_after_s: float = DEMO_SLUMP_AFTER_S) -> list[str]:
    """`simulate`'s arguments for the demo market (docker-compose.yml's simulator runs the same): the first
    symbol slumps 8% over 60 s from `slump_after_s`, then recovers over 300 s; rare suspicious episodes."""
    first = symbols.split(",")[0]
    return [
        "simulate",
        "--rate",
        f"{rate:g}",
        "--symbols",
        symbols,
        "--slump",
        f"{first}:{slump_after_s:g}:8:60:300",
        "--suspicious-rate",
        f"{DEMO_SUSPICIOUS_RATE:g}",
        "--quiet",
    ]


def _tickerdash(*args: str) -> list[str]:
    return [sys.executable, "-m", "tickerdash", *args]


def plan(
    *,
    rate: float,
    symbols: str,
    workers: int,
    port: int,
    ws_port: int,
    simulator: bool,
    dashboard: bool,
    slump_after_s: float,
) -> list[Service]:
    """The services to start, in start order."""
    services: list[Service] = []
    for i in range(workers):  # sharing the partitions (`--partitions auto`), as workers started by hand do
        services.append(Service(f"analytics-{i}", _tickerdash("analytics", "--consumer", f"up-analytics-{i}")))
    services.append(Service("archive", _tickerdash("archive", "--consumer", "up-archive")))
    if dashboard:
        services.append(Service("dashboard", _tickerdash("dashboard", "--port", str(port), "--ws-port", str(ws_port))))
    if simulator:
        services.append(Service("simulator", _tickerdash(*demo_market_args(symbols, rate, slump_after_s))))
    return services


@contextlib.contextmanager
def running(services: list[Service], env: dict[str, str]) -> Iterator[list[Service]]:
    """Start the services; stop them (reverse order, SIGTERM then SIGKILL) however the block ends."""
    try:
        for service in services:
            # own session: the supervisor alone gets Ctrl-C and stops the services in order
            service.process = subprocess.Popen(service.args, env=env, start_new_session=True)
            log.info("started %s (pid %d)", service.name, service.process.pid)
        yield services
    finally:
        for service in reversed(services):
            if service.process and service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for service in reversed(services):
            if service.process is None:
                continue
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs: killing it", service.name, STOP_TIMEOUT_S)
                service.process.kill()
                service.process.wait()


def up(
    rate: float = typer.Option(
        DEMO_RATE, min=1, help="Simulated trades per second over a session (the open runs ~4x busier)."
    ),
    symbols: str = typer.Option(DEMO_SYMBOLS, help="Tickers the simulator trades."),
    workers: int = typer.Option(1, min=1, max=64, help="Analytics workers: they share the partitions, about P/N each."),
    port: int = typer.Option(8050, help="Dashboard HTTP port."),
    ws_port: int = typer.Option(8051, help="Dashboard websocket port."),
    slump_after: float = typer.Option(
        DEMO_SLUMP_AFTER_S, help="Seconds until the scripted 8% slump (over 60 s) of the first symbol."
    ),
    no_simulator: bool = typer.Option(False, "--no-simulator", help="Do not run the simulator (bring your own ticks)."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Headless: no web app."),
) -> None:
    """Run everything on this machine: Redis, simulator, analytics, archive and dashboard. Ctrl-C stops it all."""
    from tickerdash.ingest.redis_server import redis_url

    settings = load_settings()
    if workers > settings.partitions and workers > 1:
        fail(f"--workers {workers} exceeds TICKERDASH_PARTITIONS={settings.partitions}: set more partitions")
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with redis_url(settings) as url:
        env = {**os.environ, "TICKERDASH_REDIS_URL": url}
        if not no_simulator:
            demo = seed_demo_rule(url, settings, symbols.split(",")[0])
            if demo:
                console.print(
                    f"added demo rule [bold]{demo.id}[/]: alert when {demo.symbol} drops {demo.drop_pct:g}% "
                    f"within {demo.window_s:g}s (remove: tickerdash alerts remove {demo.id})"
                )
        services = plan(
            rate=rate,
            symbols=symbols,
            workers=workers,
            port=port,
            ws_port=ws_port,
            simulator=not no_simulator,
            dashboard=not no_dashboard,
            slump_after_s=slump_after,
        )
        with running(services, env):
            console.print(f"[bold green]Tickerdash is up.[/] Redis: {url}")
            if not no_dashboard:
                console.print(f"Dashboard: [bold]http://127.0.0.1:{port}/[/]  (Ctrl-C stops everything)")
            while not stop_requested:
                for service in services:
                    code = service.process.poll() if service.process else None
                    if code is not None:
                        log.error("%s exited with code %s: stopping everything", service.name, code)
                        stop_requested = True
                time.sleep(0.2)
            console.print("stopping ...")
    console.print("stopped.")
