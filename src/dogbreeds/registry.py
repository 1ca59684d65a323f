"""The model registry: the best run of each net becomes `dogbreeds-<arch>` with alias `champion`.

"Best" is the highest final `val_acc` (accuracy on the deformed validation set, logged each
epoch by training; the last epoch's value is the run's) among the experiment's finished runs of
that net that logged a model: every schedule and every DVC experiment competes, so a team sees
one answer to "which cnn do we use?", `models:/dogbreeds-cnn@champion`. Ties go to the older
run, so re-registering without new runs changes nothing. Test accuracy is never used to choose:
it is the number the study reports.

Called after each evaluation (the evaluate stage); idempotent: a champion that is already
registered gets no new version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run as MlflowRun
from mlflow.exceptions import MlflowException

from dogbreeds import tracking

log = logging.getLogger(__name__)

ALIAS = "champion"
SELECT_BY = "val_acc"


def registered_name(arch: str) -> str:
    return f"dogbreeds-{arch}"


@dataclass(frozen=True)
class Champion:
    """One registered champion: which run, which version, and its val accuracy."""

    name: str
    version: str
    run_id: str
    run_name: str
    val_acc: float

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{ALIAS}"


def best_run(client: MlflowClient, experiment_id: str, arch: str) -> MlflowRun | None:
    """The finished run of `arch` with the highest val_acc and a logged model, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.arch = '{arch}' AND attributes.status = 'FINISHED'",
        order_by=[f"metrics.{SELECT_BY} DESC", "attributes.start_time ASC"],
        max_results=1000,
    )
    for run in runs:
        if SELECT_BY in run.data.metrics and logged_model_id(client, experiment_id, run):
            return run
    return None


def logged_model_id(client: MlflowClient, experiment_id: str, run: MlflowRun) -> str | None:
    """The id of the model the run logged as `tracking.MODEL_NAME`, or None."""
    models = client.search_logged_models(
        [experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{tracking.MODEL_NAME}'",
        max_results=1,
    )
    return models[0].model_id if models else None


def current_champion(client: MlflowClient, name: str):
    """The model version the alias points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_champion(arch: str, root: Path | None = None) -> Champion | None:
    """Point `dogbreeds-<arch>@champion` at the best run of `arch`; None if no run qualifies."""
    client, experiment_id = tracking.open_experiment(root)
    run = best_run(client, experiment_id, arch)
    if run is None:
        log.warning(
            "no finished %s run with a logged model and %s: nothing to register", arch, SELECT_BY
        )
        return None
    name, val_acc = registered_name(arch), run.data.metrics[SELECT_BY]
    current = current_champion(client, name)
    if current is not None and current.run_id == run.info.run_id:
        version = current.version
    else:
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(
                name, description=f"dogbreeds {arch} net, best {SELECT_BY}"
            )
        model_id = logged_model_id(client, experiment_id, run)
        with tracking.global_tracking_uri(client.tracking_uri):  # the store resolves `source`
            created = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=run.info.run_id,
                model_id=model_id,
                tags={SELECT_BY: f"{val_acc:.4f}"},
            )
        version = created.version
        client.set_registered_model_alias(name, ALIAS, version)
        log.info(
            "%s@%s -> version %s (run %s, %s %.4f)",
            name,
            ALIAS,
            version,
            run.info.run_name,
            SELECT_BY,
            val_acc,
        )
    return Champion(name, str(version), run.info.run_id, run.info.run_name, val_acc)


def register_champions(archs: list[str], root: Path | None = None) -> dict[str, Champion]:
    """`register_champion` for every net that has a qualifying run."""
    champions = {}
    for arch in archs:
        champion = register_champion(arch, root)
        if champion is not None:
            champions[arch] = champion
    return champions
