"""Concurrent experiments: `dvc queue start -j 2` runs 4 queued experiments two at a time in
temporary copies, all logging into the main repository's mlflow.db (found through DVC_ROOT).

Every MLflow run must be present and complete, no stage may fail with "database is locked", and
registering champions afterwards picks the same runs as a serial run would.

Chaos, once for a queue worker (issue 24): the worker running seed 3 is killed with SIGKILL,
with everything it started, just after that training's first epoch. The other three finish;
seed 3, queued again, resumes from the killed attempt's state and ends with the files of an
uninterrupted serial run, byte for byte (but for the run facts, as in tests/test_chaos.py), and
MLflow has the killed attempt FAILED, the final one FINISHED, and nothing RUNNING.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
from conftest import queue_workers, run, set_params, wait_for_experiments
from mlflow import MlflowClient
from test_chaos import facts_free

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3, 4)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two jobs on two cores
KILLED = 3  # the seed whose queue worker is killed mid-training
SEED_FILES = ("models/cnn-s20_14_6-{s}.pt", "metrics/train/cnn-s20_14_6-{s}.json",
              "metrics/train/cnn-s20_14_6-{s}.tsv", "metrics/eval/cnn-s20_14_6-{s}.json",
              "metrics/eval/cnn-s20_14_6-{s}-predictions.csv")  # fmt: skip


def children(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *children(int(child))]
    return found


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        with suppress(OSError):
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            chain.append(pid)
            continue
        break
    return chain


def kill_worker_of(project: Path, seed: int, timeout_s: float = 600) -> None:
    """Wait for the first-epoch resume state of seed `seed`'s training, then SIGKILL the queue
    worker running it and every process it started (a machine that dies takes them all)."""
    workers = set()
    deadline = time.monotonic() + timeout_s
    while not list((project / ".resume").glob(f"cnn-s20_14_6-{seed}-*.pt")):
        assert time.monotonic() < deadline, "the training never saved its first epoch"
        time.sleep(0.05)
    for pid_file in (project / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        with suppress(ValueError, OSError):
            workers.add(int(pid_file.read_text().strip()))
    trainer = next(
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if b"stages/train.py" in (cmd := p.read_bytes()) and b"--seed\x00%d" % seed in cmd
    )
    worker = next(pid for pid in ancestors(trainer) if pid in workers)
    for pid in [worker, *children(worker)]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_four_queued_experiments_two_at_a_time_all_reach_mlflow(project: Path) -> None:
    set_params(
        project,
        **{
            "train.archs": ["cnn"],
            "train.schedules": {"s20_14_6": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 1e-4]}},
        },
    )
    run(["dvc", "repro"], project, env=ONE_THREAD)  # the data stages, shared via the cache
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)

    for seed in SEEDS:
        run(["dvc", "exp", "run", "--queue", "-n", f"seed-{seed}", "-S", f"train.seeds=[{seed}]"],
            project)  # fmt: skip
    with queue_workers(project, jobs=2, env=ONE_THREAD):
        kill_worker_of(project, KILLED)
        others = {f"seed-{seed}" for seed in SEEDS if seed != KILLED}
        assert set(wait_for_experiments(project, others).values()) == {"Success"}
    again = f"seed-{KILLED}-again"  # the killed experiment, queued once more
    run(["dvc", "exp", "run", "--queue", "-n", again, "-S", f"train.seeds=[{KILLED}]"], project)
    with queue_workers(project, jobs=2, env=ONE_THREAD):
        assert wait_for_experiments(project, {again}) == {again: "Success"}
    names = {f"seed-{seed}" for seed in SEEDS if seed != KILLED} | {again}
    logs = "".join(
        run(["dvc", "queue", "logs", name], project, check=False).stdout for name in names
    )
    assert "database is locked" not in logs
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.data.tags.get("dvc_exp_name") == f"seed-{KILLED}"]
    assert [r.info.status for r in killed] == ["FAILED"]  # marked so by the attempt that resumed
    by_exp = {r.data.tags.get("dvc_exp_name"): r for r in runs if r.data.tags.get("dvc_exp_name")}
    by_exp.pop(f"seed-{KILLED}")
    assert set(by_exp) == names
    assert by_exp[again].data.tags["resumed_from_run"] == killed[0].info.run_id
    for name, r in by_exp.items():
        assert r.info.status == "FINISHED", name
        assert r.data.params["run.seed"] == name.split("-")[1]
        assert {"val_acc", "test_acc", "clean_test_acc"} <= set(r.data.metrics), name
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert sorted(steps) == [1, 2, 3], name
    assert not (project / ".resume").exists()  # every training finished and cleaned up

    # Registration reads an experiment's own outputs, whatever order the queue finished in:
    # the champion is the run its metrics name, and a serial rerun picks the same one.
    champions = {}
    for name in (again, "seed-1"):
        run(["dvc", "exp", "apply", name], project)
        champions[name] = register(project)
        seed = name.split("-")[1]
        trained = json.loads((project / f"metrics/train/cnn-s20_14_6-{seed}.json").read_text())
        assert champions[name]["run_id"] == trained["mlflow_run_id"], name
        assert register(project) == champions[name]  # idempotent: no new version
        if name == again:
            resumed = seed_files(project, KILLED)
    assert [c["version"] for c in champions.values()] == ["1", "2"]
    run(["dvc", "exp", "run", "--force", "-S", f"train.seeds=[{KILLED}]"], project, env=ONE_THREAD)
    serial = register(project)
    assert serial["run"] == champions[again]["run"] == f"cnn-s20_14_6-{KILLED}"
    assert serial["val_acc"] == champions[again]["val_acc"]  # bit-identical CPU rerun
    assert serial["run_id"] != champions[again]["run_id"]  # a new training, same choice
    assert seed_files(project, KILLED) == resumed  # killed, resumed: the uninterrupted files


def seed_files(project: Path, seed: int) -> dict[str, bytes]:
    """One seed's checkpoint and metrics, the run facts left out."""
    return {f.format(s=seed): facts_free(project / f.format(s=seed)) for f in SEED_FILES}


def register(project: Path) -> dict[str, str]:
    """`python -m dogbreeds register` in the workspace: the cnn champion it printed."""
    cmd = [sys.executable, "-m", "dogbreeds", "register", "--force"]  # synthetic data
    out = run(cmd, project, env=ONE_THREAD).stdout
    line = next(x for x in out.splitlines() if x.startswith("models:/dogbreeds-cnn@champion"))
    match = re.match(
        r"models:/dogbreeds-cnn@champion: version (\d+), run (\S+) \((\w+)\), val_acc (\S+)", line
    )
    assert match, line
    return dict(zip(("version", "run", "run_id", "val_acc"), match.groups(), strict=True))
