"""docker-compose.yml is real: it validates against the Compose spec and every service's command runs here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml
from processes import catches_sigterm

from tickerdash.ingest.redis_server import EmbeddedRedis, find_redis_server, free_port
from tickerdash.up import DEMO_SYMBOLS, demo_market_args

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
APP_SERVICES = sorted(
    name for name, svc in COMPOSE["services"].items() if svc.get("image", "").startswith("tickerdash")
)


def test_compose_file_matches_the_compose_spec(shared_schemas: Path) -> None:
    """The file validates against the Compose Specification's JSON Schema."""
    schema = json.loads((shared_schemas / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_redis_service_keeps_data_on_a_volume_with_aof(tmp_path: Path) -> None:
    """The redis service's command starts a real redis-server with append-only persistence."""
    svc = COMPOSE["services"]["redis"]
    assert any(v.endswith(":/data") for v in svc["volumes"])
    command = list(svc["command"])
    assert command[0] == "redis-server"
    port = free_port()
    args = [find_redis_server(), *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis service command did not start"
                time.sleep(0.05)
        assert client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        proc.terminate()
        proc.wait(10)


def test_app_services_use_the_app_image_and_reach_redis_by_url() -> None:
    """Every app service is built from the Dockerfile and configured through TICKERDASH_REDIS_URL."""
    assert (REPO / "Dockerfile").exists()
    for name in APP_SERVICES:
        svc = COMPOSE["services"][name]
        assert svc["build"] == "."
        assert svc["environment"]["TICKERDASH_REDIS_URL"].startswith("redis://redis:")


def _local_command(service: dict[str, Any], tmp_path: Path) -> list[str]:
    """The service's command as it would run in the container, with listening addresses moved to free
    loopback ports (tests open nothing else)."""
    command = service.get("command", [])
    command = command.split() if isinstance(command, str) else list(command)
    for flag in ("--port", "--ws-port"):
        if flag in command:
            command[command.index(flag) + 1] = str(free_port())
    if "--host" in command:
        command[command.index("--host") + 1] = "127.0.0.1"
    exe = shutil.which("tickerdash", path=str(Path(sys.executable).parent)) or "tickerdash"
    return [exe, *command]


# what the tests set, as a user must (compose has no default for it): the dashboard refuses placeholders
TEST_TOKEN = "test-token-" + "x" * 16
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _environment(service: dict[str, Any], shell: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment as compose interpolates it from `shell` (${VAR}, ${VAR:-default}, ${VAR:?error})."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    shell = {"TICKERDASH_TOKEN": TEST_TOKEN} if shell is None else shell

    def interpolate(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        value = shell.get(name)
        missing = value is None or (value == "" and (operator or "").startswith(":"))
        if not missing:
            return str(value)
        if operator and operator.endswith("?"):
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        return argument if operator else ""

    return {k: COMPOSE_VARIABLE.sub(interpolate, str(v)) for k, v in env.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_service_command_runs_against_a_test_redis(
    name: str, redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The service's command starts here against a test Redis (emptied first: `redis_client`), stays up, and stops
    cleanly on SIGTERM."""
    svc = COMPOSE["services"][name]
    env = {**os.environ, **_environment(svc)}
    env["TICKERDASH_REDIS_URL"] = redis_server.url
    env["TICKERDASH_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        _local_command(svc, tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # a loaded machine can take seconds to import; a SIGTERM before the handler is set would kill it
        deadline = time.monotonic() + 90
        while proc.poll() is None and not catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # then it must stay up, doing its work
        assert proc.poll() is None, f"{name} exited early: {proc.communicate()[1][-2000:]}"
        assert catches_sigterm(proc.pid), f"{name} never installed a SIGTERM handler"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, f"{name} did not stop cleanly ({proc.returncode}): {err[-2000:]}"


def test_every_service_of_the_design_is_there() -> None:
    """redis, simulator, analytics and dashboard (docs/design.md), plus the archiver."""
    assert {"redis", "simulator", "analytics", "dashboard", "archive"} <= set(COMPOSE["services"])
    assert APP_SERVICES == ["analytics", "archive", "dashboard", "simulator"]


def test_the_dashboard_token_has_no_default_and_compose_refuses_to_start_without_it() -> None:
    """No secret has a fallback: with TICKERDASH_TOKEN unset or empty, interpolation fails with what to set."""
    dashboard = COMPOSE["services"]["dashboard"]
    for shell in ({}, {"TICKERDASH_TOKEN": ""}):
        with pytest.raises(ValueError, match="TICKERDASH_TOKEN") as missing:
            _environment(dashboard, shell)
        assert "16" in str(missing.value)
    assert _environment(dashboard, {"TICKERDASH_TOKEN": TEST_TOKEN})["TICKERDASH_TOKEN"] == TEST_TOKEN
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{\w*(TOKEN|SECRET|PASSWORD)\w*:?-", text), "a secret with a default value"


def test_the_simulator_service_runs_the_demo_market_of_up() -> None:
    """docker-compose.yml's simulator makes the same market as `tickerdash up` (rare episodes, the slump)."""
    assert COMPOSE["services"]["simulator"]["command"] == demo_market_args(DEMO_SYMBOLS)
