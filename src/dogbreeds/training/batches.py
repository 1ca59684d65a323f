"""Batches: one epoch's shuffled order and augmentation maps, drawn once, applied on the device.

The prepared uint8 tensors stay on the device and batches are augmented there (random crop,
flip and rotation as one affine map per image, a single `grid_sample`), so on a GPU the data
path is a few tensor ops per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dogbreeds.data.preprocess import Normalize, to_unit
from dogbreeds.params import AugmentParams


def augment_thetas(
    n: int, generator: torch.Generator, augment_params: AugmentParams
) -> torch.Tensor | None:
    """One random crop, flip and rotation per image as an affine map (n, 2, 3), or None when
    all are off.

    Each map sends output coordinates to input coordinates, both in [-1, 1] (`affine_grid`):
    input = side * flip * R(angle) @ output + shift. The crop keeps a side fraction `side`:
    drawn from U[crop_scale, 1] (`zoom`) or fixed at crop_scale (`pad`, the template's
    resize-256-then-crop-224 with its padding: the window may reach `crop_pad` of the side
    beyond each edge, where `augment` reflects the image). The flip negates x with
    probability `hflip`; the rotation turns by U[-rotation, rotation] degrees.

    Drawn from a CPU generator for a whole epoch at once (side, shift, flip, angle: a draw is
    skipped when its part is off, so the default recipe's stream is unchanged), so the random
    stream is the same on every device and reaches a GPU in one copy.
    """
    a = augment_params
    if a.hflip == 0 and a.crop_scale >= 1 and a.rotation == 0:
        return None
    if a.crop == "zoom":
        side = a.crop_scale + (1 - a.crop_scale) * torch.rand(n, generator=generator)  # (n,)
    else:
        side = torch.full((n,), a.crop_scale)
    reach = (1 - side + 2 * a.crop_pad)[:, None]  # how far the window's centre may move
    shift = reach * (2 * torch.rand(n, 2, generator=generator) - 1)  # (n, 2)
    flip = torch.ones(n)
    if a.hflip > 0:
        flip = torch.where(torch.rand(n, generator=generator) < a.hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    if a.rotation > 0:
        angle = torch.deg2rad(a.rotation * (2 * torch.rand(n, generator=generator) - 1))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta[:, 0, 0], theta[:, 0, 1] = side * flip * cos, -side * flip * sin
        theta[:, 1, 0], theta[:, 1, 1] = side * sin, side * cos
    else:
        theta[:, 0, 0] = side * flip
        theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    return theta


def augment(
    x: torch.Tensor,
    theta: torch.Tensor | None,
    padding: str = "border",
    black_corners: bool = False,
) -> torch.Tensor:
    """Apply per-image affine maps (B, 2, 3) in a single `grid_sample`.

    padding: how the image continues beyond its edges (grid_sample's `border` or
    `reflection`). black_corners (the maps rotate): where a rotation turns the crop window's
    corners out of the window, the output is black, as torchvision's RandomRotation fills
    them: a pixel is black when its point before the crop, (input - shift) / side, leaves
    [-1, 1]. A flag from the params, not read off theta, so a GPU step never waits on a sync.
    """
    if theta is None:
        return x
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if black_corners:
        side = theta[:, :, :2].det().abs().sqrt()[:, None, None, None]  # (B, 1, 1, 1)
        window = (grid - theta[:, None, None, :, 2]) / side  # (B, H, W, 2), crop frame
        inside = (window.abs() <= 1 + 1e-6).all(dim=-1)  # (B, H, W)
        out = out * inside[:, None].to(out.dtype)
    return out


def padding_mode(augment_params: AugmentParams) -> str:
    """`reflection` for the pad-and-crop (the template pads by reflecting), else `border`."""
    return "reflection" if augment_params.crop == "pad" else "border"


@dataclass
class Batch:
    """The indices of one batch and their augmentation maps, already on the device."""

    index: torch.Tensor  # (B,) int64
    theta: torch.Tensor | None  # (B, 2, 3) float32, or None without augmentation
    padding: str = "border"  # grid_sample's padding_mode beyond the image's edges
    black_corners: bool = False  # the maps rotate: corners turned out of the window are black


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy that does not block the CPU (pinned memory on CUDA)."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)


def epoch_plan(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    augment_params: AugmentParams,
    device: torch.device,
) -> list[Batch]:
    """One epoch's shuffled batches and augmentation maps, drawn once and copied once.

    The permutation comes first, then the maps of all n images in batch order. A trailing
    batch of a single image is dropped: BatchNorm cannot normalise one sample.
    """
    order = torch.randperm(n, generator=generator)
    theta = augment_thetas(n, generator, augment_params)
    padding = padding_mode(augment_params)
    order = to_device(order, device)
    theta = None if theta is None else to_device(theta, device)
    plan = []
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        part = None if theta is None else theta[start : start + batch_size]
        plan.append(Batch(index, part, padding, augment_params.rotation > 0))
    if len(plan) > 1 and len(plan[-1].index) == 1:
        plan.pop()
    return plan


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches `epoch_plan` yields for n images."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or full == 0 else 0)


def inputs(images: torch.Tensor, normalize: Normalize, batch: Batch | None = None) -> torch.Tensor:
    """uint8 batch -> the net's float input: augmented as `batch` says (none without one),
    normalised. Its memory layout is left as it comes: the net's weights set the layout it
    computes in (`devices.prepare_model`)."""
    x = to_unit(images)
    if batch is not None:
        x = augment(x, batch.theta, batch.padding, batch.black_corners)
    return normalize(x)
