"""Helpers for tests that run commands as processes: wait on a condition, and read a process's signal handlers."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM now (the SigCgt mask of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.01) -> T:
    """Poll until the condition is truthy and return it; fail naming `what` after `timeout` (a generous
    bound for a loaded machine, never a measure of speed)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
    return value
