"""The training loop: from uint8 tensors on a device to a trained net and its history.

A schedule is consecutive one-cycle stages and the weights carry over between them. Each stage
is one learning-rate cycle (Smith's one-cycle policy): a fresh Adam with weight decay and a
`OneCycleLR` at that stage's max_lr, stepped every batch, gradient clipping by value, NLL loss
on the net's log-softmax output. After every epoch the net is scored on the (deformed)
validation set. Batches come from `batches`, the optimiser from `optim`, precision from
`device`, and the resumable state from `state`.

After every epoch the engine can hand out a `TrainState`: everything the loop needs to carry on
from that epoch as if it had never stopped (weights, optimiser, scheduler, scaler, every random
generator, the history so far). `train_model` continues from one (`TrainingHooks.state`) and
ends with exactly the numbers of an uninterrupted run (`dogbreeds.training.resume` keeps them
on disk).

Nothing here writes files or talks to MLflow: `dogbreeds.pipeline.train` (the stage) does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dogbreeds.common import timeline
from dogbreeds.common.progress import RunProgress
from dogbreeds.data.prepared import Split
from dogbreeds.data.preprocess import Normalize
from dogbreeds.params import Schedule, TrainParams
from dogbreeds.training.batches import Batch, epoch_plan, inputs, steps_per_epoch
from dogbreeds.training.history import EpochRecord
from dogbreeds.training.optim import make_optimizer, one_cycle
from dogbreeds.training.state import TrainState, capture_rng, restore_rng

log = logging.getLogger(__name__)


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
        timeline.mark("first_step", once=True)  # an evaluation's first batch (fixedcost)
    return torch.cat(outputs)


def score(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean NLL loss and accuracy of predictions against labels."""
    loss = F.nll_loss(log_probs, labels).item()
    acc = (log_probs.argmax(dim=1) == labels).double().mean().item()
    return loss, acc


def batch_mean_accuracy(hits: torch.Tensor, batch_size: int) -> float:
    """The mean of per-batch accuracies over consecutive batches of `hits` (bool, N).

    The estimator of the course template the paper grew from (an epoch's accuracy as the mean
    of its batches' accuracies): a short last batch weighs as much as a full one. Ours is the
    per-image mean (`score`); this one is for comparing with the paper's numbers only.
    """
    if hits.numel() == 0:
        raise ValueError("no predictions to score")
    batches = hits.double().split(batch_size)
    return torch.stack([b.mean() for b in batches]).mean().item()


@dataclass
class StepContext:
    """What every optimisation step of one schedule stage uses besides its batch."""

    model: nn.Module
    normalize: Normalize
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    grad_clip: float  # clip each gradient element to [-grad_clip, grad_clip]
    dtype: torch.dtype | None  # the autocast dtype, None for float32


