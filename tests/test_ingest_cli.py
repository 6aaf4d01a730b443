"""`tickerdash ingest`: trade files published onto a real Redis, bad rows into the dead-letter stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import Result

from tickerdash.ingest.cli import register
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import decode_entries
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.ticks import TickBatch

KEYS = Keys()


@pytest.fixture
def run_ingest(run_cli: Callable[..., Result]) -> Callable[..., Result]:
    """Invoke the ingest command against the test Redis; returns the CliRunner result."""
    return lambda *args, stdin=None: run_cli(register, "ingest", *args, stdin=stdin)


def published(client: redis.Redis) -> TickBatch:
    """Every trade on the tick stream, decoded from either entry form."""
    decoded = decode_entries(raw_client(client).xrange(KEYS.ticks()))
    assert decoded.rejected == []
    return decoded.ticks


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    """The dead-letter entries as text fields."""
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(KEYS.deadletter())]


@pytest.mark.realdata
def test_lobster_file_publishes_all_trades_in_file_order(
    run_ingest, redis_client: redis.Redis, shared_data: Path
) -> None:
    """The LOBSTER sample with --ts-col ts_ns publishes all 58,087 trades, ms timestamps, file order kept."""
    result = run_ingest(str(shared_data / "lobster" / "lobster_trades_2012-06-21.csv"), "--ts-col", "ts_ns")
    assert result.exit_code == 0, result.output
    assert "published 58,087 trades" in result.stdout and "rejected 0" in result.stdout
    ticks = published(redis_client)
    assert len(ticks) == 58_087
    assert set(ticks.symbols) == {"AAPL", "AMZN", "GOOG"}
    assert ticks.ts[0] == 1_340_285_400_015 and (ticks.ts[1:] >= ticks.ts[:-1]).all()
    assert redis_client.xlen(KEYS.deadletter()) == 0


@pytest.mark.realdata
def test_binance_file_ingests_with_its_own_columns(run_ingest, redis_client: redis.Redis, shared_data: Path) -> None:
    """Binance columns (price, amount, µs timestamp, id, side) map onto ticks with their trade ids."""
    path = shared_data / "binance" / "binance-futures_BTCUSDT_trades_2020-02-22.csv"
    result = run_ingest(str(path), "--size-col", "amount", "--ts-col", "timestamp", "--trade-id-col", "id")
    assert result.exit_code == 0, result.output
    ticks = published(redis_client)
    assert len(ticks) == 9_999 and ticks.symbols == ("BTCUSDT",)
    assert ticks.trade_id is not None and ticks.trade_id[0].as_py() == "42377944"
    assert (ticks.ts[0], ticks.size[0], ticks.side[0]) == (1_582_329_602_111, 0.132, 1)


def test_bad_rows_go_to_the_dead_letter_stream_with_reasons(
    run_ingest, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Rows that break the tick rules are dead-lettered with their field, line and source; the rest publish."""
    path = tmp_path / "mixed.csv"
    path.write_text(
        "symbol,price,size,ts\n"
        "AAPL,187.2,10,1700000000000\n"
        "AAPL,-3,10,1700000000001\n"
        "AAPL,187.3,abc,1700000000002\n"
        "AAPL,187.4,5,1700000000003\n"
    )
    result = run_ingest(str(path))
    assert result.exit_code == 0, result.output
    assert published(redis_client).price.tolist() == [187.2, 187.4]
    letters = dead_letters(redis_client)
    assert [(d["entry_id"], d["reason"], d["source"]) for d in letters] == [
        ("line:3", "price: must be a finite number > 0", "ingest:mixed.csv"),
        ("line:4", "size: not a number", "ingest:mixed.csv"),
    ]
    assert letters[0]["price"] == "-3"
    assert "rejected 2 rows" in result.stdout and "size: not a number" in result.stdout


def test_malformed_lines_in_a_large_file_are_dead_lettered_one_by_one(
    run_ingest, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """An open quote in a 120k-row file (read blocks of MBs) and a cut-off last line: each is one dead letter
    with its line number; every other trade is published."""
    lines = ["symbol,price,size,ts"] + [
        f"S{i % 5},{100 + i % 9}.25,{1 + i % 3},{1_700_000_000_000 + i}" for i in range(120_000)
    ]
    lines[60_000] = 'S1,"100.25,1,1700000060000'
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n" + "S2,100.25,1,17")
    result = run_ingest(str(path))
    assert result.exit_code == 0, result.output
    assert len(published(redis_client)) == 119_999
    letters = dead_letters(redis_client)
    assert [(d["entry_id"], d["line"], d["source"]) for d in letters] == [
        ("line:60001", 'S1,"100.25,1,1700000060000', "ingest:big.csv"),
        ("line:120002", "S2,100.25,1,17", "ingest:big.csv"),
    ]
    assert letters[0]["reason"].startswith("csv: unbalanced quote") and "cut off" in letters[1]["reason"]
    assert "published 119,999 trades" in result.stdout and "rejected 2 rows" in result.stdout


def test_per_tick_publishes_one_entry_per_trade(run_ingest, redis_client: redis.Redis, tmp_path: Path) -> None:
    """--per-tick writes the public one-entry-per-trade form, readable by any client."""
    path = tmp_path / "t.ndjson"
    path.write_text(
        "".join(f'{{"sym": "A", "px": {i + 1}, "qty": 1, "time": {1_700_000_000 + i}}}\n' for i in range(3))
    )
    result = run_ingest(str(path), "--per-tick")
    assert result.exit_code == 0, result.output
    entries = redis_client.xrange(KEYS.ticks())
    assert len(entries) == 3 and entries[0][1][b"symbol"] == b"A" and entries[0][1][b"ts"] == b"1700000000000"


def test_stdin_with_a_fixed_symbol(run_ingest, redis_client: redis.Redis) -> None:
    """`-` reads trades from stdin; --symbol names the ticker of a single-symbol file."""
    result = run_ingest("-", "--symbol", "btcusdt", stdin=b"price,amount,timestamp\n9682,0.5,1582329602111000\n")
    assert result.exit_code == 0, result.output
    ticks = published(redis_client)
    assert ticks.symbols == ("BTCUSDT",) and ticks.ts.tolist() == [1_582_329_602_111]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--price-col", "last"], "--price-col 'last' is not a column"),
        (["--format", "xlsx"], "unknown format 'xlsx'"),
        (["--ts-unit", "hours"], "--ts-unit 'hours'"),
        (["--speed", "0"], "--speed"),
    ],
)
def test_bad_options_say_what_to_fix_and_exit_2(
    run_ingest, redis_client: redis.Redis, tmp_path: Path, args: list[str], message: str
) -> None:
    """A wrong option stops before publishing, with a message naming it, and exit code 2."""
    path = tmp_path / "t.csv"
    path.write_text("symbol,price,size,ts\nA,1,1,1700000000000\n")
    result = run_ingest(str(path), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert redis_client.xlen(KEYS.ticks()) == 0


def test_unreadable_file_exits_2(run_ingest, tmp_path: Path) -> None:
    """A file that does not exist is a usage error that names it."""
    result = run_ingest(str(tmp_path / "nope.csv"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
