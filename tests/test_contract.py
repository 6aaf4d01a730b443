"""The wire contract in code: every key keeps its exact name, every codec round-trips, and each encoder writes
the same bytes as the stage or command that wrote that entry kind before the contract owned it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from tickerdash.analytics.stages.alerts.alert import Alert
from tickerdash.analytics.stages.anomaly.features import FEATURES, FeatureFrame
from tickerdash.analytics.stages.anomaly.scores import Scores
from tickerdash.analytics.stages.anomaly.stage import anomaly_fields, reasons
from tickerdash.analytics.stages.anomaly.tails import TAIL_FEATURES
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.ingest.contract.alerts import (
    ALERT_FIELDS,
    ALERT_NUMBERS,
    ALERT_TEXT_FIELDS,
    AlertEntry,
    alert_event,
    decode_alert,
    encode_alert,
)
from tickerdash.ingest.contract.anomalies import (
    ANOMALY_FIELDS,
    ANOMALY_NUMBERS,
    AnomalyEntry,
    anomaly_event,
    decode_anomaly,
    encode_anomalies,
    encode_anomaly,
)
from tickerdash.ingest.contract.bars import (
    BAR_FIELDS,
    BAR_FLOAT_FIELDS,
    bar_entry_id,
    bar_feed_fields,
    decode_bar_entries,
    decode_bar_feed,
    encode_bar,
    encode_bar_feed,
    encode_bars,
    feed_entry_rows,
    feed_entry_table,
    float_reprs,
)
from tickerdash.ingest.contract.dead_letters import DEADLETTER_FIELDS, dead_letter_reason, encode_dead_letter
from tickerdash.ingest.contract.fields import fields_json
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, ARCHIVE_GROUP, CONSUMER_GROUPS, WEBHOOKS_GROUP, Keys
from tickerdash.ingest.contract.labels import LABEL_FIELDS, decode_labels, encode_labels
from tickerdash.ingest.contract.live import (
    SymbolUpdate,
    decode_updates,
    encode_updates,
    live_entry_fields,
    live_entry_payload,
)
from tickerdash.ingest.contract.tick_ids import PER_TICK, entry_of_tick, parse_tick_id, tick_id, tick_ids
from tickerdash.ingest.ticks import TickBatch
from tickerdash.simulator.config import MarketConfig, preset_config
from tickerdash.simulator.market import generate

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
any_float = st.floats(width=64)  # NaN and infinities too: a bar of a producer's 1e308 overflows
texts = st.text(max_size=40)
entry_ids = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**42), st.integers(0, 2**20))


def flat_bytes(fields: list[str | int] | list[bytes] | dict[str, str]) -> list[bytes]:
    """Fields as Redis returns them from a raw XRANGE: a flat list of bytes."""
    items = fields if isinstance(fields, list) else [x for pair in fields.items() for x in pair]
    return [x if isinstance(x, bytes) else str(x).encode() for x in items]


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """NaN where the other is NaN (text keeps no NaN payload), every other value bit for bit (-0.0 too)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nan = np.isnan(a)
    return bool((nan == np.isnan(b)).all() and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))


