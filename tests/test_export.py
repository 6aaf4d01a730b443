"""`tickerdash export` on a real Redis and a real archive: one gap-free table, rolled up right, or a clear refusal."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import Result
from history_data import FLUSH_MS, START_MS, SYMBOLS, analyse, archive_once, archived, redis_bars, trades

import tickerdash.analytics.history.export as export_module
import tickerdash.analytics.history.export.bar_reader as reader_module
import tickerdash.analytics.history.export.plan as plan_module
from tickerdash.analytics.commands.history import register
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.history.archive_layout import OVERLAY_COLUMNS, archive_root
from tickerdash.analytics.history.export import ExportError, ExportRequest, NoDataError, export_bars, export_bytes
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.settings import Settings

BAR_COLUMNS = ["symbol", "start", "open", "high", "low", "close", "volume", "vwap", "trades"]
STORED_COLUMNS = [*BAR_COLUMNS, *OVERLAY_COLUMNS]  # a stored interval's export: the bars with their overlays
DAY2_END = "2026-01-02"  # through 2026-01-02: every bar the trades made, none of the flush trades' open ones


@pytest.fixture
def history(settings: Settings, redis_client: redis.Redis) -> pd.DataFrame:
    """Three hours of trades analysed and archived; returns the 1s bars as Redis holds them."""
    analyse(redis_client, settings, trades())
    archive_once(redis_client, settings)
    return redis_bars(redis_client, "1s")


@pytest.fixture
def small_history(settings: Settings, redis_client: redis.Redis) -> None:
    """A few trades analysed and archived: enough for the command to have symbols to refuse."""
    analyse(redis_client, settings, trades(2_000))
    archive_once(redis_client, settings)


def said(result: Result) -> str:
    """The command's output with the terminal's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def run_export(run_cli: Callable[..., Result]) -> Callable[..., Result]:
    """Invoke `export` against the test Redis and data dir."""
    return lambda *args: run_cli(register, "export", *args)


