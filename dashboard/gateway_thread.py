"""Runs the gateway beside the WSGI server: its own event loop on a daemon thread."""

from __future__ import annotations

import asyncio
import threading

from tickerdash.dashboard.gateway import Gateway


class GatewayThread:
    """Runs a `Gateway` on its own event loop in a daemon thread, beside the WSGI server's threads."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="tickerdash-gateway", daemon=True)
        self._started = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self.gateway.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stopped.wait()
        finally:
            await self.gateway.stop()

    def start(self, timeout: float = 10.0) -> GatewayThread:
        """Start the thread and wait until the gateway listens (re-raising a failure to bind)."""
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the gateway and wait for its thread to end."""
        if self._thread.is_alive() and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout)

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