class TestKeys:
    def test_with_one_partition_every_key_keeps_its_untagged_name(self) -> None:
        """With P = 1 each named key is byte-identical to the string readers and writers of older versions use."""
        keys = Keys("td")
        assert keys.ticks() == "td:ticks" and keys.tick_streams == ["td:ticks"]
        assert (keys.deadletter(), keys.alerts(), keys.anomalies(), keys.rules, keys.labels) == (
            "td:deadletter",
            "td:alerts",
            "td:anomalies",
            "td:rules",
            "td:labels",
        )
        assert keys.bars("1m", "AAPL") == "td:bars:1m:AAPL" and keys.bars_prefix("1s") == "td:bars:1s:"
        assert keys.every_key == "td:*" and keys.every_internal_key == "td:_:*"
        assert keys.lease("analytics", 0) == "td:_:lease:analytics:0"
        assert keys.checkpoint("analytics", 0) == "td:_:checkpoint:analytics:0"
        assert keys.quarantined("analytics", 0) == "td:_:quarantined:analytics:0"
        assert (keys.snapshot(), keys.live(), keys.closed_bars()) == ("td:_:snapshot", "td:_:live", "td:_:closed_bars")
        assert (keys.rules_version, keys.simulator_run, keys.webhook_failures()) == (
            "td:_:rules_version",
            "td:_:simulator",
            "td:_:webhook_failures",
        )
        assert keys.layout == "td:_:layout"
        assert keys.lost("analytics", "td:ticks") == "td:_:lost:analytics:td:ticks"
        assert keys.backpressure("td:ticks") == "td:_:backpressure:td:ticks"

    def test_with_partitions_each_partition_key_carries_the_partition_tag(self) -> None:
        """With P > 1 the keys of docs/design.md's partitioned layout, `{p}` being the partition's hash tag."""
        keys = Keys("td", 4)
        assert keys.ticks(2) == "td:ticks:{2}"
        assert keys.tick_streams == [f"td:ticks:{{{p}}}" for p in range(4)]
        assert (keys.deadletter(1), keys.alerts(2), keys.anomalies(3)) == (
            "td:deadletter:{1}",
            "td:alerts:{2}",
            "td:anomalies:{3}",
        )
        p = keys.partition_of("AAPL")
        assert keys.bars("1m", "AAPL") == f"td:bars:{{{p}}}:1m:AAPL" and keys.bars_prefix("1s", 2) == "td:bars:{2}:1s:"
        assert keys.bars_prefixes("1m") == [f"td:bars:{{{q}}}:1m:" for q in range(4)]
        assert keys.lease("analytics", 3) == "td:_:{3}:lease:analytics"
        assert keys.checkpoint("analytics", 0) == "td:_:{0}:checkpoint:analytics"
        assert keys.quarantined("analytics", 1) == "td:_:{1}:quarantined:analytics"
        assert (keys.snapshot(1), keys.live(2), keys.closed_bars(3)) == (
            "td:_:{1}:snapshot",
            "td:_:{2}:live",
            "td:_:{3}:closed_bars",
        )
        assert keys.webhook_failures(2) == "td:_:{2}:webhook_failures"
        assert keys.rules == "td:rules" and keys.rules_version == "td:_:{td:rules}:rules_version"
        assert (keys.simulator_run, keys.labels, keys.layout) == ("td:_:simulator", "td:labels", "td:_:layout")
        assert (
            keys.deadletter_of("td:ticks:{2}") == "td:deadletter:{2}" and keys.deadletter_of("x") == "td:deadletter:{0}"
        )

    @pytest.mark.parametrize("partitions", [2, 6])
    def test_what_one_partitions_transaction_touches_is_in_one_cluster_slot(self, partitions: int) -> None:
        """Every key of a partition's batch transaction hashes to one slot, and the rules to another one with their
        version: a Redis Cluster runs each transaction on one shard."""
        keys = Keys("tickerdash", partitions)
        symbols = [f"S{k}" for k in range(200)]
        intervals = ("1s", "1m")
        for partition in range(partitions):
            touched = [
                keys.ticks(partition),
                keys.alerts(partition),
                keys.anomalies(partition),
                keys.deadletter(partition),
                keys.lease("analytics", partition),
                keys.checkpoint("analytics", partition),
                keys.checkpoint_state("analytics", partition),
                keys.checkpoint_staging("analytics", partition, "worker-1"),
                keys.quarantined("analytics", partition),
                keys.snapshot(partition),
                keys.live(partition),
                keys.closed_bars(partition),
                keys.webhook_failures(partition),
                keys.lost("analytics", keys.ticks(partition)),
                keys.lost("webhooks", keys.alerts(partition)),
                keys.backpressure(keys.ticks(partition)),
                *(
                    keys.bars(interval, s)
                    for s in symbols
                    if keys.partition_of(s) == partition
                    for interval in intervals
                ),
            ]
            assert {key_slot(key.encode()) for key in touched} == {key_slot(keys.ticks(partition).encode())}
        assert key_slot(keys.rules.encode()) == key_slot(keys.rules_version.encode())
        assert len({key_slot(keys.ticks(p).encode()) for p in range(partitions)}) == partitions

    def test_consumer_groups_are_named_once(self) -> None:
        """The three groups, as the worker, archiver and webhook delivery create them."""
        assert (ANALYTICS_GROUP, ARCHIVE_GROUP, WEBHOOKS_GROUP) == ("analytics", "archive", "webhooks")
        assert CONSUMER_GROUPS == (ANALYTICS_GROUP, ARCHIVE_GROUP, WEBHOOKS_GROUP)


