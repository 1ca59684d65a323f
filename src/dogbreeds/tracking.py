"""MLflow tracking: one experiment for the study, one run per (arch, schedule).

The store is an embedded SQLite database at the repository root (`sqlite:///<root>/mlflow.db`)
unless `MLFLOW_TRACKING_URI` names another one. The root is `DVC_ROOT` when DVC sets it: under
`dvc exp run --temp` and `dvc queue` a stage runs in a copy under `.dvc/tmp/exps/`, and its run
must land in the main repository's store, with its artifacts in `<root>/mlartifacts`, not in the
copy that DVC deletes afterwards.

This is the module that logs to MLflow; the rest of the package talks to a `Run`. (`pyfunc` and
`registry` import mlflow too: the model that MLflow serves, and the model registry.)

What a user sees in the MLflow UI is set here as well: every run names its Source (the DVC stage
and git commit) and its Dataset (the prepared tensors, named by their DVC hash), which the runs
table otherwise shows as "-"; the experiment is tagged as model training
(`mlflow.experimentKind`). MLflow 3.17's UI does not read that tag: its workflow-based
navigation flag is built in as on, and then the experiment's kind, and so its landing page,
comes only from the `workflowType` in the URL, else the browser's localStorage
(`mlflow.workflowType_v1`, set by the sidebar's "GenAI | Model training" switch), else "genai":
a new browser opens the GenAI overview. No tag or server setting changes that, so the links we
log and publish (`ui_url`) carry `workflowType=machine_learning`. The tag stays for UIs built
with that flag off, which take the kind from it, and for API readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

# Before mlflow is imported: no usage telemetry, and no INFO chatter in every stage's log.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import yaml  # noqa: E402
from filelock import FileLock  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from dogbreeds.fsutil import repo_root  # noqa: E402
from dogbreeds.redact import redact  # noqa: E402

for _noisy in ("mlflow", "alembic"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPERIMENT = "dogbreeds"
# The experiment's kind: model training (MLflow 3.17's UI ignores it; see the docstring, ui_url).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MODEL_NAME = "model"  # the logged model's name inside each run: runs:/<run_id>/model


def store_root(cwd: Path | None = None) -> Path:
    """The repository whose store and artifacts a run belongs to (see `fsutil.repo_root`)."""
    return repo_root(cwd)


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set (a team server), else the SQLite file at `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# ----------------------------------------------------------------------------- concurrent writers

# `dvc queue start -j N` runs N stages at once against one SQLite file. SQLite lets one writer
# in at a time and makes the others wait at most a busy timeout, after which they fail with
# "database is locked". So every write of this package holds a file lock beside the database
# (writers queue up in the OS, however long a write takes), and a write that still meets a
# lock (a reader such as `mlflow ui` or another tool) is retried with backoff.
WRITE_ATTEMPTS = 8
_locks: dict[str, FileLock] = {}


def file_lock(path: str | Path) -> FileLock:
    """One lock object per path in a process, so that holding it twice (nested) is safe."""
    return _locks.setdefault(str(path), FileLock(str(path)))


def store_lock(uri: str) -> FileLock | None:
    """The lock beside a SQLite store (`<db>.lock`); None for a server, which queues itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return file_lock(uri.removeprefix("sqlite:///") + ".lock")


def write(uri: str, action: Callable[[], T], what: str) -> T:
    """Do one write to the store at `uri`: under its lock, retried while the store is locked."""
    lock = store_lock(uri)
    attempt = 1
    while True:
        try:
            with lock or nullcontext():
                return action()
        except Exception as exc:  # MlflowException or SQLAlchemy's OperationalError
            if "database is locked" not in str(exc) or attempt == WRITE_ATTEMPTS:
                raise
        delay = min(0.1 * 2**attempt, 5.0) * (1 + random.random())
        log.warning("MLflow store busy (%s, try %d); retrying in %.1f s", what, attempt, delay)
        time.sleep(delay)
        attempt += 1


def open_experiment(root: Path | None = None) -> tuple[mlflow.MlflowClient, str]:
    """A client for the study's store and the id of its experiment, creating both if needed.

    Creating the SQLite schema is not safe when two processes do it at once (a `dvc queue`
    with several jobs), so every process takes the file lock beside the database first.
    """
    root = root or store_root()
    uri = tracking_uri(root)
    with store_lock(uri) or file_lock(root / "mlflow.db.lock"):
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            # A fixed artifact location under the root, so a temporary copy's artifacts survive it;
            # a team server (MLFLOW_TRACKING_URI) chooses its own.
            location = (
                None if "MLFLOW_TRACKING_URI" in os.environ else (root / "mlartifacts").as_uri()
            )
            experiment_id = client.create_experiment(
                EXPERIMENT, artifact_location=location, tags=EXPERIMENT_KIND
            )
            log.info("created MLflow experiment '%s' in %s", EXPERIMENT, redact(uri))
            return client, experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        for key, value in EXPERIMENT_KIND.items():  # a store made before the tag existed
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return client, experiment.experiment_id


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit, or None outside a git repository (or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


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

    def _write(self, action: Callable[[], None], what: str) -> None:
        write(self.client.tracking_uri, action, what)

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MlflowClient.log_batch splits params into MLflow's 100-per-request limit itself.
        items = [Param(key, redact(value)) for key, value in flatten(params).items()]
        self._write(lambda: self.client.log_batch(self.run_id, params=items), "params")

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self._write(lambda: self.client.log_batch(self.run_id, metrics=batch), "metrics")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, redact(str(v))) for k, v in tags.items()]
        self._write(lambda: self.client.log_batch(self.run_id, tags=items), "tags")

    def log_artifact(self, path: Path) -> None:
        self._write(lambda: self.client.log_artifact(self.run_id, str(path)), "artifact")

    def end(self, status: str = "FINISHED") -> None:
        self._write(lambda: self.client.set_terminated(self.run_id, status=status), "end")


