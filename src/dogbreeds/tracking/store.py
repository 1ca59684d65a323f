"""The MLflow store: where the study's experiment lives, and the lock every write holds.

The store is an embedded SQLite database at the repository root (`sqlite:///<root>/mlflow.db`)
unless `MLFLOW_TRACKING_URI` names another one. The root is `DVC_ROOT` when DVC sets it: under
`dvc exp run --temp` and `dvc queue` a stage runs in a copy under `.dvc/tmp/exps/`, and its run
must land in the main repository's store, with its artifacts in `<root>/mlartifacts`, not in the
copy that DVC deletes afterwards.

Runs are in `tracking.runs`, data lineage in `tracking.lineage`; the logged model and the
registry are in `dogbreeds.serving`.

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

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from filelock import FileLock

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import DiskFullError, repo_root
from dogbreeds.common.redact import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow itself is imported where a run is opened or a model logged, not with this module:
# `import mlflow` is most of a second, and a stage's `--help` (or a DVC stage restored from
# the run cache) has no use for it (`python -m dogbreeds fixedcost`, "imports").
# Before it is imported: no usage telemetry, and no INFO chatter in every stage's log.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

for _noisy in ("mlflow", "mlflow.system_metrics", "alembic"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
# MLflow logs every SQLite OperationalError (locked, disk full) with its traceback, then raises
# it as an MlflowException, which `write` retries or turns into one line: keep the raise only.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPERIMENT = "dogbreeds"
# The experiment's kind: model training (MLflow 3.17's UI ignores it; see the docstring, ui_url).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def store_root(cwd: Path | None = None) -> Path:
    """The repository whose store and artifacts a run belongs to (see `common.fs.repo_root`)."""
    return repo_root(cwd)


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set (a team server), else the SQLite file at `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# ----------------------------------------------------------------------------- a broken store


class StoreError(DogbreedsError):
    """The study's MLflow store cannot be used; the message names the file and what to do."""


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for a server."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def broken_store(db: Path, what: str) -> StoreError:
    """A SQLite store that is not a database (any more): no run in it can be read."""
    return StoreError(
        f"{db}: {what}; move it aside (mv {db} {db}.broken) and rerun to start a new store "
        "(the runs it held are lost unless you have a copy)"
    )


def check_sqlite(uri: str) -> None:
    """Refuse a store file that is not SQLite (an empty file is a new, empty database)."""
    db = sqlite_file(uri)
    if db is None or not db.is_file() or db.stat().st_size == 0:
        return
    with db.open("rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise broken_store(db, "not an SQLite database")


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
            if "database or disk is full" in str(exc):
                raise DiskFullError(
                    f"{sqlite_file(uri)}: no space left on device while writing MLflow's "
                    f"store ({what}); free some space and run the stage again"
                ) from exc
            if "database is locked" not in str(exc) or attempt == WRITE_ATTEMPTS:
                raise
        delay = min(0.1 * 2**attempt, 5.0) * (1 + random.random())
        log.warning("MLflow store busy (%s, try %d); retrying in %.1f s", what, attempt, delay)
        time.sleep(delay)
        attempt += 1


def open_experiment(root: Path | None = None) -> tuple[MlflowClient, str]:
    """A client for the study's store and the id of its experiment, creating both if needed.

    Creating the SQLite schema is not safe when two processes do it at once (a `dvc queue`
    with several jobs), so every process takes the file lock beside the database first.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    root = root or store_root()
    uri = tracking_uri(root)
    check_sqlite(uri)
    with store_lock(uri) or file_lock(root / "mlflow.db.lock"):
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(EXPERIMENT)
        except Exception as exc:  # a SQLite file cut short or overwritten in the middle
            db = sqlite_file(uri)
            if db is None or not ("malformed" in str(exc) or "not a database" in str(exc)):
                raise
            what = "a damaged SQLite database (database disk image is malformed)"
            raise broken_store(db, what) from None
        if experiment is None:
            # A fixed artifact location under the root, so a temporary copy's artifacts survive it;
            # a team server (MLFLOW_TRACKING_URI) chooses its own.
            location = (
                None if "MLFLOW_TRACKING_URI" in os.environ else (root / "mlartifacts").as_uri()
            )
            try:
                experiment_id = client.create_experiment(
                    EXPERIMENT, artifact_location=location, tags=EXPERIMENT_KIND
                )
            except MlflowException as exc:
                # A server's store has no lock of ours: another machine (a cluster worker, a
                # teammate) created it between the lookup and now. Then it is the one to use.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(EXPERIMENT)
            else:
                log.info("created MLflow experiment '%s' in %s", EXPERIMENT, redact(uri))
                return client, experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        for key, value in EXPERIMENT_KIND.items():  # a store made before the tag existed
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return client, experiment.experiment_id


def ui_url(server: str, experiment_id: str) -> str:
    """The experiment's runs page in the MLflow UI of `server` (http://host:port).

    MLflow 3.17 takes an experiment's kind from the URL's `workflowType`, else from the
    browser's "GenAI | Model training" switch (localStorage), else GenAI; never from the
    experiment-kind tag. So the link says so.
    """
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def charts_url(server: str, experiment_id: str) -> str:
    """The experiment's chart view with every training's `val_acc` curve on one chart.

    MLflow 3.17's UI nests child runs under their parent while the runs are sorted by start time
    (its default), and its charts plot only the rows on show: with the trainings the study run's
    children, the default chart view draws the study run's bars and no curve until the study run
    is expanded. Sorted by any other key the list is flat, so this link sorts by `val_acc`.
    """
    sort = "orderByKey=metrics.%60val_acc%60&orderByAsc=false"
    return f"{ui_url(server, experiment_id)}&compareRunsMode=CHART&{sort}"


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for a block, then put everything back.

    Model logging and loading read the global URI, not a client's. `mlflow.set_tracking_uri`
    also exports MLFLOW_TRACKING_URI, which `tracking_uri` would then read for the rest of the
    process, so the variable is restored too.
    """
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # clears the global and the variable
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
