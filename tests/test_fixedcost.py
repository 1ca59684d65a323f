"""The fixed-cost command and the stage timeline it reads (dogbreeds.common.timeline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dogbreeds.commands import fixedcost
from dogbreeds.common import timeline

ROOT = Path(__file__).resolve().parents[1]

MARKS = """
from dogbreeds.common import timeline
timeline.mark("first_step", once=True)
timeline.mark("first_step", once=True)
timeline.mark("last_step")
"""


def events(path: Path) -> list[tuple[str, float]]:
    return [(r["event"], r["t"]) for r in map(json.loads, path.read_text().splitlines())]


def test_timeline_records_start_marks_and_exit_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), timeline.ENV: str(path)}
    launched = time.time()
    subprocess.run([sys.executable, "-c", MARKS], env=env, check=True)
    ended = time.time()
    recorded = events(path)
    assert [name for name, _ in recorded] == ["start", "first_step", "last_step", "exit"]
    times = [t for _, t in recorded]
    assert times == sorted(times)
    assert launched - 0.05 <= times[0] and times[-1] <= ended  # /proc's start: 10 ms ticks

    env.pop(timeline.ENV)
    path.unlink()
    subprocess.run([sys.executable, "-c", MARKS], env=env, check=True)
    assert not path.exists()  # off: nothing written


def test_reports_give_medians_ratios_and_the_split(tmp_path: Path) -> None:
    imports = {"import torch": [1.0, 3.0, 2.0], "train --help": [3.0, 2.5, 9.0]}
    lines = fixedcost.import_report(imports)
    assert "| import torch | 2.00 | 3 | 1.00x |" in lines
    assert "| train --help | 3.00 | 3 | 1.50x |" in lines

    row = {"before_s": 1.0, "work_s": 4.0, "after_s": 0.5, "wall_s": 5.5}
    rows = [
        {"stage": stage, "arch": arch, **row}
        for stage in ("train", "evaluate")
        for arch in fixedcost.ARCHS
    ]
    assert "| evaluate | deformable | 1 | 1.00 | 0.50 | 1.50 | 4.00 |" in (
        fixedcost.stage_report(rows)
    )

    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(
            json.dumps({"stage": "s", "event": e, "t": t, "pid": 1}) + "\n"
            for e, t in [("start", 1.0), ("last_step", 2.0), ("last_step", 3.0)]
        )
    )
    assert fixedcost.read_timeline(path) == {"start": 1.0, "last_step": 3.0}


def test_stage_env_sets_or_clears_the_timeline(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(timeline.ENV, "/elsewhere")
    assert timeline.ENV not in fixedcost.stage_env()
    env = fixedcost.stage_env(tmp_path / "x.jsonl")
    assert env[timeline.ENV] == str(tmp_path / "x.jsonl") and env["PYTHONPATH"] == "src"
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
