"""Trade-file importers and the replay pacer: pure, no Redis."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.importers import (
    ColumnMapping,
    ImportOptionError,
    TradeReader,
    detect_ts_unit,
    epoch_to_ms,
    read_trades,
    sniff_format,
)
from tickerdash.ingest.replay import ReplayPacer
from tickerdash.ingest.ticks import TickBatch, concat

TRADES = {
    "symbol": ["AAPL", "msft", "AAPL", "GOOG"],
    "price": [187.25, 410.5, 187.3, 2800.0],
    "size": [100, 5, 7, 1],
    "timestamp": [1_700_000_000_000, 1_700_000_000_000, 1_700_000_000_250, 1_700_000_001_000],
    "side": ["buy", "S", "sell", "b"],
    "id": [1, 2, 3, 4],
}


def read_all(
    source: str | Path | io.BytesIO, mapping: ColumnMapping | None = None, **kwargs: object
) -> tuple[TickBatch, list[Rejected]]:
    """Every chunk of a file, joined."""
    batches, rejected = [], []
    for batch, bad in read_trades(source, mapping, **kwargs):  # type: ignore[arg-type]
        batches.append(batch)
        rejected.extend(bad)
    return concat(batches), rejected


def write_csv(path: Path, text: str) -> Path:
    """Write a small text file and return its path."""
    path.write_text(text)
    return path


def as_rows(batch: TickBatch) -> list[tuple[object, ...]]:
    """The trades as plain tuples, to compare readers."""
    ids = batch.trade_id.to_pylist() if batch.trade_id is not None else [None] * len(batch)
    return list(
        zip(
            batch.symbol.tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            batch.ts.tolist(),
            batch.side.tolist(),
            ids,
            strict=True,
        )
    )


class TestColumnMapping:
    def test_common_names_are_detected(self) -> None:
        """Binance-style columns (amount, timestamp, id) map onto size, ts and trade_id by themselves."""
        resolved = ColumnMapping().resolve(["exchange", "symbol", "timestamp", "id", "side", "price", "amount"])
        assert resolved.fields == {
            "symbol": "symbol",
            "price": "price",
            "size": "amount",
            "ts": "timestamp",
            "side": "side",
            "trade_id": "id",
        }

    def test_detection_ignores_case(self) -> None:
        """Column names match whatever their case."""
        resolved = ColumnMapping().resolve(["Ticker", "PX", "Qty", "Time"])
        assert (resolved.symbol, resolved.price, resolved.size, resolved.ts) == ("Ticker", "PX", "Qty", "Time")

    def test_explicit_columns_win(self) -> None:
        """An explicit column is used even when a common name is also present."""
        resolved = ColumnMapping(ts_col="ts_ns").resolve(["ts", "ts_ns", "symbol", "price", "size"])
        assert resolved.ts == "ts_ns"

    def test_missing_explicit_column_names_the_flag_and_the_columns(self) -> None:
        """A --price-col that is not in the file is an error that names the flag and lists the columns."""
        with pytest.raises(ImportOptionError, match=r"--price-col 'last'.*columns are: symbol, px, size, ts"):
            ColumnMapping(price_col="last").resolve(["symbol", "px", "size", "ts"])

    def test_no_symbol_column_asks_for_symbol_or_symbol_col(self) -> None:
        """Without a symbol column the error suggests --symbol for single-symbol files."""
        with pytest.raises(ImportOptionError, match="--symbol TICKER"):
            ColumnMapping().resolve(["price", "size", "ts"])

    def test_fixed_symbol_is_normalised_and_replaces_the_column(self) -> None:
        """--symbol is upper-cased and wins over a symbol column."""
        resolved = ColumnMapping(symbol="btcusdt").resolve(["symbol", "price", "size", "ts"])
        assert (resolved.fixed_symbol, resolved.symbol) == ("BTCUSDT", None)

    def test_bad_fixed_symbol_and_bad_unit_are_option_errors(self) -> None:
        """An invalid --symbol or --ts-unit fails before any file is read."""
        with pytest.raises(ImportOptionError, match="--symbol"):
            ColumnMapping(symbol="not a ticker")
        with pytest.raises(ImportOptionError, match="--ts-unit 'hours'"):
            ColumnMapping(ts_unit="hours")


class TestTimestamps:
    @pytest.mark.parametrize(
        ("value", "unit"),
        [
            (1_700_000_000, "s"),
            (1_700_000_000_123, "ms"),
            (1_582_329_602_111_000, "us"),
            (1_340_285_400_015_105_074, "ns"),
        ],
    )
    def test_unit_is_detected_by_magnitude(self, value: int, unit: str) -> None:
        """Epoch numbers of today's dates are told apart by their size."""
        assert detect_ts_unit(np.array([value, value + 1])) == unit

    def test_conversion_floors_to_whole_milliseconds(self) -> None:
        """Sub-millisecond units and fractional seconds round down to the millisecond."""
        ns, _ = epoch_to_ms(np.array([1_340_285_400_015_999_999]), "ns")
        secs, _ = epoch_to_ms(np.array([1_700_000_000.1239]), "s")
        assert ns.tolist() == [1_340_285_400_015] and secs.tolist() == [1_700_000_000_123]

    def test_seconds_that_overflow_are_out_of_range(self) -> None:
        """A number too large for its unit is flagged rather than wrapped around."""
        ms, out_of_range = epoch_to_ms(np.array([10**17, 5]), "s")
        assert out_of_range.tolist() == [True, False] and ms[1] == 5000

    def test_iso_text_with_offsets_and_naive_utc(self, tmp_path: Path) -> None:
        """ISO-8601 times (Z, offsets, nanoseconds, naive meaning UTC) become epoch ms."""
        path = write_csv(
            tmp_path / "iso.csv",
            "symbol,price,size,ts\n"
            "A,1,1,2012-06-21T13:30:00.015105074Z\n"
            "A,1,1,2012-06-21T14:30:00.5+01:00\n"
            "A,1,1,2012-06-21 13:30:01\n",
        )
        batch, rejected = read_all(path)
        assert rejected == []
        assert batch.ts.tolist() == [1340285400015, 1340285400500, 1340285401000]

    def test_unit_is_settled_once_per_file(self, tmp_path: Path) -> None:
        """A later chunk with smaller numbers keeps the unit detected on the first chunk."""
        path = write_csv(tmp_path / "t.csv", "symbol,price,size,ts\nA,1,1,1700000000000\nA,1,1,1700000\n")
        with TradeReader(path, chunk_rows=1) as reader:
            batch = concat([b for b, _ in reader])
            assert reader.ts_unit == "ms"
        assert batch.ts.tolist() == [1_700_000_000_000, 1_700_000]

    def test_explicit_unit_overrides_detection(self, tmp_path: Path) -> None:
        """--ts-unit us reads a number as microseconds although its size says milliseconds."""
        path = write_csv(tmp_path / "t.csv", "symbol,price,size,ts\nA,1,1,1700000000123\n")
        batch, _ = read_all(path, ColumnMapping(ts_unit="us"))
        assert batch.ts.tolist() == [1_700_000_000]


