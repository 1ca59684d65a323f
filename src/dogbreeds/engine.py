"""The training engine: from uint8 tensors on a device to a trained net and its history.

A schedule is consecutive one-cycle stages and the weights carry over between them. Each stage
is one learning-rate cycle (Smith's one-cycle policy): a fresh Adam with weight decay and a
`OneCycleLR` at that stage's max_lr, stepped every batch, gradient clipping by value, NLL loss
on the net's log-softmax output. After every epoch the net is scored on the (deformed)
validation set. The prepared uint8 tensors stay on the device and batches are augmented there,
so on a GPU the data path is a few tensor ops per step.

Nothing here writes files or talks to MLflow: `dogbreeds.train` (the stage) does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dogbreeds import DogbreedsError
from dogbreeds.history import EpochRecord
from dogbreeds.models import offset_parameters
from dogbreeds.params import OneCycleParams, Schedule, TrainParams
from dogbreeds.prepared import Split
from dogbreeds.progress import RunProgress

log = logging.getLogger(__name__)


class TrainingError(DogbreedsError):
    """A setting training cannot honour (e.g. CUDA asked for but absent); the message names it."""


# ----------------------------------------------------------------------------- data


def channel_stats(images: torch.Tensor, chunk: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (of pixel values in [0, 1]) over a uint8 split.

    Summed in float64 chunks, so a 224-pixel split never needs a float copy of itself.
    """
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


class Normalize:
    """uint8 images -> float inputs (x / 255 - mean) / std, with mean/std kept on the device."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float32 in [0, 1]."""
    return images.float() / 255


def augment(
    x: torch.Tensor, generator: torch.Generator, hflip: bool, crop_scale: float
) -> torch.Tensor:
    """Random horizontal flip and random crop (resized back to full size), per sample.

    Both are one affine map per image, applied in a single `grid_sample`: the crop keeps a side
    fraction s ~ U[crop_scale, 1] at a uniform position inside the image; a flip negates x.
    The random numbers come from a CPU generator, so a run is the same on every device.
    """
    if not hflip and crop_scale >= 1:
        return x
    batch = x.shape[0]
    side = crop_scale + (1 - crop_scale) * torch.rand(batch, generator=generator)  # (B,)
    shift = (1 - side)[:, None] * (2 * torch.rand(batch, 2, generator=generator) - 1)  # (B, 2)
    flip = torch.ones(batch)
    if hflip:
        flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)  # maps output coords to input coords, both in [-1, 1]
    theta[:, 0, 0] = side * flip
    theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches for one epoch.

    A trailing batch of a single image is dropped: BatchNorm cannot normalise one sample.
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches `epoch_batches` yields for n images."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or full == 0 else 0)


# ----------------------------------------------------------------------------- optimisation


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
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay), peaks


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


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full float32 on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_device(name: str) -> torch.device:
    """params train.device: auto (CUDA when available), cpu or cuda."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("params: 'train.device' is cuda, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------- the loop


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, normalize: Normalize, batch_size: int
) -> torch.Tensor:
    """Log-probabilities (N, C) in float32 for uint8 images, in eval mode, batch by batch."""
    model.eval()
    dtype = autocast_dtype(images.device)
    outputs = []
    for start in range(0, len(images), batch_size):
        x = normalize(to_unit(images[start : start + batch_size]))
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            outputs.append(model(x).float())
    return torch.cat(outputs)


def score(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean NLL loss and accuracy of predictions against labels."""
    loss = F.nll_loss(log_probs, labels).item()
    acc = (log_probs.argmax(dim=1) == labels).double().mean().item()
    return loss, acc


def train_epoch(
    model: nn.Module,
    train: Split,
    normalize: Normalize,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    tp: TrainParams,
    generator: torch.Generator,
    progress: RunProgress,
) -> tuple[float, float, float]:
    """One pass over the shuffled train split; returns mean loss, accuracy and the last lr."""
    model.train()
    device = train.images.device
    dtype = autocast_dtype(device)
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, 0.0
    for index in epoch_batches(len(train.labels), tp.batch_size, generator):
        index = index.to(device)
        x = to_unit(train.images[index])
        x = normalize(augment(x, generator, tp.augment.hflip, tp.augment.crop_scale))
        y = train.labels[index]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            log_probs = model(x)  # (B, C)
        loss = F.nll_loss(log_probs.float(), y)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        nn.utils.clip_grad_value_(model.parameters(), tp.grad_clip)
        lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        loss_sum += loss.detach() * len(y)
        correct += (log_probs.argmax(dim=1) == y).sum()
        seen += len(y)
        progress.step()
    return loss_sum.item() / seen, correct.item() / seen, lr


def train_model(
    model: nn.Module,
    train: Split,
    val: Split,
    normalize: Normalize,
    schedule: Schedule,
    tp: TrainParams,
    offset_lr_mult: float,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    desc: str = "train",
) -> list[EpochRecord]:
    """Train `model` in place through every stage of `schedule`; returns the per-epoch history.

    `train` and `val` must already be on the model's device. Data order and augmentation draw
    from one generator seeded with train.seed (the caller seeds the initial weights).
    """
    device = train.images.device
    generator = torch.Generator().manual_seed(tp.seed)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    steps = steps_per_epoch(len(train.labels), tp.batch_size)
    progress = RunProgress(desc, sum(schedule.epochs) * steps, device.type)
    history: list[EpochRecord] = []
    stages = list(zip(schedule.epochs, schedule.max_lr, strict=True))
    for stage, (epochs, max_lr) in enumerate(stages, 1):
        progress.set_stage(stage, len(stages))
        optimizer, peaks = make_optimizer(model, max_lr, tp.weight_decay, offset_lr_mult)
        scheduler = one_cycle(optimizer, peaks, epochs, steps, tp.one_cycle)
        for _ in range(epochs):
            train_loss, train_acc, lr = train_epoch(
                model, train, normalize, optimizer, scheduler, scaler, tp, generator, progress
            )
            log_probs = predict(model, val.images, normalize, tp.batch_size)
            val_loss, val_acc = score(log_probs, val.labels)
            record = EpochRecord(
                len(history) + 1, stage, lr, train_loss, train_acc, val_loss, val_acc
            )
            history.append(record)
            log.info(
                "%s epoch %d: lr %.3g train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                desc,
                record.epoch,
                lr,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
            )
            if on_epoch:
                on_epoch(record)
    progress.close()
    return history
