"""The model registry: each net's best run of the study becomes `dogbreeds-<arch>@champion`.

"Best" is the highest final `val_acc` (accuracy on the deformed validation set at the last
epoch) among the study's runs of that net for the current params, read from the train stages'
own outputs (`metrics/train/<run>.json`, which name each run's MLflow id), so a team sees one
answer to "which cnn do we use?", `models:/dogbreeds-cnn@champion`. Test accuracy is never used
to choose: it is the number the study reports.

Registration is a deliberate step (`python -m dogbreeds register`, after `dvc repro` or
`dvc exp apply` of the experiment to ship), not part of any stage: a stage registering in a
queue of experiments would let whichever finished last win, and DVC's run cache would skip it.
It runs under the store's write lock and is idempotent: a champion that is already registered
gets no new version.

Each version carries its model card as its description (`dogbreeds.serving.card`: data,
recipe, metrics with the cell's interval over seeds, limits) and the registered model says what
its champion was trained on. A study on synthetic data makes no champion unless forced: its
nets name real photos' breeds with confidence and no meaning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dogbreeds import DogbreedsError
from dogbreeds.common.redact import redact
from dogbreeds.params import Params, run_name
from dogbreeds.serving import card, pyfunc
from dogbreeds.tracking import store

log = logging.getLogger(__name__)

ALIAS = "champion"
SELECT_BY = "val_acc"
DATA_KIND_TAG = "data_kind"  # a version's tag: real | synthetic


class RegistryError(DogbreedsError):
    """A run cannot be registered (missing metrics or logged model); the message says why."""


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


def logged_model_id(client: MlflowClient, experiment_id: str, run_id: str) -> str | None:
    """The id of the model run `run_id` logged as `pyfunc.MODEL_NAME`, or None."""
    models = client.search_logged_models(
        [experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{pyfunc.MODEL_NAME}'",
        max_results=1,
    )
    return models[0].model_id if models else None


def current_champion(client: MlflowClient, name: str):
    """The model version the alias points at, or None (no such model or alias yet).

    The model is looked up first: a server with MLflow's basic-auth app answers 403, not 404,
    for the alias of a model that does not exist (it finds no permission to check).
    """
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        return None
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass(frozen=True)
class Candidate:
    """One evaluated net of the study, as its train stage recorded it."""

    arch: str
    run_name: str
    run_id: str
    val_acc: float
    order: int  # position in params order (arch, schedule, seed): breaks ties
    schedule: str = ""
    seed: int = 0


def candidates(params: Params, metrics_dir: Path = Path("metrics/train")) -> list[Candidate]:
    """Every (arch, schedule, seed) of `params`, read from its train metrics, in params order.

    These files are the pipeline's own outputs for the current params (DVC restores them even
    when its run cache skipped a training), so the choice does not depend on which runs the
    MLflow store happens to hold or in which order a queue finished them.
    """
    found = []
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            for seed in params.train.seeds:
                name = run_name(arch, schedule, seed)
                path = metrics_dir / f"{name}.json"
                try:
                    metrics = json.loads(path.read_text())
                    run_id, val_acc = metrics["mlflow_run_id"], float(metrics["val_acc"])
                except FileNotFoundError:
                    raise RegistryError(
                        f"{path}: not found (run the study first: dvc repro)"
                    ) from None
                except (ValueError, KeyError, TypeError) as exc:
                    raise RegistryError(
                        f"{path}: no mlflow_run_id/val_acc ({exc!r}); rerun its train stage"
                    ) from None
                found.append(
                    Candidate(arch, name, run_id, val_acc, len(found), schedule, int(seed))
                )
    return found


def choose(found: list[Candidate]) -> dict[str, Candidate]:
    """The champion of each net: highest final val_acc; a tie goes to the earlier in params order
    (schedule, then seed), so the same outputs always give the same champions."""
    best: dict[str, Candidate] = {}
    for candidate in sorted(found, key=lambda c: c.order):
        if candidate.arch not in best or candidate.val_acc > best[candidate.arch].val_acc:
            best[candidate.arch] = candidate
    return dict(sorted(best.items(), key=lambda item: item[1].order))


@dataclass(frozen=True)
class Card:
    """What registration writes beside the alias: the version's model card, the registered
    model's description (it names the champion's version: `{version}`) and the data kind."""

    card: str
    description: str
    data_kind: str


def study_card(params: Params, candidate: Candidate, metrics_dir: Path) -> Card:
    """The card of one champion of the study `params` describes."""
    return Card(
        card.model_card(
            params, candidate.arch, candidate.schedule, candidate.seed, candidate.run_id,
            metrics_dir,
        ),
        card.model_description(candidate.arch, params, "{version}", candidate.run_name),
        "synthetic" if card.is_synthetic(params) else "real",
    )  # fmt: skip


def write_card(client: MlflowClient, name: str, version: str, written: Card) -> None:
    """The card as the version's description, the data kind as its tag, and the registered
    model's description naming this version; nothing is written that is already there."""
    if client.get_model_version(name, version).description != written.card:
        client.update_model_version(name, version, description=written.card)
        client.set_model_version_tag(name, version, DATA_KIND_TAG, written.data_kind)
    description = written.description.format(version=version)
    if client.get_registered_model(name).description != description:
        client.update_registered_model(name, description=description)


