"""The statistics behind the report's answers: intervals over seeds and paired tests.

One trained net per seed is one sample of what a (net, schedule) cell can reach, so a cell's
accuracy is reported as a mean with a 95% Student-t confidence interval over its seeds. Two
nets trained from the same seeds on the same images are compared pairwise: the per-seed
difference gets its own t interval (pairing removes what the seeds share), and McNemar's exact
test asks, for one seed, whether the test images that only one of the two nets gets right
lean to one side more than chance allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from dogbreeds import DogbreedsError

CONFIDENCE = 0.95


class StatsError(DogbreedsError):
    """Inputs that no statistic can be computed from (e.g. pairs of unequal length)."""


@dataclass(frozen=True)
class Interval:
    """A mean over n samples with its two-sided confidence interval (nan bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool | None:
        """Whether `value` lies in the interval; None when there is no interval (n < 2)."""
        if self.n < 2:
            return None
        return self.low <= value <= self.high

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly on one side of 0 (a difference "significant" at
        the interval's level); False with fewer than 2 samples."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s/√n, s the sample standard deviation (ddof = 1)."""
    n = len(values)
    if n == 0:
        raise StatsError("t_interval: no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """The t interval of a[i] - b[i]: two nets' accuracies for the same seeds, in seed order."""
    if len(a) != len(b):
        raise StatsError(f"paired_difference: {len(a)} values against {len(b)}")
    return t_interval([x - y for x, y in zip(a, b, strict=True)], confidence)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two classifiers on the same images.

    only_a: images net A gets right and net B wrong; only_b: the reverse. Under the null
    hypothesis (equal accuracy) each discordant image is a fair coin, so only_a ~ Binomial(
    only_a + only_b, 1/2); p is the two-sided exact binomial p-value (1 without discordant
    images)."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(
    labels: Sequence[int], predicted_a: Sequence[int], predicted_b: Sequence[int]
) -> McNemar:
    """McNemar's exact test from per-image labels and the two nets' predicted classes."""
    if not len(labels) == len(predicted_a) == len(predicted_b):
        raise StatsError(
            f"mcnemar_exact: {len(labels)} labels, {len(predicted_a)} and {len(predicted_b)} "
            "predictions: the nets must be scored on the same images"
        )
    right = [(a == y, b == y) for y, a, b in zip(labels, predicted_a, predicted_b, strict=True)]
    only_a = sum(1 for a, b in right if a and not b)
    only_b = sum(1 for a, b in right if b and not a)
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    p = scipy_stats.binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return McNemar(only_a, only_b, float(p))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Many pairs, schedules and seeds are tested at once; at 5% each, some would come out
    "significant" by chance alone. Holm's step-down adjustment keeps the chance of any false
    positive among them at 5% without assuming the tests are independent.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
