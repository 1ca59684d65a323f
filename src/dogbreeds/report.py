"""The report: the paper's results beside ours over seeds, paired comparisons, and answers.

`run_report` (called by `stages/report.py`) reads the train and eval outputs of every
(arch, schedule, seed) listed in params and writes `metrics/report.md`, the small headline
metrics file `metrics/headline.json` that `dvc metrics show` / `dvc exp show` compare, and
accuracy curves under `metrics/figures/`, like the report's Figures 1-3. The statistics live in
`dogbreeds.stats`. The paper's numbers below are data, transcribed from the report (section
4.3, tables 4.3.1-4.3.3) and its appendix.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dogbreeds import DogbreedsError
from dogbreeds.fsutil import atomic_path, write_json
from dogbreeds.history import EpochRecord, read_history
from dogbreeds.models import MODELS, net_size
from dogbreeds.params import Params, Schedule, run_name
from dogbreeds.plots import plot_accuracy, plot_robustness
from dogbreeds.stats import Interval, McNemar, holm, mcnemar_exact, paired_difference, t_interval

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

ALPHA = 0.05  # the level of every test and (1 - ALPHA) of every interval, as in stats.CONFIDENCE


@dataclass
class RunResult:
    """Everything the report shows about one trained net: one (arch, schedule, seed)."""

    arch: str
    schedule: Schedule
    seed: int
    train: dict  # metrics/train/<run>.json
    eval: dict  # metrics/eval/<run>.json
    history: list[EpochRecord]  # metrics/train/<run>.tsv
    predictions: list[dict[str, str]]  # metrics/eval/<run>-predictions.csv, one row per image
    robustness: dict  # metrics/eval/<run>-robustness.json: {kind: {strength: acc}}

    @property
    def name(self) -> str:
        return run_name(self.arch, self.schedule.name, self.seed)

    @property
    def test_images(self) -> int:
        return len(self.predictions)

    def value(self, row: str) -> float:
        """A results-table row: train/val from the last epoch, test from the evaluation."""
        return self.eval[row] if row.startswith(("test", "clean_test")) else self.train[row]

    def predicted(self, split: str) -> dict[str, tuple[int, int]]:
        """Image id -> (label, predicted class) on `split` ("test" or "clean_test")."""
        return {r["id"]: (int(r["label"]), int(r[split])) for r in self.predictions}


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run the train and evaluate stages first)") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def read_predictions(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run the evaluate stages first)") from None


def load_results(params: Params, metrics_dir: Path) -> list[RunResult]:
    """The results of every (arch, schedule, seed) in params, in params order."""
    results = []
    for arch in params.train.archs:
        for schedule in params.train.schedules.values():
            for seed in params.train.seeds:
                name = run_name(arch, schedule.name, seed)
                results.append(
                    RunResult(
                        arch=arch,
                        schedule=schedule,
                        seed=seed,
                        train=read_json(metrics_dir / "train" / f"{name}.json"),
                        eval=read_json(metrics_dir / "eval" / f"{name}.json"),
                        history=read_history(metrics_dir / "train" / f"{name}.tsv"),
                        predictions=read_predictions(
                            metrics_dir / "eval" / f"{name}-predictions.csv"
                        ),
                        robustness=read_json(metrics_dir / "eval" / f"{name}-robustness.json"),
                    )
                )
    return results


def cell(runs: list[RunResult], arch: str, schedule: str) -> list[RunResult]:
    """The runs of one (arch, schedule), in seed order (params order)."""
    return [r for r in runs if r.arch == arch and r.schedule.name == schedule]


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


def fmt_interval(interval: Interval, signed: bool = False) -> str:
    """'0.4400 [0.4007, 0.4793]'; the mean alone when one seed gives no interval."""
    f = "{:+.4f}" if signed else "{:.4f}"
    if interval.n < 2:
        return f.format(interval.mean)
    return f"{f.format(interval.mean)} [{f.format(interval.low)}, {f.format(interval.high)}]"


def results_table(runs: list[RunResult]) -> str:
    """One net's results, rows = (metric, schedule): paper, our mean and 95% CI over seeds, the
    per-seed values, and whether the paper's number lies inside our CI."""
    lines = [
        "| metric | schedule | paper | ours: mean [95% CI] | per seed | paper in CI |",
        "|---|---|---:|---:|---|:---:|",
    ]
    schedules = list(dict.fromkeys(r.schedule.name for r in runs))
    for row in ROWS:
        for name in schedules:
            seeds = [r for r in runs if r.schedule.name == name]
            values = [r.value(row) for r in seeds]
            interval = t_interval(values)
            column = paper_column(seeds[0].schedule)
            label = f"{name} ({schedule_label(seeds[0].schedule)})"
            if column is None:
                paper, inside = "-", "-"
            else:
                number = PAPER_RESULTS[seeds[0].arch][row][column]
                contains = interval.contains(number)
                paper = f"{number:.4f}"
                inside = "-" if contains is None else ("yes" if contains else "no")
            per_seed = ", ".join(f"{v:.4f}" for v in values)
            lines.append(
                f"| {row} | {label} | {paper} | {fmt_interval(interval)} | {per_seed} | {inside} |"
            )
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


