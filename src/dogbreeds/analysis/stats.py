"""The statistics behind the report's answers: intervals over seeds and paired tests.

One trained net per seed is one sample of what a (net, schedule) cell can reach, so a cell's
accuracy is reported as a mean with a 95% Student-t confidence interval over its seeds. Two
nets trained from the same seeds on the same images are compared pairwise: the per-seed
difference gets its own t interval (pairing removes what the seeds share), and McNemar's exact
test asks, for one seed, whether the test images that only one of the two nets gets right
lean to one side more than chance allows.

Decisions built on these need care (docs/statistics.md): one run (the paper's) is held against
a prediction interval, not the CI of a mean; several tests read together are adjusted as one
family (Holm); a difference that takes fewer than 3 distinct values over the seeds is never
called significant; and `seeds_for_power` says how many seeds a paired test would need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from dogbreeds import DogbreedsError

ALPHA = 0.05  # the level of every test
CONFIDENCE = 1 - ALPHA  # and of every interval
# Fewer distinct per-seed differences than this are never significant: five seeds that differ
# by exactly the same amount give an interval of zero width, which is one run's worth of
# evidence, not five.
MIN_DISTINCT = 3
DISTINCT_DIGITS = 9  # accuracies are k/n_images: rounding here only merges float noise


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


def sample_sd(values: Sequence[float]) -> float:
    """The sample standard deviation (ddof = 1); nan with fewer than 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s/√n, s the sample standard deviation (ddof = 1)."""
    n = len(values)
    if n == 0:
        raise StatsError("t_interval: no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * sample_sd(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def prediction_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Where one more run would fall: mean ± t_{(1+c)/2, n-1} · s · √(1 + 1/n).

    The paper trained one net per cell; against the CI of our mean, a typical single run lies
    outside more often than not once n grows, since the CI shrinks as 1/√n and a run does not.
    """
    n = len(values)
    mean = t_interval(values, confidence).mean
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    t = scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
    half = t * sample_sd(values) * math.sqrt(1 + 1 / n)
    return Interval(mean, mean - half, mean + half, n)


def distinct_values(values: Sequence[float]) -> int:
    """How many different values, after rounding away float noise (DISTINCT_DIGITS)."""
    return len({round(v, DISTINCT_DIGITS) for v in values})


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """The t interval of a[i] - b[i]: two nets' accuracies for the same seeds, in seed order."""
    if len(a) != len(b):
        raise StatsError(f"paired_difference: {len(a)} values against {len(b)}")
    return t_interval([x - y for x, y in zip(a, b, strict=True)], confidence)


@dataclass(frozen=True)
class PairedTest:
    """Per-seed differences a[i] - b[i], their t interval and the paired t test of mean 0.

    p_value is two-sided; it is 1.0 (never significant) when the differences take fewer than
    MIN_DISTINCT values, whatever their interval says."""

    differences: tuple[float, ...]
    interval: Interval
    p_value: float

    @property
    def distinct(self) -> int:
        return distinct_values(self.differences)

    @property
    def identical(self) -> bool:
        """The same difference on every seed (with two or more seeds)."""
        return len(self.differences) >= 2 and self.distinct == 1

    @property
    def degenerate(self) -> bool:
        """Too few distinct differences to test: the degenerate rule (MIN_DISTINCT)."""
        return self.distinct < MIN_DISTINCT

    def significant(self, alpha: float = ALPHA) -> bool:
        """p < alpha on a non-degenerate difference (unadjusted: one test alone)."""
        return not self.degenerate and self.p_value < alpha

    def negated(self) -> PairedTest:
        """The same test oriented as b - a."""
        i = self.interval
        flipped = Interval(-i.mean, -i.high, -i.low, i.n)
        return PairedTest(tuple(-d for d in self.differences), flipped, self.p_value)


def paired_test(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> PairedTest:
    """The paired t test of a against b: t = mean / (s/√n) on n - 1 degrees of freedom.

    The same test as the paired interval: p < 1 - confidence exactly when the interval
    excludes 0 (for a non-degenerate difference)."""
    interval = paired_difference(a, b, confidence)
    differences = tuple(x - y for x, y in zip(a, b, strict=True))
    n = len(differences)
    if n < 2 or distinct_values(differences) < MIN_DISTINCT:
        return PairedTest(differences, interval, 1.0)
    t = interval.mean / (sample_sd(differences) / math.sqrt(n))
    p = 2 * scipy_stats.t.sf(abs(t), n - 1)
    return PairedTest(differences, interval, float(p))


def paired_t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level alpha with n pairs, when the differences
    are normal with mean/sd = effect: P(|T| > t_{1-alpha/2, n-1}), T ~ noncentral t(n - 1,
    effect·√n).

    The lower tail P(T < -t) is taken as P(T' > t) with T' ~ noncentral t(n - 1, -effect·√n)
    (the same by symmetry): scipy's nct.cdf far in the tail returns nan where nct.sf does not.
    """
    df = n - 1
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    noncentrality = effect * math.sqrt(n)
    upper = scipy_stats.nct.sf(critical, df, noncentrality)
    lower = scipy_stats.nct.sf(critical, df, -noncentrality)
    return float(upper + lower)


def detectable_effect(n: int, power: float, alpha: float = ALPHA) -> float | None:
    """The smallest true standardised difference (mean/sd) that the two-sided paired t test at
    level alpha with n pairs finds with probability `power`; None below 2 pairs.

    Power grows with the effect, so a bisection finds it; times the sd of the per-seed
    differences it is the smallest difference in accuracy the study could have detected.
    """
    if n < 2:
        return None
    low, high = 0.0, 1.0
    while paired_t_power(high, n, alpha) < power:
        high *= 2
    for _ in range(60):  # to ~1e-16 of the bracket
        middle = (low + high) / 2
        if paired_t_power(middle, n, alpha) >= power:
            high = middle
        else:
            low = middle
    return high


def seeds_for_power(
    effect: float, power: float, alpha: float = ALPHA, most: int = 10_000
) -> int | None:
    """The fewest seeds (at least MIN_DISTINCT) at which the paired t test reaches `power`
    for a true standardised difference `effect` (mean/sd); None when even `most` do not.

    Power grows with n, so a bisection finds the first n that is enough."""
    effect = abs(effect)
    if effect == 0 or not math.isfinite(effect) or paired_t_power(effect, most, alpha) < power:
        return None
    low, high = MIN_DISTINCT, most  # paired_t_power(high) >= power
    while low < high:
        middle = (low + high) // 2
        if paired_t_power(effect, middle, alpha) >= power:
            high = middle
        else:
            low = middle + 1
    return low


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
