"""The report: the paper's three results tables with our numbers beside them, and figures.

`run_report` (called by `stages/report.py`) reads the train and eval metrics of every
(arch, schedule) listed in params and writes `metrics/report.md` plus accuracy curves under
`metrics/figures/`, like the report's Figures 1-3. The paper's numbers below are data,
transcribed from the report (section 4.3, tables 4.3.1-4.3.3) and its appendix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.fsutil import atomic_path
from dogbreeds.history import EpochRecord, read_history
from dogbreeds.models import MODELS, net_size
from dogbreeds.params import Params, Schedule
from dogbreeds.plots import plot_accuracy

# ----------------------------------------------------------------------------- the paper's data

PAPER_SCHEDULES = ((20, 14, 6), (50, 7, 3), (50, 14, 6))  # the tables' columns (epochs per stage)
PAPER_MAX_LR = (0.01, 0.001, 0.0001)  # the same for every column
ROWS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
PAPER_RESULTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "cnn": {  # DogBreedClassificationCNN Results
        "train_loss": (0.9680, 0.5488, 0.5086),
        "train_acc": (0.7050, 0.8925, 0.9050),
        "val_loss": (1.3285, 1.4217, 1.2668),
        "val_acc": (0.5333, 0.5333, 0.5646),
        "test_loss": (1.3299, 1.2469, 1.2487),
        "test_acc": (0.5101, 0.5901, 0.5923),
    },
    "dsc": {  # DogBreedClassificationDSC Results
        "train_loss": (1.1875, 0.5744, 0.6265),
        "train_acc": (0.6133, 0.8508, 0.8592),
        "val_loss": (1.4953, 1.1783, 1.1861),
        "val_acc": (0.4542, 0.5708, 0.5521),
        "test_loss": (1.3417, 1.3159, 1.3388),
        "test_acc": (0.5148, 0.5622, 0.5471),
    },
    "deformable": {  # DogBreedClassificationDeformableCNN Results
        "train_loss": (0.8231, 0.2878, 0.2178),
        "train_acc": (0.7700, 0.9467, 0.9883),
        "val_loss": (1.1414, 1.2395, 1.3552),
        "val_acc": (0.6562, 0.5583, 0.6250),
        "test_loss": (1.4600, 1.5843, 1.3622),
        "test_acc": (0.4649, 0.5044, 0.5682),
    },
}
PAPER_PARAMS = {"cnn": 585_383, "dsc": 74_663, "deformable": 621_725}  # appendix, at 224x224
PAPER_RESOLUTION = 224
NET_NAMES = {arch: net.__name__ for arch, net in MODELS.items()}  # the report's class names


class ReportError(DogbreedsError):
    """A metrics file the report needs is missing or unreadable; the message names it."""


# ----------------------------------------------------------------------------- our results


@dataclass
class RunResult:
    """Everything the report shows about one (arch, schedule) run."""

    arch: str
    schedule: Schedule
    train: dict  # metrics/train/<run>.json
    eval: dict  # metrics/eval/<run>.json
    history: list[EpochRecord]  # metrics/train/<run>.tsv
    test_images: int  # from the confusion records, one per test image

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.schedule.name}"

    def value(self, row: str) -> float:
        """A results-table row: train/val from the last epoch, test from the evaluation."""
        return self.eval[row] if row.startswith("test") else self.train[row]


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run the train and evaluate stages first)") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def load_results(params: Params, metrics_dir: Path) -> list[RunResult]:
    """The results of every (arch, schedule) in params, in params order."""
    results = []
    for arch in params.train.archs:
        for schedule in params.train.schedules.values():
            name = f"{arch}-{schedule.name}"
            results.append(
                RunResult(
                    arch=arch,
                    schedule=schedule,
                    train=read_json(metrics_dir / "train" / f"{name}.json"),
                    eval=read_json(metrics_dir / "eval" / f"{name}.json"),
                    history=read_history(metrics_dir / "train" / f"{name}.tsv"),
                    test_images=len(read_json(metrics_dir / "eval" / f"{name}-confusion.json")),
                )
            )
    return results


def paper_column(schedule: Schedule) -> int | None:
    """Which of the paper's columns a schedule reproduces (same epochs and max_lr), if any."""
    if tuple(schedule.epochs) not in PAPER_SCHEDULES:
        return None
    pairs = zip(schedule.max_lr, PAPER_MAX_LR, strict=True)  # same length: epochs matched
    if not all(math.isclose(ours, theirs) for ours, theirs in pairs):
        return None
    return PAPER_SCHEDULES.index(tuple(schedule.epochs))


def schedule_label(schedule: Schedule) -> str:
    """'20/14/6', plus the max_lr when it is not the paper's."""
    label = "/".join(str(e) for e in schedule.epochs)
    if paper_column(schedule) is None and tuple(schedule.epochs) in PAPER_SCHEDULES:
        label += " @ " + "/".join(f"{lr:g}" for lr in schedule.max_lr)
    return label


# ----------------------------------------------------------------------------- tables


