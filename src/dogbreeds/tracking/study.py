"""The study run: one MLflow parent run per `dvc repro` or `dvc exp run`, the trainings its
children, the report's headline metrics, `report.md` and figures in it.

A study run is named after the DVC experiment (`DVC_EXP_NAME`, which DVC sets for every stage
of `dvc exp run` and `dvc queue`), or `workspace-<commit>` for `dvc repro` in the workspace, and
found by its tag `dogbreeds.study=<name>`. Whichever stage needs it first creates it: the first
training to start (it tags itself `mlflow.parentRunId`, so the UI nests it), or the report stage
when DVC's run cache restored every training. Under the store's lock, so the trainings of
`dvc queue start -j 2` find one run, not two; a server store has no lock of ours (two cluster
workers may each create one), so the report stage folds any twin into the earliest
(`merge_twins`). A study run is never left RUNNING: it is FINISHED from its creation and the
report stage finishes it again at its end, so its duration spans the study.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dogbreeds.common.redact import redact
from dogbreeds.tracking.runs import Run, git_commit
from dogbreeds.tracking.store import open_experiment, write

if TYPE_CHECKING:  # MLflow is imported where a run is opened (see tracking.store)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

STUDY_TAG = "dogbreeds.study"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under the run it names


def study_name() -> str:
    """The DVC experiment's name, else `workspace-<short commit>` (`workspace` outside git):
    every stage of one `dvc repro` or `dvc exp run` gets the same name."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    commit = git_commit()
    return f"workspace-{commit[:7]}" if commit else "workspace"


def study_tags(name: str) -> dict[str, str]:
    """The study run's tags: its name (how it is found) and its source, as a training's. Not
    `dvc_exp_name`: that tag marks trainings, and searches for it must find trainings only."""
    tags = {STUDY_TAG: name, "mlflow.source.name": "dvc.yaml", "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def study_runs(client: MlflowClient, experiment_id: str, name: str) -> list:
    """The runs tagged as study `name`, earliest first (deleted ones are not found)."""
    return client.search_runs(
        [experiment_id],
        f"tags.`{STUDY_TAG}` = '{name}'",
        order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
    )


def study_run(root: Path | None = None, name: str | None = None) -> Run:
    """The study's run, created FINISHED if the store has none yet; the lookup and the creation
    are one write under the store's lock."""
    client, experiment_id = open_experiment(root)
    name = name or study_name()

    def find_or_create() -> str:
        found = study_runs(client, experiment_id, name)
        if found:
            return found[0].info.run_id
        tags = {key: redact(value) for key, value in study_tags(name).items()}
        created = client.create_run(experiment_id, run_name=name, tags=tags)
        client.set_terminated(created.info.run_id, "FINISHED")  # a container, never RUNNING
        log.info("MLflow study run %s (%s)", name, created.info.run_id)
        return created.info.run_id

    return Run(client, write(client.tracking_uri, find_or_create, "study run"))


def child_tags(root: Path | None = None) -> dict[str, str]:
    """Tags that make a new run a child of the study's run (creating that if need be)."""
    return {PARENT_TAG: study_run(root).run_id}


def merge_twins(client: MlflowClient, experiment_id: str, name: str) -> str:
    """Keep the earliest run of study `name`: move the children of any later one to it and
    delete the later one; return the kept run's id.

    Twins arise only on a server store, where two machines can both find no study run and both
    create one. The report stage runs after every training of the study, so it sees them all.
    """
    first, *twins = study_runs(client, experiment_id, name)
    for twin in twins:
        query = f"tags.`{PARENT_TAG}` = '{twin.info.run_id}'"
        for child in client.search_runs([experiment_id], query, max_results=10_000):
            client.set_tag(child.info.run_id, PARENT_TAG, first.info.run_id)
        client.delete_run(twin.info.run_id)
        log.info("MLflow study run %s: merged its twin %s", name, twin.info.run_id)
    return first.info.run_id


def headline_metrics(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """metrics/headline.json's numbers under the keys `dvc exp show` gives them:
    {'cnn': {'s20_14_6': {'test_acc': 0.5}}} -> ('cnn.s20_14_6.test_acc', 0.5)."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from headline_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{key}", float(value)


def log_report(metrics_dir: Path = Path("metrics"), root: Path | None = None) -> Run:
    """Log the report stage's outputs into the study's run: the headline metrics (step 0, so a
    rerun of the report adds a point, never a clash), `report.md`, `headline.json` and every
    figure under `figures/`; then finish the run at this moment. Rerunning it logs the same
    files over the same artifact paths."""
    name = study_name()
    study_run(root, name)  # created here when DVC's run cache restored every training
    client, experiment_id = open_experiment(root)
    merged = partial(merge_twins, client, experiment_id, name)
    run = Run(client, write(client.tracking_uri, merged, "study run"))
    headline = metrics_dir / "headline.json"
    run.log_metrics(dict(headline_metrics(json.loads(headline.read_text()))))
    run.log_artifact(metrics_dir / "report.md")
    run.log_artifact(headline)
    run.log_artifacts(metrics_dir / "figures", "figures")
    run.end("FINISHED")
    log.info("report and headline metrics logged to MLflow study run %s (%s)", name, run.run_id)
    return run
