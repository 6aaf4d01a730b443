"""Shared fixtures: a real redis-server started by the tests on a free loopback port, and paths."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import typer
from click.testing import Result
from demo_run import DemoRun
from typer.testing import CliRunner

from tickerdash.ingest.redis_server import EmbeddedRedis
from tickerdash.ingest.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEMO_RUN = pytest.StashKey[DemoRun]()


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: a deselected demo test starts no demo
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The demo test goes last, and the demo it checks starts now: its story runs beside the suite."""
    demo = [item for item in items if item.path.name == "test_demo.py"]
    if not demo or config.getoption("collectonly") or not Path("/usr/bin/chromium").exists():
        return
    items[:] = [item for item in items if item not in demo] + demo
    config.stash[DEMO_RUN] = DemoRun().start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the demo, if it was started."""
    demo = session.config.stash.get(DEMO_RUN, None)
    if demo is not None:
        demo.stop()


@pytest.fixture(scope="session")
def demo_run(request: pytest.FixtureRequest) -> DemoRun:
    """The default `tickerdash up`, started when the session started (see tests/demo_run.py)."""
    demo = request.config.stash.get(DEMO_RUN, None)
    if demo is None:
        pytest.skip("the demo runs only with Debian's chromium at /usr/bin/chromium")
    return demo


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the test session (never the one that may run on 6379)."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on the session's server, with the database flushed before the test."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_client: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Settings that point at the test server, with small batches and a private data dir."""
    return Settings(redis_url=redis_server.url, data_dir=tmp_path / "data", consumer="test-consumer", block_ms=50)


@pytest.fixture
def run_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Invoke commands of a package's `register` (on a typer app, as under the front door) against the
    test Redis and data dir: `run_cli(register, "ingest", "file.csv", stdin=b"...")`."""
    monkeypatch.setenv("TICKERDASH_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("TICKERDASH_DATA_DIR", str(settings.data_dir))

    def invoke(register: Callable[[typer.Typer], None], *args: str, stdin: bytes | str | None = None) -> Result:
        app = typer.Typer()
        register(app)

        @app.callback()
        def _group() -> None:
            """Keep every command a sub-command, as under the `tickerdash` front door."""

        return CliRunner().invoke(app, list(args), input=stdin)

    return invoke


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real trade data beside the repo (../shared/data), or skip where it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real trade data is only beside the repo on CI and dev machines)")
    return path


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    """The schemas beside the repo (../shared/schemas), or skip where they are absent."""
    path = SHARED / "schemas"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(autouse=True)
def _no_ambient_tickerdash_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a developer's TICKERDASH_* environment and default data dir (XDG_DATA_HOME, where `tickerdash up`
    keeps its Redis data and archive) from leaking into tests: settings without a data dir get an empty one."""
    for name in list(os.environ):
        if name.startswith("TICKERDASH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A real redis-server of the test's own with appendonly yes (data in tmp_path/redis): restart tests
    kill it and start it again on the same files."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()