def register(
    candidate: Candidate, root: Path | None = None, written: Card | None = None
) -> Champion:
    """Point `dogbreeds-<arch>@champion` at the candidate's logged model, under the store's
    lock, with its card when given; a champion that is already registered gets no new version
    (idempotent)."""
    client, experiment_id = store.open_experiment(root)
    name = registered_name(candidate.arch)

    def point_alias() -> str:
        current = current_champion(client, name)
        if current is not None and current.run_id == candidate.run_id:
            if written is not None:
                write_card(client, name, str(current.version), written)
            return str(current.version)
        model_id = logged_model_id(client, experiment_id, candidate.run_id)
        if model_id is None:
            raise RegistryError(
                f"MLflow run {candidate.run_id} ({candidate.run_name}) has no logged model in "
                f"{redact(client.tracking_uri)}: was it trained against another store? Rerun "
                f"it (dvc repro --force train@{candidate.run_name})"
            )
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(
                name, description=f"dogbreeds {candidate.arch} net, best {SELECT_BY}"
            )
        with store.global_tracking_uri(client.tracking_uri):  # the store resolves `source`
            created = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=candidate.run_id,
                model_id=model_id,
                tags={SELECT_BY: f"{candidate.val_acc:.4f}"},
            )
        client.set_registered_model_alias(name, ALIAS, created.version)
        if written is not None:
            write_card(client, name, str(created.version), written)
        log.info(
            "%s@%s -> version %s (run %s, %s %.4f)",
            name, ALIAS, created.version, candidate.run_name, SELECT_BY, candidate.val_acc,
        )  # fmt: skip
        return str(created.version)

    version = store.write(client.tracking_uri, point_alias, "registration")
    return Champion(name, version, candidate.run_id, candidate.run_name, candidate.val_acc)


def register_study(
    params: Params,
    metrics_dir: Path = Path("metrics/train"),
    root: Path | None = None,
    force: bool = False,
) -> dict[str, Champion]:
    """Choose every net's champion from the study's outputs and register it with its card;
    a study on synthetic data is refused unless `force`."""
    if card.is_synthetic(params) and not force:
        raise RegistryError(
            f"data.sources {params.data.sources}: these nets were trained on synthetic images, "
            "not dog photos; no champion made (register --force to make them champions anyway)"
        )
    chosen = choose(candidates(params, metrics_dir))
    return {
        arch: register(c, root, study_card(params, c, metrics_dir)) for arch, c in chosen.items()
    }