class TestRejectedRows:
    BAD = (
        "symbol,price,size,ts,side\n"
        "AAPL,187.2,10,1700000000000,buy\n"  # line 2: fine
        "AAPL,-3,10,1700000000001,buy\n"  # line 3: price <= 0
        "AAPL,abc,10,1700000000002,buy\n"  # line 4: price not a number
        "AAPL,187.2,,1700000000003,sell\n"  # line 5: size missing
        "AAPL,187.2,10,yesterday,sell\n"  # line 6: ts unparsable
        "AAPL,187.2,10,1700000000005,hold\n"  # line 7: side unknown
        "THIS_SYMBOL_IS_TOO_LONG,1,1,1700000000006,\n"  # line 8: symbol
        "AAPL,187.2\n"  # line 9: too few values
        "\n"  # line 10: blank, skipped
        "msft,410,1,1700000000007,\n"
    )

    def test_each_bad_row_is_rejected_with_its_field_and_line(self, tmp_path: Path) -> None:
        """Every broken row comes back as Rejected naming the field at fault and its line; good rows pass."""
        batch, rejected = read_all(write_csv(tmp_path / "bad.csv", self.BAD))
        assert batch.symbol.tolist() == ["AAPL", "MSFT"]
        reasons = {r.entry_id: r.reason for r in rejected}
        assert reasons == {
            "line:3": "price: must be a finite number > 0",
            "line:4": "price: not a number",
            "line:5": "size: missing",
            "line:6": "ts: not a timestamp",
            "line:7": "side: must be buy, sell, B or S",
            "line:8": reasons["line:8"],
            "line:9": "csv: expected 5 values, got 2 (a value is missing or the line is cut short)",
        }
        assert reasons["line:8"].startswith("symbol:")

    def test_rejected_rows_keep_their_original_values(self, tmp_path: Path) -> None:
        """The dead-letter fields are the row's own values under the file's column names."""
        _, rejected = read_all(write_csv(tmp_path / "bad.csv", self.BAD))
        by_line = {r.entry_id: r.fields for r in rejected}
        assert by_line["line:4"] == {
            "symbol": "AAPL",
            "price": "abc",
            "size": "10",
            "ts": "1700000000002",
            "side": "buy",
        }
        assert by_line["line:9"] == {"line": "AAPL,187.2"}

    def test_line_numbers_hold_across_blocks_and_chunks(self, tmp_path: Path) -> None:
        """With tiny read blocks and chunks the line of a late bad row is still exact."""
        lines = ["symbol,price,size,ts"] + [f"A,{i + 1},1,{1_700_000_000_000 + i}" for i in range(500)]
        lines[377] = "A,0,1,1700000000000"
        path = write_csv(tmp_path / "many.csv", "\n".join(lines) + "\n")
        reader = TradeReader(path, chunk_rows=7, block_bytes=100)
        with reader:
            chunks = list(reader)
        assert max(len(b) for b, _ in chunks) <= 7
        assert [r.entry_id for _, bad in chunks for r in bad] == ["line:378"]
        assert len(concat([b for b, _ in chunks])) == 499

    def test_file_order_is_kept_for_equal_timestamps(self, tmp_path: Path) -> None:
        """Trades that share a timestamp stay in the order of the file."""
        text = "symbol,price,size,ts\n" + "".join(f"A,{p},1,1700000000000\n" for p in (3, 1, 2, 5, 4))
        batch, _ = read_all(write_csv(tmp_path / "ties.csv", text), chunk_rows=2)
        assert batch.price.tolist() == [3, 1, 2, 5, 4]


