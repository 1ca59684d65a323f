"""The train stage: train one net on one schedule from one seed, write what DVC tracks, log it
to MLflow.

`run_training` is what `stages/train.py` calls. It reads the prepared splits, builds the net,
hands both to the training loop (`dogbreeds.training.loop`), then writes the checkpoint
(`models/<run>.pt`, run = <arch>-<schedule>-<seed>), the metrics JSON and the per-epoch TSV
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
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from dogbreeds.common.fs import file_md5, write_json
from dogbreeds.common.progress import human_duration
from dogbreeds.data.prepared import load_prepared
from dogbreeds.data.preprocess import Normalize, input_stats
from dogbreeds.nets.models import MODELS, net_size
from dogbreeds.params import Params, Schedule, run_name, select_run
from dogbreeds.tracking import lineage, study
from dogbreeds.tracking import runs as tracking
from dogbreeds.tracking.store import store_root
from dogbreeds.training import resume
from dogbreeds.training.checkpoint import save_checkpoint
from dogbreeds.training.history import EpochRecord, write_history
from dogbreeds.training.loop import TrainingHooks, train_model
from dogbreeds.training.setup import set_up_run
from dogbreeds.training.state import TrainState

log = logging.getLogger(__name__)


def run_params(params: Params, arch: str, schedule: Schedule, seed: int) -> dict:
    """Every param of the study for MLflow, plus this run's own under `run.` (its seed among
    them) for comparing runs of different schedules column by column."""
    run = {"arch": arch, "schedule": schedule.name, "seed": seed}
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
    name = run_name(arch, schedule_name, seed)
    setup = set_up_run(params, arch)
    train, val = load_prepared(prepared, params.model.resolution)
    mean, std = input_stats(train.images, params.train.normalize)
    normalize = Normalize(mean, std, setup.device)
    train, val = train.to(setup.device), val.to(setup.device)
    model = setup.new_model(len(train.breeds), params.model.width_mult, seed)
    info = setup.runtime()
    log.info("%s: %d train, %d val images; %s", name, len(train.ids), len(val.ids), info)

    logged_params = run_params(params, arch, schedule, seed)
    key = resume.state_key(logged_params, info, [prepared / "train.pt", prepared / "val.pt"])
    with TrainingRecord(name, key, state_dir) as record:  # resume state and MLflow run
        record.start(logged_params, info, seed, sum(schedule.epochs))
        history = train_model(
            model, train, val, normalize, schedule, params.train,
            params.model.deformable.offset_lr_mult, seed, desc=name, dtype=setup.dtype,
            hooks=record,
        )  # fmt: skip
        wall_time = record.elapsed()
        meta = {
            "arch": arch, "schedule": schedule_name, "seed": seed,
            "width_mult": params.model.width_mult, "resolution": params.model.resolution,
            "deform_backend": setup.backend, "amp": setup.amp, "breeds": train.breeds,
            "mean": mean, "std": std, "history": [asdict(r) for r in history],
        }  # fmt: skip
        summary = {
            **history[-1].summary(),
            "wall_time_s": round(wall_time, 2),
            **net_summary(arch, params),
            **info,
            "mlflow_run_id": record.run.run_id,  # the run cache may skip this stage: keep it
        }
        outputs = TrainingOutputs(models_dir / f"{name}.pt", metrics_dir, name)
        outputs.write(model, meta, history, summary)
        record.finish(outputs, prepared, wall_time)
    log.info("%s: done in %s, val acc %.4f", name, human_duration(wall_time), history[-1].val_acc)
    return summary


@dataclass(frozen=True)
class TrainingOutputs:
    """What the train stage writes for DVC: the checkpoint, and the per-epoch TSV and the
    metrics JSON under metrics/train/."""

    checkpoint: Path
    metrics_dir: Path
    name: str

    @property
    def history_tsv(self) -> Path:
        return self.metrics_dir / f"{self.name}.tsv"

    @property
    def metrics_json(self) -> Path:
        return self.metrics_dir / f"{self.name}.json"

    def write(self, model, meta: dict, history: list, summary: dict) -> None:
        save_checkpoint(self.checkpoint, model, meta)
        write_history(self.history_tsv, history)
        write_json(self.metrics_json, summary)


class TrainingRecord(TrainingHooks):
    """Resume and tracking, plugged into the training loop as its hooks.

    Entering claims the run's resume state (`resume.claim`: one process per run) and loads what
    a killed attempt left; `start` opens the MLflow run (a child of the study's, with system
    metrics) and replays the resumed epochs into it; after every epoch the record is logged and
    the state kept; `finish` logs the outputs and the model. Leaving closes the run, and after
    `finish` removes the state: the outputs are written, nothing is left to resume.
    """

    def __init__(self, name: str, key: str, state_dir: Path | None) -> None:
        self.name, self.key = name, key
        self.state_path = resume.state_path(name, key, state_dir)
        self.stack = ExitStack()
        self.finished = False
        self.earlier: dict = {}

    def __enter__(self) -> TrainingRecord:
        self.owned = self.stack.enter_context(resume.claim(self.state_path))
        saved = resume.load_state(self.state_path) if self.owned else None
        self.state, self.earlier = saved if saved else (None, {})
        self.keeps_states = self.owned
        self.stack.callback(self.remove_state_when_finished)  # after the run closes
        return self

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)

    def start(self, params: dict, info: dict, seed: int, epochs: int) -> None:
        arch, schedule = params["run"]["arch"], params["run"]["schedule"]
        tags = {**tracking.run_tags(arch, schedule), "seed": str(seed)}
        tags |= {f"runtime.{k}": v for k, v in info.items()}
        tags |= study.child_tags()  # a child of this repro's or experiment's study run
        if self.owned:  # runs an earlier, killed attempt left RUNNING end FAILED
            tracking.fail_abandoned_runs(self.key, partial(lineage.dvc_records, root=store_root()))
            tags[tracking.RESUME_KEY_TAG] = self.key
        if self.state is not None:
            tags |= resumed_tags(self.name, self.state, self.earlier, epochs)
        self.run = self.stack.enter_context(
            tracking.training_run(self.name, tags, system=True)  # CPU, memory, GPU too
        )
        self.run.log_params(params)
        history = self.state.history if self.state else []  # curves start at epoch 1
        self.run.log_steps((record.epoch, record.metrics()) for record in history)
        self.started = time.perf_counter() - self.earlier.get("wall_time_s", 0.0)

    def elapsed(self) -> float:
        """Seconds of training, the killed attempts' included."""
        return time.perf_counter() - self.started

    def epoch_done(self, record: EpochRecord) -> None:
        self.run.log_metrics(record.metrics(), step=record.epoch)

    def keep(self, state: TrainState) -> None:
        """After every epoch: the state a rerun continues from if this process dies."""
        facts = {"mlflow_run_id": self.run.run_id, "wall_time_s": round(self.elapsed(), 3)}
        resume.save_state(self.state_path, state, facts)

    def finish(self, outputs: TrainingOutputs, prepared: Path, wall_time: float) -> None:
        """Log the written outputs: their hash, the wall time, the data version, the model."""
        self.run.set_tags({tracking.OUTPUT_MD5_TAG: file_md5(outputs.metrics_json)})
        self.run.log_metrics({"wall_time_s": wall_time})
        lineage.log_prepared_dataset(self.run, prepared)  # the data version, by its DVC hash
        from dogbreeds.serving import pyfunc  # MLflow's model code: only where it logs one

        pyfunc.log_model(self.run, outputs.checkpoint)  # servable: runs:/<id>/model
        self.run.log_artifact(outputs.history_tsv)  # MLflow charts the curves itself
        self.finished = True

    def remove_state_when_finished(self) -> None:
        if self.owned and self.finished:
            resume.remove_state(self.state_path)


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
