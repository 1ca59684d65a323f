"""The train stage: determinism, the files DVC tracks, the MLflow run, one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from datagen import tiny_params

from dogbreeds.data.prepared import PreparedDataError
from dogbreeds.nets.models import build_model, offset_parameters
from dogbreeds.params import Params
from dogbreeds.pipeline import train as training
from dogbreeds.tracking import store
from dogbreeds.training.checkpoint import load_checkpoint, save_checkpoint
from dogbreeds.training.history import COLUMNS, read_history

# ----------------------------------------------------------------------------- the stage


def run_stage_in(tmp_path: Path, params: Params, out: str, seed: int = 0) -> dict:
    """run_training with outputs under tmp_path/out and the MLflow store at tmp_path."""
    return training.run_training(
        params,
        "deformable",
        "tiny",
        seed,
        prepared=tmp_path / "data" / "prepared",
        models_dir=tmp_path / out / "models",
        metrics_dir=tmp_path / out / "metrics",
    )


@pytest.fixture
def in_repo(tmp_path, monkeypatch) -> Path:
    """cwd = tmp_path as a DVC repo root, so the MLflow store is tmp_path/mlflow.db."""
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_same_params_give_the_same_metrics_on_cpu(prepared, in_repo):
    params = tiny_params()
    first = run_stage_in(in_repo, params, "a")
    second = run_stage_in(in_repo, params, "b")

    history_a = (in_repo / "a/metrics/deformable-tiny-0.tsv").read_text()
    assert history_a == (in_repo / "b/metrics/deformable-tiny-0.tsv").read_text()
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "epochs"):
        assert first[key] == second[key]
    weights_a = torch.load(in_repo / "a/models/deformable-tiny-0.pt", weights_only=True)
    weights_b = torch.load(in_repo / "b/models/deformable-tiny-0.pt", weights_only=True)
    for key, value in weights_a["state_dict"].items():
        assert torch.equal(value, weights_b["state_dict"][key]), key
    assert first["mlflow_run_id"] != second["mlflow_run_id"]  # one MLflow run per training

    other = run_stage_in(in_repo, params, "c", seed=1)
    assert other["train_loss"] != first["train_loss"]
    assert (in_repo / "c/models/deformable-tiny-1.pt").exists()
    run = store.open_experiment(in_repo)[0].get_run(other["mlflow_run_id"])
    assert run.info.run_name == "deformable-tiny-1" and run.data.tags["seed"] == "1"
    assert run.data.params["run.seed"] == "1" and "train.seed" not in run.data.params
    runtime = {k.removeprefix("runtime."): v for k, v in run.data.tags.items() if "runtime." in k}
    assert runtime["device"] == "cpu" and runtime["deform_backend"] == other["deform_backend"]


def test_training_writes_checkpoint_history_and_metrics(prepared, in_repo):
    summary = run_stage_in(in_repo, tiny_params(), "out")

    metrics = json.loads((in_repo / "out/metrics/deformable-tiny-0.json").read_text())
    assert metrics == summary
    assert metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert 0 <= metrics["train_acc"] <= 1 and math.isfinite(metrics["val_loss"])
    rows = (in_repo / "out/metrics/deformable-tiny-0.tsv").read_text().splitlines()
    assert rows[0].split("\t") == list(COLUMNS)
    assert [row.split("\t")[:2] for row in rows[1:]] == [["1", "1"], ["2", "2"], ["3", "3"]]

    blob = torch.load(in_repo / "out/models/deformable-tiny-0.pt", weights_only=True)
    assert blob["arch"] == "deformable" and blob["schedule"] == "tiny"
    assert blob["width_mult"] == 0.25 and blob["resolution"] == 16
    assert len(blob["breeds"]) == 7 and len(blob["mean"]) == len(blob["std"]) == 3
    assert [r["val_acc"] for r in blob["history"]] == pytest.approx(
        [r.val_acc for r in read_history(in_repo / "out/metrics/deformable-tiny-0.tsv")],
        abs=1e-6,
    )
    assert not list((in_repo / "out").rglob(".*"))  # no temporaries left behind


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_model("deformable", width_mult=0.25).eval()
    with torch.no_grad():  # non-zero offsets, so the offset convs' weights matter too
        for p in offset_parameters(model):
            p.normal_(std=0.1)
    meta = {
        "arch": "deformable",
        "schedule": "s",
        "width_mult": 0.25,
        "resolution": 16,
        "deform_backend": "auto",
        "breeds": [f"b{i}" for i in range(7)],
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "history": [],
    }
    save_checkpoint(tmp_path / "m.pt", model, meta)

    loaded, loaded_meta = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))
    assert loaded_meta == meta
    assert not loaded.training


def test_resolution_mismatch_names_the_param(prepared, in_repo):
    with pytest.raises(PreparedDataError, match="model.resolution"):
        run_stage_in(in_repo, tiny_params(**{"model.resolution": 32}), "out")


def test_unknown_arch_schedule_or_seed_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for args, name in (
        (["--arch", "resnet", "--schedule", "s20_14_6", "--seed", "0"], "--arch 'resnet'"),
        (["--arch", "cnn", "--schedule", "s1", "--seed", "0"], "--schedule 's1'"),
        (["--arch", "cnn", "--schedule", "s20_14_6", "--seed", "99"], "--seed 99"),
    ):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "stages" / "train.py"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"error: unknown {name}")
        assert proc.stderr.count("\n") == 1, proc.stderr
