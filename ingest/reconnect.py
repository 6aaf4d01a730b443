"""Riding out a Redis outage (a restart, a failover): retry with exponential backoff, and say so once.

Every long-running command shares this: one warning when an outage starts ("redis unavailable (...):
retrying in 0.1s"), one when it ends ("redis back after 3.2 s"), the attempts in between at debug level,
so that a restart shows as two lines in a log rather than a traceback or a wall of retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import redis

T = TypeVar("T")
# what a restarting server looks like from a client: refused or reset connections, timeouts, and
# `LOADING` replies while it reads its append-only file back (BusyLoadingError is a ConnectionError)
REDIS_DOWN: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0

_log = logging.getLogger(__name__)


class StopSignal(Protocol):
    """What a loop stops on (`threading.Event`, `ingest.runner.StopFlag`)."""

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True once stopping."""
        ...


class Outage:
    """Backoff across one Redis outage: the delay doubles per failed attempt, and the outage is logged
    once when it starts and once when the first attempt after it succeeds. Threads that share a Redis
    may share one (an outage is then logged once for all of them)."""

    def __init__(
        self,
        log: logging.Logger | None = None,
        *,
        first_s: float = FIRST_BACKOFF_S,
        max_s: float | None = None,
        what: str = "redis",
    ) -> None:
        self.log = log or _log
        self.first_s = first_s
        self.max_s = MAX_BACKOFF_S if max_s is None else max_s  # read now: tests shorten the module's cap
        self.what = what
        self.delay = first_s
        self.started: float | None = None  # time.monotonic() of the outage's first failure
        self.outages = 0
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        """True between a failure and the next success."""
        return self.started is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed attempt; returns the seconds to wait before the next one."""
        with self._lock:
            return self._failed(exc)

    def _failed(self, exc: BaseException) -> float:
        if self.started is None:
            self.started = time.monotonic()
            self.outages += 1
            self.delay = self.first_s
            self.log.warning("%s unavailable (%s): retrying in %.1fs", self.what, _reason(exc), self.delay)
        else:
            self.delay = min(self.delay * 2, self.max_s)
            self.log.debug("%s still unavailable (%s): retrying in %.1fs", self.what, _reason(exc), self.delay)
        return self.delay

    def recovered(self) -> None:
        """Note a successful attempt (logs the end of an outage, if one was on)."""
        with self._lock:
            self._recovered()

    def _recovered(self) -> None:
        if self.started is not None:
            self.log.warning("%s back after %.1f s", self.what, time.monotonic() - self.started)
            self.started = None
            self.delay = self.first_s


# a cluster's redirects read as bare "slot host:port" once redis-py has parsed them: name them again
_REDIRECTS = {"MovedError": "MOVED", "AskError": "ASK", "TryAgainError": "TRYAGAIN"}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ in _REDIRECTS:
        text = f"{_REDIRECTS[type(exc).__name__]} {text}"
    return text.splitlines()[0][:200]


def wait_out(outage: Outage, exc: BaseException, stop: StopSignal | None = None) -> bool:
    """Sleep the outage's next delay (cut short by `stop`); True if `stop` was set meanwhile."""
    delay = outage.failed(exc)
    if stop is None:
        time.sleep(delay)
        return False
    return stop.wait(delay)


def through_outages(call: Callable[[], T], outage: Outage | None = None, *, stop: StopSignal | None = None) -> T:
    """`call()`, retried through Redis outages until it succeeds (raises `Stopped` once `stop` is set).

    Only for calls that are safe to repeat: one that may have been applied before its connection died
    (an XADD) must find out what landed itself, as `ingest.producer.Producer` does.
    """
    outage = outage or Outage()
    while True:
        try:
            result = call()
        except REDIS_DOWN as exc:
            if wait_out(outage, exc, stop):
                raise Stopped() from exc
            continue
        outage.recovered()
        return result


def wait_for_redis(client: redis.Redis, outage: Outage, *, stop: StopSignal | None = None) -> None:
    """Block until the server answers PING (and has loaded its data: a loading server refuses it)."""
    through_outages(client.ping, outage, stop=stop)


class Stopped(Exception):  # noqa: N818 - a signal: the caller asked to stop while Redis was down
    """The stop flag was set while waiting for Redis to come back."""
