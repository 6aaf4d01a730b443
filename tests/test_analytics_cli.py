"""`tickerdash analytics --stages`: which plug-in stages a worker runs after indicators and bars."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import Result

from tickerdash.analytics.commands.worker import chosen_stages, register
from tickerdash.analytics.stages.alerts.stage import SlumpAlertStage
from tickerdash.analytics.stages.anomaly.stage import AnomalyStage


def test_stages_are_chosen_by_name_in_the_pipeline_order() -> None:
    """Alerts run before anomaly scores whatever the order given; `none` leaves indicators and bars only."""
    assert chosen_stages("alerts,anomaly") == (SlumpAlertStage, AnomalyStage)
    assert chosen_stages("anomaly, alerts") == (SlumpAlertStage, AnomalyStage)
    assert chosen_stages("anomaly") == (AnomalyStage,)
    assert chosen_stages("none") == ()


@pytest.mark.parametrize("text", ["bogus", "alerts,bogus", ",", "none,alerts"])
def test_an_unknown_stage_is_refused_with_the_choices(text: str) -> None:
    """A typo does not silently run a worker without its alerts: the message names the choices."""
    with pytest.raises(ValueError, match="use alerts, anomaly, alerts,anomaly or none"):
        chosen_stages(text)


def test_the_command_refuses_a_bad_stage_before_touching_redis(run_cli: Callable[..., Result]) -> None:
    """Exit 2 with the reason, as every bad option does."""
    result = run_cli(register, "analytics", "--stages", "anomally")
    assert result.exit_code == 2
    assert "anomally is not a stage" in result.output
