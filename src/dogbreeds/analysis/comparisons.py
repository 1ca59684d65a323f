"""Paired comparisons of the nets: differences over seeds, McNemar per seed, the answers.

Net a against net b on one schedule, on the same seeds and the same test images: a paired
interval per measure (`COMPARED`) and McNemar's exact test per seed. `answer` turns them into
the report's answers to the paper's two questions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from dogbreeds.analysis.results import (
    ALPHA,
    ReportError,
    RunResult,
    cell,
    curve_drop,
    drop,
    fmt_interval,
)
from dogbreeds.analysis.stats import Interval, McNemar, holm, mcnemar_exact, paired_difference
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
