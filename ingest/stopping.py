"""SIGTERM stops a command like Ctrl-C, and is a normal end (exit 0).

Imports nothing but the standard library's `signal`: the front door routes SIGTERM here before it loads
anything else, so a supervisor (docker stop, `tickerdash up`, a test) may stop a command at any moment,
even while it is still importing.
"""

from __future__ import annotations

import signal

INTERRUPTED = 130  # the exit code of a command ended by Ctrl-C (SIGINT): the shell's convention, and typer's


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (docker stop, a supervisor): stop like Ctrl-C, but it is a normal end (exit 0)."""


_received = False


def _raise_terminated(signum: int, frame: object) -> None:
    global _received
    _received = True
    raise Terminated()


def sigterm_stops_like_ctrl_c() -> None:
    """Make SIGTERM raise `Terminated` where a command has no handler of its own (long-running services)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def sigterm_received() -> bool:
    """Whether `Terminated` has been raised in this process (the command is stopping on SIGTERM)."""
    return _received
