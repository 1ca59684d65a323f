"""One run set-up: where a run computes, in which precision, with which DeformConv kernels, and
its net, decided once from params for the train, evaluate and offsets stages, `quickstudy` and
`bench`, so none of them can decide it differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dogbreeds.nets.models import build_model
from dogbreeds.ops.deform_conv import default_backend
from dogbreeds.params import Params
from dogbreeds.training.checkpoint import load_checkpoint
from dogbreeds.training.devices import (
    AMP_DTYPES,
    configure_device,
    prepare_model,
    resolve_amp,
    resolve_device,
    runtime,
)


@dataclass(frozen=True)
class RunSetup:
    """What a run of one net computes on: the results depend on each field."""

    arch: str
    device: torch.device
    amp: str  # off | bf16 | fp16: the autocast precision (devices.resolve_amp)
    backend: str  # the DeformConv backend; "auto" stays for nets without DeformConv

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for float32."""
        return AMP_DTYPES[self.amp]

    def runtime(self) -> dict[str, str]:
        """What the run ran on, for the metrics JSON and MLflow (devices.runtime)."""
        deformable = self.arch == "deformable"
        return runtime(self.device, self.amp, self.backend if deformable else None)

    def new_model(
        self,
        num_classes: int,
        width_mult: float,
        seed: int,
        memory_format: str = "channels_last",
    ) -> nn.Module:
        """The net with its initial weights drawn from `seed`, on the device in its layout."""
        torch.manual_seed(seed)  # the initial weights
        model = build_model(
            self.arch, num_classes=num_classes, width_mult=width_mult, deform_backend=self.backend
        )
        return prepare_model(model, self.device, memory_format)

    def load_model(self, checkpoint: Path) -> tuple[nn.Module, dict]:
        """A trained net (in eval mode) and its checkpoint's metadata, on the device in the
        training's layout."""
        model, meta = load_checkpoint(checkpoint, self.device)
        return prepare_model(model, self.device), meta


def set_up_run(params: Params, arch: str) -> RunSetup:
    """The set-up params ask for: train.device (and the process-wide settings for it),
    train.amp for this net on this device, and model.deformable.backend resolved for it."""
    device = resolve_device(params.train.device)
    configure_device(device)
    amp = resolve_amp(params.train.amp, device, arch)
    backend = params.model.deformable.backend
    if backend == "auto" and arch == "deformable":  # only it has DeformConv layers to build
        backend = default_backend(device)
    return RunSetup(arch, device, amp, backend)
