"""Checkpoint IO: a trained net's weights with the metadata needed to rebuild and use it.

A checkpoint is plain tensors, numbers, strings and lists, so `torch.load(weights_only=True)`
reads it, and it is loaded onto the CPU first: a net trained on a GPU loads on any machine.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dogbreeds import DogbreedsError
from dogbreeds.fsutil import atomic_path
from dogbreeds.models import build_model


class CheckpointError(DogbreedsError):
    """A checkpoint is missing or unreadable; the message names it."""


def save_checkpoint(path: Path, model: nn.Module, meta: dict) -> None:
    """Atomically save the weights (on the CPU) with plain metadata (arch, breeds, mean, ...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)


def load_checkpoint(
    path: Path, device: torch.device, deform_backend: str | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a net from a checkpoint's metadata and load its weights, in eval mode.

    deform_backend overrides the backend the net was trained with (all backends share one
    state_dict), e.g. to evaluate a GPU-trained net on a CPU.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: not found (run the train stage first)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(
        blob["arch"],
        num_classes=len(blob["breeds"]),
        width_mult=blob["width_mult"],
        deform_backend=deform_backend or blob["deform_backend"],
    )
    model.load_state_dict(blob.pop("state_dict"))
    return model.to(device).eval(), blob
