"""What the commands print: tables that never cut a value, their rows as JSON, logs one line per record.

The one policy for every command's output, so that `tickerdash alerts list | cat` shows the very id that
`alerts remove` needs:
- at a terminal, a table fits the window and a long value folds onto the next line instead of ending in "…";
- anywhere else (a pipe, a file, a test's runner), the console is as wide as the widest row, so every value
  stays whole on one line (COLUMNS, which rich would otherwise honour, cannot cut it);
- `--json` prints the same rows as a list of objects with numbers at full precision.

Imports only rich and the standard library: every command's `--help` imports this module.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

# rich would wrap or crop at COLUMNS (80 when unset) even when nobody reads the output in a window; no
# row of ours comes near this, and a table without `expand` is only as wide as its content
UNBOUNDED_WIDTH = 10_000
PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def output_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that never cuts a line when it is not a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = UNBOUNDED_WIDTH
        console.soft_wrap = True
    return console


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a table on stdout with every cell whole: long values fold at a terminal and are never cut."""
    for column in table.columns:
        column.overflow = "fold"
    (console or output_console()).print(table)


def print_json(data: Any) -> None:
    """Print data as indented JSON on stdout (what `--json` prints)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds, e.g. 2024-03-01T14:30:00.250Z."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rows_as_dicts(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[dict[str, Any]]:
    """Rows of cells as objects keyed by their column's header."""
    names = list(headers)
    return [dict(zip(names, row, strict=True)) for row in rows]


def log_handler(console: Console) -> logging.Handler:
    """Rich's log layout at a terminal; elsewhere (a pipe, a log file, docker logs) one plain line per record,
    which rich's layout would wrap at 80 columns into several."""
    if console.is_terminal:
        from rich.logging import RichHandler

        return RichHandler(console=console, show_path=False, rich_tracebacks=True)
    handler = _ConsoleFileHandler(console)
    handler.setFormatter(logging.Formatter(PLAIN_LOG_FORMAT))
    return handler


class _ConsoleFileHandler(logging.StreamHandler):
    """Writes to the console's file as it is at each record (tests and runners swap sys.stderr)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    @property
    def stream(self) -> Any:
        return self.console.file

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # set by StreamHandler.__init__; the console's file is always the one written
