"""The dashboard process: the Dash app under waitress and the websocket gateway, started and stopped together."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import replace
from typing import Any

from waitress.server import create_server

from tickerdash.dashboard.app import create_app
from tickerdash.dashboard.auth import allowed_hosts, required_token
from tickerdash.dashboard.gateway import Gateway
from tickerdash.dashboard.gateway_thread import GatewayThread
from tickerdash.dashboard.push import GatewayConfig
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys
from tickerdash.ingest.layout import check_layout_if_reachable
from tickerdash.ingest.redis_server import client_for
from tickerdash.ingest.settings import Settings

log = logging.getLogger(__name__)
HTTP_THREADS = 8


class HttpServer:
    """Waitress serving a WSGI app (on its own thread with `start()`, or this one with `serve_forever()`)."""

    def __init__(self, wsgi_app: Any, host: str, port: int) -> None:
        self._server = create_server(wsgi_app, host=host, port=port, threads=HTTP_THREADS, ident="tickerdash")
        self._thread = threading.Thread(target=self.serve_forever, name="tickerdash-http", daemon=True)
        self._stopping = False

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked for)."""
        return int(self._server.effective_port)  # type: ignore[union-attr]

    def start(self) -> HttpServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (or stopped from another thread)."""
        try:
            self._server.run()
        except OSError:
            # `stop` closes the sockets under the loop's select(), which then fails with EBADF: the end
            if not self._stopping:
                raise

    def stop(self) -> None:
        """Stop accepting connections."""
        self._stopping = True
        self._server.close()
        if self._thread.is_alive():
            self._thread.join(2)


class DashboardServer:
    """Dash app plus gateway for one Redis; binds loopback unless told otherwise, then needs a token.

    Requests must name a loopback host, the bound address, an IP address or one of `public_names`
    (comma-separated, as in TICKERDASH_ALLOWED_HOSTS), token or not.
    """

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        *,
        host: str = "127.0.0.1",
        port: int = 8050,
        ws_port: int = 8051,
        token: str | None = None,
        ws_url: str | None = None,
        analytics_group: str = ANALYTICS_GROUP,
        settings: Settings | None = None,
        public_names: str | None = None,
    ) -> None:
        self.token = required_token(host, token)
        self.host = host
        self.hosts = allowed_hosts(host, public_names)
        self.keys = keys
        self.redis_url = redis_url
        # Downloads read the archive too: its place (data_dir) comes from the settings.
        self.settings = settings or Settings(
            redis_url=redis_url, prefix=keys.prefix, partitions=keys.partitions, group=analytics_group
        )
        self.gateway_config = GatewayConfig(
            host=host, port=ws_port, token=self.token, allowed_hosts=self.hosts, analytics_group=analytics_group
        )
        self.gateway_thread: GatewayThread | None = None
        self._client: AnyRedis | None = None
        self._http: HttpServer | None = None
        self._port = port
        self._ws_url = ws_url

    @property
    def gateway(self) -> Gateway:
        """The running gateway."""
        if self.gateway_thread is None:
            raise RuntimeError("the dashboard is not started")
        return self.gateway_thread.gateway

    @property
    def url(self) -> str:
        """Where to open the dashboard (with the token, when one is needed)."""
        assert self._http is not None
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self._http.port}/" + (f"?token={self.token}" if self.token else "")

    def start_gateway(self) -> None:
        """Start (or restart) the websocket gateway."""
        self.gateway_thread = GatewayThread(Gateway(self.redis_url, self.keys, self.gateway_config)).start()
        if self.gateway_config.port == 0:  # keep the port a restart binds (and the page knows) the same
            self.gateway_config = replace(self.gateway_config, port=self.gateway.port)

    def stop_gateway(self) -> None:
        """Stop the websocket gateway (pages show 'disconnected' and retry)."""
        if self.gateway_thread is not None:
            self.gateway_thread.stop()
            self.gateway_thread = None

    def start(self, *, background: bool = True) -> DashboardServer:
        """Start the gateway, then the HTTP server (on a thread when `background`; see `serve_forever`)."""
        self._client = client_for(self.redis_url, cluster=True)  # the URL of any node of a cluster will do
        check_layout_if_reachable(self._client, self.keys)  # first: it refuses data of another partition count
        self.start_gateway()
        app = create_app(
            self._client,
            self.keys,
            self.settings,
            ws_port=self.gateway.port,
            ws_url=self._ws_url,
            token=self.token,
            hosts=self.hosts,
        )
        self._http = HttpServer(app.server, self.host, self._port)
        if background:
            self._http.start()
        return self

    def serve_forever(self) -> None:
        """Serve HTTP on this thread until Ctrl-C."""
        assert self._http is not None
        with contextlib.suppress(KeyboardInterrupt):
            self._http.serve_forever()

    def stop(self) -> None:
        """Stop both servers and close Redis."""
        if self._http is not None:
            self._http.stop()
        self.stop_gateway()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
