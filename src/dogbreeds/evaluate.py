"""Evaluation of a trained net: the paper's test numbers, robustness and per-breed errors.

The paper scores its nets on a randomly *deformed* test set; we score that one (the number
beside the paper's) and the same images undeformed, so the cost of the deformations shows.
`run_evaluation` is what `stages/evaluate.py` calls: it writes the scores as JSON, every test
image's predicted class (clean and deformed) as CSV for the report's paired tests, the
accuracy on every robustness set (`dogbreeds.robustness`) as `<run>-robustness.json`, the
confusion matrix as DVC's confusion-template JSON and as a PNG, and logs the test metrics into
the MLflow run that trained the net.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch

from dogbreeds import DogbreedsError, registry, tracking
from dogbreeds.checkpoint import load_checkpoint
from dogbreeds.engine import (
    AMP_DTYPES,
    Normalize,
    configure_device,
    predict,
    prepare_model,
    resolve_amp,
    resolve_device,
    score,
)
from dogbreeds.fsutil import atomic_path, write_json
from dogbreeds.params import Params, run_name, select_run
from dogbreeds.plots import plot_confusion
from dogbreeds.prepared import load_split, robustness_file

log = logging.getLogger(__name__)


class EvaluationError(DogbreedsError):
    """A split or metrics file does not fit the checkpoint being evaluated."""


# Metric name prefix -> prepared split file: what the paper reports first.
SPLITS = {"test": "test.pt", "clean_test": "test_clean.pt", "val": "val.pt"}


def confusion_matrix(
    labels: torch.Tensor, predicted: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts (C, C): row = actual class, column = predicted class."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor, breeds: list[str]) -> dict[str, float]:
    """Recall per breed: the fraction of its test images classified as that breed."""
    totals = confusion.sum(dim=1).clamp_min(1)
    return {breed: (confusion[i, i] / totals[i]).item() for i, breed in enumerate(breeds)}


def confusion_records(
    labels: torch.Tensor, predicted: torch.Tensor, breeds: list[str]
) -> list[dict[str, str]]:
    """One {"actual", "predicted"} record per image: the input of DVC's confusion template."""
    return [
        {"actual": breeds[a], "predicted": breeds[p]}
        for a, p in zip(labels.tolist(), predicted.tolist(), strict=True)
    ]


