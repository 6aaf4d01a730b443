"""The soak benchmark's accounting, on a short run of the real commands (benchmarks/soak.py)."""

from __future__ import annotations

import pytest

from benchmarks.soak import SoakConfig, run_soak


@pytest.mark.slow
def test_a_short_soak_finds_every_tick_the_simulator_wrote_in_a_bar_a_dead_letter_or_a_reported_loss() -> None:
    """Twenty seconds of simulator, worker and dashboard with pages that read and one that never does: the
    simulator's count equals the rows on the stream and the ticks accounted for, and every process ends cleanly."""
    config = SoakConfig(minutes=1 / 3, rate=2_000, clients=3, silent_clients=1, universe=10, every_s=5, warmup_s=5)
    result = run_soak(config, say=lambda line: None)

    accounting = result.accounting
    assert accounting is not None
    assert accounting.written == config.ticks
    assert accounting.on_stream == config.ticks
    assert accounting.closed_bars > accounting.open_bars  # most trades are in bars written to Redis
    assert accounting.accounted == accounting.ticks_in
    assert accounting.matches
    assert result.exits == {"simulate": 0, "dashboard": 0, "analytics": 0}
    assert result.pages.frames > 0 and result.pages.bar_replies > 0
    assert all(memory is not None for memory in result.samples[0].memory.values())