@st.composite
def bar_tables(draw: st.DrawFn) -> BarTable:
    """Random closed bars of a few symbols and intervals (any float, NaN and infinities included)."""
    n = draw(st.integers(0, 12))

    def floats() -> np.ndarray:
        return np.array(draw(st.lists(any_float, min_size=n, max_size=n)), np.float64)

    return BarTable(
        symbols=("AAPL", "BRK.B", "X"),
        symbol_idx=np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64),
        interval_ms=np.array(draw(st.lists(st.sampled_from([1_000, 60_000]), min_size=n, max_size=n)), np.int64),
        start_ms=np.array(draw(st.lists(st.integers(0, 2**42), min_size=n, max_size=n)), np.int64),
        open=floats(),
        high=floats(),
        low=floats(),
        close=floats(),
        volume=floats(),
        vwap=floats(),
        trades=np.array(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)), np.int64),
    )


class TestBars:
    @settings(max_examples=60, deadline=None)
    @given(bar_tables())
    def test_encoders_write_what_the_worker_writes(self, bars: BarTable) -> None:
        """`encode_bar` and `encode_bars` write the wire format: the seven fields in order, floats as `repr`
        (so rewrites are byte-identical), `trades` as an int."""
        expected = [
            [
                *(x for name in BAR_FLOAT_FIELDS for x in (name, repr(float(getattr(bars, name)[k])))),
                "trades",
                int(bars.trades[k]),
            ]
            for k in range(len(bars))
        ]
        one_by_one = [
            encode_bar(*(getattr(bars, name)[k] for name in BAR_FLOAT_FIELDS), bars.trades[k]) for k in range(len(bars))
        ]
        assert one_by_one == expected
        assert encode_bars(bars.to_dict()) == [[str(x) for x in fields] for fields in expected]  # the same, as text

    def test_float_reprs_are_repr_for_every_kind_of_float(self) -> None:
        """The column formatter writes exactly `repr` of each value: random bit patterns (every exponent, NaNs
        and infinities among them), prices on a cent grid, whole numbers, and both sides of the two magnitudes
        where `repr` changes notation, also from a strided array."""
        rng = np.random.default_rng(7)
        bit_patterns = rng.integers(0, 2**64, 200_000, dtype=np.uint64, endpoint=False).view(np.float64)
        edges = np.array([1e-4, 1e16, 0.0, -0.0, 5e-324, 1.7976931348623157e308, np.nan, np.inf, -np.inf])
        with np.errstate(over="ignore"):  # the float after the largest is inf: one more edge
            edges = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf), -edges])
        values = np.concatenate(
            [bit_patterns, np.round(rng.uniform(0, 5_000, 50_000), 2), rng.integers(0, 10**9, 10_000) * 1.0, edges]
        )
        assert float_reprs(values) == [repr(v) for v in values.tolist()]
        assert float_reprs(values[::3]) == [repr(v) for v in values[::3].tolist()]
        assert float_reprs(np.zeros(0)) == []

    @settings(max_examples=60, deadline=None)
    @given(bar_tables())
    def test_bar_entries_round_trip_bit_for_bit(self, bars: BarTable) -> None:
        """What the encoder writes, read back from a raw reply, is the same numbers, NaN and infinities too."""
        entries = [
            (bar_entry_id(int(start)).encode(), flat_bytes(fields))
            for start, fields in zip(bars.start_ms.tolist(), encode_bars(bars.to_dict()), strict=True)
        ]
        back = decode_bar_entries(entries)
        assert len(back) == len(bars) and back.start_ms.tolist() == bars.start_ms.tolist()
        for name in BAR_FLOAT_FIELDS:
            assert same_floats(back.column(name), getattr(bars, name)), name
        assert back.trades.tolist() == bars.trades.tolist() and back.extra == {}

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(finite, finite), min_size=1, max_size=10))
    def test_extra_float_fields_come_back_as_extra_columns(self, values: list[tuple[float, float]]) -> None:
        """Overlay fields after the seven contract fields are read back as float columns of their own."""
        columns = {name: np.array([a for a, _ in values]) for name in BAR_FLOAT_FIELDS}
        columns["trades"] = np.arange(len(values))
        columns["sma20"] = np.array([b for _, b in values])
        entries = [(f"{k}-0".encode(), flat_bytes(f)) for k, f in enumerate(encode_bars(columns, extra=("sma20",)))]
        back = decode_bar_entries(entries)
        assert list(back.extra) == ["sma20"] and same_floats(back.extra["sma20"], columns["sma20"])
        assert same_floats(back.close, columns["close"])
        first = encode_bar(*(columns[n][0] for n in BAR_FLOAT_FIELDS), 0, extra={"sma20": columns["sma20"][0]})
        assert [str(x) for x in first] == encode_bars(columns, extra=("sma20",))[0]

    def test_text_replies_and_foreign_field_orders_decode_alike(self) -> None:
        """Parsed (dict) replies, text replies, a shuffled field order and missing fields all decode; what is
        missing is NaN (`trades`: 0), an extra field absent from some entries is NaN there."""
        raw = [
            (b"1000-0", flat_bytes(encode_bar(1, 2, 0.5, 1.5, 10, 1.2, 3))),
            (b"2000-0", flat_bytes(encode_bar(1.5, 2.5, 1, 2, 20, 1.8, 4, extra={"ema12": 1.9}))),
        ]
        as_dicts = [(eid, dict(zip(f[0::2], f[1::2], strict=True))) for eid, f in raw]
        as_text = [(eid.decode(), {k.decode(): v.decode() for k, v in f.items()}) for eid, f in as_dicts]
        shuffled = [(eid, dict(reversed(list(f.items())))) for eid, f in as_text]
        for entries in (raw, as_dicts, as_text, shuffled):
            back = decode_bar_entries(entries)  # type: ignore[arg-type]
            assert back.start_ms.tolist() == [1000, 2000] and back.close.tolist() == [1.5, 2.0]
            assert back.trades.tolist() == [3, 4] and same_floats(back.extra["ema12"], np.array([math.nan, 1.9]))
        partial = decode_bar_entries([(b"5-0", [b"close", b"7.0"])])
        assert partial.close.tolist() == [7.0] and math.isnan(partial.open[0]) and partial.trades.tolist() == [0]
        assert len(decode_bar_entries([])) == 0

    def test_gateway_rows_are_start_then_the_contract_fields(self) -> None:
        """`rows()` is the gateway's bar reply: [start, open, high, low, close, volume, vwap, trades]."""
        back = decode_bar_entries([(b"60000-0", flat_bytes(encode_bar(1, 2, 0.5, 1.5, 10, 1.2, 3)))])
        assert back.rows() == [[60000, 1.0, 2.0, 0.5, 1.5, 10.0, 1.2, 3]]
        assert BAR_FIELDS == ("open", "high", "low", "close", "volume", "vwap", "trades")

    @settings(max_examples=30, deadline=None)
    @given(bar_tables())
    def test_the_closed_bars_feed_is_byte_identical_and_round_trips(self, bars: BarTable) -> None:
        """`encode_bar_feed` writes an Arrow IPC stream of the bars that reads back to the same columns."""
        payload = encode_bar_feed(bars.to_dict())
        ours = decode_bar_feed(payload)
        assert ours.column_names == [
            "symbol",
            "interval_ms",
            "start_ms",
            *BAR_FIELDS,
        ]
        for name in BAR_FLOAT_FIELDS:
            assert same_floats(ours[name].to_numpy(), getattr(bars, name))
        fields = bar_feed_fields(bars.to_dict())
        assert fields["rows"] == len(bars) and fields["bars"] == payload
        wire = [b"bars", payload, b"rows", str(len(bars)).encode()]
        table = feed_entry_table(wire)
        assert table.column("symbol").to_pylist() == bars.symbol.tolist()
        assert table.column("start_ms").to_pylist() == bars.start_ms.tolist()
        assert feed_entry_rows(wire) == len(bars) and feed_entry_rows(None) == 0


