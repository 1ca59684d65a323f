"""A trained net as users get it: the classifier, the MLflow pyfunc model, the registry's
champions, the predict command, and what the MLflow UI shows (experiment kind, Source, Dataset).

A tiny cnn (width 0.25, 16 px, untrained but seeded) stands in for a trained one: these tests
check plumbing and preprocessing, not accuracy. Each store is a SQLite file in tmp_path.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import mlflow.models.utils
import mlflow.pyfunc
import mlflow.utils.environment
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from datagen import tiny_params
from PIL import Image

from dogbreeds.commands.predict import main as predict_main
from dogbreeds.common.fs import write_json
from dogbreeds.common.redact import redact
from dogbreeds.data.deformations import prepare_image
from dogbreeds.data.preprocess import Normalize
from dogbreeds.nets.models import build_model
from dogbreeds.params import run_name
from dogbreeds.serving import pyfunc, registry
from dogbreeds.serving.classifier import Classifier
from dogbreeds.tracking import lineage, store
from dogbreeds.tracking import runs as tracking
from dogbreeds.training import batches
from dogbreeds.training.checkpoint import CheckpointError

BREEDS = ["Chihuahua", "Pug", "Beagle", "Labrador", "Husky", "Poodle", "Pomeranian"]
SIDE = 16


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def write_checkpoint(path, seed: int = 0):
    """A checkpoint with the train stage's keys (see train.save_checkpoint)."""
    torch.manual_seed(seed)
    model = build_model("cnn", num_classes=len(BREEDS), width_mult=0.25, deform_backend="auto")
    meta = {
        "arch": "cnn",
        "schedule": "s1",
        "width_mult": 0.25,
        "resolution": SIDE,
        "deform_backend": "auto",
        "breeds": BREEDS,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "history": [{"epoch": 1, "val_acc": 0.5}],
    }
    torch.save({"state_dict": model.state_dict(), **meta}, path)
    return path


def encoded(colour=(200, 30, 40), size=(40, 24), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "cnn-s1.pt")


def logged_run(root, checkpoint, val_acc: float, name: str = "cnn-s1"):
    """A finished training run with a final val_acc and the checkpoint as its model."""
    with tracking.training_run(name, tracking.run_tags("cnn", "s1"), root) as run:
        run.log_metrics({"val_acc": val_acc / 2}, step=1)
        run.log_metrics({"val_acc": val_acc}, step=2)  # the last epoch's value counts
        pyfunc.log_model(run, checkpoint)
    return run


# ----------------------------------------------------------------------------- classifier


