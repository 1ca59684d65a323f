"""Progress: tqdm's own rate and time left, and the one CPU warning about long runs."""

from __future__ import annotations

import logging

import pytest
from tqdm import tqdm

from dogbreeds.common import progress


class FakeClock:
    """Stands in for tqdm's clock: every step takes `step_seconds`."""

    def __init__(self, step_seconds: float):
        self.now = 1000.0
        self.step_seconds = step_seconds

    def __call__(self) -> float:
        return self.now


def run_steps(seconds_per_step: float, total: int, device_type: str, steps: int):
    clock = FakeClock(seconds_per_step)
    bar = tqdm(total=total, disable=False, mininterval=0)
    bar._time = clock  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = clock()
    run = progress.RunProgress("cnn-s20_14_6", total, device_type, bar=bar)
    for _ in range(steps):
        clock.now += seconds_per_step
        run.step()
    return run


@pytest.mark.parametrize(
    ("seconds_per_step", "device_type", "warned"),
    [(2.0, "cpu", True), (0.5, "cpu", False), (2.0, "cuda", False)],
)
def test_a_long_cpu_run_is_warned_once_from_the_measured_rate(
    caplog, seconds_per_step, device_type, warned
):
    # 4000 steps: at 2 s a step that is 2.2 h (warn); at 0.5 s, 33 min (no warning)
    with caplog.at_level(logging.WARNING, logger="dogbreeds.common.progress"):
        run = run_steps(seconds_per_step, 4000, device_type, steps=20)
    left = run.seconds_left()
    run.close()
    assert left == pytest.approx((4000 - 20) * seconds_per_step, rel=0.01)
    warnings = [r for r in caplog.records if "model.resolution" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert progress.human_duration(left)[:3] in warnings[0].getMessage()


def test_human_duration():
    assert progress.human_duration(12) == "12 s"
    assert progress.human_duration(204) == "3.4 min"
    assert progress.human_duration(7560) == "2.1 h"