alerts = st.builds(
    Alert,
    rule_id=texts,
    symbol=st.text("ABCXYZ.", min_size=1, max_size=8),
    ts=st.integers(0, 2**42),
    price=finite,
    reference_price=finite,
    drop_pct=finite,
    window_s=st.floats(0.001, 1e7),
    message=texts,
    tick_id=st.one_of(st.just(""), entry_ids, entry_ids.map(lambda e: e + "#3")),
)


class TestAlerts:
    @settings(max_examples=100, deadline=None)
    @given(alerts)
    def test_encode_alert_writes_what_the_stage_writes(self, alert: Alert) -> None:
        """`encode_alert` and `AlertEntry.to_fields` give `Alert.to_fields`, field order included."""
        values = (alert.rule_id, alert.symbol, alert.ts, alert.price, alert.reference_price, alert.drop_pct)
        expected = alert.to_fields()
        assert list(encode_alert(*values, alert.window_s, alert.message, alert.tick_id).items()) == list(
            expected.items()
        )
        entry = AlertEntry(*values, alert.window_s, alert.message, alert.tick_id)
        assert entry.to_fields() == expected
        assert entry.to_json_dict() == alert.to_json_dict()
        assert json.loads(fields_json(expected)) == [x for pair in expected.items() for x in pair]

    @settings(max_examples=100, deadline=None)
    @given(alerts)
    def test_alert_entries_round_trip(self, alert: Alert) -> None:
        """Decoding what was encoded (bytes or text) gives the alert back; `Alert.from_fields` agrees."""
        fields = alert.to_fields()
        wire = {k.encode(): v.encode() for k, v in fields.items()}
        for form in (fields, wire):
            entry = decode_alert(form)
            assert entry.to_fields() == fields
            assert entry.to_json_dict() == Alert.from_fields(form).to_json_dict()

    def test_the_page_event_parses_the_numeric_fields_and_keeps_bad_text(self) -> None:
        """`alert_event` parses each numeric field as its type; a number that does not parse stays text."""
        fields = encode_alert("r1", "AAPL", 1_700_000_000_123, 95.5, 100.0, 4.5, 60, "AAPL -4.5%", "1-0#2")
        event = alert_event("9-0", {k.encode(): v.encode() for k, v in fields.items()})
        assert event == {"id": "9-0", **{k: ALERT_NUMBERS.get(k, str)(v) for k, v in fields.items()}}
        assert isinstance(event["ts"], int) and isinstance(event["window_s"], float)
        assert alert_event("9-1", {"price": "n/a"})["price"] == "n/a"
        assert set(ALERT_NUMBERS) | set(ALERT_TEXT_FIELDS) == set(ALERT_FIELDS)


