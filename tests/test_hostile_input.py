"""Whatever a client writes to a tick stream, a worker stays up, loses no valid tick and writes only finite numbers.

Focused regressions first (each entry here once stopped a worker), then a hypothesis fuzz test that writes
random per-tick and batch entries in front of a running worker.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_worker import bar_streams, drained, expected_bars, market, run_inline

from tickerdash.analytics.commands.worker import default_stages
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.engine.worker import AnalyticsWorker, WorkerConfig
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.store import RuleStore
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.live import decode_updates
from tickerdash.ingest.contract.tick_entries import BATCH_FORMAT, decode_entries, decode_rules, encode_batch
from tickerdash.ingest.producer import Producer
from tickerdash.ingest.redis_adapter import raw_client
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.cli import register as register_simulator

TEXT_FIELDS = {"symbol", "trade_id", "tick_id", "message", "reasons", "rule_id", "buyer", "seller", "kind", "side"}


def now_ms() -> int:
    return int(time.time() * 1000)


def ipc(table: pa.Table | pa.RecordBatch) -> bytes:
    """An Arrow IPC stream of one table, as a batch entry carries it."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return bytes(sink.getvalue().to_pybytes())


def batch_entry(
    codes: list[int], dictionary: list[str], price: list[float], size: list[float], ts: list[int]
) -> dict[str, Any]:
    """Fields of a batch entry built as given, unchecked (dictionary codes may lie outside the dictionary)."""
    symbol = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(dictionary, pa.string()), safe=False)
    table = pa.table(
        {
            "symbol": symbol,
            "price": pa.array(price, pa.float64()),
            "size": pa.array(size, pa.float64()),
            "ts": pa.array(ts, pa.int64()),
        }
    )
    return {"batch": ipc(table), "rows": len(codes), "format": BATCH_FORMAT}


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    """Every dead letter, fields as text."""
    out = []
    for _, fields in client.xrange(Keys().deadletter()):
        out.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
    return out


def assert_outputs_finite(client: redis.Redis) -> None:
    """Bars, live snapshot and feed, alerts and anomalies: every number finite (an indicator not yet defined is
    NaN in the live view, which the gateway sends as null; never an infinity)."""
    for entries in bar_streams(client, "tickerdash").values():
        for _, fields in entries:
            assert all(math.isfinite(float(v)) for v in fields.values()), fields
    updates = [u for v in client.hvals(Keys().snapshot()) for u in decode_updates(v)]
    updates += [u for _, f in client.xrange(Keys().live()) for u in decode_updates(f[b"u"])]
    for update in updates:
        assert all(math.isfinite(x) for x in (update.ts, update.price, update.change_pct, update.volume)), update
        assert not any(math.isinf(x) for x in update.indicators.values()), update
        assert all(math.isfinite(x) for bar in update.bars.values() for x in bar), update
    for stream in (Keys().alerts(), Keys().anomalies()):
        for _, fields in client.xrange(stream):
            for name, value in fields.items():
                if name.decode() not in TEXT_FIELDS:
                    try:
                        number = float(value)
                    except ValueError:
                        continue
                    assert math.isfinite(number), (stream, fields)


# --- focused regressions: each of these entries once stopped the worker --------------------------------


def valid_ticks(symbol: str = "OK", n: int = 30) -> TickBatch:
    """n trades of one symbol a second apart, ending a minute ago (so their 1s bars close)."""
    start = now_ms() - 60_000 - n * 1000
    return TickBatch.from_columns([symbol] * n, 100 + np.arange(n) / 10, np.full(n, 5.0), start + np.arange(n) * 1000)


def run_and_check(
    client: redis.Redis, settings: Settings, after: TickBatch, config: WorkerConfig | None = None
) -> None:
    """Publish `after`, run a worker until drained: its bars hold `after` exactly, every output finite."""
    Producer(client, settings).publish(after, per_tick=True)
    run_inline(client, settings, config)
    assert drained(client, settings)
    got = {k: v for k, v in bar_streams(client, "tickerdash").items() if k.endswith(":OK")}
    assert got == expected_bars(after, WorkerConfig())
    assert_outputs_finite(client)


