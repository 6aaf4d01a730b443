"""`--help` of every command and sub-command: it works, it says what the command does, and it loads no heavy
library (checked by what is imported, not by a clock, so that it holds on a busy machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import typer

from tickerdash.analytics.commands import worker as analytics_cli
from tickerdash.analytics.stages import registry
from tickerdash.commands import app
from tickerdash.ingest import cli as ingest_cli
from tickerdash.ingest.importers import DEFAULT_CHUNK_ROWS

# each takes 0.05-2 s to import, and none is needed to parse a command line or print its help
HEAVY = ("numpy", "pyarrow", "pandas", "scipy", "sklearn", "dash", "plotly", "redis", "pydantic_settings")


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of this command and of every command below it, depth first (typer's groups have `commands`)."""
    below = getattr(command, "commands", {}).values()
    return [path, *(p for sub in below for p in command_paths(sub, (*path, sub.name or "")))]


PATHS = command_paths(typer.main.get_command(app))


def test_the_walk_finds_every_command_and_sub_command() -> None:
    """The front door, its commands and the alerts sub-commands are all walked."""
    assert {(), ("simulate",), ("status",), ("up",), ("alerts",), ("alerts", "tail"), ("alerts", "list")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "tickerdash")
def test_help_of_every_command_prints_its_usage_and_summary(path: tuple[str, ...]) -> None:
    """`python -m tickerdash PATH --help` exits 0 and prints the usage line and a summary."""
    done = subprocess.run(
        [sys.executable, "-m", "tickerdash", *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and f"tickerdash {' '.join(path)}".strip() in " ".join(done.stdout.split())
    assert "Traceback" not in done.stderr


def test_help_of_every_command_loads_no_heavy_library() -> None:
    """After `--help` of every command path, in one fresh interpreter, none of HEAVY has been imported."""
    code = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from tickerdash.commands import app
        for path in {PATHS!r}:
            result = CliRunner().invoke(app, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
        print(json.dumps(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert "tickerdash.analytics.commands.alerts" in loaded  # the commands themselves were loaded


class TestLiteralsAgreeWithTheirSource:
    def test_analytics_stage_help_names_the_registry_stages(self) -> None:
        """`analytics --stages` names the registry's stages as literals (the registry imports every stage)."""
        core = ", ".join(entry.name for entry in registry.core_stages())
        optional = "; ".join(f"{entry.name} ({entry.description})" for entry in registry.optional_stages())
        from_registry = f"Stages after the core ones ({core}), comma-separated, or none: {optional}."
        defaults = ",".join(entry.name for entry in registry.optional_stages() if entry.default)
        assert (from_registry, defaults) == (analytics_cli.STAGES_HELP, analytics_cli.DEFAULT_STAGES)

    def test_ingest_chunk_rows_default_is_the_importers(self) -> None:
        """`ingest --chunk-rows` defaults to the importers' own chunk size."""
        assert ingest_cli.DEFAULT_CHUNK_ROWS == DEFAULT_CHUNK_ROWS

    def test_include_bad_prints_help_gives_the_filters_band_and_confirmation(self) -> None:
        """`alerts add --include-bad-prints` states the bad-print filter's band and confirmation as literals."""
        from tickerdash.analytics.commands.alerts.rule_flags import BadPrintsOpt
        from tickerdash.analytics.stages.alerts.bad_prints import DEFAULT_BAND, DEFAULT_CONFIRM

        option = BadPrintsOpt.__metadata__[0]
        assert f"more than {DEFAULT_BAND:.0%} off" in option.help
        assert f"that {DEFAULT_CONFIRM} agreeing" in option.help
