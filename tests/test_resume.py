"""Resume: a training killed with SIGKILL continues from its last finished epoch on the next run
and ends with exactly the numbers of a run that was never interrupted.

The training runs in a subprocess (a driver script calling `run_training`) that kills itself
with SIGKILL in the middle of epoch 7 of 9, inside the schedule's second stage, so the
optimiser's and the one-cycle scheduler's states matter, not only the weights. An attempt killed
in epoch 1 first leaves no state, only a RUNNING MLflow run that the next attempt ends FAILED.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from conftest import ROOT
from datagen import set_keys

from dogbreeds.params import read_yaml
from dogbreeds.training import resume
from dogbreeds.training.state import TrainState, capture_rng, restore_rng

EPOCHS = [4, 3, 2]
KILL_IN_EPOCH = 7

DRIVER = """
import os, signal, sys
from pathlib import Path
import dogbreeds.training.loop as loop
from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.pipeline.train import run_training

kill_at = int(os.environ.get("KILL_AT_STEP", "0"))  # the step to die in (0: never)
step = loop.train_step
calls = 0

def dying_step(*args, **kwargs):
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(*args, **kwargs)

loop.train_step = dying_step
out = Path(sys.argv[1])
run_stage(lambda: run_training(
    load_params(), "cnn", "tiny", 0, prepared=Path("data/prepared"),
    models_dir=out / "models", metrics_dir=out / "metrics",
))
"""


def train(repo: Path, out: str, kill_at_step: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",  # the same threads in every run: CPU numbers repeat exactly
        "KILL_AT_STEP": str(kill_at_step),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return subprocess.run(
        [sys.executable, "driver.py", out], cwd=repo, env=env, capture_output=True, text=True
    )


@pytest.fixture
def repo(prepared: Path, tmp_path: Path) -> Path:
    """tmp_path as a DVC repo with the prepared 16px data, tiny params and the driver."""
    (tmp_path / ".dvc").mkdir()
    tree = read_yaml(ROOT / "params.yaml")
    set_keys(
        tree,
        {
            "model.resolution": 16,
            "model.width_mult": 0.25,
            "train.device": "cpu",
            "train.batch_size": 8,
            "train.amp": "off",  # float32: exact repeats
            "train.schedules": {"tiny": {"epochs": EPOCHS, "max_lr": [0.01, 0.001, 0.0001]}},
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    (tmp_path / "driver.py").write_text(DRIVER)
    return tmp_path


def without_run_facts(metrics: dict) -> dict:
    """The metrics JSON less what differs between any two runs (the clock, the MLflow id)."""
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "mlflow_run_id")}


def test_a_killed_training_resumes_and_ends_as_if_never_killed(repo: Path) -> None:
    whole = train(repo, "whole")
    assert whole.returncode == 0, whole.stderr
    steps = 42 // 8 + 1  # 7 breeds x 6 train images, batches of 8: 5 full and one of 2
    too_early = train(repo, "resumed", kill_at_step=2)  # in epoch 1: no state saved yet
    assert too_early.returncode == -signal.SIGKILL
    assert not list((repo / ".resume").glob("*.pt"))  # only the dead process's lock file
    killed = train(repo, "resumed", kill_at_step=(KILL_IN_EPOCH - 1) * steps + 2)
    assert killed.returncode == -signal.SIGKILL
    assert "cnn-tiny-0 epoch 6:" in killed.stderr and "epoch 7:" not in killed.stderr
    states = list((repo / ".resume").glob("cnn-tiny-0-*.pt"))
    assert len(states) == 1  # kept outside the outputs, which were never written
    assert not (repo / "resumed" / "metrics").exists()

    resumed = train(repo, "resumed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 6 of 9" in resumed.stderr
    assert "cnn-tiny-0 epoch 1:" not in resumed.stderr  # nothing was trained twice

    for name in ("cnn-tiny-0.tsv", "cnn-tiny-0.json"):
        a, b = (repo / run / "metrics" / name for run in ("whole", "resumed"))
        if name.endswith(".tsv"):
            assert a.read_text() == b.read_text()
        else:
            assert without_run_facts(json.loads(a.read_text())) == without_run_facts(
                json.loads(b.read_text())
            )
    weights = [
        torch.load(repo / run / "models/cnn-tiny-0.pt", weights_only=True)
        for run in ("whole", "resumed")
    ]
    for key, value in weights[0]["state_dict"].items():
        assert torch.equal(value, weights[1]["state_dict"][key]), key
    assert not (repo / ".resume").exists()  # removed when the stage finished

    # MLflow: the killed attempt FAILED, the resumed run FINISHED, names it and has every epoch
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    new_id = json.loads((repo / "resumed/metrics/cnn-tiny-0.json").read_text())["mlflow_run_id"]
    whole_id = json.loads((repo / "whole/metrics/cnn-tiny-0.json").read_text())["mlflow_run_id"]
    new = client.get_run(new_id)
    old = client.get_run(new.data.tags["resumed_from_run"])
    assert (old.info.status, new.info.status) == ("FAILED", "FINISHED")
    assert new.data.tags["resumed_at_epoch"] == "6"
    attempts = client.search_runs([new.info.experiment_id], "tags.seed = '0'")
    statuses = sorted(r.info.status for r in attempts if r.info.run_id != whole_id)
    assert statuses == ["FAILED", "FAILED", "FINISHED"]  # killed in epoch 1, in epoch 7, resumed
    val_acc = client.get_metric_history(new_id, "val_acc")
    assert sorted(m.step for m in val_acc) == list(range(1, sum(EPOCHS) + 1))


def test_changed_params_or_code_never_resume_a_stale_state(tmp_path: Path) -> None:
    data = tmp_path / "train.pt"
    data.write_bytes(b"images")
    params = {"train": {"seed": 0}}
    info = {"device": "cpu", "threads": "1"}
    key = resume.state_key(params, info, [data])
    assert resume.state_key(params, info, [data]) == key
    assert resume.state_key({"train": {"seed": 1}}, info, [data]) != key
    assert resume.state_key(params, {**info, "threads": "2"}, [data]) != key
    data.write_bytes(b"other images")
    assert resume.state_key(params, info, [data]) != key
    import dogbreeds.training.loop  # noqa: F401  (loaded_code lists the modules loaded so far)

    code = resume.loaded_code()
    assert (
        ROOT / "src/dogbreeds/training/loop.py" in code
        and ROOT / "src/dogbreeds/training/resume.py" in code
    )


def test_every_random_stream_comes_back(tmp_path: Path) -> None:
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    rng = capture_rng(generator)
    first = (torch.rand(2, generator=generator), torch.rand(2), np.random.rand(), random.random())
    state = TrainState(history=[], model={}, optimizer={}, scheduler={}, scaler={}, rng=rng)
    resume.save_state(tmp_path / "s.pt", state, {"mlflow_run_id": "x"})
    loaded, meta = resume.load_state(tmp_path / "s.pt")  # torch.load(weights_only=True)
    restore_rng(loaded.rng, generator)
    again = (torch.rand(2, generator=generator), torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[2:] == again[2:] and meta == {"mlflow_run_id": "x"}


def test_a_torn_state_file_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "s.pt").write_bytes(b"not a torch file")
    assert resume.load_state(tmp_path / "s.pt") is None
    assert "unreadable resume state" in caplog.text


def test_a_state_write_cut_short_is_cleared_by_the_next_claim(tmp_path: Path) -> None:
    """A SIGKILL inside `save_state` leaves atomic_path's temporary folder; the next attempt
    that owns the state removes it, so a finished run leaves no `.resume` behind."""
    folder = tmp_path / ".resume"
    path = folder / "cnn-s20_14_6-3-abc.pt"
    torn = folder / f".{path.name}.x1y2z3"
    torn.mkdir(parents=True)
    (torn / path.name).write_bytes(b"half a state")
    other = folder / ".dsc-s20_14_6-3-abc.pt.q9"  # another run's write in progress: not ours
    other.mkdir()
    with resume.claim(path) as owned:
        assert owned and not torn.exists() and other.exists()
    other.rmdir()
    with resume.claim(path) as owned:
        assert owned
    assert not folder.exists()  # the last claim takes the empty folder with it