def test_a_ts_beyond_int64_is_dead_lettered(settings: Settings, redis_client: redis.Redis) -> None:
    """`ts 99999999999999999999` (an OverflowError in parsing) is refused with its reason; the worker goes on."""
    redis_client.xadd(Keys().ticks(), {"symbol": "AAPL", "price": 10, "size": 1, "ts": "99999999999999999999"})
    run_and_check(redis_client, settings, valid_ticks())
    assert [d["reason"] for d in dead_letters(redis_client)] == ["ts: b'99999999999999999999' is out of range"]


@pytest.mark.parametrize("codes", [[0, -1], [0, 5], [2**31 - 1]], ids=["negative", "too large", "int32 max"])
def test_batch_dictionary_codes_outside_the_dictionary_are_dead_lettered(
    settings: Settings, redis_client: redis.Redis, codes: list[int]
) -> None:
    """A batch entry whose symbol codes point outside its dictionary is refused whole, with its reason."""
    n = len(codes)
    fields = batch_entry(codes, ["AAPL", "MSFT"], [10.0] * n, [1.0] * n, [now_ms()] * n)
    entry_id = redis_client.xadd(Keys().ticks(), fields).decode()
    run_and_check(redis_client, settings, valid_ticks())
    (letter,) = dead_letters(redis_client)
    assert letter["entry_id"] == entry_id and letter["reason"].startswith("symbol: dictionary codes must lie in")


def test_a_ts_below_one_minute_is_refused_as_past(settings: Settings, redis_client: redis.Redis) -> None:
    """A ts in January 1970 (once a failed transaction: bar IDs must be > 0-0) is dead-lettered as `past`."""
    redis_client.xadd(Keys().ticks(), {"symbol": "NEW", "price": 10, "size": 1, "ts": 59_999})
    run_and_check(redis_client, settings, valid_ticks())
    (letter,) = dead_letters(redis_client)
    assert letter["reason"].startswith("past: ts is before 1971-01-01")
    assert not any(k.endswith(":NEW") for k in bar_streams(redis_client, "tickerdash"))


