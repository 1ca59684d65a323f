"""The optimiser and the one-cycle schedule of one training stage.

Each stage of a schedule gets a fresh Adam with weight decay and a `OneCycleLR` at that stage's
max_lr, stepped every batch. DeformConv's offset convs train at `model.offset_lr_mult` times
the lr, in a second parameter group.

Without torch.compile, the optimiser never needs `torch._dynamo`, yet torch imports it (about
1.3 s on 2 cores, docs/performance.md "A stage's fixed cost") on the first call of any optimiser
function it wraps in `torch._disable_dynamo`, and in every `Adam.step`, whose wrapper imports it
to insert graph breaks. `compat.skip_dynamo_import` and `EagerAdam` spare a stage that import.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from dogbreeds.compat import adam_step_without_dynamo, skip_dynamo_import
from dogbreeds.nets.models import offset_parameters
from dogbreeds.params import OneCycleParams


class EagerAdam(torch.optim.Adam):
    """torch's Adam, whose step runs the same update without importing torch._dynamo.

    `Adam.step` is wrapped by torch's `_use_grad_for_differentiable`, which imports
    torch._dynamo for two `graph_break()` calls (no-ops outside torch.compile) around the step
    it runs with grad set to `differentiable`; this step does the rest of that wrapper. Where
    the shim finds no such wrapper, it is torch's own step.
    """

    _adam_step = staticmethod(adam_step_without_dynamo() or torch.optim.Adam.step)
    _unwrapped = _adam_step is not torch.optim.Adam.step

    def step(self, closure=None):
        if not self._unwrapped or "torch._dynamo" in sys.modules:  # compiled code: graph breaks
            return super().step(closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return self._adam_step(self, closure)


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
    skip_dynamo_import()
    return EagerAdam(groups, lr=lr, weight_decay=weight_decay, fused=fused), peaks


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
