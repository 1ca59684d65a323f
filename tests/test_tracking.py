"""MLflow tracking: where the store is, first creation under concurrency, run bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from dogbreeds import tracking


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def test_store_is_at_the_dvc_repo_root_above_cwd(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path / "stages")
    assert tracking.store_root() == tmp_path
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"


def test_dvc_root_wins_so_temp_copies_log_to_the_main_repo(tmp_path, monkeypatch):
    main, copy = tmp_path / "main", tmp_path / "main/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    (copy / ".dvc").mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(main))
    assert tracking.store_root() == main


def test_mlflow_tracking_uri_overrides_the_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_experiment_keeps_its_artifacts_under_the_root(tmp_path):
    client, experiment_id = tracking.open_experiment(tmp_path)
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == tracking.EXPERIMENT
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert tracking.open_experiment(tmp_path)[1] == experiment_id  # found, not created again


def test_a_run_logs_params_steps_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lion")
    artifact = tmp_path / "history.tsv"
    artifact.write_text("epoch\tval_acc\n1\t0.5\n")
    with tracking.training_run("cnn-s1", tracking.run_tags("cnn", "s1"), tmp_path) as run:
        run.log_params({"train": {"seed": 0, "schedules": {"s1": {"epochs": [1, 2]}}}})
        for step in (1, 2, 3):
            run.log_metrics({"val_acc": step / 10}, step=step)
        run.log_artifact(artifact)

    logged = run.client.get_run(run.run_id)
    assert logged.info.run_name == "cnn-s1" and logged.info.status == "FINISHED"
    assert logged.data.params == {"train.seed": "0", "train.schedules.s1.epochs": "[1, 2]"}
    history = run.client.get_metric_history(run.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert logged.data.tags["arch"] == "cnn" and logged.data.tags["schedule"] == "s1"
    assert logged.data.tags["dvc_exp_name"] == "bushy-lion"
    assert (tmp_path / "mlartifacts" / run.run_id / "artifacts" / "history.tsv").exists()


def test_a_failing_block_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError), tracking.training_run("x", {}, tmp_path) as run:
        raise RuntimeError("boom")
    assert run.client.get_run(run.run_id).info.status == "FAILED"


def test_git_commit_is_none_outside_git(tmp_path):
    assert tracking.git_commit(tmp_path) is None


def test_two_processes_creating_the_store_at_once_both_succeed(tmp_path):
    """Both start their first run at the same instant on a store that does not exist yet."""
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from dogbreeds import tracking  # the slow part: importing mlflow
        root, me = Path(sys.argv[1]), sys.argv[2]
        (root / f"ready-{me}").touch()
        while len(list(root.glob("ready-*"))) < 2:  # a barrier: go together
            time.sleep(0.001)
        print(tracking.start_run("racer", {}, root).run_id)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = [racer.communicate(timeout=120) for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0], outputs
    client, experiment_id = tracking.open_experiment(tmp_path)
    assert len(client.search_experiments()) == 2  # "Default" and ours, created once
    runs = client.search_runs([experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(out.strip() for out, _ in outputs)
