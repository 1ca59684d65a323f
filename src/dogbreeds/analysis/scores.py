"""Scores of a trained net on prepared splits: loss and accuracy, per-breed recall, confusion.

Pure torch on tensors and prepared files; `dogbreeds.pipeline.evaluate` (the stage) writes
what these return and logs it to MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from dogbreeds import DogbreedsError
from dogbreeds.data.prepared import load_split, robustness_file
from dogbreeds.data.preprocess import Normalize
from dogbreeds.params import Params
from dogbreeds.training.devices import AMP_DTYPES
from dogbreeds.training.loop import predict, score


class EvaluationError(DogbreedsError):
    """A split or metrics file does not fit the checkpoint being evaluated."""


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


class Predictions(NamedTuple):
    """A net's log-probabilities on one prepared split, with the split's labels and image ids."""

    log_probs: torch.Tensor
    labels: torch.Tensor
    ids: list[str]


def predict_split(
    model: torch.nn.Module,
    path: Path,
    breeds: list[str],
    normalize: Normalize,
    batch_size: int,
    amp: str = "off",
) -> Predictions:
    """The net's predictions on one prepared split, checked against the net's breeds."""
    split = load_split(path)
    if split.breeds != breeds:
        raise EvaluationError(
            f"{path}: breeds {split.breeds} differ from the checkpoint's {breeds}: "
            "rerun the pipeline (dvc repro)"
        )
    device = normalize.mean.device
    log_probs = predict(model, split.images.to(device), normalize, batch_size, AMP_DTYPES[amp])
    return Predictions(log_probs, split.labels.to(device), split.ids)


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
            out = predict_split(model, path, breeds, normalize, params.train.eval_batch_size, amp)
            curves[kind][f"{strength:g}"] = score(out.log_probs, out.labels)[1]
    return curves