def ui_url(server: str, experiment_id: str) -> str:
    """The experiment's runs page in the MLflow UI of `server` (http://host:port).

    MLflow 3.17 takes an experiment's kind from the URL's `workflowType`, else from the
    browser's "GenAI | Model training" switch (localStorage), else GenAI; never from the
    experiment-kind tag. So the link says so.
    """
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


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


def mark_failed(run_id: str, root: Path | None = None) -> None:
    """End run `run_id` as FAILED if it is still RUNNING (a process killed mid-run cannot).

    A run missing from this store (another tracking URI, a deleted mlflow.db) is left alone.
    """
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


def fail_abandoned_runs(key: str, root: Path | None = None) -> list[str]:
    """Mark FAILED every RUNNING run tagged `resume_key=<key>`; return their ids.

    Only the process holding the resume lock of `key` (`resume.claim`) tags its run with the key
    and calls this, so any other RUNNING run with that tag belongs to a process that died
    (SIGKILL, power cut): killed before its first epoch, it left no state that names it.
    """
    client, experiment_id = open_experiment(root)
    query = f"tags.{RESUME_KEY_TAG} = '{key}' and attributes.status = 'RUNNING'"
    abandoned = [r.info.run_id for r in client.search_runs([experiment_id], query)]
    for run_id in abandoned:
        write(client.tracking_uri, partial(client.set_terminated, run_id, "FAILED"), "end")
        log.info("MLflow run %s was left RUNNING by a killed training: marked FAILED", run_id)
    return abandoned


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
            redact(client.tracking_uri),
        )
        run = start_run(run_name, {**tags, "trained_in_run": run_id}, root)
        run.end("FINISHED")
        return run
    return Run(client, run_id)


# ----------------------------------------------------------------------------- dataset and model


def dvc_hash(out: str, lock_file: Path = Path("dvc.lock")) -> str | None:
    """The hash DVC recorded for output `out` (e.g. `data/prepared` -> `3f2c...a1.dir`), or None
    if dvc.lock does not list it yet."""
    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if entry.get("path") == out and entry.get("md5"):
                return entry["md5"]
    return None


def content_hash(folder: Path) -> str:
    """md5 over the relative paths and bytes of the files under `folder` (when DVC has no hash)."""
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepared_dataset(prepared: Path, out: str = "data/prepared") -> Dataset:
    """The prepared tensors as an MLflow dataset named by their DVC hash: `prepared@<hash>`.

    The hash is dvc.lock's for `out` (the deform stage's output, recorded before training
    runs), so `dvc.lock` and MLflow agree on which data version a run used; outside DVC it is
    an md5 of the files, and the source says so.
    """
    md5 = dvc_hash(out)
    source = {"path": out, "dvc_md5": md5}
    if md5 is None:
        md5 = content_hash(prepared)
        source = {"path": str(prepared), "content_md5": md5}
    short = md5.removesuffix(".dir")[:12]
    return Dataset(
        name=f"prepared@{short}",
        digest=short,
        source_type="dvc" if "dvc_md5" in source else "local",
        source=json.dumps(source),
    )


def log_prepared_dataset(run: Run, prepared: Path, context: str = "training") -> Dataset:
    """Link the run to the prepared data version it used (the UI's Dataset column)."""
    dataset = prepared_dataset(prepared)
    tags = [InputTag("mlflow.data.context", context)]
    inputs = [DatasetInput(dataset, tags)]
    write(
        run.client.tracking_uri,
        lambda: run.client.log_inputs(run.run_id, datasets=inputs),
        "dataset",
    )
    return dataset


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for a block, then put everything back.

    Model logging and loading read the global URI, not a client's. `mlflow.set_tracking_uri`
    also exports MLFLOW_TRACKING_URI, which `tracking_uri` would then read for the rest of the
    process, so the variable is restored too.
    """
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # clears the global and the variable
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def log_pyfunc_model(run: Run, checkpoint: Path) -> str:
    """Log a checkpoint as the run's MLflow model (`runs:/<run_id>/model`); return its URI.

    See `dogbreeds.pyfunc`: a pyfunc with preprocessing, signature and input example. MLflow's
    model logging reads the global tracking URI (see `global_tracking_uri`), and would create the
    logged model in the globally active experiment, so it is created here, in the run's.
    """
    import mlflow.pyfunc  # the flavour, only where a model is logged

    from dogbreeds import pyfunc

    experiment_id = run.client.get_run(run.run_id).info.experiment_id
    model = run.client.create_logged_model(
        experiment_id, name=MODEL_NAME, source_run_id=run.run_id
    )  # created here, in the run's experiment: MLflow would pick the globally active one
    with global_tracking_uri(run.client.tracking_uri):
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run.run_id,
            model_id=model.model_id,
            **pyfunc.model_kwargs(Path(checkpoint)),
        )
    log.info("logged %s as MLflow model %s", checkpoint, info.model_uri)
    return info.model_uri


def load_pyfunc(model: str, root: Path | None = None):
    """Load an MLflow model folder or URI (`models:/name@alias`, `runs:/id/model`) from the
    study's store (see `tracking_uri`) as a pyfunc."""
    import mlflow.pyfunc

    with global_tracking_uri(tracking_uri(root or store_root())):
        return mlflow.pyfunc.load_model(model)
