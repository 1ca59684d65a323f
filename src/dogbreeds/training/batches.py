"""Batches: one epoch's shuffled order and augmentation maps, drawn once, applied on the device.

The prepared uint8 tensors stay on the device and batches are augmented there (random crop and
flip as one affine map per image, a single `grid_sample`), so on a GPU the data path is a few
tensor ops per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dogbreeds.data.preprocess import Normalize, to_unit


def augment_thetas(
    n: int, generator: torch.Generator, hflip: bool, crop_scale: float
) -> torch.Tensor | None:
    """One random flip-and-crop affine map per image, (n, 2, 3), or None when both are off.

    The crop keeps a side fraction s ~ U[crop_scale, 1] at a uniform position inside the image;
    a flip negates x. Each maps output coords to input coords, both in [-1, 1] (`affine_grid`).
    Drawn from a CPU generator for a whole epoch at once, so the random stream is the same on
    every device and reaches a GPU in one copy.
    """
    if not hflip and crop_scale >= 1:
        return None
    side = crop_scale + (1 - crop_scale) * torch.rand(n, generator=generator)  # (n,)
    shift = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)  # (n, 2)
    flip = torch.ones(n)
    if hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side * flip
    theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    return theta


def augment(x: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    """Apply per-image affine maps (B, 2, 3) in a single `grid_sample` (border padding)."""
    if theta is None:
        return x
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class Batch:
    """The indices of one batch and their augmentation maps, already on the device."""

    index: torch.Tensor  # (B,) int64
    theta: torch.Tensor | None  # (B, 2, 3) float32, or None without augmentation


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy that does not block the CPU (pinned memory on CUDA)."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)


def epoch_plan(
    n: int, batch_size: int, generator: torch.Generator, augment_params, device: torch.device
) -> list[Batch]:
    """One epoch's shuffled batches and augmentation maps, drawn once and copied once.

    The permutation comes first, then the maps of all n images in batch order. A trailing
    batch of a single image is dropped: BatchNorm cannot normalise one sample.
    """
    order = torch.randperm(n, generator=generator)
    theta = augment_thetas(n, generator, augment_params.hflip, augment_params.crop_scale)
    order = to_device(order, device)
    theta = None if theta is None else to_device(theta, device)
    plan = []
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        plan.append(Batch(index, None if theta is None else theta[start : start + batch_size]))
    if len(plan) > 1 and len(plan[-1].index) == 1:
        plan.pop()
    return plan


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches `epoch_plan` yields for n images."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or full == 0 else 0)


def inputs(images: torch.Tensor, normalize: Normalize, theta=None) -> torch.Tensor:
    """uint8 batch -> the net's float input: augmented, normalised, channels_last."""
    x = normalize(augment(to_unit(images), theta))
    return x.contiguous(memory_format=torch.channels_last)
