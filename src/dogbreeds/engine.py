"""The training engine: from uint8 tensors on a device to a trained net and its history.

A schedule is consecutive one-cycle stages and the weights carry over between them. Each stage
is one learning-rate cycle (Smith's one-cycle policy): a fresh Adam with weight decay and a
`OneCycleLR` at that stage's max_lr, stepped every batch, gradient clipping by value, NLL loss
on the net's log-softmax output. After every epoch the net is scored on the (deformed)
validation set. The prepared uint8 tensors stay on the device and batches are augmented there,
so on a GPU the data path is a few tensor ops per step.

After every epoch the engine can hand out a `TrainState`: everything the loop needs to carry on
from that epoch as if it had never stopped (weights, optimiser, scheduler, scaler, every random
generator, the history so far). `train_model(state=...)` continues from one, and ends with
exactly the numbers of an uninterrupted run (`dogbreeds.resume` keeps them on disk).

Nothing here writes files or talks to MLflow: `dogbreeds.train` (the stage) does.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
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
    # One fused kernel for all params. On CPU torch's default is a Python loop over the tensors:
    # 2.4 ms a step for the cnn's (0.6 ms fused). In training steps at 64 px, batch 32, 2
    # threads, alternating fused and unfused blocks, fused saved 1.2-2.6 ms a step: 5-8% for
    # the cnn and dsc, 4% for the deformable net (two runs).
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


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# On a CPU with native bf16 (AMX or AVX512-BF16), the nets for which bf16 autocast trains
# faster than float32. Measured with python -m dogbreeds.bench on 2 threads of a Xeon with AMX,
# 64x64, batch 32 (README "Speed", float32 -> bf16, commit e93c3b4): cnn 662 -> 1,277 img/s,
# deformable (fused) 393 -> 639, dsc 928 -> 723 (slower: its depthwise convs). Elsewhere
# `auto` is float32.
CPU_AUTO_AMP = {"cnn": "bf16", "dsc": "off", "deformable": "bf16"}


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve_amp(amp: str, device: torch.device, arch: str) -> str:
    """params train.amp -> the precision a run uses: off, bf16 or fp16.

    auto: on CUDA, bf16 where the GPU has it natively (not emulated), else fp16 with a
    GradScaler; on a CPU, bf16 for the nets where the benchmark found it faster, on CPUs that
    have bf16 in hardware; float32 everywhere else.
    """
    if amp != "auto":
        native = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "bf16" and not native:  # asks CUDA only for a CUDA run
            raise TrainingError("params: 'train.amp' is bf16, but this GPU has no native bf16")
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return CPU_AUTO_AMP.get(arch, "off") if native_cpu_bf16() else "off"


def configure_device(device: torch.device) -> None:
    """Process-wide settings for training on `device`.

    CUDA: TF32 matmuls where float32 remains ("high"), and cuDNN in deterministic mode without
    autotuning, so the cnn and dsc nets repeat exactly (the deformable net's backward adds
    with atomics, so it does not; README).
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    keep_freed_memory()


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed buffers for reuse instead of returning them to the OS.

    By default glibc serves every buffer over 32 MB (and, once the threshold adapts, smaller
    ones) with a fresh mmap and unmaps it on free, so each training step faults in its large
    activations page by page again. The DeformConv columns at 64 px are 38 MB per layer: on 2
    threads this cost the deformable net a quarter of its step (python -m dogbreeds.bench,
    fused backend: 308 -> 400 img/s with these settings; the cnn was unchanged within noise,
    781 vs 739). It is what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc, without
    a preload. Peak memory is unchanged; freed memory stays with the process until it exits.
    Returns whether the settings took (False off glibc, e.g. macOS).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 31))


def runtime(device: torch.device, amp: str, deform_backend: str | None) -> dict[str, str]:
    """What a run ran on, for the metrics JSON and MLflow: results differ across these."""
    info = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "amp": amp,
        "threads": str(torch.get_num_threads()),
    }
    if deform_backend is not None:
        info["deform_backend"] = deform_backend
    return info


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The net on `device` in channels_last memory format.

    The issue's CPU measurement (64 px, batch 32, 2 threads) had it faster for the cnn (617 -> 678
    img/s) and dsc (796 -> 976); on CUDA its effect alone was not measured.
    """
    return model.to(device=device, memory_format=torch.channels_last)


def resolve_device(name: str) -> torch.device:
    """params train.device: auto (CUDA when available), cpu or cuda."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("params: 'train.device' is cuda, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------- resumable state


