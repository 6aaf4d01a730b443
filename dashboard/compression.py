"""Gzip for the page's text responses (scripts, styles, JSON, HTML), with the standard library.

A page load was 6.1 MB, 4.8 MB of it Plotly's bundle; gzipped it is about a third. Flask-Compress would do
the same with a dependency (and brotli's); `gzip` is enough here. Files that do not change while the
server runs (Dash's component suites, the assets, Plotly) are compressed once and kept, keyed by path and
ETag; the rest (layout, chart back-fills, callback answers) are compressed per response.
"""

from __future__ import annotations

import gzip
import threading

import flask

COMPRESSIBLE = frozenset(
    {"text/javascript", "application/javascript", "text/css", "application/json", "text/html", "text/plain"}
)
MIN_BYTES = 1_024  # below this the gzip header and the work are not worth it
LEVEL = 6
CACHED_PREFIXES = ("/_dash-component-suites/", "/assets/", "/tickerdash/plotly")


class GzipCache:
    """Compressed bodies of unchanging files, by (path, ETag or length)."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], body: bytes) -> bytes:
        """The gzip of `body`, compressed on first use of `key`."""
        with self._lock:
            cached = self._bodies.get(key)
        if cached is None:
            cached = gzip.compress(body, LEVEL, mtime=0)
            with self._lock:
                self._bodies[key] = cached
        return cached


def compress_responses(server: flask.Flask) -> None:
    """Gzip every compressible response of the server to clients that accept it."""
    cache = GzipCache()

    @server.after_request
    def _gzip(response: flask.Response) -> flask.Response:
        request = flask.request
        response.vary.add("Accept-Encoding")
        if (
            response.status_code != 200
            or response.mimetype not in COMPRESSIBLE
            or "Content-Encoding" in response.headers
            or not request.accept_encodings["gzip"]  # its quality: 0 when absent or refused
        ):
            return response
        response.direct_passthrough = False  # a file response: read it so it can be compressed
        body = response.get_data()
        if len(body) < MIN_BYTES:
            return response
        if request.path.startswith(CACHED_PREFIXES):
            etag, _ = response.get_etag()
            compressed = cache.get((request.path, etag or str(len(body))), body)
        else:
            compressed = gzip.compress(body, LEVEL)
        response.set_data(compressed)
        response.headers["Content-Encoding"] = "gzip"
        etag, weak = response.get_etag()
        if etag:  # the compressed bytes are another representation
            response.set_etag(f"{etag}-gzip", weak=bool(weak))
        return response
