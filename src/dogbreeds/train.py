"""Training: a schedule is consecutive one-cycle stages; the weights carry over between them.

Each stage is one learning-rate cycle (Smith's one-cycle policy): a fresh Adam with weight
decay and a `OneCycleLR` at that stage's max_lr, stepped every batch, gradient clipping by
value, NLL loss on the net's log-softmax output. After every epoch the net is scored on the
(deformed) validation set. The prepared uint8 tensors stay on the device and batches are
augmented there, so on a GPU the data path is a few tensor ops per step.

`run_training` is what `stages/train.py` calls: it writes the checkpoint, the metrics JSON and
the per-epoch TSV that DVC tracks, and logs the run to MLflow.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dogbreeds import DogbreedsError, tracking
from dogbreeds.fsutil import atomic_path
from dogbreeds.models import build_model, offset_parameters
from dogbreeds.params import OneCycleParams, Params, Schedule, TrainParams

log = logging.getLogger(__name__)

ETA_AFTER_STEPS = 5  # logging only: time this many steps (after the first) to estimate a stage
HISTORY_COLUMNS = ("epoch", "stage", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


class TrainingError(DogbreedsError):
    """A missing or inconsistent input of training or evaluation; the message names it."""


# ----------------------------------------------------------------------------- data


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


def load_split(path: Path) -> Split:
    """Read a prepared split written by the deform stage, checking its shape and types."""
    if not path.exists():
        raise TrainingError(f"{path}: not found (run the data stages first: dvc repro deform)")
    blob = torch.load(path, weights_only=True)
    images, labels = blob.get("images"), blob.get("labels")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TrainingError(f"{path}: 'images' must be a uint8 tensor (N, 3, R, R)")
    if images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise TrainingError(f"{path}: 'images' has shape {tuple(images.shape)}, not (N, 3, R, R)")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise TrainingError(f"{path}: 'labels' must be an int64 tensor with one label per image")
    return Split(images, labels.long(), list(blob["ids"]), list(blob["breeds"]))


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


@dataclass
class EpochRecord:
    """One row of the history: what the report's curves and tables are made of."""

    epoch: int  # global, counting across stages from 1
    stage: int  # 1-based stage of the schedule
    lr: float  # the base group's lr at the epoch's last step
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float

    def metrics(self) -> dict[str, float]:
        """What MLflow logs at step = epoch."""
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


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


def human_duration(seconds: float) -> str:
    """12 s, 3.4 min or 2.1 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


class StageProgress:
    """A tqdm bar over a stage's steps, and one log line estimating the stage's duration.

    The estimate times steps 2..ETA_AFTER_STEPS+1 (the first carries one-off start-up costs),
    so a CPU user of the 224-pixel defaults learns within seconds what the run will cost.
    """

    def __init__(self, desc: str, stage_steps: int, schedule_steps: int, device: torch.device):
        self.desc = desc
        self.stage_steps = stage_steps
        self.schedule_steps = schedule_steps  # all stages: for the whole run's estimate on CPU
        self.device = device
        self.done = 0
        self.started = 0.0
        self.bar = tqdm(total=stage_steps, desc=desc, unit="step", disable=None, leave=False)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time the GPU's work, not its queue
        return time.perf_counter()

    def step(self) -> None:
        self.done += 1
        self.bar.update()
        if self.done == 1:
            self.started = self._now()
        elif self.done == ETA_AFTER_STEPS + 1:
            self.log_estimate((self._now() - self.started) / ETA_AFTER_STEPS)

    def log_estimate(self, seconds_per_step: float) -> None:
        stage = seconds_per_step * self.stage_steps
        log.info("%s: about %s (training steps only)", self.desc, human_duration(stage))
        whole = seconds_per_step * self.schedule_steps
        if self.device.type == "cpu" and whole > 3600:
            log.warning(
                "on CPU the whole schedule takes about %s; a reduced resolution is the "
                "practical choice, e.g. dvc exp run -S model.resolution=64",
                human_duration(whole),
            )

    def close(self) -> None:
        self.bar.close()


def train_epoch(
    model: nn.Module,
    train: Split,
    normalize: Normalize,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    tp: TrainParams,
    generator: torch.Generator,
    progress: StageProgress,
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
    history: list[EpochRecord] = []
    for stage, (epochs, max_lr) in enumerate(zip(schedule.epochs, schedule.max_lr, strict=True), 1):
        optimizer, peaks = make_optimizer(model, max_lr, tp.weight_decay, offset_lr_mult)
        scheduler = one_cycle(optimizer, peaks, epochs, steps, tp.one_cycle)
        progress = StageProgress(
            f"{desc} stage {stage}/{len(schedule.epochs)}",
            stage_steps=epochs * steps,
            schedule_steps=sum(schedule.epochs) * steps,
            device=device,
        )
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


# ----------------------------------------------------------------------------- files


def save_checkpoint(path: Path, model: nn.Module, meta: dict) -> None:
    """Atomically save the weights with plain metadata, loadable with weights_only=True."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)


