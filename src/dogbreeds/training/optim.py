"""The optimiser and the one-cycle schedule of one training stage.

Each stage of a schedule gets a fresh Adam with weight decay and a `OneCycleLR` at that stage's
max_lr, stepped every batch. DeformConv's offset convs train at `model.offset_lr_mult` times
the lr, in a second parameter group.
"""

from __future__ import annotations

import torch
from torch import nn

from dogbreeds.nets.models import offset_parameters
from dogbreeds.params import OneCycleParams


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, offset_lr_mult: float
) -> tuple[torch.optim.Adam, list[float]]:
    """Adam over the net, with DeformConv's offset convs in a second group at lr * offset_lr_mult.

    Returns the optimizer and each group's peak lr (what OneCycleLR needs).
    """
    offsets = offset_parameters(model)
    offset_ids = {id(p) for p in offsets}
    groups = [{"params": [p for p in model.parameters() if id(p) not in offset_ids], "lr": lr}]
    if offsets:
        groups.append({"params": offsets, "lr": lr * offset_lr_mult})
    peaks = [group["lr"] for group in groups]
    # One fused kernel for all params, on CPU too: torch's CPU default is a Python loop over the
    # tensors (docs/performance.md; `python -m dogbreeds bench` re-measures the step).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=fused), peaks


def one_cycle(
    optimizer: torch.optim.Optimizer,
    peaks: list[float],
    epochs: int,
    steps: int,
    shape: OneCycleParams,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One cycle over a stage, stepped per batch (params train.one_cycle: PyTorch's defaults).

    Warm-up: lr rises (cosine) from peak/div_factor to peak over pct_start of the steps.
    Anneal:  lr falls (cosine) to that start / final_div_factor at the last step; Adam's beta1
             cycles 0.95-0.85 meanwhile.
    """
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peaks,
        epochs=epochs,
        steps_per_epoch=steps,
        pct_start=shape.pct_start,
        div_factor=shape.div_factor,
        final_div_factor=shape.final_div_factor,
    )
