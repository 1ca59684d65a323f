"""MLflow runs: one per training, named after its DVC stage, ended FINISHED or FAILED.

A `Run` logs through an explicit client (no global active run), every write under the store's
lock (`store.write`). A training killed mid-run cannot end its own run: the next attempt marks it
FAILED (`fail_abandoned_runs`, `mark_failed`), so the store never keeps a run RUNNING. The one
exception to "no global active run" is `start_system_metrics`: MLflow samples CPU, memory and
GPU only for a run its fluent API holds active. Each training run is a child of its study's run
(`tracking.study`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dogbreeds.common import dotted
from dogbreeds.common.proc import git_output
from dogbreeds.common.redact import redact
from dogbreeds.tracking.store import (
    charts_url,
    global_tracking_uri,
    open_experiment,
    store_lock,
    ui_url,
    write,
)

if TYPE_CHECKING:  # MLflow is imported where a run is opened (see tracking.store)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit, or None outside a git repository (or without git)."""
    out = git_output(cwd, "rev-parse", "HEAD")
    return out.strip() if out else None


def source_name() -> str:
    """What made the run, for the UI's Source column: the DVC stage (`train@cnn-s20_14_6`, DVC
    sets DVC_STAGE for every stage command), else the script that was run."""
    return os.environ.get("DVC_STAGE") or Path(sys.argv[0]).name or "python"


def run_tags(arch: str, schedule: str) -> dict[str, str]:
    """Tags that let the MLflow UI filter and trace a run back to code and DVC experiment."""
    tags = {
        "arch": arch,
        "schedule": schedule,
        "mlflow.source.name": source_name(),
        "mlflow.source.type": "LOCAL",
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def flatten(tree: Mapping[str, Any]) -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: MLflow params are flat strings."""
    return {key: str(value) for key, value in dotted.flatten(tree).items()}


class Run:
    """One MLflow run, logged through an explicit client (no global active-run state)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    def _write(self, action: Callable[[], None], what: str) -> None:
        write(self.client.tracking_uri, action, what)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # MlflowClient.log_batch splits params into MLflow's 100-per-request limit itself.
        items = [Param(key, redact(value)) for key, value in flatten(params).items()]
        self._write(lambda: self.client.log_batch(self.run_id, params=items), "params")

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None
    ) -> None:
        """Metrics of the run at `step`; with `model_id`, also of that logged model, where
        `search_logged_models(order_by=...)` ranks models by them."""
        self.log_steps([(step, metrics)], model_id)

    def log_steps(
        self, steps: Iterable[tuple[int, Mapping[str, float]]], model_id: str | None = None
    ) -> None:
        """Metrics at several steps (a curve, epochs replayed) in one write: each write is a
        store transaction under the store's lock, so a curve logged point by point costs a
        stage one per point (`python -m dogbreeds fixedcost` measures a stage's total)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step, model_id=model_id)
            for step, metrics in steps
            for key, value in metrics.items()
        ]
        if batch:  # MlflowClient.log_batch splits metrics into MLflow's per-request limit
            self._write(lambda: self.client.log_batch(self.run_id, metrics=batch), "metrics")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(str(v))) for k, v in tags.items()]
        self._write(lambda: self.client.log_batch(self.run_id, tags=items), "tags")

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._write(
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), "artifact"
        )

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        """Every file under `folder`, into the run's `artifact_path`, in one write."""
        self._write(
            lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path), "artifacts"
        )

    def logged_model_id(self) -> str | None:
        """The id of the model this run logged (a training logs one), or None (a run made
        for an evaluation whose training is not in this store). Found by the run alone, so an
        evaluation need not import the serving code that names the model (a second per stage).
        """
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        models = self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{self.run_id}'", max_results=1
        )
        return models[0].model_id if models else None

    def end(self, status: str = "FINISHED") -> None:
        self._write(lambda: self.client.set_terminated(self.run_id, status=status), "end")


def start_run(run_name: str, tags: Mapping[str, str], root: Path | None = None) -> Run:
    """A new run named `run_name` in the study's experiment."""
    client, experiment_id = open_experiment(root)
    clean = {key: redact(str(value)) for key, value in tags.items()}
    run = write(
        client.tracking_uri,
        lambda: client.create_run(experiment_id, run_name=run_name, tags=clean),
        "new run",
    )
    log.info("MLflow run %s (%s) in %s", run_name, run.info.run_id, redact(client.tracking_uri))
    if client.tracking_uri.startswith(("http://", "https://")):
        log.info("MLflow UI: %s", ui_url(client.tracking_uri, experiment_id))
        log.info("MLflow charts: %s", charts_url(client.tracking_uri, experiment_id))
    return Run(client, run.info.run_id)


