"""Every registered stage, through the same battery (`stage_checks.check_stage`), and the registry itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stage_checks import Run, check_stage, config_for

from tickerdash.analytics.engine.config import WorkerConfig
from tickerdash.analytics.engine.segments import unpack_state
from tickerdash.analytics.engine.stage import Effects
from tickerdash.analytics.engine.state import PartitionState
from tickerdash.analytics.stages import registry
from tickerdash.analytics.stages.alerts.bad_prints import BadPrintFilter
from tickerdash.analytics.stages.alerts.rules import Rule
from tickerdash.analytics.stages.alerts.slump import SlumpAlerts
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.anomaly.scorer_config import ScorerConfig
from tickerdash.analytics.stages.anomaly.stage import AnomalyStage
from tickerdash.ingest.ticks import TickBatch

START_MS = 1_767_225_600_000
N = 3_000


def tape(n: int = N, seed: int = 3) -> TickBatch:
    """Three symbols' random walks with a slump in one, some late trades, and a few off-market prints."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 3, n)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 4e-4, n)))
    price[n // 2 : n // 2 + 200] *= np.linspace(1, 0.96, 200)  # a slump
    price[rng.integers(0, n, 3)] *= 1.06  # off-market prints
    ts = START_MS + np.sort(rng.integers(0, n * 20, n))
    late = rng.integers(100, n, 10)
    ts[late] -= 10_000  # ten seconds back: their bars have closed
    return TickBatch.from_columns(
        [f"S{i}" for i in idx], np.round(price, 2), rng.integers(1, 20, n) * 10.0, ts, buyer=None, seller=None
    )


def with_rules(state: PartitionState) -> None:
    """Rules for the alerts stage (a worker reads them from Redis; the battery has none)."""
    try:
        stage = state.stage("alerts")
    except KeyError:
        return
    stage.alerts.set_rules(
        [
            Rule(id="any", symbol="*", drop_pct=1.0, window_s=30),
            Rule(id="s1", symbol="S1", drop_pct=0.5, window_s=5),
            Rule(id="s2-every-trade", symbol="S2", drop_pct=1.0, window_s=10, include_bad_prints=True),
        ]
    )


TAPE = tape()


def on_the_tape(entry: registry.StageEntry) -> registry.StageEntry:
    """The entry, with the anomaly stage flagging from 100 trades learnt on (its default waits for 31,623,
    longer than the tape)."""
    if entry.name != "anomaly":
        return entry
    return dataclasses.replace(entry, factory=lambda: AnomalyStage(scorer=ScorerConfig(flag_rarity=2.0)))


@pytest.mark.parametrize("entry", registry.STAGES, ids=[entry.name for entry in registry.STAGES])
@settings(max_examples=6, deadline=None)
@given(
    cuts=st.lists(st.integers(1, N - 1), max_size=6),
    restore_after=st.sets(st.integers(0, 6), max_size=3),
)
def test_every_stage_gives_the_same_bits_however_the_tape_is_cut_and_restored(
    entry: registry.StageEntry, cuts: list[int], restore_after: set[int]
) -> None:
    """Any split of a tape into batches, with checkpoint/restore at any batch boundary, gives the same outputs."""
    check_stage(on_the_tape(entry), TAPE, cuts, restore_after, with_rules)


@pytest.mark.parametrize("entry", registry.STAGES, ids=[entry.name for entry in registry.STAGES])
def test_the_battery_sees_what_each_stage_writes(entry: registry.StageEntry) -> None:
    """The tape makes every stage write or hand on something, so that the battery compares real outputs."""
    whole = check_stage(on_the_tape(entry), TAPE, [N // 3], {0}, with_rules)
    for name in entry.outputs:
        assert any(written and key.split(" ")[0] == name for key, written in whole.entries.items()), name
    assert whole.rows and whole.records
    if entry.name == "bars":
        assert len(whole.rejected) > 0  # the late trades


def test_the_registry_lists_core_stages_first_with_unique_names_and_what_each_writes() -> None:
    """Core stages come first (they run first in every chain); each stage declares the outputs it writes."""
    names = [entry.name for entry in registry.STAGES]
    assert len(set(names)) == len(names)
    cores = [entry.core for entry in registry.STAGES]
    assert cores == sorted(cores, reverse=True)
    for entry in registry.STAGES:
        stage = PartitionState(config_for(entry)).stage(entry.name)
        assert stage.outputs == entry.outputs and stage.name == entry.name


def without_overlays(effects: Effects) -> Effects:
    """The effects with the overlay columns taken off the closed bars (their entries carry the seven fields)."""
    closed = effects.products.get("bars")
    if closed is not None:
        closed.extra.clear()
    return effects


CHECKPOINT_BEFORE_REGISTRY = Path(__file__).parent / "data" / "checkpoint_before_stage_registry.bin"


def test_a_checkpoint_written_before_stages_were_plug_ins_restores_and_is_written_back_the_same() -> None:
    """The blob names ("bars", "indicators", "stage:alerts") are those of checkpoints written before bars and
    indicators were stages (the file was written by that code: 1,500 trades of `tape(1500, seed=4)`, an alerts
    stage with one rule): restored, the state writes every blob it had back the same, and goes on as one that
    never stopped. The chart overlays, a stage since added, start afresh: their fields are left aside. So does
    the alerts stage's bad-print filter, also added since: the one that never stopped ran the first trades
    with a filter that accepts every trade (as the code that wrote the file did), then a fresh one."""
    saved = CHECKPOINT_BEFORE_REGISTRY.read_bytes()
    config = WorkerConfig(stages=(SlumpAlertStage,))
    restored = PartitionState.from_bytes(saved, config)
    assert restored.last_id == "1767225600000-7"
    (old_meta, old_blobs), (new_meta, new_blobs) = unpack_state(saved), unpack_state(restored.to_bytes())
    assert set(new_blobs) - set(old_blobs) == {"stage:overlays"}
    assert all(new_blobs[name].tobytes() == blob.tobytes() for name, blob in old_blobs.items())
    assert {**new_meta, "stages": old_meta["stages"]} == old_meta

    first, rest = tape(1500, seed=4), tape(1500, seed=5)
    rest = TickBatch.from_columns(
        [rest.symbols[i] for i in rest.symbol_idx], rest.price, rest.size, rest.ts + (first.ts.max() - START_MS) + 1
    )
    never_stopped = PartitionState(config)
    alerts_stage = never_stopped.stage("alerts")
    alerts_stage.alerts = SlumpAlerts(restored.stage("alerts").alerts.rules, band=0.99)  # accepts this whole tape
    never_stopped.apply(first)
    alerts_stage.alerts.bad_prints = BadPrintFilter()
    expected, got = Run(), Run()
    expected.add(without_overlays(never_stopped.apply(rest)))
    got.add(without_overlays(restored.apply(rest)))
    assert got.entries == expected.entries and got.rejected == expected.rejected and got.records == expected.records
    assert got.entries  # bars closed, alerts fired