def resample(bars: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The pandas reference: bars rolled up per symbol to `rule` buckets (empty buckets dropped)."""
    bars = bars.assign(notional=bars["vwap"] * bars["volume"])
    grouped = bars.set_index("start").groupby("symbol").resample(rule)
    out = grouped.agg(
        {
            "open": "first",
            "high": "max",
            "low": "min",
            "close": "last",
            "volume": "sum",
            "notional": "sum",
            "trades": "sum",
        }
    ).reset_index()
    out = out[out["trades"] > 0]
    out["vwap"] = out["notional"] / out["volume"]
    return out[BAR_COLUMNS].sort_values(["symbol", "start"], ignore_index=True)


def read(path: Path) -> pd.DataFrame:
    """An export as pandas, without the interval column, ordered by symbol and start."""
    return pd.read_parquet(path).drop(columns=["interval"]).sort_values(["symbol", "start"], ignore_index=True)


class TestRoundTrip:
    def test_1s_export_equals_the_bars_in_redis_and_in_the_archive(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """Simulate, analyse, archive, export: the file reads back with pyarrow and pandas as the same bars."""
        out = tmp_path / "bars.parquet"
        result = export_bars(redis_client, settings, ExportRequest(interval="1s"), out)
        table = pq.read_table(out)
        assert result.rows == table.num_rows == len(history)
        assert table.schema.field("start").type == pa.timestamp("ms", tz="UTC")
        got = table.to_pandas().drop(columns=["interval"]).sort_values(["symbol", "start"], ignore_index=True)
        pd.testing.assert_frame_equal(got, history, check_dtype=False)
        archive = archived(settings).to_pandas()
        archive = archive[archive["interval"] == "1s"][STORED_COLUMNS]
        archive = archive.sort_values(["symbol", "start"], ignore_index=True)
        pd.testing.assert_frame_equal(got, archive, check_dtype=False)

    def test_parquet_metadata_records_the_version_the_query_and_units(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """The schema metadata says which tickerdash wrote it, for which query, and the columns carry units."""
        redis_client.set(Keys().rules_version, 7)
        redis_client.hset(Keys().simulator_run, "seed", 42)
        out = tmp_path / "bars.parquet"
        export_bars(redis_client, settings, ExportRequest(symbols=("AAA",), interval="1m"), out)
        schema = pq.read_schema(out)
        meta = json.loads(schema.metadata[b"tickerdash"])
        assert meta["tickerdash_version"] and meta["query"]["symbols"] == ["AAA"] and meta["query"]["interval"] == "1m"
        assert meta["rules_version"] == 7 and meta["simulator_seed"] == 42 and meta["source_interval"] == "1m"
        assert schema.field("volume").metadata[b"unit"] == b"shares/units traded"

    def test_1h_rows_equal_a_pandas_resample_of_the_1s_bars(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """Hourly bars rolled up from finer bars are what pandas makes of the 1s bars."""
        out = tmp_path / "hourly.parquet"
        result = export_bars(redis_client, settings, ExportRequest(interval="1h"), out)
        got = read(out)
        assert result.source_interval == "1m" and (got["start"].dt.minute == 0).all()
        pd.testing.assert_frame_equal(got[BAR_COLUMNS], resample(history, "1h"), check_dtype=False, rtol=1e-12)
        as_written = pd.read_parquet(out)  # documented order: day, then symbol, then start
        day = as_written["start"].dt.floor("D")
        assert as_written.assign(day=day).sort_values(["day", "symbol", "start"]).index.equals(as_written.index)

    def test_1d_rows_are_daily_trends_equal_to_pandas(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """Daily rows: OHLCV, VWAP and trades as pandas resamples them, plus return, volatility and drawdown."""
        out = tmp_path / "daily.parquet"
        export_bars(
            redis_client,
            settings,
            ExportRequest(interval="1d", end_ms=export_module.parse_time(DAY2_END, end=True)),
            out,
        )
        got = read(out)
        expected = resample(history, "1D")
        pd.testing.assert_frame_equal(got[BAR_COLUMNS], expected, check_dtype=False, rtol=1e-12)
        minute_close = (
            history.set_index("start").groupby("symbol")["close"].resample("1min").last().dropna().reset_index()
        )
        minute_close["day"] = minute_close["start"].dt.floor("D")
        by_day = minute_close.groupby(["symbol", "day"])["close"]
        realized = by_day.apply(lambda c: float(np.sqrt((np.diff(np.log(c.to_numpy())) ** 2).sum())))
        drawdown = by_day.apply(lambda c: float((1 - c / c.cummax()).max()))
        assert np.allclose(got["realized_volatility"], realized.to_numpy(), rtol=1e-12)
        assert np.allclose(got["max_drawdown"], drawdown.to_numpy(), rtol=1e-12)
        returns = got.groupby("symbol")["close"].pct_change()  # got is ordered by symbol, then day
        assert np.allclose(got["return"], returns, equal_nan=True)
        assert got["return"].isna().sum() == len(SYMBOLS)  # each symbol's first day has no previous close

    def test_stored_bars_carry_their_overlays_and_rolled_up_bars_get_them_computed_across_days(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """A 1m export from the stored 1m bars has the worker's overlays; with the 1m bars gone from Redis and the
        archive, the export rolls the 1s bars up and computes the overlays itself, over chunks cut at midnight,
        to the worker's values (both series start at the first bar)."""
        stored = tmp_path / "stored.parquet"
        export_bars(redis_client, settings, ExportRequest(interval="1m"), stored)
        worker = redis_bars(redis_client, "1m")
        got = read(stored)
        pd.testing.assert_frame_equal(got[STORED_COLUMNS], worker, check_dtype=False)
        assert worker["rsi14"].notna().sum() > 100 and worker["sma20"].isna().sum() == 19 * len(SYMBOLS)
        assert json.loads(pq.read_schema(stored).metadata[b"tickerdash"])["overlays"].startswith("as the worker")
        for symbol in SYMBOLS:
            redis_client.delete(Keys().bars("1m", symbol))
        shutil.rmtree(archive_root(settings) / "interval=1m")
        rolled = tmp_path / "rolled.parquet"
        assert export_bars(redis_client, settings, ExportRequest(interval="1m"), rolled).source_interval == "1s"
        again = read(rolled)
        assert again["start"].dt.date.nunique() == 2  # the export's chunks are days: the series cross midnight
        assert json.loads(pq.read_schema(rolled).metadata[b"tickerdash"])["overlays"].startswith("computed over")
        pd.testing.assert_frame_equal(again[STORED_COLUMNS], worker, check_dtype=False, rtol=1e-9)
        closes = again.groupby("symbol")["close"]
        assert np.allclose(again["sma20"], closes.transform(lambda c: c.rolling(20).mean()), equal_nan=True)
        assert pq.read_schema(rolled).field("rsi14").metadata[b"unit"] == b"index, 0 to 100"

    def test_csv_export_reads_back_in_pandas(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """CSV carries the same rows, with timestamps pandas parses as UTC."""
        out = tmp_path / "bars.csv"
        export_bars(redis_client, settings, ExportRequest(symbols=("BBB",), interval="1m", format="csv"), out)
        got = pd.read_csv(out, parse_dates=["start"])
        expected = redis_bars(redis_client, "1m", ("BBB",))
        assert got["start"].dt.tz is not None
        pd.testing.assert_frame_equal(got[STORED_COLUMNS], expected, check_dtype=False)

    def test_export_bytes_gives_the_dashboard_a_parquet_download(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """The download helper returns the file's bytes and a name, the same table as the command writes."""
        payload, name = export_bytes(redis_client, settings, ExportRequest(symbols=("CCC",), interval="1m"))
        assert name.endswith(".parquet")
        table = pq.read_table(pa.BufferReader(payload))
        assert table.num_rows == len(redis_bars(redis_client, "1m", ("CCC",)))


class TestRetentionBoundary:
    def test_an_export_across_the_redis_retention_boundary_has_no_gap_and_no_duplicate(
        self, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """Old bars only in the archive, new ones only in Redis, an overlap in both: each bar once."""
        ticks = trades()
        early = np.flatnonzero(ticks.ts < START_MS + 7_200_000)
        analyse(redis_client, settings, ticks.take(early))
        archive_once(redis_client, settings)  # the archive has the first two hours
        analyse(redis_client, settings, ticks.take(np.flatnonzero(ticks.ts >= START_MS + 7_200_000)))
        everything = redis_bars(redis_client, "1s")
        cut = START_MS + 3_600_000
        for symbol in SYMBOLS:  # Redis retention: the first hour now lives only in the archive
            redis_client.xtrim(Keys().bars("1s", symbol), minid=f"{cut}-0", approximate=False)
        assert int(redis_bars(redis_client, "1s")["start"].min().value // 1_000_000) >= cut
        out = tmp_path / "bars.parquet"
        export_bars(redis_client, settings, ExportRequest(interval="1s"), out)
        got = read(out).sort_values(["symbol", "start"], ignore_index=True)
        assert not got.duplicated(["symbol", "start"]).any()
        pd.testing.assert_frame_equal(got, everything, check_dtype=False)

    def test_redis_bars_the_archive_holds_are_not_read_again(
        self,
        history: pd.DataFrame,
        settings: Settings,
        redis_client: redis.Redis,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The archive complete, its gaps empty in Redis too: no Redis bar is parsed, and every bar is there once."""
        parsed = _count_parsed_bars(monkeypatch)
        out = tmp_path / "bars.parquet"
        export_bars(redis_client, settings, ExportRequest(interval="1s"), out)
        assert parsed == [0]
        pd.testing.assert_frame_equal(read(out), history, check_dtype=False)

    def test_a_hole_in_the_archive_is_filled_from_redis(
        self,
        history: pd.DataFrame,
        settings: Settings,
        redis_client: redis.Redis,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A lost archive file in the middle of the Redis overlap: its bars come from Redis, none twice."""
        files = sorted((settings.data_dir / "archive" / "interval=1s").rglob("part-*.parquet"))
        files[len(files) // 2].unlink()
        parsed = _count_parsed_bars(monkeypatch)
        out = tmp_path / "bars.parquet"
        export_bars(redis_client, settings, ExportRequest(interval="1s"), out)
        assert parsed[0] > 0
        got = read(out)
        assert not got.duplicated(["symbol", "start"]).any()
        pd.testing.assert_frame_equal(got, history, check_dtype=False)


def _count_parsed_bars(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the export count the Redis bars it parses (the list's one item), probing every archive gap."""
    monkeypatch.setattr(reader_module, "PROBE_COST_BARS", 0)  # the test's trades are sparse: many gaps
    parsed = [0]
    real_parse = reader_module.parse_bar_entries

    def counting(symbol: str, entries: list[object]) -> pa.Table:
        parsed[0] += len(entries)
        return real_parse(symbol, entries)

    monkeypatch.setattr(reader_module, "parse_bar_entries", counting)
    return parsed


class TestAtomicWrite:
    def test_a_failure_mid_export_leaves_no_file_and_no_temporary(
        self,
        history: pd.DataFrame,
        settings: Settings,
        redis_client: redis.Redis,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A chunk that fails after others were written leaves the target untouched and nothing beside it."""
        out = tmp_path / "bars.parquet"
        out.write_bytes(b"the previous export")
        monkeypatch.setattr(plan_module, "CHUNK_ROWS", 20_000)  # several chunks per day
        real_read = export_module.BarReader.read
        calls = [0]

        def fail_on_third(self: export_module.BarReader, *args: object) -> pa.Table:
            calls[0] += 1
            if calls[0] == 3:
                raise OSError("disk went away")
            return real_read(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(export_module.BarReader, "read", fail_on_third)
        with pytest.raises(OSError):
            export_bars(redis_client, settings, ExportRequest(interval="1s"), out)
        assert out.read_bytes() == b"the previous export"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["bars.parquet"]


class TestCommand:
    def test_the_command_exports_and_says_what_it_wrote(
        self, history: pd.DataFrame, run_export: Callable[..., Result], tmp_path: Path
    ) -> None:
        """`tickerdash export --symbols ... --interval 1h` writes the file and reports rows and path."""
        out = tmp_path / "x.parquet"
        result = run_export(
            "--symbols", "aaa,BBB", "--interval", "1h", "--start", "2026-01-01", "--end", DAY2_END, "--out", str(out)
        )
        assert result.exit_code == 0, result.output
        assert "rows of 2 symbols" in said(result) and out.name in said(result)
        assert set(pd.read_parquet(out)["symbol"]) == {"AAA", "BBB"}

    def test_tz_sets_day_boundaries_and_timestamps(
        self, history: pd.DataFrame, run_export: Callable[..., Result], tmp_path: Path
    ) -> None:
        """With --tz America/New_York, daily rows start at New York midnight and carry that zone."""
        out = tmp_path / "ny.parquet"
        result = run_export(
            "--all", "--interval", "1d", "--tz", "America/New_York", "--end", DAY2_END, "--out", str(out), "-q"
        )
        assert result.exit_code == 0, result.output
        got = pd.read_parquet(out)
        assert str(got["start"].dt.tz) == "America/New_York"
        assert (got["start"].dt.hour == 0).all()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--symbols", "ZZZZ", "--interval", "1m"), "ZZZZ"),
            (("--symbols", "AAA", "--start", "2026-01-02", "--end", "2026-01-01"), "must be before --end"),
            (("--all", "--interval", "5m"), "--interval"),
            (("--all", "--start", "2030-01-01"), "no bars"),
            (("--all", "--start", "yesterday-ish"), "--start"),
            (("--all", "--tz", "Mars/Olympus"), "time zone"),
            (("--all", "--include", "gossip"), "--include"),
            (("--interval", "1m"), "--symbols"),
        ],
    )
    def test_bad_requests_exit_2_with_what_to_fix_and_write_nothing(
        self,
        small_history: None,
        run_export: Callable[..., Result],
        tmp_path: Path,
        args: tuple[str, ...],
        message: str,
    ) -> None:
        """Unknown symbol or interval, start after end, an empty range, bad time or zone: exit 2, no file."""
        out = tmp_path / "never.parquet"
        result = run_export(*args, "--out", str(out), "-q")
        assert result.exit_code == 2, result.output
        assert message in said(result)
        assert not out.exists()

    def test_an_unwritable_path_exits_2(
        self, small_history: None, run_export: Callable[..., Result], tmp_path: Path
    ) -> None:
        """A directory that does not exist is refused before any work."""
        result = run_export("--all", "--out", str(tmp_path / "missing" / "bars.parquet"), "-q")
        assert result.exit_code == 2 and "does not exist" in said(result)

    def test_include_writes_trades_beside_the_bars(
        self, history: pd.DataFrame, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """--include trades adds NAME.trades.parquet with the symbols' trades in the range."""
        out = tmp_path / "bars.parquet"
        alert = {
            "rule_id": "r1",
            "symbol": "DDD",
            "ts": START_MS + 60_000,
            "price": 95.5,
            "reference_price": 100,
            "drop_pct": 4.5,
            "window_s": 60,
            "message": "DDD fell 4.5% in 60s",
        }
        redis_client.xadd(Keys().alerts(), alert)  # type: ignore[arg-type]
        result = export_bars(
            redis_client, settings, ExportRequest(symbols=("DDD",), interval="1m", include=("trades", "alerts")), out
        )
        got = pd.read_parquet(result.extra["trades"])
        assert set(got["symbol"]) == {"DDD"} and len(got) == int((trades().symbol == "DDD").sum())
        assert got["ts"].max() < pd.Timestamp(FLUSH_MS, unit="ms", tz="UTC") + pd.Timedelta(days=1)
        alerts = pd.read_parquet(result.extra["alerts"])
        assert alerts["message"].tolist() == ["DDD fell 4.5% in 60s"]
        assert alerts["price"].tolist() == [95.5]
        assert alerts["ts"].tolist() == [pd.Timestamp(START_MS + 60_000, unit="ms", tz="UTC")]


HOSTILE_IDS = ('=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1")
HOSTILE_SYMBOL = "-X"  # a valid ticker (A-Z 0-9 . - / _) that a spreadsheet reads as a formula


class TestFormulaInjection:
    @pytest.fixture
    def hostile(self, settings: Settings, redis_client: redis.Redis) -> None:
        """Trades of -X and AAA with formula-like trade ids, through a real worker, and an alert whose message
        reads as a formula and whose drop is negative."""
        stream = Keys().ticks()
        for i, trade_id in enumerate(HOSTILE_IDS * 2):
            symbol = HOSTILE_SYMBOL if i % 2 else "AAA"
            redis_client.xadd(
                stream,
                {"symbol": symbol, "price": 100.5 + i, "size": 10, "ts": START_MS + i * 1_000, "trade_id": trade_id},
            )
        for symbol in (HOSTILE_SYMBOL, "AAA"):  # close the first minute's bars
            redis_client.xadd(stream, {"symbol": symbol, "price": 100, "size": 1, "ts": START_MS + 120_000})
        AnalyticsWorker(redis_client, settings, None, WorkerConfig(checkpoint_every_s=0.2)).run(max_idle_reads=3)
        alert = {
            "rule_id": "r1",
            "symbol": HOSTILE_SYMBOL,
            "ts": START_MS + 5_000,
            "price": 95.5,
            "drop_pct": -4.5,
            "message": "=cmd|' /C calc'!A0",
        }
        redis_client.xadd(Keys().alerts(), alert)  # type: ignore[arg-type]

    def test_csv_text_cells_never_start_a_formula_and_parquet_keeps_the_originals(
        self, hostile: None, settings: Settings, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """In the CSV export every text cell starting with = + - @ tab or CR starts with ' instead; numbers
        (a negative drop too) are written as they are; the Parquet of the same export holds the raw values."""
        request = ExportRequest(symbols=(HOSTILE_SYMBOL, "AAA"), interval="1m", include=("trades", "alerts"))
        as_csv = export_bars(redis_client, settings, dataclasses.replace(request, format="csv"), tmp_path / "b.csv")
        as_parquet = export_bars(redis_client, settings, request, tmp_path / "b.parquet")
        for name, parquet_path in (("bars", as_parquet.path), *as_parquet.extra.items()):
            csv_path = as_csv.path if name == "bars" else as_csv.extra[name]
            with csv_path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            table = pq.read_table(parquet_path)
            assert len(rows) == table.num_rows > 0, name
            for column in table.column_names:
                original = [None if v is None else str(v) for v in table.column(column).to_pylist()]
                written = [row[column] for row in rows]
                if pa.types.is_floating(table.schema.field(column).type):
                    as_read = [float(v) if v else None for v in written]  # a null (undefined overlay) is empty
                    assert as_read == table.column(column).to_pylist(), (name, column)
                elif column in ("symbol", "trade_id", "message"):
                    assert written == [
                        "" if v is None else "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
                        for v in original
                    ], (name, column)
        trades_csv = list(csv.DictReader(as_csv.extra["trades"].open(newline="")))
        assert {row["trade_id"] for row in trades_csv} >= {"'" + i for i in HOSTILE_IDS}
        assert set(pq.read_table(as_parquet.extra["trades"])["trade_id"].to_pylist()) >= set(HOSTILE_IDS)
        alert = next(csv.DictReader(as_csv.extra["alerts"].open(newline="")))
        assert (alert["message"], alert["drop_pct"], alert["symbol"]) == ("'=cmd|' /C calc'!A0", "-4.5", "'-X")
        assert pq.read_table(as_parquet.extra["alerts"])["message"].to_pylist() == ["=cmd|' /C calc'!A0"]

    def test_the_dashboards_csv_download_is_neutralised_too(
        self, hostile: None, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """`export_bytes` (the download button) writes the same prefixed cells as the command."""
        payload, name = export_bytes(redis_client, settings, ExportRequest(interval="1m", format="csv"))
        rows = list(csv.DictReader(payload.decode().splitlines()))
        assert name.endswith(".csv") and sorted(row["symbol"] for row in rows) == ["'-X", "AAA"]


class TestRequests:
    def test_start_after_end_is_refused_by_the_function_too(self, settings: Settings, tmp_path: Path) -> None:
        """The dashboard's entry point validates like the command does."""
        with pytest.raises(ExportError, match="before --end"):
            export_bars(None, settings, ExportRequest(start_ms=2_000, end_ms=1_000), tmp_path / "x.parquet")

    def test_an_empty_archive_and_no_redis_is_no_data(self, settings: Settings, tmp_path: Path) -> None:
        """With nothing stored anywhere the export says so and writes nothing."""
        with pytest.raises(NoDataError):
            export_bars(None, settings, ExportRequest(interval="1h"), tmp_path / "x.parquet")
        assert not (tmp_path / "x.parquet").exists()