def results_table(runs: list[RunResult]) -> str:
    """One net's table as the paper prints it (rows = metrics), ours beside the paper's."""
    header, rule = ["epoch"], ["---"]
    for run in runs:
        title = f"{run.schedule.name} ({schedule_label(run.schedule)})"
        if paper_column(run.schedule) is None:
            header += [f"{title} ours"]
            rule += ["---:"]
        else:
            header += [f"{title} paper", "ours", "Δ"]
            rule += ["---:"] * 3
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for row in ROWS:
        cells = [row]
        for run in runs:
            ours = run.value(row)
            column = paper_column(run.schedule)
            if column is None:
                cells.append(f"{ours:.4f}")
            else:
                paper = PAPER_RESULTS[run.arch][row][column]
                cells += [f"{paper:.4f}", f"{ours:.4f}", f"{ours - paper:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def size_table(archs: list[str], width_mult: float, resolution: int) -> str:
    """Params and MACs of each net at our alpha and resolution, beside the appendix's params."""
    lines = [
        f"| net | params (α={width_mult:g}) | MACs ({resolution}×{resolution}) "
        f"| paper params (α=1, {PAPER_RESOLUTION}×{PAPER_RESOLUTION}) |",
        "|---|---:|---:|---:|",
    ]
    for arch in archs:
        params, macs = net_size(arch, width_mult, resolution)
        lines.append(
            f"| {NET_NAMES[arch]} | {params:,} | {macs / 1e6:,.1f} M | {PAPER_PARAMS[arch]:,} |"
        )
    return "\n".join(lines)


def robustness_table(runs: list[RunResult]) -> str:
    """Test accuracy on the clean and on the deformed test images (the paper's test set)."""
    lines = [
        "| net | schedule | clean test acc | deformed test acc | Δ (deformed − clean) |",
        "|---|---|---:|---:|---:|",
    ]
    for run in runs:
        clean, deformed = run.eval["clean_test_acc"], run.eval["test_acc"]
        lines.append(
            f"| {run.arch} | {run.schedule.name} | {clean:.4f} | {deformed:.4f} "
            f"| {deformed - clean:+.4f} |"
        )
    return "\n".join(lines)


def timing_table(runs: list[RunResult]) -> str:
    """Training wall time per run, and where it ran."""
    lines = ["| run | device | epochs | wall time (min) |", "|---|---|---:|---:|"]
    for run in runs:
        train = run.train
        lines.append(
            f"| {run.name} | {train['device']} | {train['epochs']} "
            f"| {train['wall_time_s'] / 60:.1f} |"
        )
    return "\n".join(lines)


def figure_name(run: RunResult) -> str:
    return f"{run.name}-accuracy.png"


# ----------------------------------------------------------------------------- the report


def render_report(params: Params, runs: list[RunResult]) -> str:
    """The Markdown of metrics/report.md."""
    model = params.model
    test_images = runs[0].test_images if runs else 0
    out = [
        "# Results beside the paper",
        "",
        f"Our runs: resolution {model.resolution}×{model.resolution} "
        f"(ρ = {model.resolution / PAPER_RESOLUTION:.3g}), width multiplier α = "
        f"{model.width_mult:g}, batch size {params.train.batch_size}, Adam with weight decay "
        f"{params.train.weight_decay:g}, gradient clipping {params.train.grad_clip:g}, seed "
        f"{params.train.seed}. The paper trained at 224×224, α = 1, max_lr 0.01/0.001/0.0001 "
        "for every schedule.",
        "",
        "train_* are the last epoch's means over its (augmented) training batches; val_* and "
        "test_* are scored on the randomly deformed validation and test sets, as in the paper "
        f"({test_images} test images: one image moves test accuracy by "
        f"{1 / max(test_images, 1):.4f}). Δ = ours − paper.",
    ]
    for arch in params.train.archs:
        arch_runs = [run for run in runs if run.arch == arch]
        out += ["", f"## {NET_NAMES[arch]} (`{arch}`)", "", results_table(arch_runs), ""]
        out += [f"![{run.name} accuracy](figures/{figure_name(run)})" for run in arch_runs]
    out += [
        "",
        "## Model size",
        "",
        size_table(params.train.archs, model.width_mult, model.resolution),
        "",
        "## Clean vs deformed test accuracy",
        "",
        robustness_table(runs),
        "",
        "## Training time",
        "",
        timing_table(runs),
        "",
        "## Notes",
        "",
        f"- `model.deformable.offset_lr_mult` = {model.deformable.offset_lr_mult:g}: the "
        "DeformConv offset convs "
        "train at this fraction of the learning rate. The paper does not state this setting.",
        "- Schedules that are not one of the paper's (other epochs or max_lr) show our numbers "
        "only.",
        "- Paper numbers are transcribed from the report's tables 4.3.1-4.3.3 and appendix.",
        "",
    ]
    return "\n".join(out)


def run_report(params: Params, metrics_dir: Path = Path("metrics")) -> str:
    """Write metrics/report.md and metrics/figures/*.png; returns the Markdown."""
    runs = load_results(params, metrics_dir)
    with atomic_path(metrics_dir / "figures") as folder:
        folder.mkdir()
        for run in runs:
            title = f"{NET_NAMES[run.arch]}, epochs {schedule_label(run.schedule)}"
            plot_accuracy(run.history, folder / figure_name(run), title)
    markdown = render_report(params, runs)
    with atomic_path(metrics_dir / "report.md") as tmp:
        tmp.write_text(markdown)
    return markdown
