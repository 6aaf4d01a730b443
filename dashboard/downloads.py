"""The downloads panel's model: form text in, an export file out, through the CLI's export code.

`tickerdash export` and this panel share `analytics.history.export`: the same validation, the same table,
the same metadata. With alerts or anomalies included, the bars and those tables come as one zip
(a browser download is one file; the CLI writes them side by side).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from tickerdash.analytics.history.export import ExportRequest, export_bars, export_bytes, parse_time
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.settings import Settings

INTERVALS = ("1s", "1m", "1h", "1d")
FORMATS = ("parquet", "csv")
INCLUDES = ("alerts", "anomalies")


@dataclass(frozen=True, slots=True)
class Download:
    """A file for the browser to save."""

    content: bytes
    filename: str


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def request_from_form(symbols: Any, interval: Any, start: Any, end: Any, fmt: Any, include: Any) -> ExportRequest:
    """The export the form asks for; ExportError (saying what to fix) when a field cannot be read."""
    names = tuple(dict.fromkeys(s.strip().upper() for s in _text(symbols).split(",") if s.strip()))
    start_text, end_text = _text(start), _text(end)
    return ExportRequest(
        symbols=names or None,
        interval=_text(interval),
        tz="UTC",
        start_ms=parse_time(start_text) if start_text else None,
        end_ms=parse_time(end_text, end=True) if end_text else None,
        format=cast(Literal["parquet", "csv"], _text(fmt)),
        include=tuple(name for name in (include or ()) if name in INCLUDES),
    )


def export_download(client: AnyRedis, settings: Settings, request: ExportRequest) -> Download:
    """The requested export as one file (a zip when alerts or anomalies are included); raises ExportError."""
    if not request.include:
        content, filename = export_bytes(client, settings, request)
        return Download(content, filename)
    with tempfile.TemporaryDirectory(prefix="tickerdash-download-") as folder:
        bars = Path(folder) / f"tickerdash_{request.interval}.{request.format}"
        result = export_bars(client, settings, request, bars)
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in (result.path, *result.extra.values()):
                archive.write(path, arcname=path.name)
        return Download(packed.getvalue(), f"{bars.stem}.zip")