def predict_split(
    model: torch.nn.Module,
    path: Path,
    breeds: list[str],
    normalize: Normalize,
    batch_size: int,
    amp: str = "off",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and labels of one prepared split, checked against the net's breeds."""
    split = load_split(path)
    if split.breeds != breeds:
        raise EvaluationError(
            f"{path}: breeds {split.breeds} differ from the checkpoint's {breeds}: "
            "rerun the pipeline (dvc repro)"
        )
    device = normalize.mean.device
    log_probs = predict(model, split.images.to(device), normalize, batch_size, AMP_DTYPES[amp])
    return log_probs, split.labels.to(device)


PREDICTION_COLUMNS = ("id", "label", "test", "clean_test")  # label and predicted class indices


def write_predictions(
    path: Path, ids: list[str], labels: torch.Tensor, predicted: dict[str, torch.Tensor]
) -> None:
    """One row per test image: its id, its label and the class predicted on the deformed
    (`test`) and clean (`clean_test`) image. Two nets' rows pair up by id for McNemar's test."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        columns = [labels.tolist(), predicted["test"].tolist(), predicted["clean_test"].tolist()]
        writer.writerows([image_id, *row] for image_id, *row in zip(ids, *columns, strict=True))


def robustness_curves(
    params: Params,
    model: torch.nn.Module,
    breeds: list[str],
    normalize: Normalize,
    folder: Path,
    amp: str = "off",
) -> dict[str, dict[str, float]]:
    """Test accuracy on every robustness set: {kind: {strength: acc}} (strengths as "%g")."""
    curves: dict[str, dict[str, float]] = {}
    for kind in params.robustness.kinds:
        curves[kind] = {}
        for strength in params.robustness.strengths:
            path = folder / robustness_file(kind, strength)
            log_probs, labels = predict_split(
                model, path, breeds, normalize, params.train.batch_size, amp
            )
            curves[kind][f"{strength:g}"] = score(log_probs, labels)[1]
    return curves


def trained_run_id(train_metrics: Path) -> str:
    """The MLflow run id that the train stage stored in its metrics JSON."""
    try:
        return json.loads(train_metrics.read_text())["mlflow_run_id"]
    except (OSError, ValueError, KeyError):
        raise EvaluationError(
            f"{train_metrics}: no 'mlflow_run_id' (run the train stage first)"
        ) from None


def run_evaluation(
    params: Params,
    arch: str,
    schedule_name: str,
    seed: int,
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    train_metrics_dir: Path = Path("metrics/train"),
    metrics_dir: Path = Path("metrics/eval"),
    robustness_dir: Path = Path("data/robustness"),
) -> dict:
    """Score one trained net on test (deformed), clean test and val; write scores and
    predictions; log MLflow.

    Returns the scores JSON's content.
    """
    select_run(params, arch, schedule_name, seed)
    name = run_name(arch, schedule_name, seed)
    device = resolve_device(params.train.device)
    configure_device(device)
    amp = resolve_amp(params.train.amp, device, arch)  # the precision training used here
    model, meta = load_checkpoint(models_dir / f"{name}.pt", device)
    model = prepare_model(model, device)
    normalize = Normalize(meta["mean"], meta["std"], device)
    breeds = meta["breeds"]

    outputs = {
        prefix: predict_split(
            model, prepared / filename, breeds, normalize, params.train.batch_size, amp
        )
        for prefix, filename in SPLITS.items()
    }
    results: dict = {}
    for prefix, (log_probs, labels) in outputs.items():
        results[f"{prefix}_loss"], results[f"{prefix}_acc"] = score(log_probs, labels)
    log_probs, labels = outputs["test"]  # the paper's test set: where per-breed errors are read
    test_labels, predicted = labels.cpu(), log_probs.argmax(dim=1).cpu()
    confusion = confusion_matrix(test_labels, predicted, len(breeds))
    results["per_class_test_acc"] = per_class_accuracy(confusion, breeds)
    log.info(
        "%s: test acc %.4f (deformed), %.4f (clean); val acc %.4f",
        name,
        results["test_acc"],
        results["clean_test_acc"],
        results["val_acc"],
    )

    curves = robustness_curves(params, model, breeds, normalize, robustness_dir, amp)

    trained_in = trained_run_id(train_metrics_dir / f"{name}.json")
    tags = {**tracking.run_tags(arch, schedule_name), "seed": str(seed)}
    run = tracking.resume_run(trained_in, name, tags)
    results["mlflow_run_id"] = run.run_id

    clean_log_probs, clean_labels = outputs["clean_test"]
    if not torch.equal(clean_labels.cpu(), test_labels):
        raise EvaluationError(
            f"{prepared / SPLITS['clean_test']}: labels differ from {prepared / SPLITS['test']}"
            " (rerun the deform stage: dvc repro deform)"
        )
    predicted_by_split = {"test": predicted, "clean_test": clean_log_probs.argmax(dim=1).cpu()}
    test_ids = load_split(prepared / SPLITS["test"]).ids
    write_predictions(
        metrics_dir / f"{name}-predictions.csv", test_ids, test_labels, predicted_by_split
    )

    confusion_json = metrics_dir / f"{name}-confusion.json"
    confusion_png = metrics_dir / f"{name}-confusion.png"
    write_json(confusion_json, confusion_records(test_labels, predicted, breeds))
    with atomic_path(confusion_png) as tmp:
        title = f"{name}: deformed test, acc {results['test_acc']:.4f}"
        plot_confusion(confusion, breeds, tmp, title)
    write_json(metrics_dir / f"{name}.json", results)
    write_json(metrics_dir / f"{name}-robustness.json", curves)

    # test metrics only: val_* would clash with the training's per-epoch series of that name
    flat = {k: v for k, v in results.items() if k.startswith(("test_", "clean_test_"))}
    flat.update({f"test_acc_{b}": acc for b, acc in results["per_class_test_acc"].items()})
    run.log_metrics(flat)
    for kind, curve in curves.items():  # one series per kind; step = strength x 100
        for strength, acc in curve.items():
            run.log_metrics({f"robust_acc_{kind}": acc}, step=round(float(strength) * 100))
    run.log_artifact(confusion_png)
    run.log_artifact(confusion_json)
    registry.register_champion(arch)  # dogbreeds-<arch>@champion: the best val_acc so far
    return results
