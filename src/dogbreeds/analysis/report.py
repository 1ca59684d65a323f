"""The report: the paper's results beside ours over seeds, paired comparisons, and answers.

`run_report` (called by `stages/report.py`) reads the train and eval outputs of every
(arch, schedule, seed) listed in params and writes `metrics/report.md` (the prose is the
template `templates/report.md.j2`, filled in by `report_context`), the small headline
metrics file `metrics/headline.json` that `dvc metrics show` / `dvc exp show` compare, and
accuracy curves under `metrics/figures/`, like the report's Figures 1-3. The paper's numbers
are in `analysis.paper`, the runs' outputs are read by `analysis.results`, the per-cell tables
(with prediction intervals) are in `analysis.cells`, the paired tests in
`analysis.comparisons`, the verdicts and seeds-needed estimates in `analysis.decisions`, the
bootstrap over test images and seeds in `analysis.bootstrap` and the formulas in
`analysis.stats` (methods: docs/statistics.md).
"""

from __future__ import annotations

import csv
import functools
import statistics
from pathlib import Path

import jinja2
import pandas as pd
import torch

from dogbreeds.analysis.bootstrap import Bootstrap, bootstrap_study, bootstrap_tables
from dogbreeds.analysis.cells import (
    ROBUSTNESS_COLUMNS,
    results_table,
    robustness_curves,
    robustness_curves_table,
    robustness_table,
)
from dogbreeds.analysis.comparisons import (
    CURVE,
    Comparison,
    compare,
    fmt_test,
    mcnemar_table,
    pairs_table,
)
from dogbreeds.analysis.decisions import (
    QUESTIONS,
    answer,
    family_note,
    seeds_needed_table,
    t_verdict,
)
from dogbreeds.analysis.paper import (
    NET_NAMES,
    PAPER_PARAMS,
    PAPER_RESOLUTION,
    schedule_label,
)
from dogbreeds.analysis.plots import plot_accuracy, plot_confusion, plot_robustness
from dogbreeds.analysis.results import (
    ReportError,
    RunResult,
    cell,
    fmt_interval,
    load_results,
    read_json,
)
from dogbreeds.analysis.stats import paired_test, t_interval
from dogbreeds.common.fs import atomic_path, write_json
from dogbreeds.params import Params, run_name


def size_table(runs: list[RunResult], archs: list[str]) -> str:
    """Params and MACs of each net as its train stage counted them, beside the appendix's
    params. Read from metrics/train/<run>.json, so the report builds no net."""
    first = {arch: cell_of_arch(runs, arch) for arch in archs}
    width_mult = first[archs[0]].train.get("width_mult", 1.0)
    resolution = first[archs[0]].train.get("resolution")
    lines = [
        f"| net | params (α={width_mult:g}) | MACs ({resolution}×{resolution}) "
        f"| paper params (α=1, {PAPER_RESOLUTION}×{PAPER_RESOLUTION}) |",
        "|---|---:|---:|---:|",
    ]
    for arch, run in first.items():
        missing = [key for key in ("params", "macs") if key not in run.train]
        if missing:
            raise ReportError(
                f"metrics/train/{run.name}.json lacks {', '.join(missing)}: it was written by an "
                "older train stage; rerun it (dvc repro --force train@" + run.name + ")"
            )
        lines.append(
            f"| {NET_NAMES[arch]} | {run.train['params']:,} | {run.train['macs'] / 1e6:,.1f} M "
            f"| {PAPER_PARAMS[arch]:,} |"
        )
    return "\n".join(lines)


def cell_of_arch(runs: list[RunResult], arch: str) -> RunResult:
    """The first run of `arch` (all its runs share alpha and resolution: one params file)."""
    return next(run for run in runs if run.arch == arch)


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
    tests = []
    for schedule in params.train.schedules:
        names = [run_name("deformable", schedule, seed) for seed in params.train.seeds]
        runs = [offsets[name] for name in names if name in offsets]
        if not runs:
            continue
        for layer in runs[0]:
            clean = [r[layer]["clean"] for r in runs]
            deformed = [r[layer]["deformed"] for r in runs]
            tests.append(paired_test(deformed, clean))
            lines.append(
                f"| {schedule} | {layer} | {fmt_interval(t_interval(clean))} "
                f"| {fmt_interval(t_interval(deformed))} | {fmt_test(tests[-1])} |"
            )
    if not tests:
        return "", "No deformable net in params train.archs: no offsets to show."
    if len(params.train.seeds) < 2:
        verdict = "The data cannot decide: with one seed per cell there is no interval."
    else:
        found, _ = t_verdict(tests)
        m = len(tests)
        how = (
            "every paired 95% CI on the same side: an intersection-union test"
            if found.kind in ("yes", "no")
            else f"Holm over the {m} paired t tests"
        )
        untested = sum(t.degenerate for t in tests)
        verdict = (
            f"They grow on deformed images in {found.above}, shrink in {found.below} and are "
            f"undecided in {m - found.above - found.below} of {m} (schedule, layer) cells ({how})"
            + (f"; {untested} not tested (fewer than 3 distinct values)." if untested else ".")
        )
    return "\n".join(lines), f"**Do offsets grow on deformed images?** {verdict}"


