"""The stage scripts' shell (dogbreeds.common.cli): exit status, and an exit that skips the
interpreter's teardown but none of what a normal exit does first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dogbreeds import DogbreedsError
from dogbreeds.common.cli import run_stage

out = Path(sys.argv[1])
pool = ThreadPoolExecutor(1)  # kept: a collected executor stops its workers itself
def late_writer():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

def main():
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    threading.Thread(target=late_writer).start()  # not a daemon: an exit waits for it
    # An executor left open (MLflow's artifact uploads to a server): its idle worker is not a
    # daemon either, and only threading's own exit hook tells it to stop.
    pool.submit(lambda: None).result()
    print("buffered, no newline", end="")  # stdout is a pipe: block-buffered
    sys.stderr.write("to stderr")
    if sys.argv[2] == "fail":
        raise DogbreedsError("params.yaml: train.seeds is empty")

run_stage(main)
print("never printed")
"""


def run_script(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    src = Path(__file__).resolve().parents[1] / "src"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode],
        capture_output=True, text=True, env={"PYTHONPATH": str(src), "PATH": ""}, timeout=60,
    )  # fmt: skip


def test_a_stage_exits_0_after_its_threads_atexit_handlers_and_output(tmp_path):
    proc = run_script(tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "buffered, no newline"  # flushed, and run_stage did not return
    assert proc.stderr == "to stderr"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_stage_error_is_one_line_and_status_1(tmp_path):
    proc = run_script(tmp_path, "fail")
    assert proc.returncode == 1
    assert proc.stderr.endswith("error: params.yaml: train.seeds is empty\n")
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
