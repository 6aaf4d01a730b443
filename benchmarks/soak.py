"""Soak: the whole pipeline for a long run at a steady rate, with live pages and pages that never read.

    python benchmarks/soak.py [--minutes 20] [--rate 20000] [--clients 50] [--silent-clients 10] [--universe 100]

Starts its own redis-server on a free loopback port and runs the real commands as child processes:
`tickerdash analytics` (its default stages), `tickerdash dashboard` (web app and websocket gateway, free
ports) and `tickerdash simulate --rate R --market-rate R/10 --session-s 86400 --count R*60*minutes` (a
steady R trades a wall second; `SoakConfig.market_rate` says why the event clock is set so). Then it
connects `--clients` websocket clients: the readers read every frame and ask for bars the way the page
does (its chosen symbol's bars on connect, a gap fill when frames were merged); the `--silent-clients`
send a small request every few seconds and never read (a stuck tab), and reconnect when the gateway
drops them.

It prints (measured in this run; nothing here is compared with another machine):
1. a row every `--every` seconds: ticks/s onto the stream, the group's lag, dead letters, clients, the web
   app's answer, and each process's resident memory (VmRSS from /proc, the process itself; its children,
   such as the worker's checkpoint child, apart after a `+`);
2. each process's RSS at the end of the warm-up and at the end of the run, their ratio, the peak after the
   warm-up, and whether the end is within 10% of the warm-up (redis-server holds the data, so it grows
   with the stream and the bars by design until their retention caps);
3. the dead letters by reason;
4. the accounting, after the worker has drained the stream and stopped: ticks the simulator wrote (and
   the rows on the stream, read as they arrive) against the ticks in the 1m bars (closed bars in Redis,
   open bars in the worker's shutdown checkpoint), dead-lettered ticks and any loss a counter under
   `<prefix>:_:` reports; and whether both sides match.

Every process it starts is stopped by its PID at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tickerdash.analytics.engine.restore import PartitionKeys, state_blob
from tickerdash.analytics.engine.worker import PartitionState, WorkerConfig
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.contract.tick_entries import as_text
from tickerdash.ingest.redis_server import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[1]
PREFIX = "tickerdash"
GROUP = ANALYTICS_GROUP
BAR_INTERVAL = "1m"  # the bars a reading page asks for
# the finest bar the worker writes by default: all but the last seconds' trades are in closed bars in Redis
COUNTED_BARS, COUNTED_BARS_MS = "1s", 1_000
PROBE_S = 5.0  # how often memory, lag and the stream are sampled (rows are printed every --every seconds)
FLAT_WITHIN = 0.10
SILENT_REQUEST_EVERY_S = 5.0
READER_SWITCH_EVERY_S = 60.0  # a reader picks another symbol this often, as a user clicking around
RECONNECT_AFTER_S = 2.0
LOSS_KEY = re.compile(r"lost|loss|missed|trimmed|gap", re.IGNORECASE)
REDIS_NAME = "redis-server"


@dataclass(frozen=True)
class SoakConfig:
    """What to run and for how long."""

    minutes: float = 20.0
    rate: int = 20_000
    clients: int = 50
    silent_clients: int = 10
    universe: int = 100
    # Trades per event-time second of the simulated market (None: a tenth of the rate). The session's open
    # surge makes the first minutes of the tape far denser than its mean rate, so at the rate itself event
    # time would crawl (~8 s of it for 2.4M trades) and the worker's event-time windows (5-minute VWAP, the
    # stages' windows) would hold the whole run: at a tenth, event time moves at about wall-clock speed
    # from the start and faster later, so the windows are full within the warm-up and memory can settle.
    market_rate: int | None = None
    every_s: float = 60.0
    warmup_s: float = 300.0
    drain_timeout_s: float = 600.0

    @property
    def event_rate(self) -> int:
        """The simulator's `--market-rate`."""
        return self.market_rate or max(1, self.rate // 10)

    @property
    def ticks(self) -> int:
        """How many trades the simulator writes: the rate for the whole run."""
        return round(self.rate * self.minutes * 60)


# -- processes and their memory ------------------------------------------------------------------------


@dataclass
class Child:
    """A command this soak started: its process and the file that holds its output."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 1_500) -> str:
        """The end of its output, for error messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def vm_rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return 0  # a zombie has no VmRSS line


def descendants(pid: int) -> list[int]:
    """Every live descendant of a process (children of all its threads, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    children = [int(c) for c in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
                    found.extend(children)
                    todo.extend(children)
    return found


@dataclass(frozen=True, slots=True)
class Memory:
    """One process's resident memory at one moment: its own and its children's (MiB)."""

    own_mib: float
    children_mib: float
    children: int

    def text(self) -> str:
        """`123` or `123+45` (children apart: a forked child shares most of its pages with its parent)."""
        return f"{self.own_mib:,.0f}" + (f"+{self.children_mib:,.0f}" if self.children else "")


def memory_of(pid: int) -> Memory | None:
    """The process's VmRSS and the sum of its descendants' (None once the process has gone)."""
    own = vm_rss_kib(pid)
    if own is None:
        return None
    kids = [k for k in (vm_rss_kib(p) for p in descendants(pid)) if k is not None]
    return Memory(own / 1024, sum(kids) / 1024, len(kids))


def stop_child(child: Child, timeout_s: float = 60.0) -> int | None:
    """SIGTERM the process by its PID, wait for it, SIGKILL it after `timeout_s`; its exit code."""
    process = child.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
    return process.returncode


# -- websocket clients ---------------------------------------------------------------------------------


@dataclass
class ClientStats:
    """What the websocket clients saw, summed over all of them."""

    connects: int = 0
    open: int = 0
    drops: int = 0  # connections that ended while the soak still ran (the gateway closed them)
    silent_drops: int = 0  # of those, the never-reading clients'
    refused: int = 0  # handshakes that failed
    frames: int = 0
    merged_frames: int = 0  # frames whose `coalesced` > 1: the reader was behind
    bytes: int = 0
    bar_replies: int = 0
    requests: int = 0
    gateway_clients: int | None = None  # the count in the latest health the gateway pushed


async def _page(
    url: str, stats: ClientStats, visit: Callable[[ClientConnection], Awaitable[None]], *, read: bool
) -> None:
    """Connect, `visit`, and connect again RECONNECT_AFTER_S after the connection ended, until cancelled.

    A page that never reads sends no pings of its own either (it would not see the pongs)."""
    while True:
        try:
            async with connect(url, max_size=None, open_timeout=30, ping_interval=20 if read else None) as ws:
                stats.connects += 1
                stats.open += 1
                try:
                    await visit(ws)
                except ConnectionClosed:
                    pass
                finally:
                    stats.open -= 1
                stats.drops += 1
                stats.silent_drops += not read
        except (OSError, TimeoutError, InvalidHandshake):
            stats.refused += 1
        await asyncio.sleep(RECONNECT_AFTER_S)


def reading_page(index: int, stats: ClientStats) -> Callable[[ClientConnection], Awaitable[None]]:
    """A page that reads everything: one symbol's bars on connect and after merged frames (the page's gap
    fill), another symbol every READER_SWITCH_EVERY_S."""

    async def visit(ws: ClientConnection) -> None:
        symbols: list[str] = []
        symbol, last_bar, switched_at = None, 0, time.monotonic()
        async for raw in ws:
            stats.bytes += len(raw)
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "bars":
                stats.bar_replies += 1
                if message.get("bars"):
                    last_bar = int(message["bars"][-1][0])
                continue
            if kind == "frame":
                stats.frames += 1
                stats.merged_frames += int(message.get("coalesced", 1) > 1)
                if message.get("health"):
                    stats.gateway_clients = message["health"].get("clients", stats.gateway_clients)
            updates = message.get("snapshot") if kind == "hello" else message.get("updates")
            if updates and len(updates) > len(symbols):
                symbols = sorted({*symbols, *(u["symbol"] for u in updates)})
            switch = symbol is None or time.monotonic() - switched_at > READER_SWITCH_EVERY_S
            if symbols and (switch or message.get("coalesced", 1) > 1):
                if switch:
                    symbol = symbols[(index + int(time.monotonic() // READER_SWITCH_EVERY_S)) % len(symbols)]
                    last_bar, switched_at = 0, time.monotonic()
                request = {"type": "bars", "symbol": symbol, "interval": BAR_INTERVAL, "since": last_bar}
                await ws.send(json.dumps(request))
                stats.requests += 1

    return visit


def silent_page(index: int, stats: ClientStats) -> Callable[[ClientConnection], Awaitable[None]]:
    """A page that never reads (a stuck tab): a small request every SILENT_REQUEST_EVERY_S."""

    async def visit(ws: ClientConnection) -> None:
        request = json.dumps({"type": "bars", "symbol": f"S{index:02d}", "interval": "1s", "since": 0})
        while True:
            await asyncio.wait_for(ws.send(request), SILENT_REQUEST_EVERY_S * 4)
            stats.requests += 1
            await asyncio.sleep(SILENT_REQUEST_EVERY_S)

    return visit


class Pages:
    """The websocket clients, on an event loop of their own thread (the soak's main thread samples)."""

    def __init__(self, url: str, readers: int, silent: int) -> None:
        self.url, self.readers, self.silent = url, readers, silent
        self.stats = ClientStats()
        self._loop = asyncio.new_event_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._thread = threading.Thread(target=self._loop.run_forever, name="soak-pages", daemon=True)

    def start(self) -> None:
        """Connect every client."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    async def _start(self) -> None:
        stats = self.stats
        self._tasks = [
            asyncio.create_task(_page(self.url, stats, reading_page(i, stats), read=True)) for i in range(self.readers)
        ]
        self._tasks += [
            asyncio.create_task(_page(self.url, stats, silent_page(i, stats), read=False)) for i in range(self.silent)
        ]

    def stop(self) -> None:
        """Close every client and stop the loop."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- the stream, dead letters and the accounting --------------------------------------------------------


RawEntries = list[tuple[bytes, dict[bytes, bytes]]]


def xrange(client: redis.Redis, stream: str, start: str = "-", count: int | None = None) -> RawEntries:
    """XRANGE from `start` (`(id` for after id), as bytes."""
    entries: Any = client.xrange(stream, min=start, count=count)
    return list(entries or [])


def entry_ticks(fields: dict[bytes, bytes]) -> int:
    """Trades in one tick-stream (or dead-letter) entry: a batch entry's `rows`, else one."""
    if b"batch" in fields:
        with contextlib.suppress(KeyError, ValueError):
            return int(fields[b"rows"])
    return 1


class StreamCounter:
    """Counts the trades on a stream as entries arrive (read incrementally, so later trimming is harmless)."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client, self.stream = client, stream
        self.ticks = 0
        self.entries = 0
        self._last = "0-0"

    def catch_up(self) -> None:
        """Read the entries added since the last call."""
        while entries := xrange(self.client, self.stream, f"({self._last}", 500):
            self.ticks += sum(entry_ticks(fields) for _, fields in entries)
            self.entries += len(entries)
            self._last = as_text(entries[-1][0])

    def trimmed(self) -> int:
        """Entries added to the stream that this counter never read (trimmed before it got to them)."""
        info = self.client.xinfo_stream(self.stream)
        return max(0, int(info.get("entries-added", self.entries)) - self.entries)


def group_lag(client: redis.Redis, stream: str, group: str) -> tuple[int | None, int]:
    """The consumer group's lag (entries not yet delivered; None when Redis cannot tell) and pending."""
    with contextlib.suppress(redis.ResponseError):
        for info in client.xinfo_groups(stream):
            if as_text(info["name"]) == group:
                lag = info.get("lag")
                if lag is None and info["last-delivered-id"] == client.xinfo_stream(stream)["last-generated-id"]:
                    lag = 0  # Redis 6.2 has no lag, but a group that has been given the last entry has none
                return (None if lag is None else int(lag)), int(info["pending"])
    return None, 0


def dead_letters(client: redis.Redis, stream: str) -> tuple[int, Counter[str]]:
    """Trades in the dead-letter stream, and entries by reason (the text before the first colon)."""
    ticks, reasons = 0, Counter[str]()
    last = "-"
    while True:
        entries = xrange(client, stream, last, 1_000)
        if not entries:
            return ticks, reasons
        for _, fields in entries:
            ticks += entry_ticks(fields)
            reasons[as_text(fields.get(b"reason", b"?")).split(":", 1)[0]] += 1
        last = f"({as_text(entries[-1][0])}"


def closed_bar_ticks(client: redis.Redis, keys: Keys, interval: str) -> tuple[int, int]:
    """Trades in the closed bars of every symbol at one interval, and how many bars."""
    ticks = bars = 0
    for key in client.scan_iter(match=keys.bars(interval, "*"), count=1_000, _type="stream"):
        for _, fields in xrange(client, as_text(key)):
            ticks += int(fields[b"trades"])
            bars += 1
    return ticks, bars


def open_bar_ticks(client: redis.Redis, keys: Keys, interval_ms: int) -> tuple[int, str]:
    """Trades in the bars still open in the worker's checkpoint (its state at shutdown), and the checkpoint's
    last applied stream ID."""
    ticks, last_ids = 0, []
    for partition in range(keys.partitions):
        blob = state_blob(client, PartitionKeys.of(keys, GROUP, partition))
        if not blob:
            continue
        state = PartitionState.from_bytes(blob, WorkerConfig())
        opened = state.stage("bars").bars.open_view()
        ticks += int(opened.trades[opened.interval_ms == interval_ms].sum())
        last_ids.append(state.last_id)
    return ticks, ",".join(last_ids) or "none"


def reported_losses(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Counters of lost trades under `<prefix>:_:` (a key whose name speaks of loss, trimming or gaps):
    a string's integer value, or the sum of a hash's integer fields."""
    found: dict[str, int] = {}
    for raw in client.scan_iter(match=keys.every_internal_key, count=1_000):
        name = as_text(raw)
        if not LOSS_KEY.search(name):
            continue
        kind = as_text(client.type(name))
        values: Any = []
        if kind == "string":
            values = [client.get(name) or b""]
        elif kind == "hash":
            values = list(client.hgetall(name).values())
        numbers = [int(v) for v in values if re.fullmatch(rb"-?\d+", v)]
        if numbers:
            found[name] = sum(numbers)
    return found


@dataclass
class Accounting:
    """Ticks in against ticks accounted for."""

    written: int | None  # what the simulator says it wrote
    on_stream: int  # what the soak read off the stream as it arrived
    trimmed_unread: int  # stream entries trimmed before the soak read them (then `on_stream` is short)
    closed_bars: int
    bars: int
    open_bars: int
    checkpoint_last_id: str
    stream_last_id: str
    dead_lettered: int
    losses: dict[str, int]

    @property
    def ticks_in(self) -> int:
        """The simulator's own count; the stream's when the simulator could not say."""
        return self.written if self.written is not None else self.on_stream

    @property
    def accounted(self) -> int:
        """Ticks in bars, dead-lettered or reported lost."""
        return self.closed_bars + self.open_bars + self.dead_lettered + sum(self.losses.values())

    @property
    def matches(self) -> bool:
        """Every tick in is accounted for exactly once (and the producer's count agrees with the stream)."""
        stream_agrees = self.trimmed_unread > 0 or self.written is None or self.written == self.on_stream
        return stream_agrees and self.ticks_in == self.accounted


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One probe of the running system."""

    at_s: float
    stream_ticks: int
    rate: float
    lag: int | None
    pending: int
    dead: int
    memory: dict[str, Memory | None]
    pages: ClientStats
    web: str


@dataclass
class SoakResult:
    """Everything the soak measured."""

    config: SoakConfig
    samples: list[Sample] = field(default_factory=list)
    accounting: Accounting | None = None
    reasons: Counter[str] = field(default_factory=Counter)
    simulator_rate: float | None = None
    simulator_s: float | None = None
    drain_s: float | None = None
    exits: dict[str, int | None] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # the end of the output of a command that failed
    pages: ClientStats = field(default_factory=ClientStats)


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}) before {what}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout_s:.0f} s")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _web_status(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            return str(reply.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (OSError, TimeoutError):
        return "down"


WROTE = re.compile(r"wrote\s+([\d,]+)\s+ticks\s.*?\sin\s+([\d.]+)\s+s\s+\(([\d,]+)\s+ticks/s\)", re.DOTALL)


@contextlib.contextmanager
def _started(workdir: Path, env: dict[str, str]) -> Iterator[Callable[[str, list[str]], Child]]:
    """Start commands (`start(name, args)`), each in its own session; stop each by its PID on the way out,
    the newest first."""
    children: list[Child] = []

    def start(name: str, args: list[str]) -> Child:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tickerdash", *args],
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log)
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in reversed(children):
            stop_child(child)


def run_soak(config: SoakConfig, say: Callable[[str], None] = print) -> SoakResult:
    """Run the soak and return its figures (`say` gets a line per row as the run goes)."""
    result = SoakResult(config)
    keys = Keys(PREFIX)
    with (
        tempfile.TemporaryDirectory(prefix="tickerdash-soak-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as server,
    ):
        workdir = Path(tmp)
        client = redis.Redis(port=server.port)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "TICKERDASH_REDIS_URL": server.url,
            "TICKERDASH_DATA_DIR": str(workdir / "data"),
            "TICKERDASH_PREFIX": PREFIX,
            "COLUMNS": "200",
        }
        env.pop("TICKERDASH_PARTITIONS", None)
        port, ws_port = free_port(), free_port()
        pages = Pages(f"ws://127.0.0.1:{ws_port}/", config.clients - config.silent_clients, config.silent_clients)
        with _started(workdir, env) as start:
            worker = start("analytics", ["analytics", "--consumer", "soak"])
            lease = keys.lease(GROUP, 0)
            _wait_until(lambda: client.get(lease) == b"soak", "analytics lease", 120, [worker])
            dashboard = start("dashboard", ["dashboard", "--port", str(port), "--ws-port", str(ws_port)])
            _wait_until(lambda: _listening(ws_port) and _listening(port), "dashboard ports", 120, [dashboard])
            simulator = start(
                "simulate",
                [
                    "simulate",
                    "--rate",
                    str(config.rate),
                    "--market-rate",
                    str(config.event_rate),
                    "--session-s",
                    "86400",
                    "--universe",
                    str(config.universe),
                    "--count",
                    str(config.ticks),
                    "--seed",
                    "1",
                    "--quiet",
                ],
            )
            processes = {
                REDIS_NAME: server.process,
                "simulate": simulator.process,
                "analytics": worker.process,
                "dashboard": dashboard.process,
            }
            say(f"redis-server {server.binary} on port {server.port} (appendonly no); logs in {workdir}")
            say(header(list(processes)))
            try:
                pages.start()
                result.pages = pages.stats
                stream = StreamCounter(client, keys.ticks())
                began = time.monotonic()
                deadline = began + config.minutes * 60 * 1.5 + 60
                last_row = -config.every_s
                last_probe, last_ticks = began, 0
                while True:
                    finished = simulator.process.poll() is not None
                    for child in (worker, dashboard):
                        if child.process.poll() is not None:
                            raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
                    now = time.monotonic()
                    if now - last_probe >= PROBE_S or finished or not result.samples:
                        stream.catch_up()
                        lag, pending = group_lag(client, keys.ticks(), GROUP)
                        rate = (stream.ticks - last_ticks) / max(now - last_probe, 1e-9)
                        sample = Sample(
                            now - began,
                            stream.ticks,
                            rate,
                            lag,
                            pending,
                            client.xlen(keys.deadletter()),
                            {name: memory_of(p.pid) for name, p in processes.items() if p},
                            ClientStats(**vars(pages.stats)),
                            "",
                        )
                        last_probe, last_ticks = now, stream.ticks
                        if sample.at_s - last_row >= config.every_s or finished:
                            sample.web = _web_status(port)
                            say(_row_text(sample, list(processes)))
                            last_row = sample.at_s
                        result.samples.append(sample)
                    if finished:
                        break
                    if now > deadline:
                        say("the simulator is still running past the deadline: stopping it")
                        stop_child(simulator)
                        continue
                    time.sleep(0.5)
                result.exits["simulate"] = simulator.process.returncode
                result.simulator_rate, result.simulator_s, written = _simulator_summary(simulator)
                drained_from = time.monotonic()
                _wait_until(
                    lambda: group_lag(client, keys.ticks(), GROUP) == (0, 0),
                    "drained stream",
                    config.drain_timeout_s,
                    [worker],
                )
                result.drain_s = time.monotonic() - drained_from
                stream.catch_up()
            finally:
                pages.stop()
            result.exits["dashboard"] = stop_child(dashboard)
            result.exits["analytics"] = stop_child(worker, timeout_s=180)
            result.failures = {
                child.name: child.tail()
                for child in (simulator, dashboard, worker)
                if child.process.returncode not in (0, None)
            }
        dead_ticks, result.reasons = dead_letters(client, keys.deadletter())
        closed, bars = closed_bar_ticks(client, keys, COUNTED_BARS)
        still_open, checkpoint_id = open_bar_ticks(client, keys, COUNTED_BARS_MS)
        result.accounting = Accounting(
            written=written,
            on_stream=stream.ticks,
            trimmed_unread=stream.trimmed(),
            closed_bars=closed,
            bars=bars,
            open_bars=still_open,
            checkpoint_last_id=checkpoint_id,
            stream_last_id=as_text(client.xinfo_stream(keys.ticks())["last-generated-id"]),
            dead_lettered=dead_ticks,
            losses=reported_losses(client, keys),
        )
        client.close()
    return result


def _simulator_summary(simulator: Child) -> tuple[float | None, float | None, int | None]:
    """(ticks/s, seconds, ticks) from the simulator's closing line, or Nones when it did not finish."""
    match = WROTE.search(simulator.tail(4_000))
    if not match:
        return None, None, None
    return float(match[3].replace(",", "")), float(match[2]), int(match[1].replace(",", ""))


# -- output -------------------------------------------------------------------------------------------


def _row_text(sample: Sample, names: list[str]) -> str:
    lag = "?" if sample.lag is None else f"{sample.lag:,}"
    memory = "  ".join(f"{(m.text() if (m := sample.memory.get(n)) else 'gone'):>9}" for n in names)
    pages = sample.pages
    return (
        f"  {sample.at_s / 60:6.1f} {sample.stream_ticks:>12,} {sample.rate:>9,.0f} {lag:>7} {sample.pending:>7,} "
        f"{sample.dead:>6,} {pages.open:>5}/{pages.gateway_clients or 0:<4} {sample.web:>4}  "
        f"{memory}"
    )


def header(names: list[str]) -> str:
    """The column titles of the rows `run_soak` prints."""
    memory = "  ".join(f"{n[:9]:>9}" for n in names)
    return (
        f"  {'min':>6} {'ticks in':>12} {'ticks/s':>9} {'lag':>7} {'pending':>7} {'dead':>6} {'pages':>10} "
        f"{'web':>4}  {memory}   (RSS MiB, +children)"
    )


def memory_verdicts(result: SoakResult) -> list[tuple[str, float, float, float, bool]]:
    """Per process: RSS (MiB) at the end of the warm-up, at the end, the peak after the warm-up, and whether
    the end is within FLAT_WITHIN of the warm-up."""
    running = result.samples
    if not running:
        return []
    warm = next((s for s in running if s.at_s >= result.config.warmup_s), running[-1])
    after = [s for s in running if s.at_s >= warm.at_s]
    verdicts = []
    for name in warm.memory:
        start = warm.memory[name]
        ends = [m for s in after if (m := s.memory.get(name))]
        if start is None or not ends:
            continue
        end, peak = ends[-1].own_mib, max(m.own_mib for m in ends)
        verdicts.append((name, start.own_mib, end, peak, abs(end / start.own_mib - 1) <= FLAT_WITHIN))
    return verdicts


def report(result: SoakResult, say: Callable[[str], None] = print) -> None:
    """Print the memory verdicts, the dead letters, the clients and the accounting."""
    config = result.config
    rate = (
        f"{result.simulator_rate:,.0f} ticks/s over {result.simulator_s:,.0f} s"
        if result.simulator_rate
        else "unknown (the simulator did not finish)"
    )
    say(
        f"\nSimulator: asked {config.rate:,} ticks/s, achieved {rate}; worker drained in {result.drain_s or 0:.1f} s"
        " after it"
    )
    warm = min(config.warmup_s, result.samples[-1].at_s if result.samples else 0)
    say(f"\nResident memory (VmRSS of each process itself), warm-up = first {warm / 60:.1f} min:")
    for name, start, end, peak, flat in memory_verdicts(result):
        note = "  (holds the stream and the bars: grows until their retention caps)" if name == REDIS_NAME else ""
        verdict = "flat within 10%" if flat else "NOT flat within 10%"
        if not flat and end < start and peak <= start * (1 + FLAT_WITHIN):
            verdict += ": it shrank, and never grew by more than 10%"
        say(
            f"  {name:<12} warm-up {start:8,.0f} MiB  end {end:8,.0f} MiB  ratio {end / start:5.2f}  "
            f"peak {peak:8,.0f} MiB ({peak / start:4.2f})  {verdict}{note}"
        )
    pages = result.pages
    say(
        f"\nPages: {config.clients - config.silent_clients} reading, {config.silent_clients} never reading; "
        f"{pages.connects:,} connections, {pages.drops:,} closed by the gateway ({pages.silent_drops:,} of silent "
        f"ones), {pages.refused:,} refused; {pages.frames:,} frames read ({pages.merged_frames:,} merged), "
        f"{pages.bytes / 2**20:,.0f} MiB; {pages.requests:,} requests, {pages.bar_replies:,} bar replies read"
    )
    say(f"Exit codes: {', '.join(f'{k} {v}' for k, v in result.exits.items())}")
    for name, tail in result.failures.items():
        say(f"  {name} failed; the end of its output:\n{tail}")
    why = ", ".join(f"{k}: {v:,}" for k, v in result.reasons.most_common()) or "none"
    say(f"\nDead letters: {sum(result.reasons.values()):,} entries ({why})")
    acc = result.accounting
    if acc is None:
        return
    say("\nAccounting (after the worker drained the stream and stopped):")
    written = "unknown" if acc.written is None else f"{acc.written:,}"
    say(
        f"  ticks in:  the simulator wrote {written}; read off the stream {acc.on_stream:,}"
        + (f" ({acc.trimmed_unread:,} entries were trimmed before the soak read them)" if acc.trimmed_unread else "")
    )
    losses = ", ".join(f"{k} {v:,}" for k, v in acc.losses.items()) or "no loss counter under tickerdash:_:"
    say(
        f"  accounted: {acc.closed_bars:,} in {acc.bars:,} closed {COUNTED_BARS} bars + {acc.open_bars:,} in open bars"
        f" (checkpoint at {acc.checkpoint_last_id}, stream ends at {acc.stream_last_id}) + {acc.dead_lettered:,}"
        f" dead-lettered + {sum(acc.losses.values()):,} reported lost ({losses}) = {acc.accounted:,}"
    )
    say(
        f"  ticks in {acc.ticks_in:,} {'==' if acc.matches else '!='} accounted for {acc.accounted:,}: "
        f"{'MATCH' if acc.matches else 'MISMATCH'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the simulator writes")
    parser.add_argument("--rate", type=int, default=20_000, help="trades per wall-clock second")
    parser.add_argument("--clients", type=int, default=50, help="websocket clients, silent ones included")
    parser.add_argument("--silent-clients", type=int, default=10, help="of the clients, how many never read")
    parser.add_argument("--universe", type=int, default=100, help="simulated symbols")
    parser.add_argument("--market-rate", type=int, help="trades per event-time second (default: a tenth of --rate)")
    parser.add_argument("--every", type=float, help="seconds between rows (default: a minute, or 1/12 of a short run)")
    parser.add_argument("--warmup", type=float, help="warm-up minutes (default: 5, or a quarter of a short run)")
    args = parser.parse_args()
    if not 0 <= args.silent_clients <= args.clients:
        parser.error("--silent-clients must be between 0 and --clients")
    seconds = args.minutes * 60
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        clients=args.clients,
        silent_clients=args.silent_clients,
        universe=args.universe,
        market_rate=args.market_rate,
        every_s=args.every or min(60.0, max(PROBE_S, seconds / 12)),
        warmup_s=(args.warmup * 60) if args.warmup is not None else min(300.0, seconds / 4),
    )
    print(
        f"Soak: {config.minutes:g} min at {config.rate:,} ticks/s ({config.ticks:,} ticks) over {config.universe} "
        f"symbols; analytics (default stages), dashboard, {config.clients} websocket clients "
        f"({config.silent_clients} never read)",
        flush=True,
    )
    try:
        result = run_soak(config, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted: every process this soak started has been stopped")
        raise SystemExit(130) from None
    report(result)
    if result.accounting is not None and not result.accounting.matches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