def test_a_ts_far_in_the_future_is_refused_and_never_moves_the_symbols_clock(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A trade stamped 2100 is dead-lettered as `future`; the symbol's real trades after it all count."""
    redis_client.xadd(Keys().ticks(), {"symbol": "OK", "price": 10, "size": 1, "ts": 4_102_444_800_000})
    run_and_check(redis_client, settings, valid_ticks())
    reasons = [d["reason"] for d in dead_letters(redis_client)]
    assert len(reasons) == 1 and reasons[0].startswith("future: ts is more than 86400 s after the entry was written")


def test_the_future_margin_is_a_setting(settings: Settings, redis_client: redis.Redis) -> None:
    """TICKERDASH_TICK_TS_MAX_AHEAD_S: with one hour, a trade two hours ahead is refused."""
    settings = settings.model_copy(update={"tick_ts_max_ahead_s": 3600})
    redis_client.xadd(Keys().ticks(), {"symbol": "AHEAD", "price": 10, "size": 1, "ts": now_ms() + 7_200_000})
    run_and_check(redis_client, settings, valid_ticks())
    assert [d["reason"][:7] for d in dead_letters(redis_client)] == ["future:"]


@pytest.mark.parametrize(("price", "size"), [("1e308", "100"), ("1e300", "1e300"), ("1e16", "1"), ("1e-13", "5")])
def test_huge_or_tiny_numbers_are_refused_and_every_output_stays_finite(
    settings: Settings, redis_client: redis.Redis, price: str, size: str
) -> None:
    """`price 1e308 size 100` once wrote inf into bars and Infinity into the snapshot: now it is refused."""
    redis_client.xadd(Keys().ticks(), {"symbol": "OK", "price": price, "size": size, "ts": now_ms() - 200_000})
    run_and_check(redis_client, settings, valid_ticks())
    (letter,) = dead_letters(redis_client)
    assert letter["reason"].startswith(("price: must be", "size: must be"))


def test_a_batch_entry_above_the_row_limit_is_dead_lettered_whole(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """TICKERDASH_MAX_ENTRY_ROWS bounds what one entry makes a worker hold; a larger one is refused, unread."""
    settings = settings.model_copy(update={"max_entry_rows": 1000})
    big = valid_ticks("BIG", 1001)
    redis_client.xadd(Keys().ticks(), encode_batch(big))  # type: ignore[arg-type]
    run_and_check(redis_client, settings, valid_ticks())
    (letter,) = dead_letters(redis_client)
    assert letter["reason"].startswith("rows: the entry holds 1001 trades, more than the 1000")
    assert "batch" in letter  # the payload is kept: the producer can split and resend it


class Boom:
    """A plug-in stage with a bug: it raises on any batch holding a trade of BOOM."""

    name = "boom"
    outputs: tuple[str, ...] = ()

    def process(self, batch: TickBatch, effects: Effects) -> None:
        if "BOOM" in batch.symbols and (batch.symbol_idx == batch.symbols.index("BOOM")).any():
            raise RuntimeError("a bug in a stage")

    def to_bytes(self) -> bytes:
        return b""

    def load(self, data: bytes) -> None:
        pass

    def refresh(self, client: redis.Redis, keys: Keys) -> None:
        pass


@pytest.mark.parametrize("defer_commit", [False, True], ids=["replies read at once", "replies read a batch later"])
def test_an_entry_a_stage_fails_on_is_quarantined_and_the_rest_counts_exactly_once(
    settings: Settings, redis_client: redis.Redis, defer_commit: bool
) -> None:
    """A stage that raises on one entry: that entry alone is dead-lettered (halving finds it), the rest of its
    batch and every later one is in the bars once, and a restart that replays past it does not trip again."""
    ticks = valid_ticks(n=40)
    producer = Producer(redis_client, settings)
    producer.publish(ticks.take(np.arange(17)), per_tick=True)
    boom_id = redis_client.xadd(Keys().ticks(), {"symbol": "BOOM", "price": 1, "size": 1}).decode()
    producer.publish(ticks.take(np.arange(17, 40)), per_tick=True)
    config = WorkerConfig(
        checkpoint_every_s=1e9,
        checkpoint_every_ticks=10**9,
        background_checkpoints=False,
        defer_commit=defer_commit,
        stages=(Boom,),
    )
    worker = run_inline(redis_client, settings.model_copy(update={"read_count": 8}), config)
    assert drained(redis_client, settings)
    assert worker.runner.stats.quarantined == 1
    (letter,) = dead_letters(redis_client)
    assert letter["entry_id"] == boom_id and letter["symbol"] == "BOOM"
    assert letter["reason"].startswith("error: the entry could not be applied (RuntimeError: a bug in a stage)")
    got = {k: v for k, v in bar_streams(redis_client, "tickerdash").items() if k.endswith(":OK")}
    assert got == expected_bars(ticks, WorkerConfig())
    # a worker that restarts without a checkpoint replays every entry up to the progress marker: BOOM is skipped
    redis_client.delete(worker.partition_keys(0).state)
    redis_client.hdel(worker.checkpoint_key(0), "state_id")
    later = TickBatch.from_columns(["OK"] * 5, np.full(5, 99.0), np.ones(5), ticks.ts[-1] + 1000 * np.arange(1, 6))
    producer.publish(later, per_tick=True)
    run_inline(redis_client, settings, config)
    assert drained(redis_client, settings)
    assert len(dead_letters(redis_client)) == 1


def test_an_entry_delivered_too_often_is_quarantined_unapplied(settings: Settings, redis_client: redis.Redis) -> None:
    """An entry its consumers kept dying on (delivery count above TICKERDASH_MAX_DELIVERIES) is dead-lettered
    the next time it is delivered, not tried again."""
    stream = Keys().ticks()
    redis_client.xgroup_create(stream, settings.group, id="0", mkstream=True)
    poison = redis_client.xadd(stream, {"symbol": "POISON", "price": 1, "size": 1})
    redis_client.xreadgroup(settings.group, "dead-worker", {stream: ">"})
    redis_client.xclaim(stream, settings.group, "dead-worker", 0, [poison], retrycount=settings.max_deliveries)
    run_and_check(redis_client, settings, valid_ticks())
    (letter,) = dead_letters(redis_client)
    assert letter["entry_id"] == poison.decode() and letter["reason"].startswith("poison: delivered 11 times")
    assert not any(k.endswith(":POISON") for k in bar_streams(redis_client, "tickerdash"))


def test_a_simulator_entry_declaring_a_clock_ahead_of_the_wall_clock_is_accepted(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A fast simulator run leads the wall clock by days: its entries declare their event clock, so their
    trades count; the same trades without the declaration are refused as `future`."""
    ahead = valid_ticks("SIM", 20)
    ahead = TickBatch.from_columns(["SIM"] * 20, ahead.price, ahead.size, ahead.ts + 30 * 86_400_000)
    producer = Producer(redis_client, settings)
    producer.publish(ahead, clock_ms=int(ahead.ts.max()))
    producer.publish(ahead.take(np.arange(1)), per_tick=True)  # undeclared: refused
    run_inline(redis_client, settings)
    got = {k: v for k, v in bar_streams(redis_client, "tickerdash").items() if k.endswith(":SIM")}
    assert got == expected_bars(ahead, WorkerConfig())
    assert [d["reason"][:7] for d in dead_letters(redis_client)] == ["future:"]


def flat(fields: dict[str, Any]) -> list[bytes]:
    return [x for k, v in fields.items() for x in (k.encode(), str(v).encode())]


def test_a_megabyte_long_value_is_refused_before_it_is_parsed() -> None:
    """Per-tick columns are parsed as fixed-width byte arrays: one long value would make every row that long
    (gigabytes for a batch of entries); it is refused by length first, its neighbours decoded."""
    ts = now_ms()
    entries = [(f"{ts}-{i}".encode(), flat({"symbol": "AAPL", "price": 10, "size": 1})) for i in range(200)]
    entries[7] = (entries[7][0], flat({"symbol": "A" * 1_000_000, "price": 10, "size": 1}))
    entries[9] = (entries[9][0], flat({"symbol": "AAPL", "price": "1" * 1_000_000, "size": 1}))
    decoded = decode_entries(entries)
    assert len(decoded.ticks) == 198
    assert [r.reason for r in decoded.rejected] == ["symbol: longer than 256 bytes", "price: longer than 256 bytes"]


def test_a_declared_clock_moves_the_future_limit_and_a_bad_one_is_refused(settings: Settings) -> None:
    """`clock` on an entry is the producer's event clock: ts is checked against it (unless the settings distrust
    declared clocks); a clock that is not epoch ms refuses the entry."""
    written = now_ms()
    month_ahead = written + 30 * 86_400_000
    entries = [
        (
            f"{written}-0".encode(),
            flat({"symbol": "SIM", "price": 10, "size": 1, "ts": month_ahead, "clock": month_ahead}),
        ),
        (f"{written}-1".encode(), flat({"symbol": "SIM", "price": 10, "size": 1, "ts": month_ahead})),
        (f"{written}-2".encode(), flat({"symbol": "SIM", "price": 10, "size": 1, "clock": "soon"})),
    ]
    decoded = decode_entries(entries, decode_rules(settings))
    assert [decoded.ticks.tick_id(row) for row in range(len(decoded.ticks))] == [f"{written}-0"]
    assert [r.reason.split(":")[0] for r in decoded.rejected] == ["future", "clock"]
    distrusting = decode_entries(entries, decode_rules(settings.model_copy(update={"trust_declared_clock": False})))
    assert [r.reason.split(":")[0] for r in distrusting.rejected] == ["future", "future"]
    assert len(distrusting.ticks) == 1  # the third: its bad clock is ignored, its ts (the ID's time) is fine


def test_a_fast_simulator_run_a_month_ahead_of_the_wall_clock_reaches_the_bars_whole(
    settings: Settings, redis_client: redis.Redis, run_cli: Any
) -> None:
    """`tickerdash simulate --fast` starting a month from now: every trade is in a bar or still open, none is
    refused (its entries declare the tape's clock)."""
    start = str(now_ms() + 30 * 86_400_000)
    result = run_cli(
        register_simulator, "simulate", "--fast", "--count", "20000", "--universe", "20", "--start", start, "-q"
    )
    assert result.exit_code == 0, result.output
    worker = run_inline(redis_client, settings)
    assert drained(redis_client, settings) and dead_letters(redis_client) == []
    bars = bar_streams(redis_client, "tickerdash")
    closed = sum(int(f[b"trades"]) for k, v in bars.items() if k.startswith(":bars:1s:") for _, f in v)
    assert closed > 0 and worker.runner.stats.ticks == 20_000


# --- fuzz ------------------------------------------------------------------------------------------------

EDGE_NUMBERS = [
    "0",
    "-0",
    "-1",
    "1e308",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "5e-324",
    "1e-324",
    "inf",
    "-inf",
    "Infinity",
    "nan",
    "NaN",
    "-nan",
    "1e15",
    "1.0000001e15",
    "1e-12",
    "9.9e-13",
    "1_000",
    "0x10",
    " 7 ",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999",
    "4398046511103",
    "4398046511104",
    "59999",
    "31535999999",
    "31536000000",
    "4102444800000",
    "1.5",
    "1e3",
    "",
    "\x00",
    "1" * 300,
]
numbers = st.one_of(
    st.sampled_from(EDGE_NUMBERS).map(str.encode),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x).encode()),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda x: str(x).encode()),
    st.binary(max_size=12),
)
texts = st.one_of(
    st.sampled_from(["AAPL", "aapl", " msft ", "BRK.B", "A" * 16, "A" * 17, "", "-", "../x", "\x00A", "Ä", "B"]),
    st.text(max_size=20),
).map(str.encode) | st.binary(max_size=20)
FIELDS = ["symbol", "price", "size", "ts", "side", "trade_id", "buyer", "seller", "clock", "rows", "format", "junk"]