def numbered_trades(rows: int) -> list[str]:
    """A header and `rows` valid trade lines; line n of the file (1-based) is element n - 1."""
    return ["symbol,price,size,ts,trade_id"] + [
        f"S{i % 7},{100 + i % 13}.5,{1 + i % 5},{1_700_000_000_000 + i},t{i}" for i in range(rows)
    ]


class TestMalformedCsv:
    UNBALANCED = 'csv: unbalanced quote: a value opens with " and the line ends before it closes'

    def test_an_unbalanced_quote_rejects_its_own_line_only_across_blocks(self, tmp_path: Path) -> None:
        """A quote that never closes, mid-file with blocks of ~2 KB, costs its own line and no other."""
        lines = numbered_trades(5_000)
        lines[2_500] = 'S1,"100.5,1,1700000000000,tX'
        lines[4_000] = 'S2,100.5,1,1700000000000,"tY'
        path = write_csv(tmp_path / "quote.csv", "\n".join(lines) + "\n")
        with TradeReader(path, chunk_rows=1_000, block_bytes=2_048) as reader:
            chunks = list(reader)
        batch = concat([b for b, _ in chunks])
        rejected = [r for _, bad in chunks for r in bad]
        assert len(batch) == 4_998
        assert [(r.entry_id, r.reason.startswith(self.UNBALANCED)) for r in rejected] == [
            ("line:2501", True),
            ("line:4001", True),
        ]
        assert rejected[0].fields == {"line": 'S1,"100.5,1,1700000000000,tX'}
        ids = batch.trade_id.to_pylist() if batch.trade_id is not None else []
        assert ids[2_498:2_500] == ["t2498", "t2500"]  # t2499 was on the bad line; the lines after it are read

    def test_a_quote_opened_in_a_value_and_left_open_is_caught_with_an_even_count(self, tmp_path: Path) -> None:
        """`x"y,"z` holds two quotes, but the second opens a value that never closes: that line alone is out."""
        lines = numbered_trades(50)
        lines[20] = 'S1,1"00.5,1,"1700000000000,t'
        batch, rejected = read_all(write_csv(tmp_path / "even.csv", "\n".join(lines) + "\n"))
        assert len(batch) == 49
        assert [r.entry_id for r in rejected] == ["line:21"] and rejected[0].reason.startswith(self.UNBALANCED)

    def test_every_kind_of_bad_line_in_one_block_is_rejected_by_line(self, tmp_path: Path) -> None:
        """Extra values, missing values, bytes that are not UTF-8 and an open quote in one block: each is
        rejected with its line and what to fix; every other row of the block is read."""
        lines = [line.encode() for line in numbered_trades(200)]
        lines[10] = b"S1,100.5,1,1700000000000,t,extra"
        lines[20] = b"S1,100.5,1"
        lines[30] = b"S1,1\xff0.5,1,1700000000000,t"
        lines[40] = b'S1,100.5,1,1700000000000,"t'
        path = tmp_path / "junk.csv"
        path.write_bytes(b"\n".join(lines) + b"\n")
        batch, rejected = read_all(path)
        assert len(batch) == 196
        assert [(r.entry_id, r.reason) for r in rejected] == [
            ("line:11", "csv: expected 5 values, got 6 (quote a value that holds the delimiter)"),
            ("line:21", "csv: expected 5 values, got 3 (a value is missing or the line is cut short)"),
            ("line:31", "encoding: price is not UTF-8 text (byte 0xff); save the file as UTF-8"),
            ("line:41", rejected[3].reason),
        ]
        assert rejected[3].reason.startswith(self.UNBALANCED)

    def test_a_truncated_last_row_is_rejected_never_published(self, tmp_path: Path) -> None:
        """A last line without its line end is a cut-off file: dead-lettered, even when its values look whole."""
        rows = "".join(f"S1,100.5,1,{1_700_000_000_000 + i}\n" for i in range(98))
        path = write_csv(tmp_path / "cut.csv", "symbol,price,size,ts\n" + rows + "S1,100.5,1,170")  # ts cut short
        batch, rejected = read_all(path)
        assert len(batch) == 98 and batch.ts.min() >= 1_700_000_000_000
        assert [(r.entry_id, r.fields) for r in rejected] == [("line:100", {"line": "S1,100.5,1,170"})]
        assert "cut off" in rejected[0].reason

    def test_quoted_values_with_delimiters_and_doubled_quotes_are_read(self, tmp_path: Path) -> None:
        """Well-formed quoting (a delimiter and a doubled quote inside a value) is data, not an error."""
        text = 'symbol,price,size,ts,trade_id\n"AAPL",187.5,1,1700000000000,"a,""b"""\nMSFT,1,1,1700000000001,x\n'
        batch, rejected = read_all(write_csv(tmp_path / "quoted.csv", text))
        assert rejected == []
        assert batch.trade_id is not None and batch.trade_id.to_pylist() == ['a,"b"', "x"]


