"""Registration as a user meets it: the model card written with each champion, the data kind in
the registered model's description, and a study on synthetic data refused unless forced.

A tiny untrained cnn stands in for a trained one (tests/test_pyfunc.py has the champion's choice
and idempotence); the store is a SQLite file in tmp_path.
"""

from __future__ import annotations

import pytest
import torch
from datagen import tiny_params

from dogbreeds.commands import register as register_command
from dogbreeds.common.fs import write_json
from dogbreeds.nets.models import build_model
from dogbreeds.params import run_name
from dogbreeds.serving import card, pyfunc, registry
from dogbreeds.tracking import runs as tracking
from dogbreeds.tracking import store

SIDE = 16
VAL = {0: 0.40, 1: 0.60, 2: 0.50}  # seed 1 is the champion
TEST = {0: 0.30, 1: 0.45, 2: 0.42}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def study(tmp_path, sources: list[str]):
    """Params of a one-net, one-schedule, three-seed study on `sources`, its train and eval
    outputs under tmp_path/metrics, and the champion's training logged with its model."""
    params = tiny_params(
        **{"data.sources": sources, "train.archs": ["cnn"], "train.seeds": [0, 1, 2]}
    )
    meta = {
        "arch": "cnn", "schedule": "tiny", "width_mult": 0.25, "resolution": SIDE,
        "deform_backend": "auto", "breeds": params.data.breeds, "mean": [0.5] * 3,
        "std": [0.2] * 3, "history": [{"epoch": 1, "val_acc": VAL[1]}],
    }  # fmt: skip
    net = build_model("cnn", num_classes=7, width_mult=0.25, deform_backend="auto")
    checkpoint = tmp_path / "cnn.pt"
    torch.save({"state_dict": net.state_dict(), **meta}, checkpoint)
    with tracking.training_run("cnn-tiny-1", tracking.run_tags("cnn", "tiny"), tmp_path) as run:
        pyfunc.log_model(run, checkpoint)
    train_dir = tmp_path / "metrics" / "train"
    for seed in params.train.seeds:
        name = run_name("cnn", "tiny", seed)
        run_id = run.run_id if seed == 1 else f"not-logged-{seed}"
        write_json(
            train_dir / f"{name}.json",
            {"mlflow_run_id": run_id, "val_acc": VAL[seed], "train_acc": 0.9, "params": 1234,
             "macs": 5_600_000, "device": "cpu", "amp": "off"},
        )  # fmt: skip
        write_json(
            tmp_path / "metrics" / "eval" / f"{name}.json",
            {"test_acc": TEST[seed], "clean_test_acc": TEST[seed] + 0.1},
        )
    return params, train_dir, run


def test_the_champion_carries_its_model_card_and_data_kind(tmp_path):
    params, train_dir, run = study(tmp_path, ["stanford", "dbi"])
    [champion] = registry.register_study(params, train_dir, tmp_path).values()
    assert champion.run_id == run.run_id

    client, _ = store.open_experiment(tmp_path)
    version = client.get_model_version("dogbreeds-cnn", champion.version)
    written = version.description
    assert written.startswith("# dogbreeds-cnn: cnn-tiny-1\n")
    kind = 'real photos (Stanford Dogs Dataset, Kaggle "Dog Breed Images"), 16x16 px, seeds 0, 1, 2'
    assert f"**Data:** {kind}." in written
    assert "SYNTHETIC" not in written and "synthetic data" not in written
    # the recipe, the deformations, and the metrics beside the cell's interval over 3 seeds
    assert "Schedule `tiny`: 3 one-cycle stages of 1, 1, 1 epochs" in written
    assert "an affine map (degrees 20.0" in written
    mean = sum(TEST.values()) / 3
    row = next(r for r in written.splitlines() if r.startswith("| test accuracy, deformed"))
    assert row.startswith(f"| test accuracy, deformed test photos | 0.4500 | {mean:.4f} [")
    assert "over 3 seeds" in written and "1,234 parameters" in written
    for limit in ("Only these 7 breeds", f"{SIDE}x{SIDE} px", "affine, perspective, elastic"):
        assert limit in written
    assert version.tags[registry.DATA_KIND_TAG] == "real"
    described = client.get_registered_model("dogbreeds-cnn").description
    assert f"version {champion.version}, run cnn-tiny-1" in described
    assert f"Trained on {kind}." in described

    again = registry.register_study(params, train_dir, tmp_path)["cnn"]  # idempotent
    assert again.version == champion.version
    assert client.get_model_version("dogbreeds-cnn", champion.version).description == written


def test_a_synthetic_study_makes_no_champion_unless_forced(tmp_path, monkeypatch, capsys):
    params, train_dir, run = study(tmp_path, ["synthetic"])
    monkeypatch.setattr(register_command, "load_params", lambda path: params)
    capsys.readouterr()  # the logging of the study's set-up
    with pytest.raises(SystemExit) as exited:
        register_command.main(["--metrics", str(train_dir)])
    assert exited.value.code == 1
    [line] = capsys.readouterr().err.splitlines()  # one clear line
    assert line == (
        "error: data.sources ['synthetic']: these nets were trained on synthetic images, not dog"
        " photos; no champion made (register --force to make them champions anyway)"
    )
    client, _ = store.open_experiment(tmp_path)
    assert client.search_registered_models() == []

    [champion] = registry.register_study(params, train_dir, tmp_path, force=True).values()
    version = client.get_model_version("dogbreeds-cnn", champion.version)
    assert version.tags[registry.DATA_KIND_TAG] == "synthetic"
    assert "**Data:** SYNTHETIC data, not dog photos (generated shapes" in version.description
    assert "**Trained on synthetic data.**" in version.description
    described = client.get_registered_model("dogbreeds-cnn").description
    assert "Trained on SYNTHETIC data, not dog photos" in described


def test_the_data_kind_names_a_mix_and_one_seed_has_no_interval(tmp_path):
    mixed = tiny_params(**{"data.sources": ["stanford", "synthetic"], "train.seeds": [3]})
    assert card.is_synthetic(mixed)
    assert card.data_kind(mixed).startswith("real photos mixed with SYNTHETIC images (")
    write_json(tmp_path / "train" / "cnn-tiny-3.json", {"val_acc": 0.5, "train_acc": 0.7})
    table = card.metrics_table(mixed, "cnn", "tiny", 3, tmp_path / "train")
    assert "| val accuracy, deformed (chooses the champion) | 0.5000 | one seed |" in table
    assert f"| test accuracy, deformed test photos | not found ({tmp_path / 'eval'}) | |" in table
