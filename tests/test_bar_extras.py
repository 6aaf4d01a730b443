"""Per-bar float columns that later stages attach to the closed bars: written after the contract fields."""

from __future__ import annotations

import numpy as np
import redis
from test_stages import tape

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.analytics.engine.writer import EffectsWriter
from tickerdash.analytics.stages.bars import BarTable
from tickerdash.analytics.stages.bars_stage import ClosedBars, bar_fields
from tickerdash.ingest.contract.bars import decode_bar_feed
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.redis_adapter import execute_transaction
from tickerdash.ingest.ticks import TickBatch

CONTRACT_FIELDS = [b"open", b"high", b"low", b"close", b"volume", b"vwap", b"trades"]


class MidAndRange:
    """A stage after the bars that attaches two columns to every closed bar (as an overlay stage would)."""

    name = "mid_and_range"
    outputs: tuple[str, ...] = ()

    def process(self, batch: TickBatch, effects: Effects) -> None:
        closed: ClosedBars = effects.products["bars"]
        closed.extra["mid"] = (closed.table.high + closed.table.low) / 2
        closed.extra["range"] = closed.table.high - closed.table.low

    def to_bytes(self) -> bytes:
        return b""

    def load(self, data: bytes) -> None:
        pass

    def refresh(self, client: redis.Redis, keys: Keys) -> None:
        pass


def written(client: redis.Redis, config: WorkerConfig) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
    """The bar streams (key -> entries) a chain writes for the test tape."""
    state = PartitionState(config)
    pipe = client.pipeline(transaction=True)
    EffectsWriter(client, Keys()).write(pipe, state.apply(tape(1500, seed=4)), partition=0)
    execute_transaction(pipe)
    return {key.decode(): client.xrange(key) for key in sorted(client.scan_iter(match="tickerdash:bars:*"))}


def test_bar_fields_without_extra_columns_are_the_seven_contract_fields() -> None:
    """No extra columns: the entry is exactly the contract's, floats as repr, trades as an integer."""
    one = np.array([1.5])
    bars = BarTable(
        ("X",), np.zeros(1, np.int64), np.array([1000]), np.array([0]), one, one * 2, one, one, one, one, np.array([3])
    )
    expected = ["open", "1.5", "high", "3.0", "low", "1.5", "close", "1.5", "volume", "1.5", "vwap", "1.5", "trades", 3]
    assert bar_fields(bars, 0) == expected
    assert bar_fields(bars, 0, {"mid": np.array([2.25])}) == [*expected, "mid", "2.25"]


def test_extra_columns_follow_the_contract_fields_in_order_and_join_the_feed(redis_client: redis.Redis) -> None:
    """A later stage's columns are written after the seven fields (and the core overlays' fields), in the order
    attached, as repr(float), and appear as columns of the closed-bars feed; the fields before them are the
    same bytes as without them."""
    plain = written(redis_client, WorkerConfig())
    redis_client.flushall()
    extended = written(redis_client, WorkerConfig(stages=(MidAndRange,)))
    assert plain.keys() == extended.keys() and plain
    for key, entries in extended.items():
        for (entry_id, fields), (plain_id, plain_fields) in zip(entries, plain[key], strict=True):
            assert entry_id == plain_id and list(fields) == [*plain_fields, b"mid", b"range"]
            assert list(fields)[:7] == CONTRACT_FIELDS
            assert {k: v for k, v in fields.items() if k in plain_fields} == plain_fields
            high, low = float(fields[b"high"]), float(fields[b"low"])
            assert fields[b"mid"] == repr((high + low) / 2).encode()
            assert fields[b"range"] == repr(high - low).encode()
    [(_, feed)] = redis_client.xrange(Keys().closed_bars())
    table = decode_bar_feed(feed[b"bars"])
    assert table.column_names[-2:] == ["mid", "range"]
    assert len(table) == int(feed[b"rows"]) == sum(len(entries) for entries in extended.values())