def drop(run: RunResult) -> float:
    """What the deformations cost one net: deformed minus clean test accuracy (<= 0 usually)."""
    return run.eval["test_acc"] - run.eval["clean_test_acc"]


def robustness_table(params: Params, runs: list[RunResult]) -> str:
    """Clean and deformed test accuracy and their difference, mean [95% CI] over seeds."""
    lines = [
        "| net | schedule | clean test acc | deformed test acc | Δ (deformed − clean) |",
        "|---|---|---:|---:|---:|",
    ]
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            seeds = cell(runs, arch, schedule)
            clean = t_interval([r.eval["clean_test_acc"] for r in seeds])
            deformed = t_interval([r.eval["test_acc"] for r in seeds])
            delta = t_interval([drop(r) for r in seeds])
            lines.append(
                f"| {arch} | {schedule} | {fmt_interval(clean)} | {fmt_interval(deformed)} "
                f"| {fmt_interval(delta, signed=True)} |"
            )
    return "\n".join(lines)


ROBUSTNESS_COLUMNS = ("schedule", "kind", "arch", "strength", "mean", "low", "high", "n", "seeds")


def robustness_curves(params: Params, runs: list[RunResult]) -> list[dict]:
    """Mean test accuracy and 95% CI over seeds per (schedule, kind, arch, strength): the rows
    of metrics/robustness.tsv (a DVC plot) and of the robustness figure."""
    rows = []
    for schedule in params.train.schedules:
        for kind in params.robustness.kinds:
            for arch in params.train.archs:
                seeds = cell(runs, arch, schedule)
                for strength in params.robustness.strengths:
                    key = f"{strength:g}"
                    try:
                        values = [r.robustness[kind][key] for r in seeds]
                    except KeyError:
                        raise ReportError(
                            f"metrics/eval/{seeds[0].name}-robustness.json: no {kind} at "
                            f"strength {key} (rerun the evaluate stages: dvc repro)"
                        ) from None
                    interval = t_interval(values)
                    rows.append(
                        {
                            "schedule": schedule,
                            "kind": kind,
                            "arch": arch,
                            "strength": strength,
                            "mean": interval.mean,
                            "low": interval.low,
                            "high": interval.high,
                            "n": interval.n,
                            "seeds": ", ".join(f"{v:.4f}" for v in values),
                        }
                    )
    return rows


