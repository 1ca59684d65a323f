"""A bootstrap over test images and seeds together: the uncertainty the t intervals leave out.

The t intervals over seeds treat the test set as fixed: every seed is scored on the same
images, so which photos happen to be in it is in no interval, and "generalises better" would
hold for this test set only. Here each resample draws the seeds with replacement *and* the
test images with replacement, and scores every net on that same draw: a pair of nets is
compared on the same resampled images and the same resampled seeds (paired across nets, as
the t intervals are paired across seeds). The percentile interval of the resampled means
then covers both sources of variation. Resamples are drawn once from `report.seed`, so the
report repeats bit for bit; their number is `report.bootstrap_resamples`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dogbreeds.analysis.results import ReportError, RunResult, fmt_interval
from dogbreeds.analysis.stats import CONFIDENCE, Interval


@dataclass(frozen=True)
class Resamples:
    """B joint resamples: how often each seed (B, seeds) and each test image (B, images) is
    drawn, as weights that sum to 1 per resample."""

    seeds: np.ndarray
    images: np.ndarray

    @property
    def count(self) -> int:
        return self.seeds.shape[0]


def counts(rng: np.random.Generator, resamples: int, size: int) -> np.ndarray:
    """(resamples, size) draw counts of `size` items drawn `size` times with replacement."""
    drawn = rng.integers(0, size, (resamples, size))
    rows = np.arange(resamples)[:, None] * size
    return np.bincount((drawn + rows).ravel(), minlength=resamples * size).reshape(-1, size)


def draw(seeds: int, images: int, resamples: int, seed: int) -> Resamples:
    """Draw the seeds and the images independently (a crossed design: every seed saw every
    image), from one generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    seed_counts = counts(rng, resamples, seeds)
    image_counts = counts(rng, resamples, images)
    return Resamples(seed_counts / seeds, image_counts / images)


def resampled_means(scores: np.ndarray, resamples: Resamples) -> np.ndarray:
    """The mean over resampled seeds and images of per-image scores (seeds, images), once per
    resample: (B,). A resample's mean is Σ_s v_s Σ_i w_i scores[s, i]."""
    per_seed = scores @ resamples.images.T  # (seeds, B): each seed's mean on each image draw
    return np.einsum("bs,sb->b", resamples.seeds, per_seed)


@dataclass(frozen=True)
class Resampled:
    """One statistic: its observed value (the mean over all seeds and images) and its value on
    each resample."""

    point: float
    means: np.ndarray  # (B,)

    @classmethod
    def of(cls, scores: np.ndarray, resamples: Resamples) -> Resampled:
        return cls(float(scores.mean()), resampled_means(scores, resamples))

    def interval(self, confidence: float = CONFIDENCE) -> Interval:
        """The percentile interval; n is the number of resamples (so an interval shows even
        for one seed: the images still vary)."""
        tail = (1 - confidence) / 2
        low, high = np.quantile(self.means, [tail, 1 - tail])
        return Interval(self.point, float(low), float(high), len(self.means))

    def negated(self) -> Resampled:
        return Resampled(-self.point, -self.means)


def correct(runs: list[RunResult], split: str, ids: list[str]) -> np.ndarray:
    """(seeds, images): 1.0 where the run classified the image right on `split`."""
    rows = []
    for run in runs:
        by_id = run.predicted(split)
        if sorted(by_id) != ids:
            raise ReportError(
                f"{run.name} was scored on other test images than {runs[0].name}: rerun its "
                "evaluate stage (dvc repro)"
            )
        rows.append([float(by_id[i][0] == by_id[i][1]) for i in ids])
    return np.array(rows)


# The measures that per-image predictions give, as per-image scores of a cell's runs: what
# comparisons.COMPARED gives per run, here before averaging over the images.
def clean(runs: list[RunResult], ids: list[str]) -> np.ndarray:
    return correct(runs, "clean_test", ids)


def deformed(runs: list[RunResult], ids: list[str]) -> np.ndarray:
    return correct(runs, "test", ids)


def deformation_cost(runs: list[RunResult], ids: list[str]) -> np.ndarray:
    """Deformed minus clean, per image: -1 where the deformation broke a right answer."""
    return deformed(runs, ids) - clean(runs, ids)


PER_IMAGE: dict[str, Callable[[list[RunResult], list[str]], np.ndarray]] = {
    "clean test acc": clean,
    "deformed test acc": deformed,
    "deformed − clean": deformation_cost,
}


@dataclass
class Bootstrap:
    """Every cell's and every pair's resampled statistics, for every PER_IMAGE measure."""

    resamples: int
    cells: dict[tuple[str, str], dict[str, Resampled]]  # (arch, schedule) -> measure -> stat
    pairs: dict[tuple[str, str, str], dict[str, Resampled]]  # (a, b, schedule): a − b


def bootstrap_study(
    cells: dict[tuple[str, str], list[RunResult]], resamples: int, seed: int
) -> Bootstrap:
    """Every cell and every pair of archs on a schedule, all on one set of resamples.

    `cells` maps (arch, schedule) to its runs in seed order. Reusing one draw for every cell
    is what pairs the pairs: net a and net b see the same images and the same seeds."""
    first = next(iter(cells.values()))
    ids = sorted(first[0].predicted("test"))
    draws = draw(len(first), len(ids), resamples, seed)
    scores = {
        key: {what: per_image(runs, ids) for what, per_image in PER_IMAGE.items()}
        for key, runs in cells.items()
    }
    by_cell = {
        key: {what: Resampled.of(values, draws) for what, values in measures.items()}
        for key, measures in scores.items()
    }
    archs = list(dict.fromkeys(arch for arch, _ in cells))
    schedules = list(dict.fromkeys(schedule for _, schedule in cells))
    pairs = {
        (a, b, schedule): {
            what: Resampled.of(scores[a, schedule][what] - scores[b, schedule][what], draws)
            for what in PER_IMAGE
        }
        for schedule in schedules
        for i, a in enumerate(archs)
        for b in archs[i + 1 :]
    }
    return Bootstrap(resamples, by_cell, pairs)


def bootstrap_tables(boot: Bootstrap) -> tuple[str, str]:
    """The cells' and the pairs' observed means with 95% percentile intervals, as Markdown."""
    header = " | ".join(f"{what}: mean [95% bootstrap]" for what in PER_IMAGE)
    rule = "---:|" * len(PER_IMAGE)

    def row(label: str, stats: dict[str, Resampled], signed: bool) -> str:
        return (
            f"| {label} | "
            + " | ".join(fmt_interval(stats[what].interval(), signed=signed) for what in PER_IMAGE)
            + " |"
        )

    cells = [f"| net | schedule | {header} |", f"|---|---|{rule}"]
    cells += [row(f"{arch} | {schedule}", s, False) for (arch, schedule), s in boot.cells.items()]
    pairs = [f"| a − b | schedule | {header} |", f"|---|---|{rule}"]
    pairs += [row(f"{a} − {b} | {schedule}", s, True) for (a, b, schedule), s in boot.pairs.items()]
    return "\n".join(cells), "\n".join(pairs)
