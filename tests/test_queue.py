"""Concurrent experiments: `dvc queue start -j 2` runs 4 queued experiments two at a time in
temporary copies, all logging into the main repository's mlflow.db (found through DVC_ROOT).

Every MLflow run must be present and complete, no stage may fail with "database is locked", and
registering champions afterwards picks the same runs as a serial run would.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import queue_workers, run, set_params, wait_for_queue
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3, 4)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two jobs on two cores


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
        status = wait_for_queue(project)

    assert status.count("Success") == len(SEEDS), status
    logs = "".join(
        run(["dvc", "queue", "logs", f"seed-{seed}"], project, check=False).stdout for seed in SEEDS
    )
    assert "database is locked" not in logs
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_exp = {r.data.tags.get("dvc_exp_name"): r for r in runs if r.data.tags.get("dvc_exp_name")}
    assert set(by_exp) == {f"seed-{seed}" for seed in SEEDS}
    for name, r in by_exp.items():
        assert r.info.status == "FINISHED", name
        assert r.data.params["train.seed"] == name.removeprefix("seed-")
        assert {"val_acc", "test_acc", "clean_test_acc"} <= set(r.data.metrics), name
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert sorted(steps) == [1, 2, 3], name
    assert not (project / ".resume").exists()  # every training finished and cleaned up

    # Registration reads an experiment's own outputs, whatever order the queue finished in:
    # the champion is the run its metrics name, and a serial rerun picks the same one.
    champions = {}
    for name in ("seed-3", "seed-1"):
        run(["dvc", "exp", "apply", name], project)
        champions[name] = register(project)
        trained = json.loads((project / f"metrics/train/cnn-s20_14_6-{name[-1]}.json").read_text())
        assert champions[name]["run_id"] == trained["mlflow_run_id"], name
        assert register(project) == champions[name]  # idempotent: no new version
    assert [c["version"] for c in champions.values()] == ["1", "2"]
    run(["dvc", "exp", "run", "--force", "-S", "train.seeds=[3]"], project, env=ONE_THREAD)
    serial = register(project)
    assert serial["run"] == champions["seed-3"]["run"] == "cnn-s20_14_6-3"
    assert serial["val_acc"] == champions["seed-3"]["val_acc"]  # bit-identical CPU rerun
    assert serial["run_id"] != champions["seed-3"]["run_id"]  # a new training, same choice


def register(project: Path) -> dict[str, str]:
    """`python -m dogbreeds register` in the workspace: the cnn champion it printed."""
    out = run([sys.executable, "-m", "dogbreeds", "register"], project, env=ONE_THREAD).stdout
    line = next(x for x in out.splitlines() if x.startswith("models:/dogbreeds-cnn@champion"))
    match = re.match(
        r"models:/dogbreeds-cnn@champion: version (\d+), run (\S+) \((\w+)\), val_acc (\S+)", line
    )
    assert match, line
    return dict(zip(("version", "run", "run_id", "val_acc"), match.groups(), strict=True))
