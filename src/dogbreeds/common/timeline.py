"""A stage's timeline, for measuring its fixed cost: when it started, did its first and last
unit of work, and exited.

Off unless `DOGBREEDS_TIMELINE=<file>` is set; then `mark(event)` appends one JSON line
`{"stage", "event", "t", "pid"}` (t: Unix time, seconds) to that file. The first mark also
records the process's start (`start`, from /proc, 10 ms resolution) and registers `exit`
(atexit: after the stage's own work, before the interpreter's teardown). A stage marks
`first_step` when its first training step (or evaluation batch) has finished, and `last_step`
when its last one has: before `first_step` and after `last_step` is the stage's fixed cost
(imports, the MLflow store, model logging). `python -m dogbreeds fixedcost` reads these lines.

Each event is recorded once per process (the first `first_step`, the latest `last_step`).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

ENV = "DOGBREEDS_TIMELINE"
_seen: set[str] = set()


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def process_start() -> float | None:
    """This process's start as Unix time, from /proc (None where there is no /proc)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
    except (OSError, IndexError, ValueError):
        return None
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def stage_name() -> str:
    """The DVC stage (DVC_STAGE), else the script and its arguments."""
    return os.environ.get("DVC_STAGE") or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _write(event: str, t: float) -> None:
    record = {"stage": stage_name(), "event": event, "t": t, "pid": os.getpid()}
    with open(os.environ[ENV], "a") as f:
        f.write(json.dumps(record) + "\n")


def mark(event: str, once: bool = False) -> None:
    """Record `event` now (only the first time if `once`); nothing unless the timeline is on."""
    if not enabled() or (once and event in _seen):
        return
    now = time.time()
    if not _seen:
        start = process_start()
        if start is not None:
            _write("start", start)
        atexit.register(lambda: _write("exit", time.time()))
    _seen.add(event)
    _write(event, now)