def start_system_metrics(run: Run) -> bool:
    """Have MLflow sample the machine (`system/cpu_utilization_percentage`, memory, disk,
    network, GPU) into `run` from now on; False, with a warning, if it cannot.

    MLflow's only public switch for this is `mlflow.start_run(log_system_metrics=True)` (its
    monitor class is not in the API reference), so the run is resumed in the fluent API for
    the training's length. It samples every 10 s, MLflow's default
    (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes it): a thread reading psutil, no cost a
    training notices. A run the monitor cannot start for is still a run: tracking never stops a
    training.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = run.client.tracking_uri

    def resume() -> None:
        mlflow.start_run(run_id=run.run_id, log_system_metrics=True)

    try:
        # The monitor keeps the URI it was made with: the global one is needed only meanwhile.
        with global_tracking_uri(uri):
            write(uri, resume, "system metrics")
    except MlflowException as exc:
        log.warning("MLflow run %s: no system metrics (%s)", run.run_id, redact(str(exc))[:200])
        return False
    return True


def stop_system_metrics(run: Run, status: str) -> bool:
    """End the fluent run that `start_system_metrics` resumed, with the block's `status`, and
    flush the monitor's last samples; False, with a warning, if that failed (the run is then
    still to be ended).

    The monitor writes from its own thread without the store's lock (MLflow's code, not ours);
    under `dvc queue -j 2` a write of it that meets a locked SQLite file past the 20 s busy
    timeout makes MLflow stop sampling that run with a warning, and the training goes on.
    """
    import mlflow

    uri = run.client.tracking_uri
    try:
        with global_tracking_uri(uri), store_lock(uri) or nullcontext():
            mlflow.end_run(status)  # sets the status, stops the monitor, logs what it holds
    except Exception as exc:  # keep the training's own outcome, as training_run does
        log.warning(
            "MLflow run %s: system metrics not stopped cleanly (%s)",
            run.run_id,
            redact(" ".join(str(exc).split())[:200]),
        )
        return False
    return True


@contextmanager
def training_run(
    run_name: str,
    tags: Mapping[str, str],
    root: Path | None = None,
    system: bool = False,
) -> Iterator[Run]:
    """A new run that ends FINISHED, or FAILED if the block raises; with `system`, MLflow's
    system metrics sampled into it meanwhile (a training's: a test's or an evaluation's run
    has no use for them; see `start_system_metrics`). Ending the monitor ends the run."""
    run = start_run(run_name, tags, root)
    monitored = False
    try:
        monitored = system and start_system_metrics(run)
        yield run
    except BaseException:
        if not (monitored and stop_system_metrics(run, "FAILED")):
            try:
                run.end("FAILED")
            except Exception as end_error:  # a full disk fails this write too: keep the first
                log.warning(
                    "MLflow run %s not marked FAILED (%s); the next attempt of it marks it",
                    run.run_id,
                    redact(" ".join(str(end_error).split())[:200]),
                )
        raise
    if not (monitored and stop_system_metrics(run, "FINISHED")):
        run.end("FINISHED")


def mark_failed(run_id: str, root: Path | None = None) -> None:
    """End run `run_id` as FAILED if it is still RUNNING (a process killed mid-run cannot).

    A run missing from this store (another tracking URI, a deleted mlflow.db) is left alone.
    """
    from mlflow.exceptions import MlflowException

    client, _ = open_experiment(root)
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            write(client.tracking_uri, lambda: client.set_terminated(run_id, "FAILED"), "end")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.warning(
            "MLflow run %s is not in %s: not marking it FAILED", run_id, redact(client.tracking_uri)
        )


RESUME_KEY_TAG = "resume_key"
# The md5 of the metrics file a training wrote (DVC's own hash of it): a later attempt with the
# same resume key asks DVC whether that file was ever recorded (`tracking.lineage.dvc_records`).
OUTPUT_MD5_TAG = "metrics_md5"
UNRECORDED = (
    "the training finished, but its stage was killed before DVC recorded its outputs; "
    "a later attempt trained it again"
)


def fail_abandoned_runs(
    key: str, recorded: Callable[[str], bool | None] | None = None, root: Path | None = None
) -> list[str]:
    """Mark FAILED every run tagged `resume_key=<key>` that no DVC stage kept; return their ids.

    Only the process holding the resume lock of `key` (`resume.claim`) tags its run with the key
    and calls this, so another RUNNING run with that tag belongs to a process that died
    (SIGKILL, power cut): killed before its first epoch, it left no state that names it. A
    FINISHED one whose metrics file DVC never recorded (`recorded(md5)` is False: not in
    dvc.lock nor in the run cache) was killed in the moment between its end and DVC's commit;
    its outputs are gone, so it is FAILED too, with a tag saying why. A FINISHED run DVC did
    record (`dvc repro --force` trains it again) stays FINISHED, as does one nobody can tell.
    """
    client, experiment_id = open_experiment(root)
    query = f"tags.{RESUME_KEY_TAG} = '{key}'"
    abandoned = []
    for r in client.search_runs([experiment_id], query):
        md5 = r.data.tags.get(OUTPUT_MD5_TAG)
        if r.info.status == "RUNNING":
            why = "was left RUNNING by a killed training"
        elif r.info.status == "FINISHED" and md5 and recorded and recorded(md5) is False:
            why = "finished, but DVC never recorded its outputs"
            write(client.tracking_uri, partial(client.set_tag, r.info.run_id, "failure",
                                               UNRECORDED), "tag")  # fmt: skip
        else:
            continue
        write(client.tracking_uri, partial(client.set_terminated, r.info.run_id, "FAILED"), "end")
        log.info("MLflow run %s %s: marked FAILED", r.info.run_id, why)
        abandoned.append(r.info.run_id)
    return abandoned


def resume_run(
    run_id: str, run_name: str, tags: Mapping[str, str], root: Path | None = None
) -> Run:
    """The run `run_id` if the store has it, else a new run with the same name.

    The run is missing when DVC restored the training stage from its run cache into a fresh
    store (or someone deleted mlflow.db): then the evaluation still gets a run of its own.
    """
    from mlflow.exceptions import MlflowException

    client, _ = open_experiment(root)
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.warning(
            "MLflow run %s (%s) is not in %s (training restored from DVC's run cache?); "
            "starting a new run with the same name",
            run_id,
            run_name,
            redact(client.tracking_uri),
        )
        from dogbreeds.tracking import study  # it builds on this module: imported when needed

        tags = {**tags, "trained_in_run": run_id, **study.child_tags(root)}
        run = start_run(run_name, tags, root)
        run.end("FINISHED")
        return run
    return Run(client, run_id)