def load_checkpoint(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild a net from a checkpoint's metadata and load its weights, in eval mode."""
    if not path.exists():
        raise TrainingError(f"{path}: not found (run the train stage first)")
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_model(
        blob["arch"],
        num_classes=len(blob["breeds"]),
        width_mult=blob["width_mult"],
        deform_backend=blob["deform_backend"],
    )
    model.load_state_dict(blob.pop("state_dict"))
    return model.to(device).eval(), blob


def write_history(path: Path, history: list[EpochRecord]) -> None:
    """The per-epoch history as a TSV, DVC's plots file (x: epoch)."""
    lines = ["\t".join(HISTORY_COLUMNS)]
    for record in history:
        row = asdict(record)
        lines.append(
            "\t".join(
                f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                for c in HISTORY_COLUMNS
            )
        )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def read_history(path: Path) -> list[EpochRecord]:
    """Read a TSV written by `write_history`."""
    if not path.exists():
        raise TrainingError(f"{path}: not found (run the train stage first)")
    header, *rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    records = []
    for row in rows:
        values = dict(zip(header, row, strict=True))
        records.append(
            EpochRecord(
                epoch=int(values["epoch"]),
                stage=int(values["stage"]),
                lr=float(values["lr"]),
                train_loss=float(values["train_loss"]),
                train_acc=float(values["train_acc"]),
                val_loss=float(values["val_loss"]),
                val_acc=float(values["val_acc"]),
            )
        )
    return records


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def plot_accuracy(history: list[EpochRecord], path: Path, title: str) -> None:
    """Train and val accuracy per epoch, stages split by dashes: the report's Figures 1-3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r.epoch for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r.train_acc for r in history], "-o", markersize=3, label="train")
    ax.plot(epochs, [r.val_acc for r in history], "-o", markersize=3, label="val (deformed)")
    for before, after in zip(history, history[1:], strict=False):
        if after.stage != before.stage:
            ax.axvline(before.epoch + 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel="accuracy", title=title, ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the stage


def select_run(params: Params, arch: str, schedule: str) -> Schedule:
    """The schedule to run, after checking that arch and schedule are listed in params."""
    if arch not in params.train.archs:
        raise TrainingError(
            f"unknown --arch {arch!r}; params 'train.archs': {', '.join(params.train.archs)}"
        )
    if schedule not in params.train.schedules:
        known = ", ".join(params.train.schedules)
        raise TrainingError(f"unknown --schedule {schedule!r}; params 'train.schedules': {known}")
    return params.train.schedules[schedule]


def load_prepared(prepared: Path, resolution: int) -> tuple[Split, Split]:
    """The train and (deformed) val splits, checked against params model.resolution."""
    train, val = load_split(prepared / "train.pt"), load_split(prepared / "val.pt")
    if train.images.shape[-1] != resolution:
        raise TrainingError(
            f"{prepared / 'train.pt'} holds {train.images.shape[-1]}px images but params "
            f"'model.resolution' is {resolution}: rerun the deform stage (dvc repro)"
        )
    return train, val


def run_params(params: Params, arch: str, schedule: Schedule) -> dict:
    """Every param of the study for MLflow, plus this run's own under `run.` for comparing runs
    of different schedules column by column."""
    run = {"arch": arch, "schedule": schedule.name, "epochs": schedule.epochs}
    return {**asdict(params), "run": {**run, "max_lr": schedule.max_lr}}


def run_training(
    params: Params,
    arch: str,
    schedule_name: str,
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    metrics_dir: Path = Path("metrics/train"),
) -> dict:
    """Train one net on one schedule; write checkpoint, metrics JSON and history TSV; log MLflow.

    Returns the metrics JSON's content.
    """
    schedule = select_run(params, arch, schedule_name)
    run_name = f"{arch}-{schedule_name}"
    device = resolve_device(params.train.device)
    train, val = load_prepared(prepared, params.model.resolution)
    mean, std = channel_stats(train.images)
    normalize = Normalize(mean, std, device)
    train, val = train.to(device), val.to(device)
    torch.manual_seed(params.train.seed)  # the initial weights
    model = build_model(
        arch,
        num_classes=len(train.breeds),
        width_mult=params.model.width_mult,
        deform_backend=params.model.deform_backend,
    ).to(device)
    log.info("%s on %s: %d train, %d val images", run_name, device, len(train.ids), len(val.ids))

    with tracking.training_run(run_name, tracking.run_tags(arch, schedule_name)) as run:
        run.log_params(run_params(params, arch, schedule))
        started = time.perf_counter()
        history = train_model(
            model, train, val, normalize, schedule, params.train, params.model.offset_lr_mult,
            on_epoch=lambda r: run.log_metrics(r.metrics(), step=r.epoch),
            desc=run_name,
        )  # fmt: skip
        wall_time = time.perf_counter() - started
        last = history[-1]
        summary = {
            "train_loss": last.train_loss,
            "train_acc": last.train_acc,
            "val_loss": last.val_loss,
            "val_acc": last.val_acc,
            "epochs": last.epoch,
            "wall_time_s": round(wall_time, 2),
            "device": str(device),
            "mlflow_run_id": run.run_id,  # the run cache may skip this stage: keep the id here
        }
        meta = {
            "arch": arch,
            "schedule": schedule_name,
            "width_mult": params.model.width_mult,
            "resolution": params.model.resolution,
            "deform_backend": params.model.deform_backend,
            "breeds": train.breeds,
            "mean": mean,
            "std": std,
            "history": [asdict(r) for r in history],
        }
        save_checkpoint(models_dir / f"{run_name}.pt", model, meta)
        write_history(metrics_dir / f"{run_name}.tsv", history)
        write_json(metrics_dir / f"{run_name}.json", summary)

        run.log_metrics({"wall_time_s": wall_time})
        run.log_artifact(metrics_dir / f"{run_name}.tsv")
        with tempfile.TemporaryDirectory() as tmp:  # the report stage draws the DVC-tracked figures
            curves = Path(tmp) / f"{run_name}-accuracy.png"
            plot_accuracy(history, curves, f"{run_name} accuracy")
            run.log_artifact(curves)
    log.info("%s: done in %s, val acc %.4f", run_name, human_duration(wall_time), last.val_acc)
    return summary
