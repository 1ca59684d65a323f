"""The evaluate stage: score one trained net, write what DVC tracks, log it to MLflow.

The paper scores its nets on a randomly *deformed* test set; we score that one (the number
beside the paper's) and the same images undeformed, so the cost of the deformations shows.
`run_evaluation` is what `stages/evaluate.py` calls: it writes the scores as JSON (with the
confusion matrix), every test image's predicted class (clean and deformed) as CSV for the
report's paired tests, the accuracy on every robustness set (`dogbreeds.data.robustness`) as
`<run>-robustness.json` and DVC's confusion-template JSON, and logs the test metrics into the
MLflow run that trained the net, linked to the model it logged. The scores themselves come from
`dogbreeds.analysis.scores`.

It draws no figure (the report stage draws the confusion matrices, so restyling a figure
reruns no evaluation) and registers no model: choosing a champion is a deliberate step over all
of a study's evaluations (`python -m dogbreeds register`), not a side effect of whichever
evaluation happens to finish last.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch

from dogbreeds.analysis.scores import (
    EvaluationError,
    Predictions,
    confusion_matrix,
    confusion_records,
    per_class_accuracy,
    predict_split,
    robustness_curves,
)
from dogbreeds.common import timeline
from dogbreeds.common.fs import atomic_path, write_json
from dogbreeds.data.preprocess import Normalize
from dogbreeds.params import Params, run_name, select_run
from dogbreeds.tracking import runs as tracking
from dogbreeds.training.loop import score
from dogbreeds.training.setup import set_up_run

log = logging.getLogger(__name__)


# Metric name prefix -> prepared split file: what the paper reports first.
SPLITS = {"test": "test.pt", "clean_test": "test_clean.pt", "val": "val.pt"}


PREDICTION_COLUMNS = ("id", "label", "test", "clean_test")  # label and predicted class indices
PREDICTED = PREDICTION_COLUMNS[2:]  # the splits whose predicted classes are kept per image


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
    setup = set_up_run(params, arch)  # the device and precision training used here
    model, meta = setup.load_model(models_dir / f"{name}.pt")
    normalize = Normalize(meta["mean"], meta["std"], setup.device)
    breeds = meta["breeds"]

    batch = params.train.eval_batch_size
    outputs = {
        prefix: predict_split(model, prepared / file, breeds, normalize, batch, setup.amp)
        for prefix, file in SPLITS.items()
    }
    check_same_images(outputs, prepared)
    results, confusion = score_splits(outputs, breeds)
    log.info(
        "%s: test acc %.4f (deformed), %.4f (clean); val acc %.4f",
        name, results["test_acc"], results["clean_test_acc"], results["val_acc"],
    )  # fmt: skip
    curves = robustness_curves(params, model, breeds, normalize, robustness_dir, setup.amp)
    timeline.mark("last_step")  # the last batch: what follows is the stage's fixed cost

    trained_in = trained_run_id(train_metrics_dir / f"{name}.json")
    tags = {**tracking.run_tags(arch, schedule_name), "seed": str(seed)}
    run = tracking.resume_run(trained_in, name, tags)
    results["mlflow_run_id"] = run.run_id
    results["confusion"] = confusion.tolist()  # rows: actual breed, columns: predicted
    confusion_json = write_evaluation(metrics_dir, name, outputs, results, curves, breeds)
    log_evaluation(run, results, curves, confusion_json)
    return results


def check_same_images(outputs: dict[str, Predictions], prepared: Path) -> None:
    """The clean test set must hold the deformed one's images, in its order, before either
    is deformed: the labels (and so the per-image predictions file) line up."""
    if not torch.equal(outputs["clean_test"].labels.cpu(), outputs["test"].labels.cpu()):
        raise EvaluationError(
            f"{prepared / SPLITS['clean_test']}: labels differ from {prepared / SPLITS['test']}"
            " (rerun the deform stage: dvc repro deform)"
        )


def score_splits(outputs: dict[str, Predictions], breeds: list[str]) -> tuple[dict, torch.Tensor]:
    """Loss and accuracy per split, and per breed on the paper's test set (deformed): where
    per-breed errors are read. Returns the scores and that test set's confusion matrix."""
    results: dict = {}
    for prefix, out in outputs.items():
        results[f"{prefix}_loss"], results[f"{prefix}_acc"] = score(out.log_probs, out.labels)
    test = outputs["test"]
    predicted = test.log_probs.argmax(dim=1).cpu()
    confusion = confusion_matrix(test.labels.cpu(), predicted, len(breeds))
    results["per_class_test_acc"] = per_class_accuracy(confusion, breeds)
    return results, confusion


def write_evaluation(
    metrics_dir: Path,
    name: str,
    outputs: dict[str, Predictions],
    results: dict,
    curves: dict,
    breeds: list[str],
) -> Path:
    """What DVC tracks: the per-image predictions, the confusion records, the scores and the
    robustness curves. Returns the confusion records' path (MLflow keeps it too)."""
    test = outputs["test"]
    labels = test.labels.cpu()
    predicted = {split: outputs[split].log_probs.argmax(dim=1).cpu() for split in PREDICTED}
    write_predictions(metrics_dir / f"{name}-predictions.csv", test.ids, labels, predicted)
    confusion_json = metrics_dir / f"{name}-confusion.json"
    write_json(confusion_json, confusion_records(labels, predicted["test"], breeds))
    write_json(metrics_dir / f"{name}.json", results)
    write_json(metrics_dir / f"{name}-robustness.json", curves)
    return confusion_json


def log_evaluation(run: tracking.Run, results: dict, curves: dict, confusion_json: Path) -> None:
    """The test scores into the training's MLflow run, linked to its logged model, the
    robustness curves as series, and the confusion records."""
    # test metrics only: val_* would clash with the training's per-epoch series of that name
    flat = {k: v for k, v in results.items() if k.startswith(("test_", "clean_test_"))}
    flat.update({f"test_acc_{b}": acc for b, acc in results["per_class_test_acc"].items()})
    # ... linked to the net's logged model too, so MLflow ranks models by them
    # (`search_logged_models(order_by=...)`, `register --rank-by test_acc`)
    run.log_metrics(flat, model_id=run.logged_model_id())
    run.log_steps(  # one series per kind; step = strength x 100
        (round(float(strength) * 100), {f"robust_acc_{kind}": acc})
        for kind, curve in curves.items()
        for strength, acc in curve.items()
    )
    run.log_artifact(confusion_json)