def headline(params: Params, runs: list[RunResult]) -> dict:
    """metrics/headline.json: per net and schedule, means over seeds of the deformed and clean
    test accuracy, the last epoch's val accuracy and the training wall time; all that
    `dvc metrics show`, `dvc exp show` and `dogbreeds.commands.compare` need to compare
    experiments."""

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


def timings(params: Params, runs: list[RunResult]) -> dict:
    """metrics/timings.json: training wall time per (net, schedule), median and range over
    seeds, and where it ran.

    Wall times are run facts (a busier machine gives others), so they live in this file and
    not in report.md: the report depends on the results alone and reruns byte for byte. The
    file's times sit under `wall_time_s`, which every byte comparison leaves out.
    """
    out: dict = {}
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            seeds = cell(runs, arch, schedule)
            seconds = sorted(r.train["wall_time_s"] for r in seeds)
            out.setdefault(arch, {})[schedule] = {
                "device": ", ".join(sorted({r.train["device"] for r in seeds})),
                "amp": ", ".join(sorted({r.train.get("amp", "?") for r in seeds})),
                "epochs": seeds[0].train["epochs"],
                "runs": len(seeds),
                "wall_time_s": {
                    "median": round(statistics.median(seconds), 1),
                    "min": round(seconds[0], 1),
                    "max": round(seconds[-1], 1),
                },
            }
    return out


def figure_name(run: RunResult) -> str:
    return f"{run.name}-accuracy.png"


def confusion_name(run: RunResult) -> str:
    return f"{run.name}-confusion.png"


def data_kind(params: Params, runs: list[RunResult]) -> str:
    """What the nets were trained on, first in the report: synthetic shapes or real photos."""
    sources = params.data.sources
    kind = (
        "synthetic images (a smoke test, not dogs)"
        if sources == ["synthetic"]
        else ("real photos" if "synthetic" not in sources else "real photos and synthetic images")
    )
    return f"{kind} from {', '.join(sources)}"


def recipe(params: Params) -> str:
    """The training images' augmentation and input scaling, in words."""
    a = params.train.augment
    crop = (
        f"a random crop keeping {a.crop_scale:g}-1 of the side"
        if a.crop == "zoom"
        else f"a crop of {a.crop_scale:g} of the side reaching {a.crop_pad:g} past each edge "
        "(reflected)"
    )
    parts = [
        crop if a.crop_scale < 1 or a.crop == "pad" else "no crop",
        f"a horizontal flip with probability {a.hflip:g}",
        f"a rotation by up to ±{a.rotation:g}° (black corners)" if a.rotation else "no rotation",
        "inputs standardised by the training split's channel mean and std"
        if params.train.normalize
        else "inputs in [0, 1], not standardised",
    ]
    return "; ".join(parts)


def precisions(params: Params, runs: list[RunResult]) -> str:
    """Each net's training precision as its runs recorded it (train.amp auto picks per net)."""
    out = []
    for arch in params.train.archs:
        amps = sorted({r.train.get("amp", "?") for r in runs if r.arch == arch})
        names = ["float32" if amp == "off" else amp for amp in amps]
        out.append(f"{arch} {'/'.join(names)}")
    return ", ".join(out) + f" (train.amp {params.train.amp})"


CURVE_QUESTION = (
    "And along the robustness curve (all kinds together, the mean over every strength above "
    "0, each strength weighted equally: not an area, as the strengths are unevenly spaced)?"
)


