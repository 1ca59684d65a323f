"""Paired comparisons of the nets: differences over seeds, McNemar per seed, the answers.

Net a against net b on one schedule, on the same seeds and the same test images: a paired
test per measure (`COMPARED`) and McNemar's exact test per seed. `analysis.decisions` turns
them into the report's answers to the paper's two questions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from dogbreeds.analysis.results import (
    ReportError,
    RunResult,
    cell,
    curve_drop,
    drop,
    fmt_interval,
    fmt_number,
)
from dogbreeds.analysis.stats import (
    ALPHA,
    MIN_DISTINCT,
    McNemar,
    PairedTest,
    holm,
    mcnemar_exact,
    paired_test,
)
from dogbreeds.params import Params

# What each comparison measures, per run: the name in the tables and how to read it off a run.
COMPARED = {
    "clean test acc": lambda r: r.eval["clean_test_acc"],
    "deformed test acc": lambda r: r.eval["test_acc"],
    "deformed − clean": drop,
}


CURVE = "curve: mean deformed − clean"  # along the robustness curve of all kinds together


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
    differences: dict[str, PairedTest]  # measure name -> paired test of a − b over seeds
    mcnemar: list[tuple[int, str, McNemar]]  # (seed, split, McNemar) on the same test images


def compare(params: Params, runs: list[RunResult]) -> list[Comparison]:
    """Every pair of nets on every schedule."""
    comparisons = []
    for schedule in params.train.schedules:
        for a, b in itertools.combinations(params.train.archs, 2):
            runs_a, runs_b = cell(runs, a, schedule), cell(runs, b, schedule)
            differences = {
                what: paired_test([get(r) for r in runs_a], [get(r) for r in runs_b])
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


def fmt_test(test: PairedTest) -> str:
    """A paired difference as the tables show it: mean [95% CI], or why it is not tested."""
    if test.identical:
        return f"{fmt_number(test.interval.mean, signed=True)} on every seed"
    text = fmt_interval(test.interval, signed=True)
    return f"{text} ({test.distinct} values)" if test.degenerate and test.interval.n > 1 else text


def pairs_table(comparisons: list[Comparison]) -> str:
    """Paired differences a − b over seeds with 95% CIs, one row per pair and schedule."""
    names = list(comparisons[0].differences) if comparisons else list(COMPARED)
    lines = [
        "| a − b | schedule | " + " | ".join(f"{what}: mean [95% CI]" for what in names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for c in comparisons:
        cells = [fmt_test(c.differences[what]) for what in names]
        lines.append(f"| {c.a} − {c.b} | {c.schedule} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per comparison, 95% each. 'on every seed' marks a difference that is the same on every "
        f"seed, '(k values)' one with fewer than {MIN_DISTINCT} distinct values over the seeds: "
        "neither is ever counted as significant (seeds that all moved by the same amount are "
        "one run's worth of evidence, whatever the width of their interval).",
    ]
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