@st.composite
def tick_entries(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A per-tick entry: any subset of the fields (and others), each with any value."""
    names = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=8, unique=True))
    fields = {}
    for name in names:
        value = draw(numbers if name in ("price", "size", "ts", "clock", "rows") else texts)
        if name == "side":
            value = draw(st.sampled_from([b"B", b"S", b"b", b"X", b""]) | texts)
        fields[name.encode()] = value
    return fields


@st.composite
def batch_entries(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A batch entry: random columns at the edges of their types, codes in and out of the dictionary, empty and
    oversized batches, missing columns, wrong row counts, truncated or junk payloads."""
    n = draw(st.sampled_from([0, 1, 3, 20, 501]))
    dictionary = draw(
        st.lists(
            st.sampled_from(["AAPL", "aapl", "", "A" * 17, "MSFT", "Ä"]) | st.text(max_size=6), min_size=1, max_size=4
        )
    )
    codes = draw(
        st.lists(st.integers(-3, len(dictionary) + 2) | st.sampled_from([-(2**31), 2**31 - 1]), min_size=n, max_size=n)
    )
    floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([10.0, 1e15, 1e-12, 5e-324, 1e308])
    ints = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([now_ms(), 0, 59_999, 2**42, 4_102_444_800_000])
    columns: dict[str, pa.Array] = {
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(codes, pa.int32()), pa.array(dictionary, pa.string()), safe=False
        ),
        "price": pa.array(draw(st.lists(floats, min_size=n, max_size=n)), pa.float64()),
        "size": pa.array(draw(st.lists(floats, min_size=n, max_size=n)), pa.float64()),
        "ts": pa.array(draw(st.lists(ints, min_size=n, max_size=n)), pa.int64()),
        "side": pa.array(draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n)), pa.int8()),
        "trade_id": pa.array(draw(st.lists(st.none() | st.text(max_size=70), min_size=n, max_size=n)), pa.string()),
    }
    for name in draw(st.lists(st.sampled_from(list(columns)), max_size=2, unique=True)):
        del columns[name]
    payload = ipc(pa.table(columns))
    damage = draw(st.sampled_from(["none", "none", "truncate", "junk", "rows", "format", "clock"]))
    fields = {b"batch": payload, b"rows": str(n).encode(), b"format": BATCH_FORMAT}
    if damage == "truncate":
        fields[b"batch"] = payload[: draw(st.integers(0, len(payload) - 1))]
    elif damage == "junk":
        fields[b"batch"] = draw(st.binary(max_size=64))
    elif damage in ("rows", "format", "clock"):
        fields[damage.encode()] = draw(numbers | texts)
    return fields


