"""What every command shares: settings from the environment plus flags, logging, clean errors."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from tickerdash.ingest.cli_output import log_handler, output_console

if TYPE_CHECKING:  # pydantic-settings takes ~0.1 s to import: `--help` never needs it
    from tickerdash.ingest.settings import Settings

console = output_console(stderr=True)
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print what to fix and exit with code 2 (a usage error)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(USAGE_ERROR)


def load_settings(**overrides: Any) -> Settings:
    """Settings from TICKERDASH_* (and .env), with the flags that were given on top."""
    from pydantic import ValidationError

    from tickerdash.ingest.settings import Settings

    try:
        settings = Settings()
        given = {k: v for k, v in overrides.items() if v is not None}
        return Settings.model_validate({**settings.model_dump(), **given}) if given else settings
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        fail(f"invalid setting: {problems}")


def setup_logging(verbose: bool = False) -> None:
    """Readable logs on stderr: INFO by default, DEBUG with --verbose."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[log_handler(console)],
        force=True,
    )


def freeze_import_objects() -> None:
    """Keep the ~10^6 long-lived objects that imports leave (numpy, pandas, scikit-learn ...) out of every
    later full GC pass, which otherwise stalls a long-running service ~0.1 s every second or two.
    Call from a long-running command once it has started up: after its heavy imports, which load lazily
    (a service preloads them before its loop), and before the loop. Calling it again freezes only what is new."""
    gc.collect()
    gc.freeze()
