"""MLflow tracking: one experiment for the study, one run per (arch, schedule).

The store is an embedded SQLite database at the repository root (`sqlite:///<root>/mlflow.db`)
unless `MLFLOW_TRACKING_URI` names another one. The root is `DVC_ROOT` when DVC sets it: under
`dvc exp run --temp` and `dvc queue` a stage runs in a copy under `.dvc/tmp/exps/`, and its run
must land in the main repository's store, with its artifacts in `<root>/mlartifacts`, not in the
copy that DVC deletes afterwards.

This is the only module that imports mlflow; the rest of the package talks to a `Run`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before mlflow is imported: no usage telemetry, and no INFO chatter in every stage's log.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from filelock import FileLock  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

for _noisy in ("mlflow", "alembic"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

log = logging.getLogger(__name__)

EXPERIMENT = "dogbreeds"


def store_root(cwd: Path | None = None) -> Path:
    """The repository whose store and artifacts a run belongs to.

    `DVC_ROOT` wins (set by DVC for experiments run in a temporary copy); otherwise the nearest
    directory holding `.dvc/`, starting at `cwd`; otherwise `cwd` itself.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return start


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set (a team server), else the SQLite file at `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def open_experiment(root: Path | None = None) -> tuple[mlflow.MlflowClient, str]:
    """A client for the study's store and the id of its experiment, creating both if needed.

    Creating the SQLite schema is not safe when two processes do it at once (a `dvc queue`
    with several jobs), so every process takes a file lock beside the database first.
    """
    root = root or store_root()
    uri = tracking_uri(root)
    with FileLock(str(root / "mlflow.db.lock")):
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            # A fixed artifact location under the root, so a temporary copy's artifacts survive it;
            # a team server (MLFLOW_TRACKING_URI) chooses its own.
            location = (
                None if "MLFLOW_TRACKING_URI" in os.environ else (root / "mlartifacts").as_uri()
            )
            experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
            log.info("created MLflow experiment '%s' in %s", EXPERIMENT, uri)
            return client, experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return client, experiment.experiment_id


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit, or None outside a git repository (or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(arch: str, schedule: str) -> dict[str, str]:
    """Tags that let the MLflow UI filter and trace a run back to code and DVC experiment."""
    tags = {"arch": arch, "schedule": schedule}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class Run:
    """One MLflow run, logged through an explicit client (no global active-run state)."""

    def __init__(self, client: mlflow.MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MlflowClient.log_batch splits params into MLflow's 100-per-request limit itself.
        items = [Param(key, value) for key, value in flatten(params).items()]
        self.client.log_batch(self.run_id, params=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def start_run(run_name: str, tags: Mapping[str, str], root: Path | None = None) -> Run:
    """A new run named `run_name` in the study's experiment."""
    client, experiment_id = open_experiment(root)
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    log.info("MLflow run %s (%s) in %s", run_name, run.info.run_id, client.tracking_uri)
    return Run(client, run.info.run_id)


@contextmanager
def training_run(run_name: str, tags: Mapping[str, str], root: Path | None = None) -> Iterator[Run]:
    """A new run that ends FINISHED, or FAILED if the block raises."""
    run = start_run(run_name, tags, root)
    try:
        yield run
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")


def resume_run(
    run_id: str, run_name: str, tags: Mapping[str, str], root: Path | None = None
) -> Run:
    """The run `run_id` if the store has it, else a new run with the same name.

    The run is missing when DVC restored the training stage from its run cache into a fresh
    store (or someone deleted mlflow.db): then the evaluation still gets a run of its own.
    """
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
            client.tracking_uri,
        )
        run = start_run(run_name, {**tags, "trained_in_run": run_id}, root)
        run.end("FINISHED")
        return run
    return Run(client, run_id)
