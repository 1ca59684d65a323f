"""The training loop: from uint8 tensors on a device to a trained net and its history.

A schedule is consecutive one-cycle stages and the weights carry over between them. Each stage
is one learning-rate cycle (Smith's one-cycle policy): a fresh Adam with weight decay and a
`OneCycleLR` at that stage's max_lr, stepped every batch, gradient clipping by value, NLL loss
on the net's log-softmax output. After every epoch the net is scored on the (deformed)
validation set. Batches come from `batches`, the optimiser from `optim`, precision from
`device`, and the resumable state from `state`.

After every epoch the engine can hand out a `TrainState`: everything the loop needs to carry on
from that epoch as if it had never stopped (weights, optimiser, scheduler, scaler, every random
generator, the history so far). `train_model(state=...)` continues from one, and ends with
exactly the numbers of an uninterrupted run (`dogbreeds.training.resume` keeps them on disk).

Nothing here writes files or talks to MLflow: `dogbreeds.pipeline.train` (the stage) does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
    x = inputs(images[batch.index], normalize, batch)
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
        timeline.mark("first_step", once=True)  # the stage's fixed cost ends (fixedcost)
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
    timeline.mark("last_step")
    return history
