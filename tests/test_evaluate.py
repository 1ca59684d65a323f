"""Evaluation on a net whose predictions we know, and its MLflow bookkeeping."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from datagen import tiny_params

from dogbreeds.analysis import scores
from dogbreeds.common.fs import write_json
from dogbreeds.data.prepared import load_split
from dogbreeds.data.robustness import make_robustness_sets
from dogbreeds.nets.models import build_model
from dogbreeds.pipeline import evaluate
from dogbreeds.tracking import runs as tracking
from dogbreeds.training.checkpoint import CheckpointError, save_checkpoint

BIASED_CLASS = 2  # the constant net below always predicts this breed
# Two kinds at two strengths keep the robustness sets small.
PARAMS = tiny_params(**{"robustness.kinds": ["elastic", "all"], "robustness.strengths": [0, 1]})


def constant_net_checkpoint(path: Path, breeds: list[str]) -> torch.Tensor:
    """A cnn whose head ignores its input: log_softmax(bias) for every image, argmax BIASED_CLASS.

    Returns the log-probabilities it gives every image.
    """
    model = build_model("cnn", num_classes=len(breeds), width_mult=0.25)
    bias = torch.linspace(0, 1, len(breeds))
    bias[BIASED_CLASS] = 2.0
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(bias)
    meta = {
        "arch": "cnn",
        "schedule": "tiny",
        "width_mult": 0.25,
        "resolution": 16,
        "deform_backend": "auto",
        "breeds": breeds,
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
        "history": [],
    }
    save_checkpoint(path, model, meta)
    return torch.log_softmax(bias, dim=0)


@pytest.fixture
def evaluated(prepared, tmp_path, monkeypatch):
    """Evaluate the constant net in tmp_path (a DVC repo root with its own MLflow store)."""
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    breeds = load_split(prepared / "test.pt").breeds
    log_probs = constant_net_checkpoint(tmp_path / "models" / "cnn-tiny-0.pt", breeds)
    run = tracking.start_run("cnn-tiny-0", {"arch": "cnn"})
    write_json(tmp_path / "metrics/train/cnn-tiny-0.json", {"mlflow_run_id": run.run_id})

    robustness = PARAMS.robustness
    make_robustness_sets(PARAMS.deform, robustness.kinds, robustness.strengths, prepared)

    def evaluate_now() -> dict:
        return evaluate.run_evaluation(
            PARAMS, "cnn", "tiny", 0, prepared=prepared, models_dir=tmp_path / "models"
        )

    return evaluate_now, run, log_probs, breeds


def test_a_known_net_scores_as_expected(evaluated, tmp_path):
    evaluate_now, run, log_probs, breeds = evaluated
    results = evaluate_now()

    labels = load_split(tmp_path / "data/prepared/test.pt").labels
    expected_loss = -log_probs[labels].mean().item()
    expected_acc = (labels == BIASED_CLASS).double().mean().item()  # 1 / 7 here
    for prefix in ("test", "clean_test", "val"):
        assert results[f"{prefix}_loss"] == pytest.approx(expected_loss, rel=1e-5)
        assert results[f"{prefix}_acc"] == pytest.approx(expected_acc)
    assert results["per_class_test_acc"] == {
        b: float(i == BIASED_CLASS) for i, b in enumerate(breeds)
    }

    on_disk = json.loads((tmp_path / "metrics/eval/cnn-tiny-0.json").read_text())
    assert on_disk == results and on_disk["mlflow_run_id"] == run.run_id
    confusion = json.loads((tmp_path / "metrics/eval/cnn-tiny-0-confusion.json").read_text())
    assert len(confusion) == len(labels)
    assert {r["predicted"] for r in confusion} == {breeds[BIASED_CLASS]}
    assert [r["actual"] for r in confusion] == [breeds[i] for i in labels]
    predicted_counts = [sum(column) for column in zip(*on_disk["confusion"], strict=True)]
    assert predicted_counts == [len(labels) * (i == BIASED_CLASS) for i in range(len(breeds))]
    assert not list((tmp_path / "metrics/eval").glob("*.png"))  # figures are the report's

    with (tmp_path / "metrics/eval/cnn-tiny-0-predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == load_split(tmp_path / "data/prepared/test.pt").ids
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert {int(r["test"]) for r in rows} == {int(r["clean_test"]) for r in rows} == {BIASED_CLASS}

    curves = json.loads((tmp_path / "metrics/eval/cnn-tiny-0-robustness.json").read_text())
    assert curves == {kind: {"0": expected_acc, "1": expected_acc} for kind in ("elastic", "all")}


def test_test_metrics_land_in_the_training_run(evaluated):
    evaluate_now, run, _, breeds = evaluated
    results = evaluate_now()

    logged = run.client.get_run(run.run_id)
    assert logged.data.metrics["test_acc"] == pytest.approx(results["test_acc"])
    assert logged.data.metrics["clean_test_loss"] == pytest.approx(results["clean_test_loss"])
    assert f"test_acc_{breeds[BIASED_CLASS]}" in logged.data.metrics
    curve = run.client.get_metric_history(run.run_id, "robust_acc_elastic")
    assert sorted(m.step for m in curve) == [0, 100]  # step = strength x 100
    artifacts = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert artifacts == {"cnn-tiny-0-confusion.json"}


def test_a_run_missing_from_the_store_gets_a_new_one(evaluated, tmp_path, caplog):
    evaluate_now, run, _, _ = evaluated
    write_json(tmp_path / "metrics/train/cnn-tiny-0.json", {"mlflow_run_id": "0" * 32})
    with caplog.at_level(logging.WARNING):
        results = evaluate_now()

    assert "is not in" in caplog.text
    assert results["mlflow_run_id"] not in (run.run_id, "0" * 32)
    fresh = run.client.get_run(results["mlflow_run_id"])
    assert fresh.info.run_name == "cnn-tiny-0"
    assert fresh.data.tags["trained_in_run"] == "0" * 32
    assert fresh.data.metrics["test_acc"] == pytest.approx(results["test_acc"])


def test_confusion_matrix_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0])
    confusion = scores.confusion_matrix(labels, predicted, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert scores.per_class_accuracy(confusion, ["a", "b", "c"]) == {"a": 0.5, "b": 1.0, "c": 0.0}


def test_missing_checkpoint_names_the_file(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="models/cnn-tiny-0.pt: not found"):
        evaluate.run_evaluation(tiny_params(), "cnn", "tiny", 0, prepared=prepared)