def rotated_jpeg(path, size=(90, 60)):
    """A JPEG photo whose EXIF says "rotate 90°": decoding must turn it upright."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    image.save(path, format="JPEG", exif=exif, quality=90)
    return path


def test_the_served_model_feeds_the_net_what_training_fed_it(checkpoint, tmp_path):
    """One file, two paths, the same float tensor bit for bit: the deform stage's pixels through
    the training loop's `inputs`, and the logged MLflow model's own preprocessing."""
    photo = rotated_jpeg(tmp_path / "photo.jpg")
    meta = torch.load(checkpoint, weights_only=True)

    clean, _ = prepare_image((str(photo), "photo", False), SIDE, tiny_params().deform)
    trained_on = batches.inputs(torch.from_numpy(clean)[None], Normalize(meta["mean"], meta["std"]))

    root = tmp_path / "store"
    run = logged_run(root, checkpoint, 0.5)
    served = pyfunc.load(f"runs:/{run.run_id}/model", root).unwrap_python_model().classifier
    served_input = served.inputs(served.pixels(photo.read_bytes())[None])

    assert clean.shape == (3, SIDE, SIDE)
    assert torch.equal(served_input, trained_on)
    upright = Image.open(photo).transpose(Image.Transpose.ROTATE_270)  # what EXIF asks for
    assert upright.size == (60, 90)  # the rotation is in play: a portrait, not the stored landscape


def test_the_classifier_gives_probabilities_per_breed(checkpoint, tmp_path):
    classifier = Classifier.from_checkpoint(checkpoint)
    photo = rotated_jpeg(tmp_path / "photo.jpg")
    probs = classifier.probabilities([photo.read_bytes(), encoded(fmt="WEBP")])
    assert probs.shape == (2, len(BREEDS))
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)
    top = classifier.top(photo.read_bytes())
    assert [b for b, _ in top] == [BREEDS[i] for i in probs[0].argsort(descending=True)[:3]]


def test_a_checkpoint_without_metadata_is_named(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="bare.pt: checkpoint lacks arch"):
        Classifier.from_checkpoint(path)


# ----------------------------------------------------------------------------- MLflow model


def test_pyfunc_model_takes_image_bytes_and_returns_one_column_per_breed(
    tmp_path, checkpoint, capfd
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = logged_run(tmp_path, checkpoint, val_acc=0.5)
    # predict's DataFrame hint: MLflow keeps the logged signature and does not ask for hints
    assert not [w for w in caught if "type hints to the `predict`" in str(w.message)]
    # logged from code (mlflow_model.py), not as a pickled object: no CloudPickle warning
    assert "CloudPickle" not in capfd.readouterr().err
    model = pyfunc.load(f"runs:/{run.run_id}/model", tmp_path)

    inputs = model.metadata.get_input_schema().to_dict()
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    assert model.metadata.get_output_schema().input_names() == BREEDS
    assert model.metadata.saved_input_example_info is not None  # an input example is stored

    images = [encoded((200, 30, 40)), encoded((10, 90, 200), fmt="JPEG")]
    out = model.predict(pd.DataFrame({"image": images}))
    assert list(out.columns) == BREEDS and len(out) == 2
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)
    direct = Classifier.from_checkpoint(checkpoint).probabilities(images).numpy()
    assert np.allclose(out.to_numpy(), direct, atol=1e-6)  # the same preprocessing and net

    # logged without MLflow's own checks (compat.mlflow_checks_skipped): the example still
    # serves and the requirements are the installed pins (tests/test_compat.py: the shim)
    assert list(model.predict(model.input_example).columns) == BREEDS
    with store.global_tracking_uri(store.tracking_uri(tmp_path)):
        requirements = mlflow.pyfunc.get_model_dependencies(f"runs:/{run.run_id}/model")
    assert set(pyfunc.pip_requirements()) <= set(Path(requirements).read_text().split())


def test_runs_show_source_dataset_and_the_experiment_opens_on_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "train@cnn-s1")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  deform:\n    cmd: x\n    outs:\n"
        "    - path: data/prepared\n      hash: md5\n      md5: 0123456789abcdef0123.dir\n"
    )
    with tracking.training_run("cnn-s1", tracking.run_tags("cnn", "s1"), tmp_path) as run:
        dataset = lineage.log_prepared_dataset(run, tmp_path / "data/prepared")
    logged = run.client.get_run(run.run_id)
    assert logged.data.tags["mlflow.source.name"] == "train@cnn-s1"
    assert dataset.name == "prepared@0123456789ab"
    [used] = logged.inputs.dataset_inputs
    assert used.dataset.name == "prepared@0123456789ab"
    assert json.loads(used.dataset.source)["dvc_md5"] == "0123456789abcdef0123.dir"
    experiment = run.client.get_experiment_by_name(store.EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_passwords_in_a_tracking_uri_never_reach_the_log():
    uri = "postgresql+psycopg2://mlflow:s3cret@db.example:5432/mlflow"
    assert redact(uri) == "postgresql+psycopg2://mlflow:***@db.example:5432/mlflow"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


# ----------------------------------------------------------------------------- registry


def candidate(run, val_acc: float, name: str, arch: str = "cnn") -> registry.Candidate:
    return registry.Candidate(arch, name, run.run_id, val_acc, order=0)


def test_the_best_val_acc_becomes_champion_once(tmp_path):
    weak = logged_run(tmp_path, write_checkpoint(tmp_path / "a.pt", 1), 0.4, "cnn-a")
    strong = logged_run(tmp_path, write_checkpoint(tmp_path / "b.pt", 2), 0.6, "cnn-b")
    found = [candidate(weak, 0.4, "cnn-a"), candidate(strong, 0.6, "cnn-b")]
    champion = registry.register(registry.choose(found)["cnn"], tmp_path)
    assert (champion.name, champion.version, champion.run_id) == (
        "dogbreeds-cnn",
        "1",
        strong.run_id,
    )
    assert champion.val_acc == 0.6
    again = registry.register(registry.choose(found)["cnn"], tmp_path)
    assert again.version == "1"  # nothing new: no new version

    better = logged_run(tmp_path, write_checkpoint(tmp_path / "c.pt", 3), 0.7, "cnn-c")
    found.append(candidate(better, 0.7, "cnn-c"))
    assert registry.register(registry.choose(found)["cnn"], tmp_path).version == "2"
    model = pyfunc.load(champion.uri, tmp_path)
    assert model.metadata.run_id == better.run_id != weak.run_id


def test_champions_come_from_the_outputs_and_ties_go_to_params_order(tmp_path):
    params = tiny_params()  # archs x schedules x seeds of the tiny study
    names = [
        run_name(a, s, n) for a in params.train.archs for s in params.train.schedules
        for n in params.train.seeds
    ]  # fmt: skip
    for i, name in enumerate(names):  # every run ties at 0.5 but the ones named "best"
        write_json(tmp_path / f"{name}.json", {"mlflow_run_id": f"id-{i}", "val_acc": 0.5})
    found = registry.candidates(params, tmp_path)
    assert [c.run_name for c in found] == names
    chosen = registry.choose(list(reversed(found)))  # another order of arrival: same champions
    assert chosen == registry.choose(found)
    assert {a: c.run_name for a, c in chosen.items()} == {
        a: next(n for n in names if n.startswith(f"{a}-")) for a in params.train.archs
    }
    (tmp_path / f"{names[0]}.json").write_text("{}")
    with pytest.raises(registry.RegistryError, match=f"{names[0]}.json: no mlflow_run_id"):
        registry.candidates(params, tmp_path)


def test_a_run_without_a_logged_model_is_refused_by_name(tmp_path):
    with tracking.training_run("cnn-x", tracking.run_tags("cnn", "s1"), tmp_path) as run:
        run.log_metrics({"val_acc": 0.5})
    with pytest.raises(registry.RegistryError, match="has no logged model"):
        registry.register(candidate(run, 0.5, "cnn-x"), tmp_path)


# ----------------------------------------------------------------------------- predict


def test_predict_prints_top3_and_a_bad_image_fails_alone(tmp_path, checkpoint, capsys):
    good, bad, missing = tmp_path / "dog.webp", tmp_path / "bad.jpg", tmp_path / "none.png"
    good.write_bytes(encoded(fmt="WEBP"))
    bad.write_bytes(b"not an image")
    status = predict_main([str(bad), str(good), str(missing), "--model", str(checkpoint)])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0] == f"{bad}: error: not an image Pillow can decode"
    assert lines[1].startswith(f"{good}: ") and len(lines[1].split(", ")) == 3
    assert lines[2] == f"{missing}: error: No such file or directory"
    assert predict_main([str(good), "--model", str(checkpoint)]) == 0


def test_predict_from_the_registry_matches_the_checkpoint(
    tmp_path, checkpoint, monkeypatch, capsys
):
    (tmp_path / ".dvc").mkdir()  # the store is found at the repository root, as in the study
    monkeypatch.chdir(tmp_path)
    run = logged_run(tmp_path, checkpoint, 0.5)
    registry.register(candidate(run, 0.5, "cnn-s1"), tmp_path)
    good = tmp_path / "dog.png"
    good.write_bytes(encoded())
    assert predict_main([str(good), "--model", "models:/dogbreeds-cnn@champion"]) == 0
    assert predict_main([str(good), "--model", str(checkpoint)]) == 0
    from_registry, from_checkpoint = capsys.readouterr().out.splitlines()
    assert from_registry == from_checkpoint


def test_predict_without_a_model_says_so(tmp_path, capsys):
    assert predict_main([str(tmp_path / "x.png"), "--model", str(tmp_path / "none.pt")]) == 2
    assert "none.pt: not found" in capsys.readouterr().err


def test_predict_runs_as_a_module(tmp_path, checkpoint):
    import subprocess
    import sys

    good = tmp_path / "dog.png"
    good.write_bytes(encoded())
    proc = subprocess.run(
        [sys.executable, "-m", "dogbreeds", "predict", str(good), "--model", str(checkpoint)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{good}: ")
