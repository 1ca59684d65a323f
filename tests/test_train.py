"""Training: the one-cycle schedule, clipping, augmentation, determinism and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT
from datagen import set_keys

from dogbreeds import train as training
from dogbreeds.models import build_model, offset_parameters
from dogbreeds.params import OneCycleParams, Params, Schedule, parse_params


def tiny_params(**updates) -> Params:
    """The project's params at 16px on CPU with short schedules; dotted keys override."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["model"]["resolution"] = 16
    tree["model"]["width_mult"] = 0.25
    tree["train"].update(device="cpu", batch_size=8)
    tree["train"]["schedules"] = {"tiny": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}}
    return parse_params(set_keys(tree, updates))


def load_splits(prepared: Path) -> tuple[training.Split, training.Split, training.Normalize]:
    train = training.load_split(prepared / "train.pt")
    val = training.load_split(prepared / "val.pt")
    mean, std = training.channel_stats(train.images)
    return train, val, training.Normalize(mean, std, torch.device("cpu"))


# ----------------------------------------------------------------------------- the schedule


def test_one_cycle_warms_up_to_max_lr_then_anneals():
    model = build_model("deformable", width_mult=0.25)
    optimizer, peaks = training.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    shape = OneCycleParams(pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    scheduler = training.one_cycle(optimizer, peaks, epochs=2, steps=10, shape=shape)
    base, offset = [], []
    for _ in range(20):
        base.append(optimizer.param_groups[0]["lr"])
        offset.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()

    peak = base.index(max(base))
    assert peaks == [0.01, pytest.approx(0.001)]
    assert base[0] == pytest.approx(0.01 / 25)  # starts at max_lr / div_factor
    assert max(base) == pytest.approx(0.01)
    assert peak == 6 - 1  # 30% of 20 steps warm up
    assert all(a < b for a, b in zip(base[:peak], base[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(base[peak:-1], base[peak + 1 :], strict=True))
    assert base[-1] == pytest.approx(0.01 / 25 / 1e4)  # ends at initial lr / final_div_factor
    assert offset == pytest.approx([lr * 0.1 for lr in base])  # offsets follow at lr * mult


def test_one_cycle_shape_comes_from_params():
    model = build_model("cnn", width_mult=0.25)
    optimizer, peaks = training.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    shape = OneCycleParams(pct_start=0.5, div_factor=10.0, final_div_factor=100.0)
    scheduler = training.one_cycle(optimizer, peaks, epochs=2, steps=10, shape=shape)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001)  # max_lr / 10
    assert lrs.index(max(lrs)) == 10 - 1  # half of 20 steps warm up
    assert lrs[-1] == pytest.approx(0.001 / 100)


def test_offset_convs_get_their_own_group_and_the_rest_one():
    model = build_model("deformable", width_mult=0.25)
    optimizer, _ = training.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    base, offsets = (group["params"] for group in optimizer.param_groups)
    assert {id(p) for p in offsets} == {id(p) for p in offset_parameters(model)}
    assert len(base) + len(offsets) == len(list(model.parameters()))
    plain, _ = training.make_optimizer(build_model("cnn"), 0.01, 1e-4, offset_lr_mult=0.1)
    assert len(plain.param_groups) == 1


def test_each_stage_is_one_cycle_at_its_max_lr(prepared):
    train, val, normalize = load_splits(prepared)
    params = tiny_params()
    schedule = Schedule("s", epochs=[2, 1, 1], max_lr=[0.01, 0.001, 0.0001])
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    history = training.train_model(model, train, val, normalize, schedule, params.train, 0.1)

    assert [r.epoch for r in history] == [1, 2, 3, 4]
    assert [r.stage for r in history] == [1, 1, 2, 3]
    # The last step of every stage runs at that stage's max_lr / 25 / 1e4 ...
    assert [history[i].lr for i in (1, 2, 3)] == pytest.approx(
        [lr / 25 / 1e4 for lr in schedule.max_lr]
    )
    # ... and halfway through the first stage the lr is still well above that.
    assert history[0].lr > 100 * history[1].lr


def test_weights_carry_over_between_stages(prepared, monkeypatch):
    train, val, normalize = load_splits(prepared)
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    after_epoch, at_stage_start = [], []

    make_optimizer = training.make_optimizer

    def spy(model, *args, **kwargs):
        at_stage_start.append({k: v.clone() for k, v in model.state_dict().items()})
        return make_optimizer(model, *args, **kwargs)

    monkeypatch.setattr(training, "make_optimizer", spy)
    training.train_model(
        model,
        train,
        val,
        normalize,
        Schedule("s", [1, 1], [0.01, 0.001]),
        tiny_params().train,
        offset_lr_mult=0.1,
        on_epoch=lambda r: after_epoch.append(
            {k: v.clone() for k, v in model.state_dict().items()}
        ),
    )

    assert len(at_stage_start) == 2
    for key in initial:  # stage 2 starts from where stage 1 ended, not from scratch
        assert torch.equal(at_stage_start[1][key], after_epoch[0][key])
    assert not torch.equal(at_stage_start[1]["fc.weight"], initial["fc.weight"])


def test_gradients_are_clipped_by_value_before_each_step(prepared, monkeypatch):
    train, val, normalize = load_splits(prepared)
    clip = 1e-4  # far below the raw gradients of an untrained net
    raw, applied = [], []
    make_optimizer = training.make_optimizer

    def with_hooks(model, *args, **kwargs):
        optimizer, peaks = make_optimizer(model, *args, **kwargs)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p in params:
            p.register_hook(lambda grad: raw.append(grad.abs().max().item()))
        optimizer.register_step_pre_hook(
            lambda *_: applied.append(max(p.grad.abs().max().item() for p in params))
        )
        return optimizer, peaks

    monkeypatch.setattr(training, "make_optimizer", with_hooks)
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    tp = tiny_params(**{"train.grad_clip": clip}).train
    training.train_model(model, train, val, normalize, Schedule("s", [1], [0.01]), tp, 0.1)

    assert max(raw) > 10 * clip
    assert applied and max(applied) == pytest.approx(clip)


# ----------------------------------------------------------------------------- data helpers


def test_augment_flip_only_mirrors_exactly():
    x = torch.rand(16, 3, 8, 8)
    out = training.augment(x, torch.Generator().manual_seed(0), hflip=True, crop_scale=1.0)
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-6) for o, xi in zip(out, x, strict=True)]
    kept = [torch.allclose(o, xi, atol=1e-6) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 16


def test_augment_crop_zooms_in_and_is_seeded():
    x = torch.rand(4, 3, 16, 16)
    a = training.augment(x, torch.Generator().manual_seed(1), hflip=False, crop_scale=0.5)
    b = training.augment(x, torch.Generator().manual_seed(1), hflip=False, crop_scale=0.5)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.allclose(a, x)
    assert training.augment(x, torch.Generator(), hflip=False, crop_scale=1.0) is x


def test_channel_stats_match_a_float_computation():
    images = torch.randint(0, 256, (10, 3, 5, 5), dtype=torch.uint8)
    mean, std = training.channel_stats(images, chunk=3)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist())