def flagged_batch(seed: int) -> tuple[TickBatch, FeatureFrame, Scores]:
    """Simulated trades read from a batch entry, with made-up features and scores that flag some of them."""
    ticks, _ = next(iter(generate(MarketConfig(seed=seed, symbols=("AAA", "BBB.X"), chunk_size=256))))
    n = len(ticks)
    ticks = ticks.with_origin(("1700000000000-5",), np.zeros(n, np.int32), np.arange(n, dtype=np.int32))
    rng = np.random.default_rng(seed)
    frame = FeatureFrame(
        values=rng.normal(size=(n, len(FEATURES))), warming_up=np.zeros(n, bool), self_trade=np.zeros(n, bool)
    )
    scores = Scores(
        fused=rng.exponential(3.0, n),
        rarity=rng.exponential(3.0, n),
        flagged=rng.random(n) < 0.2,
        parts=rng.exponential(1.0, (n, 3)),
        tail_parts=rng.exponential(1.0, (n, len(TAIL_FEATURES))),
        rule_hits=rng.random((n, 3)) < 0.1,
    )
    return ticks, frame, scores


class TestAnomalies:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_encode_anomalies_writes_what_the_stage_writes(self, seed: int) -> None:
        """From the flagged rows' columns, `encode_anomalies` gives the stage's `anomaly_fields`, field order too."""
        ticks, frame, scores = flagged_batch(seed)
        expected = anomaly_fields(ticks, frame, scores)
        rows = np.flatnonzero(scores.flagged)
        assert expected, "the made-up scores flag some trades"
        mine = encode_anomalies(
            symbol=ticks.symbol[rows].tolist(),
            ts=ticks.ts[rows],
            price=ticks.price[rows],
            size=ticks.size[rows],
            trade_id=ticks.trade_id.take(rows).to_pylist() if ticks.trade_id is not None else [None] * len(rows),
            tick_id=tick_ids(ticks.entry_ids, ticks.entry_of[rows], ticks.row_in_entry[rows]).tolist(),
            score=scores.score[rows],
            reasons=reasons(scores, frame, rows),
        )
        assert [list(f.items()) for f in mine] == [list(f.items()) for f in expected]
        assert [encode_anomaly(**asdict(decode_anomaly(f))) for f in expected] == expected

    @settings(max_examples=100, deadline=None)
    @given(
        st.text("ABC", min_size=1, max_size=5),
        st.integers(0, 2**42),
        finite,
        finite,
        texts,
        entry_ids,
        st.floats(0, 1),
        texts,
    )
    def test_anomaly_entries_round_trip(
        self, symbol: str, ts: int, price: float, size: float, trade: str, tick: str, score: float, why: str
    ) -> None:
        """Decoding an encoded anomaly gives it back (score at its six written decimals)."""
        fields = encode_anomaly(symbol, ts, price, size, trade, tick, score, why)
        assert tuple(fields) == ANOMALY_FIELDS
        entry = decode_anomaly({k.encode(): v.encode() for k, v in fields.items()})
        assert entry == AnomalyEntry(symbol, ts, price, size, trade, tick, float(f"{score:.6f}"), why)
        assert entry.to_fields() == fields
        event = anomaly_event("1-0", fields)
        assert all(isinstance(event[name], kind) for name, kind in ANOMALY_NUMBERS.items())