@functools.cache
def report_template() -> jinja2.Template:
    """templates/report.md.j2, shipped in the package. Markdown, so nothing is escaped; a name
    the template uses and report_context does not give is an error, not a blank; `fmt` is
    Python's format spec (`{{ x | fmt(".3g") }}`)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dogbreeds.analysis", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = format
    return env.get_template("report.md.j2")


def render_report(params: Params, runs: list[RunResult], curves: list[dict], offsets: dict) -> str:
    """The Markdown of metrics/report.md: the template's prose around report_context's
    tables and answers."""
    return report_template().render(report_context(params, runs, curves, offsets))


def report_context(
    params: Params, runs: list[RunResult], curves: list[dict], offsets: dict
) -> dict:
    """Every name templates/report.md.j2 fills in, computed in the order the report reads."""
    offsets_md, offsets_answer = offsets_table(params, offsets)
    test_images = runs[0].test_images if runs else 0
    comparisons = compare(params, runs)
    cells = {(a, s): cell(runs, a, s) for a in params.train.archs for s in params.train.schedules}
    boot = bootstrap_study(cells, params.report.bootstrap_resamples, params.report.seed)
    boot_cells, boot_pairs = bootstrap_tables(boot)
    m = sum("deformable" in (c.a, c.b) for c in comparisons)
    return {
        "model": params.model,
        "train": params.train,
        "report": params.report,
        "paper_resolution": PAPER_RESOLUTION,
        "data_kind": data_kind(params, runs),
        "recipe": recipe(params),
        "precisions": precisions(params, runs),
        "test_images": test_images,
        "one_image": 1 / max(test_images, 1),
        "answers": question_answers(params, comparisons, boot),
        "family_note": family_note(m) if m else None,
        "seeds_needed": seeds_needed_table(
            QUESTIONS,
            comparisons,
            params.report.power,
            len(params.train.seeds),
            params.report.min_difference,
        ),
        "nets": [net_section(arch, runs) for arch in params.train.archs],
        "robustness": robustness_table(params, runs),
        "robustness_curves": robustness_curves_table(curves),
        "offsets_table": offsets_md,
        "offsets_answer": offsets_answer,
        "pairs": pairs_table(comparisons),
        "mcnemar": mcnemar_table(comparisons),
        "resamples": boot.resamples,
        "bootstrap_cells": boot_cells,
        "bootstrap_pairs": boot_pairs,
        "sizes": size_table(runs, params.train.archs),
    }


def question_answers(params: Params, comparisons: list[Comparison], boot: Bootstrap) -> list[str]:
    """The paper's two questions answered over seeds and over test images and seeds, then the
    resistance question along the robustness curve where the comparisons measured it."""
    seeds, power = len(params.train.seeds), params.report.power
    answers = [
        answer(question, what, comparisons, seeds, boot.pairs, power)
        for question, what in QUESTIONS.items()
    ]
    if comparisons and CURVE in comparisons[0].differences:
        answers.append(answer(CURVE_QUESTION, CURVE, comparisons, seeds, power=power))
    return answers


def net_section(arch: str, runs: list[RunResult]) -> dict:
    """One net's section: its results table and each run's accuracy figure."""
    arch_runs = [run for run in runs if run.arch == arch]
    return {
        "title": NET_NAMES[arch],
        "arch": arch,
        "table": results_table(arch_runs),
        "figures": [(run.name, figure_name(run)) for run in arch_runs],
    }


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
            confusion = run.eval.get("confusion")
            if confusion is None:
                raise ReportError(
                    f"metrics/eval/{run.name}.json has no confusion matrix: rerun its "
                    f"evaluation (dvc repro --force evaluate@{run.name})"
                )
            plot_confusion(
                torch.tensor(confusion),
                list(run.eval["per_class_test_acc"]),
                folder / confusion_name(run),
                f"{run.name}: deformed test, acc {run.eval['test_acc']:.4f}",
            )
    offsets = read_json(metrics_dir / "offsets" / "offsets.json")
    markdown = render_report(params, runs, curves, offsets)
    write_json(metrics_dir / "headline.json", headline(params, runs))
    write_json(metrics_dir / "timings.json", timings(params, runs))
    write_tsv(metrics_dir / "robustness.tsv", curves, ROBUSTNESS_COLUMNS)
    from dogbreeds.analysis.dvcplots import write_dvc_plots  # one chart per schedule: dvc plots

    write_dvc_plots(params, runs, curves, metrics_dir)
    with atomic_path(metrics_dir / "report.md") as tmp:
        tmp.write_text(markdown)
    return markdown