JUNK = (b'"', b'""', b",", b"\xff", b"\xc3", b"\r", b'"x"y', b"\x00", b"\t", b" ", b";")


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[bytes, set[str], int, int, int]:
    """A trade CSV with junk put into some lines and maybe cut short; the trade ids of the lines left whole,
    the number of lines after the header that are not blank, a block size and a chunk size."""
    rows = draw(st.integers(1, 300))
    lines = [line.encode() for line in numbered_trades(rows)]
    touched = set()
    for _ in range(draw(st.integers(0, 6))):
        index = draw(st.integers(1, rows))
        at = draw(st.integers(0, len(lines[index])))
        lines[index] = lines[index][:at] + draw(st.sampled_from(JUNK)) + lines[index][at:]
        touched.add(index)
    data = b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = data[: draw(st.integers(len(lines[0]) + 1, len(data)))]
    whole = data.split(b"\n")[1:-1]  # lines that still end in a newline
    intact = {f"t{i - 1}" for i in range(1, len(whole) + 1) if i not in touched}
    counted = sum(1 for line in data.split(b"\n")[1:] if line.strip(b"\r"))
    return data, intact, counted, draw(st.sampled_from([100, 700, 5_000, 100_000])), draw(st.sampled_from([7, 1_000]))


class TestDamagedCsvProperty:
    @settings(max_examples=150, deadline=None)
    @given(damaged_files())
    def test_every_line_is_read_or_rejected_once_and_whole_lines_are_always_read(
        self, case: tuple[bytes, set[str], int, int, int]
    ) -> None:
        """Whatever junk is in some lines, each line is a trade or one rejection under its own number, and
        every line left whole is published: nothing is swallowed, nothing stops the read."""
        data, intact, counted, block_bytes, chunk_rows = case
        published: list[str] = []
        rejected: list[str] = []
        with TradeReader(io.BytesIO(data), chunk_rows=chunk_rows, block_bytes=block_bytes) as reader:
            for batch, bad in reader:
                published += batch.trade_id.to_pylist() if batch.trade_id is not None else []
                rejected += [r.entry_id for r in bad]
        assert len(rejected) == len(set(rejected))
        assert len(published) + len(rejected) == counted
        assert intact <= set(published)


