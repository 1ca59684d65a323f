"""The model card written with each registered champion (MLflow's model version description).

What a user of `models:/dogbreeds-<arch>@champion` needs before trusting an answer: the data the
net saw (real photos or generated shapes, the resolution, the seeds), the recipe that trained
it, its metrics beside the mean and 95% t interval of its (net, schedule) cell over the study's
seeds, and its limits. Everything comes from params and the stages' own outputs
(`metrics/train/<run>.json`, `metrics/eval/<run>.json`), as the champion itself does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dogbreeds.analysis.results import fmt_interval, fmt_number
from dogbreeds.analysis.stats import t_interval
from dogbreeds.params import Params, run_name

SYNTHETIC = "synthetic"
SOURCE_NAMES = {
    "stanford": "Stanford Dogs Dataset",
    "dbi": 'Kaggle "Dog Breed Images"',
    SYNTHETIC: "generated shapes (the synthetic source)",
}
# card row -> (the stage output holding it, its key)
METRICS = {
    "test accuracy, deformed test photos": ("eval", "test_acc"),
    "test accuracy, the same photos undeformed": ("eval", "clean_test_acc"),
    "val accuracy, deformed (chooses the champion)": ("train", "val_acc"),
    "train accuracy, last epoch": ("train", "train_acc"),
}


def is_synthetic(params: Params) -> bool:
    """Whether any of the study's images were generated rather than photographed."""
    return SYNTHETIC in params.data.sources


def data_kind(params: Params) -> str:
    """One line: real or synthetic, which sources, the resolution and the seeds."""
    side = params.model.resolution
    sources = ", ".join(SOURCE_NAMES.get(s, s) for s in params.data.sources)
    if params.data.sources == [SYNTHETIC]:
        kind = "SYNTHETIC data, not dog photos"
    elif is_synthetic(params):
        kind = "real photos mixed with SYNTHETIC images"
    else:
        kind = "real photos"
    seeds = ", ".join(str(s) for s in params.train.seeds)
    return f"{kind} ({sources}), {side}x{side} px, seeds {seeds}"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def metrics_table(params: Params, arch: str, schedule: str, seed: int, train_dir: Path) -> str:
    """The champion's metrics beside its cell's mean [95% t CI] over the study's seeds."""
    dirs = {"train": train_dir, "eval": train_dir.parent / "eval"}
    seeds = params.train.seeds
    rows = [
        f"| metric | this net (seed {seed}) | {arch} {schedule}, mean [95% t CI] over "
        f"{len(seeds)} seed{'s' * (len(seeds) > 1)} |",
        "|---|---:|---:|",
    ]
    for label, (stage, key) in METRICS.items():
        values = {}
        for s in seeds:
            found = _read(dirs[stage] / f"{run_name(arch, schedule, s)}.json") or {}
            if isinstance(found.get(key), int | float):
                values[s] = float(found[key])
        if seed not in values:
            rows.append(f"| {label} | not found ({dirs[stage]}) | |")
            continue
        cell = fmt_interval(t_interval(list(values.values()))) if len(values) > 1 else "one seed"
        rows.append(f"| {label} | {fmt_number(values[seed])} | {cell} |")
    return "\n".join(rows)


def _listed(values: Sequence) -> str:
    return ", ".join(str(v) for v in values)


VAL_CHOICE = "the highest final val accuracy"  # how `register` chooses unless told otherwise


def model_card(
    params: Params,
    arch: str,
    schedule: str,
    seed: int,
    run_id: str,
    train_dir: Path,
    chosen_by: str = f"{VAL_CHOICE}; test accuracy never chooses",
) -> str:
    """The card, in Markdown (MLflow's UI renders a model version's description as Markdown).

    Over 60 lines on purpose: it is the card's text, section after section as a reader meets
    them; the numbers come from the small helpers below.
    """
    side, breeds = params.model.resolution, len(params.data.breeds)
    train = params.train
    sched = train.schedules[schedule]
    deform = params.deform
    summary = _read(train_dir / f"{run_name(arch, schedule, seed)}.json") or {}
    size = (
        f", {summary['params']:,} parameters, {summary['macs'] / 1e6:.1f} M MACs"
        if isinstance(summary.get("params"), int) and isinstance(summary.get("macs"), int)
        else ""
    )
    synthetic_warning = (
        [
            "",
            "**Trained on synthetic data.** Its images are generated shapes, not photos: its "
            "answers on a real photo mean nothing, however confident.",
        ]
        if is_synthetic(params)
        else []
    )
    lines = [
        f"# dogbreeds-{arch}: {run_name(arch, schedule, seed)}",
        "",
        f"**Data:** {data_kind(params)}.",
        *synthetic_warning,
        "",
        "## Model",
        f"The `{arch}` net of the dogbreeds study (width multiplier {params.model.width_mult}"
        f"{size}), input {side}x{side} px RGB, output log-probabilities over {breeds} breeds. "
        f"MLflow run `{run_id}`. Chosen among the study's {arch} nets by {chosen_by}.",
        "",
        "## Data",
        f"Breeds, in class order: {_listed(params.data.breeds)}. Sources: "
        f"{_listed(SOURCE_NAMES.get(s, s) for s in params.data.sources)}. Split stratified by "
        f"breed (val {params.split.val}, test {params.split.test}, seed {params.split.seed}). "
        f"Val and test images deformed (seed {deform.seed}): an affine map "
        f"({_kv(deform.affine)}), then perspective ({_kv(deform.perspective)}) and elastic "
        f"({_kv(deform.elastic)}); clean copies of the test images are scored too.",
        "",
        "## Recipe",
        f"Schedule `{schedule}`: {len(sched.epochs)} one-cycle stages of {_listed(sched.epochs)} "
        f"epochs peaking at lr {_listed(sched.max_lr)} (Adam, weight decay {train.weight_decay},"
        f" gradients clipped at {train.grad_clip}), batch {train.batch_size}; augmentation: "
        f"{_kv(vars(train.augment))}; inputs normalised: {train.normalize}; seed {seed}"
        + (
            f"; trained on {summary['device']} ({summary.get('amp', '?')})."
            if "device" in summary
            else "."
        ),
        "",
        "## Metrics",
        metrics_table(params, arch, schedule, seed, train_dir),
        "",
        "## Limits",
        f'- Only these {breeds} breeds, and no "none of them": any other dog, or a cat, is put '
        "in one of them.",
        f"- Trained and scored at {side}x{side} px: every image is resized to it, so detail "
        "finer than that is lost.",
        "- Robustness is measured for the deformations above only (affine, perspective, "
        "elastic), not for blur, noise, lighting, crops or occlusion.",
        "- One net from one seed: another seed of the same recipe lands anywhere in the cell's "
        "spread; compare nets by the cell intervals, not by one net.",
    ]
    return "\n".join(lines) + "\n"


def _kv(mapping: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def model_description(
    arch: str, params: Params, version: str, run: str, chosen_by: str = VAL_CHOICE
) -> str:
    """The registered model's description: what the champion is and what it was trained on."""
    return (
        f"dogbreeds {arch} net; the champion (alias `champion`) is the study's {arch} net with "
        f"{chosen_by}: version {version}, run {run}. Trained on "
        f"{data_kind(params)}. Its model card is the version's description."
    )
