"""The train stage: train one net on one schedule from one seed, write what DVC tracks, log it
to MLflow.

`run_training` is what `stages/train.py` calls. It reads the prepared splits, builds the net,
hands both to the training loop (`dogbreeds.training.loop`), then writes the checkpoint
(`models/<run>.pt`, run = <arch>-<schedule>-seed<n>), the metrics JSON and the per-epoch TSV
(`metrics/train/<run>.*`) and logs params, per-epoch metrics and the history into one MLflow
run.

A training that dies (SIGKILL, power cut) resumes on the next run from its last finished epoch
(`dogbreeds.training.resume`): the dead attempt's MLflow run is marked FAILED, and the new
run, tagged `resumed_from_run`, logs the earlier epochs again so its curves are whole.
Each run is a child of the study's MLflow run (`tracking.study`) and carries MLflow's system
metrics (`system/*`) over its length.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch

from dogbreeds.common.fs import file_md5, write_json
from dogbreeds.common.progress import human_duration
from dogbreeds.data.prepared import load_prepared
from dogbreeds.data.preprocess import Normalize, input_stats
from dogbreeds.nets.models import MODELS, build_model, net_size
from dogbreeds.ops.deform_conv import default_backend
from dogbreeds.params import Params, Schedule, for_seed, run_name, select_run
from dogbreeds.tracking import lineage, study
from dogbreeds.tracking import runs as tracking
from dogbreeds.tracking.store import store_root
from dogbreeds.training import resume
from dogbreeds.training.checkpoint import save_checkpoint
from dogbreeds.training.devices import (
    AMP_DTYPES,
    configure_device,
    prepare_model,
    resolve_amp,
    resolve_device,
    runtime,
)
from dogbreeds.training.history import write_history
from dogbreeds.training.loop import train_model
from dogbreeds.training.state import TrainState

log = logging.getLogger(__name__)


def run_params(params: Params, arch: str, schedule: Schedule) -> dict:
    """Every param of the study for MLflow, plus this run's own under `run.` for comparing runs
    of different schedules column by column."""
    run = {"arch": arch, "schedule": schedule.name, "seed": params.train.seed}
    return {**asdict(params), "run": {**run, "epochs": schedule.epochs, "max_lr": schedule.max_lr}}


def run_training(
    params: Params,
    arch: str,
    schedule_name: str,
    seed: int,
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    metrics_dir: Path = Path("metrics/train"),
    state_dir: Path | None = None,
) -> dict:
    """Train one net on one schedule from one seed; write checkpoint, metrics and history; log
    MLflow.

    state_dir: where resume states live (default `<repo root>/.resume`). Returns the metrics
    JSON's content.
    """
    schedule = select_run(params, arch, schedule_name, seed)
    params = replace(params, train=for_seed(params.train, seed))  # train.seed: this run's
    name = run_name(arch, schedule_name, seed)
    device = resolve_device(params.train.device)
    configure_device(device)
    amp = resolve_amp(params.train.amp, device, arch)
    backend = params.model.deformable.backend
    if backend == "auto" and arch == "deformable":  # only it has DeformConv layers to build
        backend = default_backend(device)
    train, val = load_prepared(prepared, params.model.resolution)
    mean, std = input_stats(train.images, params.train.normalize)
    normalize = Normalize(mean, std, device)
    train, val = train.to(device), val.to(device)
    torch.manual_seed(seed)  # the initial weights
    model = build_model(
        arch,
        num_classes=len(train.breeds),
        width_mult=params.model.width_mult,
        deform_backend=backend,
    )
    model = prepare_model(model, device)
    info = runtime(device, amp, backend if arch == "deformable" else None)
    log.info("%s: %d train, %d val images; %s", name, len(train.ids), len(val.ids), info)

    key = resume.state_key(
        run_params(params, arch, schedule), info, [prepared / "train.pt", prepared / "val.pt"]
    )
    state_path = resume.state_path(name, key, state_dir)
    with resume.claim(state_path) as owned:
        saved = resume.load_state(state_path) if owned else None
        state, earlier = saved if saved else (None, {})
        tags = {**tracking.run_tags(arch, schedule_name), "seed": str(seed)}
        tags |= study.child_tags()  # a child of this repro's or experiment's study run
        if owned:  # runs an earlier, killed attempt left RUNNING end FAILED
            tracking.fail_abandoned_runs(key, partial(lineage.dvc_records, root=store_root()))
            tags[tracking.RESUME_KEY_TAG] = key
        if state is not None:
            tags |= resumed_tags(name, state, earlier, sum(schedule.epochs))

        with tracking.training_run(name, tags, system=True) as run:  # CPU, memory, GPU too
            run.log_params(run_params(params, arch, schedule))
            run.set_tags({f"runtime.{k}": v for k, v in info.items()})
            for record in state.history if state else []:  # the run's curves start at epoch 1
                run.log_metrics(record.metrics(), step=record.epoch)
            started = time.perf_counter() - earlier.get("wall_time_s", 0.0)

            def keep(new_state) -> None:
                """After every epoch: the state a rerun continues from if this process dies."""
                elapsed = round(time.perf_counter() - started, 3)
                resume.save_state(
                    state_path, new_state, {"mlflow_run_id": run.run_id, "wall_time_s": elapsed}
                )

            history = train_model(
                model, train, val, normalize, schedule, params.train,
                params.model.deformable.offset_lr_mult,
                on_epoch=lambda r: run.log_metrics(r.metrics(), step=r.epoch),
                desc=name, dtype=AMP_DTYPES[amp],
                state=state, on_state=keep if owned else None,
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
                **net_summary(arch, params),
                **info,
                "mlflow_run_id": run.run_id,  # the run cache may skip this stage: keep the id
            }
            meta = {
                "arch": arch,
                "schedule": schedule_name,
                "seed": seed,
                "width_mult": params.model.width_mult,
                "resolution": params.model.resolution,
                "deform_backend": backend,
                "amp": amp,
                "breeds": train.breeds,
                "mean": mean,
                "std": std,
                "history": [asdict(r) for r in history],
            }
            save_checkpoint(models_dir / f"{name}.pt", model, meta)
            write_history(metrics_dir / f"{name}.tsv", history)
            write_json(metrics_dir / f"{name}.json", summary)
            run.set_tags({tracking.OUTPUT_MD5_TAG: file_md5(metrics_dir / f"{name}.json")})

            run.log_metrics({"wall_time_s": wall_time})
            lineage.log_prepared_dataset(run, prepared)  # the data version, by its DVC hash
            from dogbreeds.serving import pyfunc  # MLflow's model code: only where it logs one

            pyfunc.log_model(run, models_dir / f"{name}.pt")  # servable: runs:/<id>/model
            run.log_artifact(metrics_dir / f"{name}.tsv")  # MLflow charts the curves itself
        if owned:
            resume.remove_state(state_path)  # the outputs are written: nothing left to resume
    log.info("%s: done in %s, val acc %.4f", name, human_duration(wall_time), last.val_acc)
    return summary


def net_summary(arch: str, params: Params) -> dict:
    """The net's class, size and input side, for the report (which builds no net itself)."""
    width_mult, resolution = params.model.width_mult, params.model.resolution
    n_params, macs = net_size(arch, width_mult, resolution)
    return {
        "net": MODELS[arch].__name__,
        "width_mult": width_mult,
        "resolution": resolution,
        "params": n_params,
        "macs": macs,
    }


def resumed_tags(name: str, state: TrainState, earlier: dict, epochs: int) -> dict[str, str]:
    """Say that a run resumes a killed one, make sure that one is FAILED, and name it in tags."""
    previous = earlier["mlflow_run_id"]
    tracking.mark_failed(previous)  # already, unless it was logged without the resume key
    log.info(
        "%s: resuming after epoch %d of %d (a killed run's state); its MLflow run %s is "
        "marked FAILED",
        name,
        state.epochs_done,
        epochs,
        previous,
    )
    return {"resumed_from_run": previous, "resumed_at_epoch": str(state.epochs_done)}
