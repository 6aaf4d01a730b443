"""`StopFlag`: set by SIGTERM/SIGINT (or by code), checked by every loop between batches."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT (or by code); the loop drains the batch in hand and exits."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: object) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def install(self) -> StopFlag:
        """Route SIGTERM and SIGINT here (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: draining the batch in hand, then stopping", signal.Signals(signum).name)
            self.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        return self
