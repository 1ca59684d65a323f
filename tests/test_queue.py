"""Concurrent experiments: `dvc queue start -j 2` runs 4 queued experiments two at a time in
temporary copies, all logging into the main repository's mlflow.db (found through DVC_ROOT).

Every MLflow run must be present and complete, and no stage may fail with "database is locked".
"""

from __future__ import annotations

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