class TestLabels:
    @pytest.mark.parametrize("seed", [4, 5])
    def test_encode_labels_writes_what_the_simulator_wrote_and_round_trips(self, seed: int) -> None:
        """The simulator's label entries are the contract's, and read back to the same columns."""
        labels = None
        for _, chunk_labels in generate(preset_config("evaluation", seed), "evaluation"):
            if len(chunk_labels.trade_id):
                labels = chunk_labels
                break
        assert labels is not None
        fields = labels.to_fields()
        expected = [
            {"trade_id": t, "kind": k, "episode_id": e, "magnitude": repr(m)}
            for t, k, e, m in zip(
                labels.trade_id.to_pylist(),
                labels.kind.to_pylist(),
                labels.episode_id.to_pylist(),
                labels.magnitude.tolist(),
                strict=True,
            )
        ]
        assert fields == expected and all(tuple(f) == LABEL_FIELDS for f in fields)
        back = decode_labels([(f"{i}-0".encode(), flat_bytes(f)) for i, f in enumerate(fields)])
        assert back.trade_id == labels.trade_id.to_pylist() and back.kind == labels.kind.to_pylist()
        assert back.episode_id == labels.episode_id.to_pylist() and same_floats(back.magnitude, labels.magnitude)

    def test_encode_labels_from_plain_lists(self) -> None:
        """Plain values in, strings out."""
        fields = encode_labels(["t1"], ["spike"], ["e1"], np.array([2.5]))
        assert fields == [{"trade_id": "t1", "kind": "spike", "episode_id": "e1", "magnitude": "2.5"}]
        assert len(decode_labels([("1-0", fields[0])])) == 1


