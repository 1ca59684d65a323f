"""From families of paired tests to the report's verdicts, and how many seeds would decide.

A verdict that reads several tests at once ("better in 2 schedules, worse in 1") would, at 95%
each, find something in about a quarter of studies where all nets are equally good. So each
verdict's tests form one family, named in the report:

- "Yes" (every comparison favours the deformable net) and "No" (every one goes against it) are
  intersection-union tests: each comparison at level α alone is enough, since the claim needs
  all of them at once (Berger 1982); no adjustment is needed.
- Any other count of "better in k, worse in j" is read from Holm-adjusted p-values over the
  family, which keeps the chance of any false "better" or "worse" at α.
- A difference with fewer than MIN_DISTINCT distinct values over the seeds is never significant.

The bootstrap verdict reads the same family with Bonferroni-simultaneous percentile intervals
(1 - α/m each), the interval form of the same guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from dogbreeds.analysis.bootstrap import Resampled
from dogbreeds.analysis.comparisons import Comparison
from dogbreeds.analysis.results import fmt_interval, fmt_number
from dogbreeds.analysis.stats import (
    ALPHA,
    MIN_DISTINCT,
    PairedTest,
    detectable_effect,
    holm,
    sample_sd,
    seeds_for_power,
)

OURS = "deformable"
# The paper's two questions and the paired measure each is read from (analysis.comparisons).
QUESTIONS = {
    "Does the deformable net generalise better?": "clean test acc",
    "Does it resist deformation better?": "deformed − clean",
}
MOST_SEEDS = 10_000  # the seeds-needed search stops here: beyond it, "more than"


@dataclass(frozen=True)
class Verdict:
    """How a family of oriented differences (ours − other) reads: kind is "yes", "no",
    "depends" or "undecided"; above/below count the comparisons found significant."""

    kind: str
    above: int
    below: int
    total: int

    def sentence(self) -> str:
        rest = self.total - self.above - self.below
        return {
            "yes": "Yes",
            "no": "No, it does worse",
            "undecided": "The data cannot decide: no comparison is significant",
            "depends": (
                f"It depends: better in {self.above}, worse in {self.below} and undecided in "
                f"{rest} of {self.total} comparisons"
            ),
        }[self.kind]


def decide(signs_alone: list[int], signs_adjusted: list[int]) -> Verdict:
    """The rule shared by both verdicts. signs_alone: +1/-1/0 per comparison, significant at
    α on its own (for the intersection-union yes/no); signs_adjusted: the same after the
    family's adjustment (for the counts)."""
    total = len(signs_alone)
    if total and all(s > 0 for s in signs_alone):
        return Verdict("yes", total, 0, total)
    if total and all(s < 0 for s in signs_alone):
        return Verdict("no", 0, total, total)
    above, below = signs_adjusted.count(1), signs_adjusted.count(-1)
    return Verdict("undecided" if above == below == 0 else "depends", above, below, total)


def sign(mean: float, significant: bool) -> int:
    return (1 if mean > 0 else -1) if significant else 0


def t_verdict(tests: list[PairedTest], alpha: float = ALPHA) -> tuple[Verdict, list[float]]:
    """The verdict of paired t tests (ours − other), with the Holm-adjusted p of each."""
    adjusted = holm([t.p_value for t in tests])
    alone = [sign(t.interval.mean, t.significant(alpha)) for t in tests]
    after = [
        sign(t.interval.mean, not t.degenerate and p < alpha)
        for t, p in zip(tests, adjusted, strict=True)
    ]
    return decide(alone, after), adjusted


def bootstrap_verdict(
    stats: list[Resampled], tests: list[PairedTest], alpha: float = ALPHA
) -> Verdict:
    """The verdict of bootstrap intervals (ours − other): alone at 1 - α, simultaneous at
    1 - α/m. A difference that the degenerate rule refuses over seeds is refused here too."""
    m = len(stats)

    def signs(confidence: float) -> list[int]:
        out = []
        for stat, test in zip(stats, tests, strict=True):
            interval = stat.interval(confidence)
            clear = not test.degenerate and (interval.low > 0 or interval.high < 0)
            out.append(sign(stat.point, clear))
        return out

    return decide(signs(1 - alpha), signs(1 - alpha / m))


def ours_against_others(comparisons: list[Comparison]) -> list[tuple[Comparison, str, bool]]:
    """Every comparison of the deformable net, with the other net and whether a − b must be
    flipped to read as ours − other."""
    found = []
    for c in comparisons:
        if OURS in (c.a, c.b):
            found.append((c, c.b if c.a == OURS else c.a, c.b == OURS))
    return found


