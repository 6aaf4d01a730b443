"""The downloads panel's model against a real Redis: form text to export request, and the file it hands over."""

from __future__ import annotations

import io
import zipfile

import pyarrow.parquet as pq
import pytest
import redis

from tickerdash.analytics.history.export import ExportError
from tickerdash.dashboard.downloads import export_download, request_from_form
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.settings import Settings

KEYS = Keys()
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def seed_bars(client: redis.Redis, symbol: str, count: int) -> None:
    """`count` closed 1s bars of a symbol from START_MS, as the worker writes them."""
    for i in range(count):
        price = 100.0 + i
        fields = {
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
            "volume": 10,
            "vwap": price,
            "trades": 2,
        }
        client.xadd(KEYS.bars("1s", symbol), fields, id=f"{START_MS + i * 1000}-0")


class TestForm:
    def test_symbols_are_upper_cased_deduplicated_and_empty_means_all(self) -> None:
        """' aapl, MSFT,aapl ' asks for AAPL and MSFT; an empty field asks for every symbol."""
        asked = request_from_form(" aapl, MSFT,aapl ", "1m", "", "", "csv", [])
        assert asked.symbols == ("AAPL", "MSFT") and asked.format == "csv" and asked.start_ms is None
        assert request_from_form("", "1m", "", "", "parquet", []).symbols is None

    def test_a_date_as_the_end_means_through_that_day(self) -> None:
        """Start and end take the CLI's forms; an end date includes the whole day (UTC)."""
        asked = request_from_form("AAPL", "1s", "2026-01-01", "2026-01-01", "parquet", ["alerts"])
        assert (asked.start_ms, asked.end_ms) == (START_MS, START_MS + 86_400_000)
        assert asked.include == ("alerts",)

    def test_an_unreadable_time_says_what_to_type(self) -> None:
        """A start that is not a date is refused with the forms it accepts."""
        with pytest.raises(ExportError, match="not a date"):
            request_from_form("AAPL", "1s", "yesterday-ish", "", "parquet", [])


class TestDownload:
    def test_bars_alone_come_as_one_parquet_file(self, redis_client: redis.Redis, settings: Settings) -> None:
        """Without includes the download is the export's Parquet file, with every bar asked for."""
        seed_bars(redis_client, "AAPL", 5)
        file = export_download(redis_client, settings, request_from_form("AAPL", "1s", "2026-01-01", "", "parquet", []))
        assert file.filename.endswith(".parquet")
        assert pq.read_table(io.BytesIO(file.content)).column("close").to_pylist() == [
            100.0,
            101.0,
            102.0,
            103.0,
            104.0,
        ]

    def test_included_alerts_come_zipped_beside_the_bars(self, redis_client: redis.Redis, settings: Settings) -> None:
        """With alerts included, one zip holds the bars and the alerts of those symbols in the range."""
        seed_bars(redis_client, "AAPL", 5)
        alert = {
            "rule_id": "r1",
            "symbol": "AAPL",
            "ts": START_MS + 2000,
            "price": 95,
            "reference_price": 100,
            "drop_pct": 5,
            "window_s": 60,
            "message": "AAPL -5%",
        }
        redis_client.xadd(KEYS.alerts(), alert)
        file = export_download(
            redis_client, settings, request_from_form("AAPL", "1s", "2026-01-01", "", "parquet", ["alerts"])
        )
        assert file.filename.endswith(".zip")
        with zipfile.ZipFile(io.BytesIO(file.content)) as archive:
            names = sorted(archive.namelist())
            assert names == ["tickerdash_1s.alerts.parquet", "tickerdash_1s.parquet"]
            alerts = pq.read_table(io.BytesIO(archive.read("tickerdash_1s.alerts.parquet")))
        assert alerts.column("message").to_pylist() == ["AAPL -5%"]

    def test_a_range_without_bars_is_refused_and_says_so(self, redis_client: redis.Redis, settings: Settings) -> None:
        """A range before any bar raises the export's no-data error instead of handing over an empty file."""
        seed_bars(redis_client, "AAPL", 5)
        with pytest.raises(ExportError, match="nothing was written"):
            export_download(
                redis_client, settings, request_from_form("AAPL", "1s", "2025-01-01", "2025-01-02", "parquet", [])
            )