@pytest.mark.parametrize(("n", "batch_size", "expected"), [(32, 16, 2), (33, 16, 2), (34, 16, 3)])
def test_a_single_image_batch_is_dropped(n, batch_size, expected):
    batches = training.epoch_batches(n, batch_size, torch.Generator().manual_seed(0))
    assert len(batches) == expected == training.steps_per_epoch(n, batch_size)
    assert min(len(b) for b in batches) > 1


def test_stage_estimate_tells_a_cpu_user_to_reduce_resolution(caplog):
    progress = training.StageProgress("cnn stage 1/3", 100, 4000, torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="dogbreeds.train"):
        for _ in range(training.ETA_AFTER_STEPS + 1):
            progress.step()
        progress.log_estimate(seconds_per_step=2.0)
    progress.close()
    assert "cnn stage 1/3: about" in caplog.text
    assert "model.resolution" in caplog.text  # 4000 steps x 2 s is over an hour


# ----------------------------------------------------------------------------- the stage


def run_stage_in(tmp_path: Path, params: Params, out: str) -> dict:
    """run_training with outputs under tmp_path/out and the MLflow store at tmp_path."""
    return training.run_training(
        params,
        "deformable",
        "tiny",
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

    history_a = (in_repo / "a/metrics/deformable-tiny.tsv").read_text()
    assert history_a == (in_repo / "b/metrics/deformable-tiny.tsv").read_text()
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "epochs"):
        assert first[key] == second[key]
    weights_a = torch.load(in_repo / "a/models/deformable-tiny.pt", weights_only=True)
    weights_b = torch.load(in_repo / "b/models/deformable-tiny.pt", weights_only=True)
    for key, value in weights_a["state_dict"].items():
        assert torch.equal(value, weights_b["state_dict"][key]), key
    assert first["mlflow_run_id"] != second["mlflow_run_id"]  # one MLflow run per training

    other = run_stage_in(in_repo, tiny_params(**{"train.seed": 1}), "c")
    assert other["train_loss"] != first["train_loss"]


def test_training_writes_checkpoint_history_and_metrics(prepared, in_repo):
    summary = run_stage_in(in_repo, tiny_params(), "out")

    metrics = json.loads((in_repo / "out/metrics/deformable-tiny.json").read_text())
    assert metrics == summary
    assert metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert 0 <= metrics["train_acc"] <= 1 and math.isfinite(metrics["val_loss"])
    rows = (in_repo / "out/metrics/deformable-tiny.tsv").read_text().splitlines()
    assert rows[0].split("\t") == list(training.HISTORY_COLUMNS)
    assert [row.split("\t")[:2] for row in rows[1:]] == [["1", "1"], ["2", "2"], ["3", "3"]]

    blob = torch.load(in_repo / "out/models/deformable-tiny.pt", weights_only=True)
    assert blob["arch"] == "deformable" and blob["schedule"] == "tiny"
    assert blob["width_mult"] == 0.25 and blob["resolution"] == 16
    assert len(blob["breeds"]) == 7 and len(blob["mean"]) == len(blob["std"]) == 3
    assert [r["val_acc"] for r in blob["history"]] == pytest.approx(
        [r.val_acc for r in training.read_history(in_repo / "out/metrics/deformable-tiny.tsv")],
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
    training.save_checkpoint(tmp_path / "m.pt", model, meta)

    loaded, loaded_meta = training.load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))
    assert loaded_meta == meta
    assert not loaded.training


def test_resolution_mismatch_names_the_param(prepared, in_repo):
    with pytest.raises(training.TrainingError, match="model.resolution"):
        run_stage_in(in_repo, tiny_params(**{"model.resolution": 32}), "out")


def test_unknown_arch_or_schedule_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for args, name in (
        (["--arch", "resnet", "--schedule", "s20_14_6"], "--arch 'resnet'"),
        (["--arch", "cnn", "--schedule", "s1"], "--schedule 's1'"),
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
