"""The stage scripts' shell (dogbreeds.common.cli): exit status, and an exit that skips the
interpreter's teardown but none of what a normal exit does first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dogbreeds.common import cli

SCRIPT = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dogbreeds.common import cli
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


GC_SCRIPT = """
import gc, weakref
from dogbreeds.common.cli import NEVER, run_stage

class Node:
    pass

def main():
    before = gc.get_threshold()
    node = Node()
    node.me = node  # a cycle: only the collector frees it
    freed = weakref.ref(node)
    del node
    young = gc.get_stats()[0]["collections"]
    keep = [[] for _ in range(5000)]  # allocations enough for young collections to run
    print(before[2], gc.get_threshold()[2] == NEVER, gc.isenabled(),
          gc.get_stats()[0]["collections"] > young, freed() is None)

run_stage(main)
"""


def test_a_stage_process_keeps_young_collections_and_no_full_ones():
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run(
        [sys.executable, "-c", GC_SCRIPT],
        capture_output=True, text=True, env={"PYTHONPATH": str(src), "PATH": ""}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    threshold, never, enabled, collected, freed = proc.stdout.split()
    assert threshold == str(cli.NEVER) and never == "True"  # set before the stage's main ran
    assert enabled == collected == freed == "True"  # young cycles are still freed


def test_importing_the_shell_leaves_this_process_collector_alone():
    import gc

    assert gc.get_threshold()[2] < cli.NEVER and gc.isenabled()  # cli is imported above