def oriented(c: Comparison, what: str, flip: bool) -> PairedTest:
    test = c.differences[what]
    return test.negated() if flip else test


def fact(other: str, schedule: str, test: PairedTest, p_holm: float) -> str:
    """One comparison as the answer quotes it."""
    where = f"vs {other} on {schedule}"
    if test.identical:
        mean = fmt_number(test.interval.mean, signed=True)
        return f"{where}: {mean} on every seed (identical: not tested)"
    interval = fmt_interval(test.interval, signed=True)
    if test.degenerate:
        return f"{where}: {interval}, only {test.distinct} distinct values (not tested)"
    return f"{where}: {interval}, Holm p {p_holm:.3f}"


def detection(tests: list[PairedTest], power: float, alpha: float = ALPHA) -> str:
    """What a verdict short of yes or no could have found, and what it rules out.

    The smallest true difference each comparison's paired t test would find with `power`, at
    level α alone (the yes/no rule's level) and at α/m (Holm's first step), with the seeds run:
    the detectable standardised effect times the sd observed over the seeds (itself uncertain
    with few seeds). And the span of the 95% intervals: a true difference outside it lies
    outside every comparison's interval, so each one rules it out.
    """
    spread = [sample_sd(t.differences) for t in tests if t.interval.n >= 2]
    spread = [sd for sd in spread if sd > 1e-12]
    if not spread:
        return ""
    n, m = tests[0].interval.n, len(tests)
    alone, first = detectable_effect(n, power, alpha), detectable_effect(n, power, alpha / m)
    low = min(t.interval.low for t in tests)
    high = max(t.interval.high for t in tests)

    def span(effect: float) -> str:
        lo, hi = effect * min(spread), effect * max(spread)
        return fmt_number(lo) if abs(hi - lo) < 5e-5 else f"{fmt_number(lo)}-{fmt_number(hi)}"

    return (
        f" What it could detect: with {n} seeds, a comparison finds a true difference of at "
        f"least {span(alone)} with {power:.0%} power at level {alpha:g} (the yes/no rule), "
        f"{span(first)} at {alpha:g}/{m} (Holm's first step), from each comparison's sd over "
        f"seeds. What it rules out: every comparison's 95% CI lies within "
        f"[{fmt_number(low, signed=True)}, {fmt_number(high, signed=True)}], so a true "
        "difference beyond that range is ruled out in all of them."
    )


def answer(
    question: str,
    what: str,
    comparisons: list[Comparison],
    seeds: int,
    boot: dict[tuple[str, str, str], dict[str, Resampled]] | None = None,
    power: float = 0.8,
) -> str:
    """One plain sentence answering `question` from the deformable net's paired differences
    `what` against every other net on every schedule (one family), and, where `boot` holds
    bootstrap pairs for `what`, the same family read over test images and seeds."""
    ours = ours_against_others(comparisons)
    if not ours:
        return f"**{question}** Not asked: the deformable net is not in params train.archs."
    if seeds < 2:
        return (
            f"**{question}** The data cannot decide: with one seed per cell there is no "
            "interval (set train.seeds to several seeds)."
        )
    tests = [oriented(c, what, flip) for c, _, flip in ours]
    verdict, adjusted = t_verdict(tests)
    m = len(tests)
    facts = [
        fact(other, c.schedule, test, p)
        for (c, other, _), test, p in zip(ours, tests, adjusted, strict=True)
    ]
    text = (
        f"**{question}** {verdict.sentence()} (deformable − other, {what}, mean [95% CI] over "
        f"{seeds} seeds and p adjusted by Holm over the {m} comparisons: {'; '.join(facts)})."
    )
    if verdict.kind in ("undecided", "depends"):
        text += detection(tests, power)
    if boot and what in next(iter(boot.values())):
        stats = []
        for c, _, flip in ours:
            stat = boot[c.a, c.b, c.schedule][what]
            stats.append(stat.negated() if flip else stat)
        text += (
            " Over test images and seeds together (bootstrap, counts from Bonferroni-simultaneous "
            f"{1 - ALPHA / m:.2%} intervals): {bootstrap_verdict(stats, tests).sentence()}."
        )
    return text


@dataclass(frozen=True)
class SeedsNeeded:
    """One comparison's estimate: seeds is the count, or None with the reason in `why`."""

    other: str
    schedule: str
    test: PairedTest  # ours − other over the seeds run so far
    seeds: int | None
    why: str = ""

    @property
    def text(self) -> str:
        return f"{self.seeds:,}" if self.seeds is not None else self.why


