"""Progress of a training run: one tqdm bar over all its steps, and one early warning.

tqdm shows the rate and the time left. After the first few steps, a CPU run that would take
more than an hour logs one warning pointing at a reduced resolution, so a laptop user of the
224-pixel defaults learns within seconds what the run will cost. Nothing here changes a number.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

log = logging.getLogger(__name__)

WARN_AFTER_STEPS = 6  # tqdm's rate settles after a few steps (the first carries start-up costs)
WARN_ABOVE_SECONDS = 3600


def human_duration(seconds: float) -> str:
    """12 s, 3.4 min or 2.1 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


class RunProgress:
    """A tqdm bar over every step of a schedule; `step()` after each training step."""

    def __init__(
        self,
        desc: str,
        total_steps: int,
        device_type: str,
        bar: tqdm | None = None,
        done: int = 0,
    ):
        """done: steps finished before this process started (a resumed run)."""
        self.device_type = device_type
        # In a log (DVC's output piped to a file) one line a minute, not hundreds of redraws.
        interval = 0.1 if sys.stderr.isatty() else 60
        self.bar = bar or tqdm(
            total=total_steps, initial=done, desc=desc, unit="step", mininterval=interval
        )
        self.start = done
        self.desc = desc
        self.warned = False

    def set_stage(self, stage: int, stages: int) -> None:
        self.bar.set_postfix_str(f"stage {stage}/{stages}")

    def seconds_left(self) -> float | None:
        """tqdm's own estimate of the time left, once it has a rate."""
        info = self.bar.format_dict
        ran = info["n"] - self.start  # a resumed run's earlier steps took no time here
        rate = info.get("rate") or (ran / info["elapsed"] if info["elapsed"] else None)
        return (info["total"] - info["n"]) / rate if rate else None

    def step(self) -> None:
        self.bar.update()
        if self.warned or self.bar.n - self.start < WARN_AFTER_STEPS:
            return
        self.warned = True
        left = self.seconds_left()
        if left is not None and self.device_type == "cpu" and left > WARN_ABOVE_SECONDS:
            log.warning(
                "%s: on CPU this run takes about %s more; a reduced resolution is the "
                "practical choice, e.g. dvc exp run -S model.resolution=64",
                self.desc,
                human_duration(left),
            )

    def close(self) -> None:
        self.bar.close()