class TestFormats:
    def test_csv_ndjson_and_parquet_read_the_same_trades(self, tmp_path: Path) -> None:
        """One table written as CSV, NDJSON and Parquet reads back as identical trades."""
        table = pa.table(TRADES)
        pa_csv.write_csv(table, tmp_path / "t.csv")
        pq.write_table(table, tmp_path / "t.parquet")
        (tmp_path / "t.ndjson").write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
        results = [as_rows(read_all(tmp_path / f"t.{ext}")[0]) for ext in ("csv", "ndjson", "parquet")]
        assert results[0] == results[1] == results[2]
        assert results[0][1] == ("MSFT", 410.5, 5.0, 1_700_000_000_000, -1, "2")

    def test_parquet_timestamp_columns_are_read_natively(self, tmp_path: Path) -> None:
        """A Parquet timestamp column needs no unit: it becomes epoch ms directly."""
        ts = pa.array([1_700_000_000_123_456], pa.timestamp("us", tz="UTC"))
        pq.write_table(pa.table({"sym": ["A"], "px": [1.5], "qty": [2.0], "time": ts}), tmp_path / "t.pq")
        batch, _ = read_all(tmp_path / "t.pq")
        assert batch.ts.tolist() == [1_700_000_000_123]

    def test_bad_ndjson_lines_are_rejected_and_the_rest_read(self, tmp_path: Path) -> None:
        """A line that is not a JSON object is rejected with its line number; its neighbours still count."""
        path = tmp_path / "t.jsonl"
        path.write_text(
            '{"symbol": "A", "price": 1, "size": 1, "ts": 1700000000000}\n'
            "not json\n"
            '{"symbol": "B", "price": "2.5", "size": 1, "ts": 1700000000001}\n'
        )
        batch, rejected = read_all(path)
        assert batch.symbol.tolist() == ["A", "B"] and batch.price.tolist() == [1.0, 2.5]
        assert [(r.entry_id, r.reason) for r in rejected] == [("line:2", "json: not a JSON object")]

    def test_stdin_is_sniffed_as_csv_or_ndjson(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`-` reads stdin, and its format is told from its first bytes."""
        ndjson = b'{"symbol": "A", "price": 1, "size": 2, "ts": 1700000000000}\n'
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(ndjson)))
        with TradeReader("-") as reader:
            assert (reader.name, reader.format) == ("stdin", "ndjson")
            assert len(concat([b for b, _ in reader])) == 1
        csv_text = b"symbol,price,size,ts\nA,1,2,1700000000000\nB,1,2,1700000000000\n"
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(csv_text)))
        batch, _ = read_all("-")
        assert batch.symbol.tolist() == ["A", "B"]

    def test_sniffing_recognises_parquet_magic(self) -> None:
        """The Parquet magic number wins over text heuristics."""
        assert [sniff_format(b"PAR1...."), sniff_format(b"\n {"), sniff_format(b"a,b")] == ["parquet", "ndjson", "csv"]

    def test_unknown_format_and_unreadable_file_are_option_errors(self, tmp_path: Path) -> None:
        """Bad --format values and missing files say what to fix."""
        with pytest.raises(ImportOptionError, match="unknown format 'xlsx'"):
            TradeReader(tmp_path / "t.csv", fmt="xlsx")
        with pytest.raises(ImportOptionError, match="cannot read"):
            TradeReader(tmp_path / "missing.csv")

    def test_semicolon_separated_files_are_read(self, tmp_path: Path) -> None:
        """The delimiter is sniffed from the header line."""
        batch, _ = read_all(write_csv(tmp_path / "t.csv", "ticker;px;qty;time\nA;1.5;2;1700000000\n"))
        assert (batch.price.tolist(), batch.ts.tolist()) == ([1.5], [1_700_000_000_000])


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TestReplayPacer:
    def test_without_speed_everything_goes_at_once(self) -> None:
        """No --speed: one run, no waiting."""
        clock = FakeClock()
        pacer = ReplayPacer(None, clock=clock.time, sleep=clock.sleep)
        assert list(pacer.pace(np.array([0, 5_000, 10_000]))) == [slice(0, 3)]
        assert clock.sleeps == []

    def test_trades_go_out_at_n_times_their_pace(self) -> None:
        """At speed 2, trades 1 s and 3 s after the first go out 0.5 s and 1.5 s after it."""
        clock = FakeClock()
        pacer = ReplayPacer(2.0, clock=clock.time, sleep=clock.sleep)
        sent = [(s, clock.now - 100.0) for s in pacer.pace(np.array([0, 1000, 1000, 3000]) + 1_700_000_000_000)]
        assert sent == [(slice(0, 1), 0.0), (slice(1, 3), 0.5), (slice(3, 4), 1.5)]

    def test_pace_carries_over_from_one_chunk_to_the_next(self) -> None:
        """The first trade of the file anchors the schedule for every later chunk."""
        clock = FakeClock()
        pacer = ReplayPacer(10.0, clock=clock.time, sleep=clock.sleep)
        list(pacer.pace(np.array([0, 1000])))
        list(pacer.pace(np.array([5000])))
        assert clock.now - 100.0 == pytest.approx(0.5)

    def test_event_time_never_runs_backwards(self) -> None:
        """A trade stamped earlier than the one before goes out at once, after it."""
        clock = FakeClock()
        pacer = ReplayPacer(1.0, clock=clock.time, sleep=clock.sleep)
        runs = pacer.plan(np.array([0, 2000, 1000]))
        assert [(a, b) for a, b, _ in runs] == [(0, 1), (1, 3)]

    def test_a_late_replay_catches_up_without_waiting(self) -> None:
        """When publishing fell behind, due trades go out immediately."""
        clock = FakeClock()
        pacer = ReplayPacer(1.0, clock=clock.time, sleep=clock.sleep)
        list(pacer.pace(np.array([0])))
        clock.now += 60.0
        list(pacer.pace(np.array([1000, 2000])))
        assert clock.sleeps == []

    def test_speed_must_be_positive(self) -> None:
        """A zero or negative speed is refused."""
        with pytest.raises(ValueError, match="speed"):
            ReplayPacer(0)