class TestTickIds:
    @given(entry_ids, st.integers(-1, 10**6))
    def test_tick_ids_round_trip(self, entry: str, row: int) -> None:
        """`parse_tick_id` inverts `tick_id`; a per-tick entry's trade is named by the entry ID alone."""
        text = tick_id(entry, row)
        assert parse_tick_id(text) == (entry, max(row, PER_TICK)) and entry_of_tick(text) == entry
        assert (text == entry) == (row < 0)

    def test_batch_rows_are_named_entry_hash_row(self) -> None:
        """The `<entry>#<row>` form, the vectorised form, and `TickBatch.tick_id` agree."""
        assert tick_id("17-0", 3) == "17-0#3" and tick_id("17-0") == "17-0"
        ids = tick_ids(["1-0", "2-0"], np.array([0, 1, 1]), np.array([-1, 0, 5]))
        assert ids.tolist() == ["1-0", "2-0#0", "2-0#5"]
        batch = TickBatch.from_columns(symbol=["A"] * 3, price=[1.0] * 3, size=[1.0] * 3, ts=[1, 2, 3])
        batch = batch.with_origin(("1-0", "2-0"), np.array([0, 1, 1], np.int32), np.array([-1, 0, 5], np.int32))
        assert [batch.tick_id(i) for i in range(3)] == ids.tolist()
        assert len(tick_ids([], np.zeros(0, np.int32), np.zeros(0, np.int32))) == 0
        with pytest.raises(ValueError, match="whole number"):
            parse_tick_id("1-0#x")


class TestLiveEntries:
    def test_a_live_entry_carries_its_updates_in_one_field(self) -> None:
        """What `live_entry_fields` writes, `live_entry_payload` finds again, from bytes or text field names."""
        payload = encode_updates([SymbolUpdate("AAPL", 1_000, 10.0, 0.5, 3, 300.0)])
        fields = live_entry_fields(payload)
        assert fields == {"u": payload}
        for form in (fields, {b"u": payload}):
            assert [u.symbol for u in decode_updates(live_entry_payload(form) or b"")] == ["AAPL"]
        assert live_entry_payload({}) is None


class TestDeadLetters:
    def test_reason_source_and_entry_id_win_over_the_original_fields(self) -> None:
        """The three contract fields are written last, over an original field of the same name."""
        fields = encode_dead_letter({"price": b"abc", "reason": "mine"}, "price: not a number", "ingest", "line:3")
        assert fields == {"price": b"abc", "reason": "price: not a number", "source": "ingest", "entry_id": "line:3"}
        assert tuple(fields)[-2:] == DEADLETTER_FIELDS[1:]
        assert dead_letter_reason({b"reason": b"ts: missing"}) == "ts: missing"
        assert dead_letter_reason(None) == "?" and dead_letter_reason({"reason": "x"}) == "x"


class TestOnRedis:
    def test_a_bar_written_with_the_encoder_reads_back_through_redis(self, redis_client: redis.Redis) -> None:
        """XADD of `encode_bar` then XRANGE and `decode_bar_entries`: the same bar, the overlay column too."""
        key = Keys("contract").bars("1m", "AAPL")
        redis_client.execute_command(
            "XADD", key, bar_entry_id(60_000), *encode_bar(1.0, 2.0, 0.5, 1.25, 1e308 * 10, 1.1, 7, {"sma20": 1.05})
        )
        back = decode_bar_entries(redis_client.xrange(key))  # type: ignore[arg-type]
        assert back.rows() == [[60_000, 1.0, 2.0, 0.5, 1.25, math.inf, 1.1, 7]]
        assert back.extra["sma20"].tolist() == [1.05]
        table = pa.table({name: back.column(name) for name in BAR_FIELDS})
        assert table.num_rows == 1