@dataclass
class TrainState:
    """A schedule stopped after `len(history)` epochs, complete enough to continue exactly.

    Every field is tensors, numbers, strings, lists and dicts, so `torch.save` writes it and
    `torch.load(weights_only=True)` reads it back. The optimiser and scheduler belong to the
    stage of the last finished epoch; a resume that starts a new stage does not need them.
    """

    history: list[EpochRecord]
    model: dict  # state_dict, including BatchNorm statistics
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: dict  # see capture_rng

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def capture_rng(generator: torch.Generator) -> dict:
    """Every random stream a run may draw from, as tensors and plain numbers.

    The data generator orders and augments batches; torch's global CPU and CUDA streams,
    numpy's and Python's are kept too, so that no draw anywhere repeats or shifts on resume.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "data": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }  # fmt: skip


def restore_rng(rng: dict, generator: torch.Generator) -> None:
    """Put back what `capture_rng` took."""
    generator.set_state(rng["data"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))


# ----------------------------------------------------------------------------- the loop


def inputs(images: torch.Tensor, normalize: Normalize, theta=None) -> torch.Tensor:
    """uint8 batch -> the net's float input: augmented, normalised, channels_last."""
    x = normalize(augment(to_unit(images), theta))
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    normalize: Normalize,
    batch_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Log-probabilities (N, C) in float32 for uint8 images, in eval mode, batch by batch.

    dtype: the autocast dtype (as in training), None for float32.
    """
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = inputs(images[start : start + batch_size], normalize)
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            outputs.append(model(x).float())
    return torch.cat(outputs)


def score(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean NLL loss and accuracy of predictions against labels."""
    loss = F.nll_loss(log_probs, labels).item()
    acc = (log_probs.argmax(dim=1) == labels).double().mean().item()
    return loss, acc


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: Batch,
    normalize: Normalize,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimisation step on one batch; returns its summed loss and correct count (on the
    device: no host sync) and the lr it used."""
    x = inputs(images[batch.index], normalize, batch.theta)
    y = labels[batch.index]
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        log_probs = model(x)  # (B, C)
    loss = F.nll_loss(log_probs.float(), y)

    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
    nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach() * len(y), (log_probs.argmax(dim=1) == y).sum(), lr


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
    dtype: torch.dtype | None = None,
) -> tuple[float, float, float]:
    """One pass over the shuffled train split; returns mean loss, accuracy and the last lr."""
    model.train()
    device = train.images.device
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, 0.0
    for batch in epoch_plan(len(train.labels), tp.batch_size, generator, tp.augment, device):
        batch_loss, batch_correct, lr = train_step(
            model, train.images, train.labels, batch, normalize, optimizer, scheduler, scaler,
            tp.grad_clip, dtype,
        )  # fmt: skip
        loss_sum += batch_loss
        correct += batch_correct
        seen += len(batch.index)
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
    dtype: torch.dtype | None = None,
    state: TrainState | None = None,
    on_state: Callable[[TrainState], None] | None = None,
) -> list[EpochRecord]:
    """Train `model` in place through every stage of `schedule`; returns the per-epoch history.

    `train` and `val` must already be on the model's device. Data order and augmentation draw
    from one generator seeded with train.seed (the caller seeds the initial weights).
    `state` continues a run that stopped after `state.epochs_done` epochs; `on_state` gets a
    fresh state after every epoch (its tensors are the live ones: save it before returning).
    """
    device = train.images.device
    generator = torch.Generator().manual_seed(tp.seed)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    steps = steps_per_epoch(len(train.labels), tp.batch_size)
    done = state.epochs_done if state else 0
    progress = RunProgress(desc, sum(schedule.epochs) * steps, device.type, done=done * steps)
    history: list[EpochRecord] = list(state.history) if state else []
    if state:
        model.load_state_dict(state.model)
        scaler.load_state_dict(state.scaler)
        restore_rng(state.rng, generator)
    stages = list(zip(schedule.epochs, schedule.max_lr, strict=True))
    before = 0  # epochs in the stages before this one
    for stage, (epochs, max_lr) in enumerate(stages, 1):
        done_here = min(max(done - before, 0), epochs)  # epochs of this stage already done
        before += epochs
        if done_here == epochs:
            continue
        progress.set_stage(stage, len(stages))
        optimizer, peaks = make_optimizer(model, max_lr, tp.weight_decay, offset_lr_mult)
        scheduler = one_cycle(optimizer, peaks, epochs, steps, tp.one_cycle)
        if done_here:  # stopped inside this stage: continue its cycle where it was
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
        for _ in range(done_here, epochs):
            train_loss, train_acc, lr = train_epoch(
                model, train, normalize, optimizer, scheduler, scaler, tp, generator, progress,
                dtype,
            )  # fmt: skip
            log_probs = predict(model, val.images, normalize, tp.batch_size, dtype)
            val_loss, val_acc = score(log_probs, val.labels)
            record = EpochRecord(
                len(history) + 1, stage, lr, train_loss, train_acc, val_loss, val_acc
            )
            history.append(record)
            log.info(
                "%s epoch %d: lr %.3g train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                desc, record.epoch, lr, train_loss, train_acc, val_loss, val_acc,
            )  # fmt: skip
            if on_epoch:
                on_epoch(record)
            if on_state:
                on_state(
                    TrainState(
                        history=list(history),
                        model=model.state_dict(),
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(),
                        rng=capture_rng(generator),
                    )
                )
    progress.close()
    return history