def family_note(m: int) -> str:
    """How the answers read their tests: the family, the rule and the adjustment."""
    return (
        f"Each answer reads its {m} comparisons (the deformable net against each other net on "
        "each schedule) as one family. 'Yes' (or 'No') needs every comparison's paired 95% CI "
        "above (below) 0: an intersection-union test, at 5% without adjustment. Any other "
        "count is read from paired t tests with Holm's adjustment over the family (the "
        "bootstrap sentence: Bonferroni-simultaneous intervals). Fewer than "
        f"{MIN_DISTINCT} distinct per-seed differences are never significant."
    )


def seeds_needed(
    what: str,
    comparisons: list[Comparison],
    power: float,
    min_difference: float,
    alpha: float = ALPHA,
) -> list[SeedsNeeded]:
    """Per comparison of the deformable net, the seeds at which its paired t test finds a true
    difference of `min_difference` (either way) with `power`.

    The difference is stated (`report.min_difference`), not the one observed: power computed
    from an observed effect is as noisy as the effect. The sd of the per-seed differences
    still comes from the seeds run. The level is α, that of the yes/no rule (each comparison
    at α alone)."""
    rows = []
    for c, other, flip in ours_against_others(comparisons):
        test = oriented(c, what, flip)
        row = SeedsNeeded(other, c.schedule, test, None)
        sd = sample_sd(test.differences) if test.interval.n >= 2 else math.nan
        if test.interval.n < 2:
            row = replace(row, why="not estimable with one seed")
        elif sd <= 1e-12:
            row = replace(row, why="identical on every seed: no spread to estimate from")
        else:
            n = seeds_for_power(min_difference / sd, power, alpha, MOST_SEEDS)
            row = replace(row, seeds=n, why="" if n else f"more than {MOST_SEEDS:,}")
        rows.append(row)
    return rows


def seeds_summary(question: str, rows: list[SeedsNeeded], power: float, difference: float) -> str:
    """One line per question: the largest count, which every comparison needs to reach."""
    counts = [r.seeds for r in rows if r.seeds is not None]
    others = sorted({r.why for r in rows if r.seeds is None})
    if not counts:
        return f"- **{question}** No estimate ({'; '.join(others)})."
    line = (
        f"- **{question}** About {max(counts):,} seeds, for each of its {len(counts)} "
        f"estimable comparisons to find a true difference of {difference:g} with {power:.0%} "
        "power"
    )
    if others:
        line += f"; {len(rows) - len(counts)} more: {'; '.join(others)}"
    return line + "."


def direction(mean: float) -> str:
    """Which way a comparison points so far (deformable − other)."""
    if mean > 0:
        return "deformable ahead"
    return "deformable behind" if mean < 0 else "level"


def seeds_needed_table(
    questions: dict[str, str],
    comparisons: list[Comparison],
    power: float,
    seeds: int,
    min_difference: float,
) -> str:
    """The seeds-needed estimate for each question (question -> measure), per comparison, with
    its assumptions."""
    m = len(ours_against_others(comparisons))
    if m == 0:
        return "Not asked: the deformable net is not in params train.archs."
    estimates = {
        q: seeds_needed(what, comparisons, power, min_difference) for q, what in questions.items()
    }
    lines = [seeds_summary(q, rows, power, min_difference) for q, rows in estimates.items()]
    lines += [
        "",
        "| question | deformable vs | schedule | observed difference | points | sd over seeds "
        f"| seeds to find ±{min_difference:g} at {power:.0%} power |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for question, rows in estimates.items():
        for row in rows:
            sd = sample_sd(row.test.differences) if row.test.interval.n >= 2 else math.nan
            spread = "-" if math.isnan(sd) else fmt_number(sd)
            mean = row.test.interval.mean
            lines.append(
                f"| {question} | {row.other} | {row.schedule} | {fmt_number(mean, signed=True)} "
                f"| {direction(mean)} | {spread} | {row.text} |"
            )
    lines += [
        "",
        f"An estimate, not a promise. It asks how many seeds the two-sided paired t test at "
        f"level {ALPHA:g} (the level of the yes/no rule, each comparison alone) needs to find "
        f"a true difference of {min_difference:g} in either direction (`report.min_difference`, "
        "a difference worth finding, stated in advance rather than taken from the observed "
        "one, whose power estimate would be as noisy as the effect). It assumes the per-seed "
        f"differences are normal with the sd observed over these {seeds} seeds (itself "
        "uncertain: with few seeds it can be off by half or more); the same test images, so "
        "more seeds narrow the uncertainty over seeds only, not over which photos are in the "
        f"test set; at least {MIN_DISTINCT} seeds (the degenerate rule). Holm's adjustment "
        f"over the {m} comparisons, or 'yes' for all of them at once, takes more. The "
        "'points' column says which way each comparison points so far.",
    ]
    return "\n".join(lines)