def robustness_curves_table(rows: list[dict], strengths: tuple[float, ...] = (1.0, 2.0)) -> str:
    """Test accuracy per net, schedule and kind at the study's strength (1) and twice it."""
    shown = [s for s in strengths if any(r["strength"] == s for r in rows)]
    lines = [
        "| net | schedule | kind | "
        + " | ".join(f"strength {s:g}: mean [95% CI]" for s in shown)
        + " |",
        "|---|---|---|" + "---:|" * len(shown),
    ]
    keys = list(dict.fromkeys((r["arch"], r["schedule"], r["kind"]) for r in rows))
    for arch, schedule, kind in sorted(keys, key=lambda k: (k[1], k[2])):
        cells = []
        for strength in shown:
            (row,) = [
                r
                for r in rows
                if (r["arch"], r["schedule"], r["kind"], r["strength"])
                == (arch, schedule, kind, strength)
            ]
            cells.append(fmt_interval(Interval(row["mean"], row["low"], row["high"], row["n"])))
        lines.append(f"| {arch} | {schedule} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tsv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def offsets_table(params: Params, offsets: dict) -> tuple[str, str]:
    """Mean |offset| per DeformConv layer of the deformable nets, clean vs deformed, mean [95%
    CI] over seeds with the paired difference; and one sentence: do offsets grow on deformed
    images? (metrics/offsets/offsets.json, from the offsets stage)."""
    lines = [
        "| schedule | layer | clean: mean [95% CI] | deformed: mean [95% CI] | deformed − clean |",
        "|---|---|---:|---:|---:|",
    ]
    grow = shrink = total = 0
    for schedule in params.train.schedules:
        names = [run_name("deformable", schedule, seed) for seed in params.train.seeds]
        runs = [offsets[name] for name in names if name in offsets]
        if not runs:
            continue
        for layer in runs[0]:
            clean = [r[layer]["clean"] for r in runs]
            deformed = [r[layer]["deformed"] for r in runs]
            diff = paired_difference(deformed, clean)
            total += 1
            grow += diff.low > 0
            shrink += diff.high < 0
            lines.append(
                f"| {schedule} | {layer} | {fmt_interval(t_interval(clean))} "
                f"| {fmt_interval(t_interval(deformed))} | {fmt_interval(diff, signed=True)} |"
            )
    if total == 0:
        return "", "No deformable net in params train.archs: no offsets to show."
    if len(params.train.seeds) < 2:
        verdict = "The data cannot decide: with one seed per cell there is no interval."
    else:
        verdict = (
            f"They grow on deformed images in {grow}, shrink in {shrink} and are undecided in "
            f"{total - grow - shrink} of {total} (schedule, layer) cells (paired 95% CIs)."
        )
    return "\n".join(lines), f"**Do offsets grow on deformed images?** {verdict}"


# What each comparison measures, per run: the name in the tables and how to read it off a run.
COMPARED = {
    "clean test acc": lambda r: r.eval["clean_test_acc"],
    "deformed test acc": lambda r: r.eval["test_acc"],
    "deformed − clean": drop,
}
CURVE = "curve: mean deformed − clean"  # along the robustness curve of all kinds together


def curve_drop(run: RunResult) -> float:
    """What the deformations cost one net along its `all` robustness curve: the mean over the
    strengths above 0 of accuracy minus the clean (strength 0) accuracy."""
    curve = run.robustness["all"]
    deformed = [acc for strength, acc in curve.items() if float(strength) > 0]
    return math.fsum(deformed) / len(deformed) - curve["0"]


def measures(params: Params) -> dict:
    """COMPARED, plus the robustness-curve measure where the curve has strength 0 and more."""
    strengths = params.robustness.strengths
    has_curve = "all" in params.robustness.kinds and 0 in strengths and len(strengths) > 1
    return {**COMPARED, CURVE: curve_drop} if has_curve else dict(COMPARED)


@dataclass
class Comparison:
    """Net a against net b on one schedule: paired differences over seeds, McNemar per seed."""

    a: str
    b: str
    schedule: str
    differences: dict[str, Interval]  # measure name -> interval of a − b over seeds
    mcnemar: list[tuple[int, str, McNemar]]  # (seed, split, McNemar) on the same test images


def compare(params: Params, runs: list[RunResult]) -> list[Comparison]:
    """Every pair of nets on every schedule."""
    comparisons = []
    for schedule in params.train.schedules:
        for a, b in itertools.combinations(params.train.archs, 2):
            runs_a, runs_b = cell(runs, a, schedule), cell(runs, b, schedule)
            differences = {
                what: paired_difference([get(r) for r in runs_a], [get(r) for r in runs_b])
                for what, get in measures(params).items()
            }
            tests = []
            for run_a, run_b in zip(runs_a, runs_b, strict=True):
                for split in ("test", "clean_test"):
                    tests.append((run_a.seed, split, mcnemar_on_same_images(run_a, run_b, split)))
            comparisons.append(Comparison(a, b, schedule, differences, tests))
    return comparisons


def mcnemar_on_same_images(run_a: RunResult, run_b: RunResult, split: str) -> McNemar:
    """McNemar's exact test of two runs, pairing their predictions by image id."""
    by_id_a, by_id_b = run_a.predicted(split), run_b.predicted(split)
    if by_id_a.keys() != by_id_b.keys():
        raise ReportError(
            f"{run_a.name} and {run_b.name} were scored on different test images: "
            "rerun their evaluate stages (dvc repro)"
        )
    ids = sorted(by_id_a)
    return mcnemar_exact(
        [by_id_a[i][0] for i in ids], [by_id_a[i][1] for i in ids], [by_id_b[i][1] for i in ids]
    )


def pairs_table(comparisons: list[Comparison]) -> str:
    """Paired differences a − b over seeds with 95% CIs, one row per pair and schedule."""
    names = list(comparisons[0].differences) if comparisons else list(COMPARED)
    lines = [
        "| a − b | schedule | " + " | ".join(f"{what}: mean [95% CI]" for what in names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for c in comparisons:
        cells = [fmt_interval(c.differences[what], signed=True) for what in names]
        lines.append(f"| {c.a} − {c.b} | {c.schedule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mcnemar_table(comparisons: list[Comparison]) -> str:
    """McNemar's exact test per pair, schedule, seed and test set, with Holm-adjusted p."""
    rows = [(c, seed, split, m) for c in comparisons for seed, split, m in c.mcnemar]
    adjusted = holm([m.p_value for *_, m in rows])
    lines = [
        "| a vs b | schedule | seed | test set | only a right | only b right | p | p (Holm) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for (c, seed, split, m), p_holm in zip(rows, adjusted, strict=True):
        test_set = "deformed" if split == "test" else "clean"
        mark = " *" if p_holm < ALPHA else ""
        lines.append(
            f"| {c.a} vs {c.b} | {c.schedule} | {seed} | {test_set} | {m.only_a} | {m.only_b} "
            f"| {m.p_value:.4f} | {p_holm:.4f}{mark} |"
        )
    significant = sum(p < ALPHA for p in adjusted)
    lines += [
        "",
        f"{len(rows)} McNemar tests; {sum(m.p_value < ALPHA for *_, m in rows)} have p < "
        f"{ALPHA:g} unadjusted, {significant} after Holm's adjustment (marked *).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the two answers


def answer(question: str, what: str, comparisons: list[Comparison], seeds: int) -> str:
    """One plain sentence answering `question` from the deformable net's paired differences
    `what` against every other net on every schedule: yes when every 95% CI lies above 0, no
    when none does and some lie below, otherwise a count of each, or "cannot decide"."""
    ours = [c for c in comparisons if "deformable" in (c.a, c.b)]
    if not ours:
        return f"**{question}** Not asked: the deformable net is not in params train.archs."
    if seeds < 2:
        return (
            f"**{question}** The data cannot decide: with one seed per cell there is no "
            "interval (set train.seeds to several seeds)."
        )
    facts, above, below = [], 0, 0
    for c in ours:
        diff = c.differences[what]
        sign = 1 if c.a == "deformable" else -1  # orient as deformable − other
        other = c.b if c.a == "deformable" else c.a
        low, high = sorted((sign * diff.low, sign * diff.high))
        mean = sign * diff.mean
        above += low > 0
        below += high < 0
        facts.append(f"vs {other} on {c.schedule}: {mean:+.4f} [{low:+.4f}, {high:+.4f}]")
    n = len(ours)
    if above == n:
        verdict = "Yes"
    elif below == n:
        verdict = "No, it does worse"
    elif above == 0 and below == 0:
        verdict = "The data cannot decide: every 95% CI of the difference contains 0"
    else:
        verdict = (
            f"It depends: better in {above}, worse in {below} and undecided in "
            f"{n - above - below} of {n} comparisons"
        )
    return (
        f"**{question}** {verdict} (deformable − other, {what}, mean [95% CI] over {seeds} "
        f"seeds: {'; '.join(facts)})."
    )


# ----------------------------------------------------------------------------- the report


def headline(params: Params, runs: list[RunResult]) -> dict:
    """metrics/headline.json: per net and schedule, means over seeds of the deformed and clean
    test accuracy, the last epoch's val accuracy and the training wall time; all that
    `dvc metrics show`, `dvc exp show` and `dogbreeds.compare` need to compare experiments."""

    def mean(values: list[float], digits: int) -> float:
        return round(t_interval(values).mean, digits)

    return {
        arch: {
            schedule: {
                "test_acc": mean([r.eval["test_acc"] for r in seeds], 4),
                "clean_test_acc": mean([r.eval["clean_test_acc"] for r in seeds], 4),
                "val_acc": mean([r.train["val_acc"] for r in seeds], 4),
                "wall_time_s": mean([r.train["wall_time_s"] for r in seeds], 1),
            }
            for schedule in params.train.schedules
            for seeds in [cell(runs, arch, schedule)]
        }
        for arch in params.train.archs
    }


def timing_table(params: Params, runs: list[RunResult]) -> str:
    """Training wall time per (net, schedule), mean over seeds, and where it ran."""
    lines = [
        "| net | schedule | device | epochs | mean wall time (min) |",
        "|---|---|---|---:|---:|",
    ]
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            seeds = cell(runs, arch, schedule)
            minutes = math.fsum(r.train["wall_time_s"] for r in seeds) / len(seeds) / 60
            devices = ", ".join(sorted({r.train["device"] for r in seeds}))
            epochs = seeds[0].train["epochs"]
            lines.append(f"| {arch} | {schedule} | {devices} | {epochs} | {minutes:.1f} |")
    return "\n".join(lines)


def figure_name(run: RunResult) -> str:
    return f"{run.name}-accuracy.png"


def render_report(params: Params, runs: list[RunResult], curves: list[dict], offsets: dict) -> str:
    """The Markdown of metrics/report.md."""
    offsets_md, offsets_answer = offsets_table(params, offsets)
    model = params.model
    test_images = runs[0].test_images if runs else 0
    seeds = len(params.train.seeds)
    comparisons = compare(params, runs)
    curve_question = "And along the robustness curve (all kinds, every strength above 0)?"
    curve_answer = (
        ["- " + answer(curve_question, CURVE, comparisons, seeds)]
        if comparisons and CURVE in comparisons[0].differences
        else []
    )
    out = [
        "# Results beside the paper",
        "",
        f"Our runs: resolution {model.resolution}×{model.resolution} "
        f"(ρ = {model.resolution / PAPER_RESOLUTION:.3g}), width multiplier α = "
        f"{model.width_mult:g}, batch size {params.train.batch_size}, Adam with weight decay "
        f"{params.train.weight_decay:g}, gradient clipping {params.train.grad_clip:g}, seeds "
        f"{', '.join(str(s) for s in params.train.seeds)} (one trained net per seed). The "
        "paper trained one net per cell at 224×224, α = 1, max_lr 0.01/0.001/0.0001 for every "
        "schedule.",
        "",
        "train_* are the last epoch's means over its (augmented) training batches; val_* and "
        "test_* are scored on the randomly deformed validation and test sets, as in the paper "
        f"({test_images} test images: one image moves test accuracy by "
        f"{1 / max(test_images, 1):.4f}). Our numbers are the mean over seeds with a 95% "
        "Student-t confidence interval; 'paper in CI' says whether the paper's single run "
        "lies inside it.",
        "",
        "## The paper's two questions",
        "",
        "- "
        + answer(
            "Does the deformable net generalise better?", "clean test acc", comparisons, seeds
        ),
        "- " + answer("Does it resist deformation better?", "deformed − clean", comparisons, seeds),
        *curve_answer,
        "",
        "Generalisation is read on the clean test images (unseen photos, no deformation); "
        "resistance is the paired difference of what the deformations cost each net "
        "(deformed − clean test accuracy), at the study's strength and averaged along the "
        "robustness curve of all kinds. All compare nets trained from the same seeds.",
    ]
    for arch in params.train.archs:
        arch_runs = [run for run in runs if run.arch == arch]
        out += ["", f"## {NET_NAMES[arch]} (`{arch}`)", "", results_table(arch_runs), ""]
        out += [f"![{run.name} accuracy](figures/{figure_name(run)})" for run in arch_runs]
    out += [
        "",
        "## Clean vs deformed test accuracy",
        "",
        robustness_table(params, runs),
        "",
        "## Robustness curves",
        "",
        "Accuracy on the clean test images deformed by each kind alone (on every image) and by "
        "all together (the study's pipeline), at strengths × the study's `deform` magnitudes: "
        "0 is the clean test set, 1 with `all` the study's deformed test set. Bands are 95% CIs "
        "over seeds; the numbers are in `metrics/robustness.tsv`.",
        "",
        "![robustness](figures/robustness.png)",
        "",
        robustness_curves_table(curves),
        "",
        "## Learned offsets",
        "",
        "Mean length in pixels of the DeformConv taps' (dy, dx) shifts over the test images, "
        "per layer of the deformable nets. Figures: `offsets/offsets-<run>.png` (where each "
        "layer samples for the centre pixel, clean and deformed).",
        "",
        offsets_md,
        "",
        offsets_answer,
        "",
        "## Pairs of nets: paired differences over seeds",
        "",
        pairs_table(comparisons),
        "",
        "## Pairs of nets: McNemar's exact test per seed",
        "",
        "Each test pairs two nets trained from the same seed on the same test images: "
        "'only a right' counts the images net a classifies correctly and net b does not. "
        "Under equal accuracy those discordant images split like fair coin flips.",
        "",
        mcnemar_table(comparisons),
        "",
        "Multiple comparisons: with many tests at 5%, about one in twenty comes out "
        "'significant' by chance alone. The Holm column adjusts every p above for all tests of "
        "this table together; the CIs above are per comparison (95% each), so read a single CI "
        "that barely excludes 0 among many with caution.",
        "",
        "## Model size",
        "",
        size_table(params.train.archs, model.width_mult, model.resolution),
        "",
        "## Training time",
        "",
        timing_table(params, runs),
        "",
        "## Notes",
        "",
        f"- `model.deformable.offset_lr_mult` = {model.deformable.offset_lr_mult:g}: the "
        "DeformConv offset convs "
        "train at this fraction of the learning rate. The paper does not state this setting.",
        "- Schedules that are not one of the paper's (other epochs or max_lr) show our numbers "
        "only.",
        "- CPU results repeat bit for bit on one machine, not across machines (a seed's worth of "
        "difference): compare CIs, not single numbers.",
        "- Paper numbers are transcribed from the report's tables 4.3.1-4.3.3 and appendix.",
        "",
    ]
    return "\n".join(out)


def run_report(params: Params, metrics_dir: Path = Path("metrics")) -> str:
    """Write metrics/report.md, metrics/headline.json, metrics/robustness.tsv and
    metrics/figures/*.png (accuracy curves per run, robustness.png); returns the Markdown."""
    runs = load_results(params, metrics_dir)
    curves = robustness_curves(params, runs)
    with atomic_path(metrics_dir / "figures") as folder:
        folder.mkdir()
        plot_robustness(pd.DataFrame(curves), folder / "robustness.png")
        for run in runs:
            title = f"{NET_NAMES[run.arch]}, epochs {schedule_label(run.schedule)}, seed {run.seed}"
            plot_accuracy(run.history, folder / figure_name(run), title)
    offsets = read_json(metrics_dir / "offsets" / "offsets.json")
    markdown = render_report(params, runs, curves, offsets)
    write_json(metrics_dir / "headline.json", headline(params, runs))
    write_tsv(metrics_dir / "robustness.tsv", curves, ROBUSTNESS_COLUMNS)
    with atomic_path(metrics_dir / "report.md") as tmp:
        tmp.write_text(markdown)
    return markdown
