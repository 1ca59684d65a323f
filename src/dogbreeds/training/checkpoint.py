"""Checkpoint IO: a trained net's weights with the metadata needed to rebuild and use it.

A checkpoint is plain tensors, numbers, strings and lists, so `torch.load(weights_only=True)`
reads it, and it is loaded onto the CPU first: a net trained on a GPU loads on any machine.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path, unreadable
from dogbreeds.nets.models import build_model


class CheckpointError(DogbreedsError):
    """A checkpoint that is missing, unreadable or lacks the metadata a net is rebuilt from."""


# What a checkpoint must hold besides the weights (written by `save_checkpoint` in training).
REQUIRED_KEYS = (
    "state_dict", "arch", "width_mult", "resolution", "deform_backend", "breeds", "mean", "std",
)  # fmt: skip


def save_checkpoint(path: Path, model: nn.Module, meta: dict) -> None:
    """Atomically save the weights (on the CPU) with plain metadata (arch, breeds, mean, ...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's dict (weights and metadata) on the CPU, checked for the needed keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (run the train stage first: dvc repro)")
    restore = (
        f"restore DVC's copy with `dvc checkout --force {path}` (or delete it and run dvc repro)"
    )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(
            f"{path}: truncated or not a dogbreeds checkpoint ({unreadable(exc)}); {restore}"
        ) from None
    if not isinstance(blob, dict):
        raise CheckpointError(
            f"{path}: not a dogbreeds checkpoint (holds {type(blob).__name__}); {restore}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in blob]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return blob


def load_checkpoint(
    path: Path, device: torch.device, deform_backend: str | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a net from a checkpoint's metadata and load its weights, in eval mode.

    deform_backend overrides the backend the net was trained with (all backends share one
    state_dict), e.g. to evaluate a GPU-trained net on a CPU.
    """
    blob = read_checkpoint(path)
    model = build_model(
        blob["arch"],
        num_classes=len(blob["breeds"]),
        width_mult=blob["width_mult"],
        deform_backend=deform_backend or blob["deform_backend"],
    )
    model.load_state_dict(blob.pop("state_dict"))
    return model.to(device).eval(), blob