def train_step(
    ctx: StepContext, images: torch.Tensor, labels: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimisation step on one batch; returns its summed loss and correct count (on the
    device: no host sync) and the lr it used."""
    x = inputs(images[batch.index], ctx.normalize, batch)
    y = labels[batch.index]
    with torch.autocast(images.device.type, dtype=ctx.dtype, enabled=ctx.dtype is not None):
        log_probs = ctx.model(x)  # (B, C)
    loss = F.nll_loss(log_probs.float(), y)

    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    ctx.scaler.unscale_(ctx.optimizer)  # clip the true gradients, not the loss-scaled ones
    nn.utils.clip_grad_value_(ctx.model.parameters(), ctx.grad_clip)
    lr = ctx.optimizer.param_groups[0]["lr"]  # the lr this step uses
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.scheduler.step()
    return loss.detach() * len(y), (log_probs.argmax(dim=1) == y).sum(), lr


def train_epoch(
    ctx: StepContext,
    train: Split,
    tp: TrainParams,
    generator: torch.Generator,
    progress: RunProgress,
) -> tuple[float, float, float]:
    """One pass over the shuffled train split; returns mean loss, accuracy and the last lr."""
    ctx.model.train()
    device = train.images.device
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, 0.0
    for batch in epoch_plan(len(train.labels), tp.batch_size, generator, tp.augment, device):
        batch_loss, batch_correct, lr = train_step(ctx, train.images, train.labels, batch)
        loss_sum += batch_loss
        correct += batch_correct
        seen += len(batch.index)
        progress.step()
        timeline.mark("first_step", once=True)  # the stage's fixed cost ends (fixedcost)
    return loss_sum.item() / seen, correct.item() / seen, lr


class TrainingHooks:
    """What a caller plugs into training: where it resumes from and what it does after each
    epoch. This base does nothing; the train stage's `pipeline.train.TrainingRecord` logs to
    MLflow and keeps resume states, as DVC's example plugs its logger in as a callback."""

    state: TrainState | None = None  # continue a run that stopped after state.epochs_done
    keeps_states: bool = False  # whether `keep` wants a state after every epoch

    def epoch_done(self, record: EpochRecord) -> None:
        """After every epoch, with its record."""

    def keep(self, state: TrainState) -> None:
        """After every epoch when `keeps_states`: the state a rerun continues from (its tensors
        are the live ones: save them before returning)."""


def remaining_stages(schedule: Schedule, done: int) -> Iterator[tuple[int, int, float, int]]:
    """(stage number, its epochs, its max_lr, epochs of it already done) for every stage not
    finished after `done` epochs of the schedule."""
    before = 0  # epochs in the stages before this one
    for stage, (epochs, max_lr) in enumerate(zip(schedule.epochs, schedule.max_lr, strict=True), 1):
        done_here = min(max(done - before, 0), epochs)
        before += epochs
        if done_here < epochs:
            yield stage, epochs, max_lr, done_here


def train_model(
    model: nn.Module,
    train: Split,
    val: Split,
    normalize: Normalize,
    schedule: Schedule,
    tp: TrainParams,
    offset_lr_mult: float,
    seed: int,
    desc: str = "train",
    dtype: torch.dtype | None = None,
    hooks: TrainingHooks | None = None,
) -> list[EpochRecord]:
    """Train `model` in place through every stage of `schedule`; returns the per-epoch history.

    `train` and `val` must already be on the model's device. Data order and augmentation draw
    from one generator seeded with `seed`, the run's (one of train.seeds; the caller seeds the
    initial weights with it too).
    `hooks.state` continues a run that stopped after that many epochs, ending with exactly the
    numbers of an uninterrupted run; the hooks hear of every epoch.
    """
    hooks = hooks or TrainingHooks()
    state, device = hooks.state, train.images.device
    generator = torch.Generator().manual_seed(seed)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    steps = steps_per_epoch(len(train.labels), tp.batch_size)
    done = state.epochs_done if state else 0
    progress = RunProgress(desc, sum(schedule.epochs) * steps, device.type, done=done * steps)
    history: list[EpochRecord] = list(state.history) if state else []
    if state:
        model.load_state_dict(state.model)
        scaler.load_state_dict(state.scaler)
        restore_rng(state.rng, generator)
    for stage, epochs, max_lr, done_here in remaining_stages(schedule, done):
        progress.set_stage(stage, len(schedule.epochs))
        optimizer, peaks = make_optimizer(model, max_lr, tp.weight_decay, offset_lr_mult)
        scheduler = one_cycle(optimizer, peaks, epochs, steps, tp.one_cycle)
        if done_here:  # stopped inside this stage: continue its cycle where it was
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
        ctx = StepContext(model, normalize, optimizer, scheduler, scaler, tp.grad_clip, dtype)
        for _ in range(done_here, epochs):
            train_loss, train_acc, lr = train_epoch(ctx, train, tp, generator, progress)
            log_probs = predict(model, val.images, normalize, tp.eval_batch_size, dtype)
            val_loss, val_acc = score(log_probs, val.labels)
            record = EpochRecord(
                len(history) + 1, stage, lr, train_loss, train_acc, val_loss, val_acc
            )
            history.append(record)
            log.info(
                "%s epoch %d: lr %.3g train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                desc, record.epoch, lr, train_loss, train_acc, val_loss, val_acc,
            )  # fmt: skip
            hooks.epoch_done(record)
            if hooks.keeps_states:
                hooks.keep(TrainState(
                    history=list(history), model=model.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict(), rng=capture_rng(generator),
                ))  # fmt: skip
    progress.close()
    timeline.mark("last_step")
    return history
