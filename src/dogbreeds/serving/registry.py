"""The model registry: each net's best run of the study becomes `dogbreeds-<arch>@champion`.

"Best" is the highest final `val_acc` (accuracy on the deformed validation set at the last
epoch) among the study's runs of that net for the current params, read from the train stages'
own outputs (`metrics/train/<run>.json`, which name each run's MLflow id), so a team sees one
answer to "which cnn do we use?", `models:/dogbreeds-cnn@champion`. Test accuracy is never used
to choose by default: it is the number the study reports. `rank_by` names a metric the evaluate
stage linked to each logged model instead (`test_acc`, `clean_test_acc`, ...), and MLflow ranks
the models by it (`search_logged_models(order_by=...)`); the card then says the champion was
chosen on the test set, whose numbers for it are then optimistic.

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
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    """One registered champion: which run, which version, its val accuracy, and the metric it
    was ranked by with its value (val_acc unless `register --rank-by` said otherwise)."""

    name: str
    version: str
    run_id: str
    run_name: str
    val_acc: float
    ranked_by: str = SELECT_BY
    score: float | None = None

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
    score: float | None = None  # the model-linked metric it is ranked by, when not val_acc


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


def choose(
    found: list[Candidate], by: Callable[[Candidate], float] = lambda c: c.val_acc
) -> dict[str, Candidate]:
    """The champion of each net: highest final val_acc (or `by`); a tie goes to the earlier in
    params order (schedule, then seed), so the same outputs always give the same champions."""
    best: dict[str, Candidate] = {}
    for candidate in sorted(found, key=lambda c: c.order):
        if candidate.arch not in best or by(candidate) > by(best[candidate.arch]):
            best[candidate.arch] = candidate
    return dict(sorted(best.items(), key=lambda item: item[1].order))


def latest_value(metrics: list, key: str) -> float | None:
    """The value MLflow ranks a logged model by: its latest `key` (a rerun evaluation wins)."""
    points = [m for m in metrics if m.key == key]
    return max(points, key=lambda m: (m.timestamp, m.step)).value if points else None


def ranked_by_model_metric(
    found: list[Candidate], metric: str, root: Path | None = None
) -> list[Candidate]:
    """The candidates whose logged model carries `metric`, best first as MLflow ranks them
    (`search_logged_models(order_by=...)` over the metrics the evaluate stage linked to each
    model), each with its value as `score`; a model without it (not evaluated) is left out."""
    client, experiment_id = store.open_experiment(root)
    by_run = {c.run_id: c for c in found}
    runs = ", ".join(f"'{run_id}'" for run_id in by_run)
    query = f"name = '{pyfunc.MODEL_NAME}' AND source_run_id IN ({runs})"
    order = [{"field_name": f"metrics.{metric}", "ascending": False}]
    ranked, token = [], None
    while True:  # pages of MLflow's default size: a study has 45 nets, a store may have more
        page = client.search_logged_models(
            [experiment_id], filter_string=query, order_by=order, page_token=token
        )
        for model in page:
            score = latest_value(model.metrics or [], metric)
            candidate = by_run.pop(model.source_run_id, None)  # a run's newest model only
            if candidate is not None and score is not None:
                ranked.append(replace(candidate, score=score))
        token = page.token
        if not token:
            return ranked


@dataclass(frozen=True)
class Card:
    """What registration writes beside the alias: the version's model card, the registered
    model's description (it names the champion's version: `{version}`) and the data kind."""

    card: str
    description: str
    data_kind: str


def study_card(
    params: Params, candidate: Candidate, metrics_dir: Path, rank_by: str = SELECT_BY
) -> Card:
    """The card of one champion of the study `params` describes; it says how it was chosen."""
    card_says, description_says = {}, {}  # val_acc: the card's own words
    if rank_by != SELECT_BY:
        linked = f"the highest {rank_by} linked to its logged model in MLflow"
        description_says = {"chosen_by": linked}
        card_says = {"chosen_by": f"{linked}; chosen on those images, so its numbers on them "
                                  "are optimistic"}  # fmt: skip
    return Card(
        card.model_card(
            params, candidate.arch, candidate.schedule, candidate.seed, candidate.run_id,
            metrics_dir, **card_says,
        ),
        card.model_description(
            candidate.arch, params, "{version}", candidate.run_name, **description_says
        ),
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
    candidate: Candidate,
    root: Path | None = None,
    written: Card | None = None,
    rank_by: str = SELECT_BY,
) -> Champion:
    """Point `dogbreeds-<arch>@champion` at the candidate's logged model, under the store's
    lock, with its card when given; a champion that is already registered gets no new version
    (idempotent). The version is tagged with its val_acc and with the `rank_by` metric's value."""
    client, experiment_id = store.open_experiment(root)
    name = registered_name(candidate.arch)
    tags = {SELECT_BY: f"{candidate.val_acc:.4f}"}
    if candidate.score is not None:
        tags[rank_by] = f"{candidate.score:.4f}"

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
                tags=tags,
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
    score = candidate.val_acc if candidate.score is None else candidate.score
    return Champion(
        name, version, candidate.run_id, candidate.run_name, candidate.val_acc, rank_by, score
    )


def register_study(
    params: Params,
    metrics_dir: Path = Path("metrics/train"),
    root: Path | None = None,
    force: bool = False,
    rank_by: str = SELECT_BY,
) -> dict[str, Champion]:
    """Choose every net's champion from the study's outputs and register it with its card;
    a study on synthetic data is refused unless `force`. `rank_by` other than val_acc: a
    metric linked to the logged models (`ranked_by_model_metric`)."""
    if card.is_synthetic(params) and not force:
        raise RegistryError(
            f"data.sources {params.data.sources}: these nets were trained on synthetic images, "
            "not dog photos; no champion made (register --force to make them champions anyway)"
        )
    found = candidates(params, metrics_dir)
    if rank_by == SELECT_BY:
        chosen = choose(found)
    else:
        chosen = choose(ranked_by_model_metric(found, rank_by, root), by=lambda c: c.score)
        unranked = sorted({c.arch for c in found} - set(chosen))
        if unranked:
            raise RegistryError(
                f"no logged model of the study's {', '.join(unranked)} nets has the metric "
                f"{rank_by!r} (run their evaluations first: dvc repro; linked metrics are the "
                "evaluate stage's test_* and clean_test_*)"
            )
    return {
        arch: register(c, root, study_card(params, c, metrics_dir, rank_by), rank_by)
        for arch, c in chosen.items()
    }
