"""The prepared-split file contract between the deform stage and training/evaluation.

`data/prepared/<split>.pt` holds one split as plain tensors and lists (loadable with
`weights_only=True`): uint8 images (N, 3, R, R), int64 labels (N,), image ids and the breed
names in label order. The deform stage writes these files; train and evaluate read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import unreadable

# File name (without .pt) -> what it holds.
SPLIT_FILES = {
    "train": "training images, clean",
    "val": "validation images, deformed (the paper's val set)",
    "test": "test images, deformed (the paper's test set)",
    "val_clean": "the same validation images, undeformed",
    "test_clean": "the same test images, undeformed",
}


def robustness_file(kind: str, strength: float) -> str:
    """File name of one robustness set (see dogbreeds.data.robustness): the clean test images
    deformed by `kind` at `strength`, in this module's format. e.g. elastic-0.25.pt"""
    return f"{kind}-{strength:g}.pt"


class PreparedDataError(DogbreedsError):
    """A prepared split is missing or malformed; the message names the file."""


@dataclass
class Split:
    """One prepared split: uint8 images (N, 3, R, R), int64 labels (N,), and their names."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    breeds: list[str]

    def to(self, device: torch.device) -> Split:
        """The same split on `device` (one copy of the uint8 tensor, 4x smaller than float)."""
        return Split(self.images.to(device), self.labels.to(device), self.ids, self.breeds)


def save_split(path: Path, split: Split) -> None:
    """Write a split in the format `load_split` reads (the caller makes it atomic)."""
    blob = {"images": split.images, "labels": split.labels, "ids": split.ids}
    torch.save({**blob, "breeds": split.breeds}, path)


def load_split(path: Path) -> Split:
    """Read a prepared split written by the deform stage, checking its shape and types."""
    if not path.exists():
        raise PreparedDataError(f"{path}: not found (run the data stages first: dvc repro deform)")
    restore = (
        f"restore DVC's copy with `dvc checkout --force {path.parent}` (or delete it and run "
        "dvc repro)"
    )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, overwritten or foreign: torch raises many kinds
        raise PreparedDataError(
            f"{path}: truncated or not a prepared split ({unreadable(exc)}); {restore}"
        ) from None
    if not isinstance(blob, dict) or not {"ids", "breeds"} <= blob.keys():
        raise PreparedDataError(f"{path}: not a prepared split (no ids and breeds); {restore}")
    images, labels = blob.get("images"), blob.get("labels")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise PreparedDataError(f"{path}: 'images' must be a uint8 tensor (N, 3, R, R)")
    if images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise PreparedDataError(
            f"{path}: 'images' has shape {tuple(images.shape)}, not (N, 3, R, R)"
        )
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise PreparedDataError(f"{path}: 'labels' must be an int64 tensor with one per image")
    return Split(images, labels.long(), list(blob["ids"]), list(blob["breeds"]))


def load_prepared(folder: Path, resolution: int, names: tuple[str, ...] = ("train", "val")):
    """The named splits of `folder`, checked against params model.resolution."""
    splits = [load_split(folder / f"{name}.pt") for name in names]
    for name, split in zip(names, splits, strict=True):
        if split.images.shape[-1] != resolution:
            raise PreparedDataError(
                f"{folder / (name + '.pt')} holds {split.images.shape[-1]}px images but params "
                f"'model.resolution' is {resolution}: rerun the deform stage (dvc repro)"
            )
    return splits