class WorkerThread:
    """An analytics worker running in a thread, with its outcome kept."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.worker = AnalyticsWorker(
            client, settings, None, WorkerConfig(checkpoint_every_s=0.3, stages=default_stages())
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc
            raise

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop.set()
        self.thread.join(30)


def wait_drained(client: redis.Redis, settings: Settings, worker: WorkerThread) -> None:
    """Wait until the worker has acknowledged every entry (or stopped)."""
    deadline = time.monotonic() + 60
    while worker.thread.is_alive() and not drained(client, settings) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"block_ms": 20, "max_entry_rows": 500})


def test_random_hostile_entries_never_stop_the_worker_nor_cost_a_valid_tick(
    fuzz_settings: Settings, redis_client: redis.Redis
) -> None:
    """Random per-tick and batch entries, then valid ticks: the worker is alive, the valid ticks are in the bars
    exactly once, every hostile entry that is not valid trades (or an empty batch) is dead-lettered, every output
    is finite."""
    settings = fuzz_settings
    RuleStore(redis_client, Keys()).add(Rule(id="fuzz", symbol="*", drop_pct=0.5, window_s=60))
    raw = raw_client(redis_client)
    rules = decode_rules(settings)
    rounds = iter(range(10**6))

    with WorkerThread(redis_client, settings) as running:

        @hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(hostile=st.lists(tick_entries() | batch_entries(), max_size=6), per_tick=st.booleans())
        def one_round(hostile: list[dict[bytes, bytes]], per_tick: bool) -> None:
            round_no = next(rounds)
            stream = Keys().ticks()
            ids = [redis_client.xadd(stream, fields) for fields in hostile]  # type: ignore[arg-type]
            valid = market(300, symbols=3, per_second=50, seed=round_no)
            valid = TickBatch.from_columns(
                [f"VALID{round_no}X{s}" for s in valid.symbol],
                valid.price,
                valid.size,
                valid.ts - valid.ts[0] + now_ms() - 600_000,
            )
            Producer(redis_client, settings).publish(valid, per_tick=per_tick)
            wait_drained(redis_client, settings, running)
            assert running.thread.is_alive(), running.error
            assert drained(redis_client, settings)
            bars = {k: v for k, v in bar_streams(redis_client, "tickerdash").items() if f"VALID{round_no}X" in k}
            assert bars == expected_bars(valid, WorkerConfig())
            lettered = {d["entry_id"].partition("#")[0] for d in dead_letters(redis_client)}
            for entry_id in ids:
                entry = raw.xrange(stream, min=entry_id, max=entry_id)
                decoded = decode_entries(entry, rules)
                assert entry_id.decode() in lettered or not decoded.rejected, entry  # refused, or valid trades
            assert_outputs_finite(redis_client)

        one_round()
    assert running.error is None
    assert running.worker.runner.stats.quarantined == 0  # validation refused everything: no backstop needed
