"""Statistics of the report, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from dogbreeds.analysis import stats


def test_t_interval_matches_the_textbook_formula():
    values = [0.40, 0.42, 0.44, 0.46, 0.48]  # mean 0.44, sample sd sqrt(0.001) = 0.0316
    interval = stats.t_interval(values)
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(0.001) / math.sqrt(5)  # 2.776 * 0.01414
    assert interval.mean == pytest.approx(0.44)
    assert interval.low == pytest.approx(0.44 - half) and interval.high == pytest.approx(
        0.44 + half
    )
    assert half == pytest.approx(0.03926, abs=1e-5)
    assert interval.contains(0.47) and not interval.contains(0.48)


def test_one_seed_has_a_mean_but_no_interval():
    interval = stats.t_interval([0.5])
    assert interval.mean == 0.5 and math.isnan(interval.low) and interval.n == 1
    assert interval.contains(0.5) is None and not interval.excludes_zero()


def test_paired_difference_removes_what_the_seeds_share():
    # b is a shifted by exactly 0.02 on every seed: the difference has zero spread.
    a = [0.30, 0.50, 0.40]
    b = [0.28, 0.48, 0.38]
    diff = stats.paired_difference(a, b)
    assert diff.mean == pytest.approx(0.02)
    assert diff.low == pytest.approx(0.02) and diff.high == pytest.approx(0.02)
    assert diff.excludes_zero()
    # unpaired, the same numbers overlap widely
    assert stats.t_interval(a).contains(stats.t_interval(b).mean)
    with pytest.raises(stats.StatsError, match="3 values against 2"):
        stats.paired_difference(a, b[:2])


def test_mcnemar_counts_discordant_images_and_gives_the_exact_binomial_p():
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    a = [0, 1, 2, 3, 4, 5, 6, 0, 0, 0]  # right on 8
    b = [0, 0, 0, 0, 0, 0, 6, 0, 1, 0]  # right on 4 (0, 6, 7, 8)
    result = stats.mcnemar_exact(labels, a, b)
    # only a: images 1-5 (5); only b: image 8 (1). Two-sided exact: 2 * P(X <= 1 | n=6, 1/2)
    assert (result.only_a, result.only_b) == (5, 1)
    assert result.p_value == pytest.approx(2 * (1 + 6) / 2**6)  # 0.21875


def test_mcnemar_without_discordant_images_is_p_one():
    assert stats.mcnemar_exact([1, 2], [1, 0], [1, 0]) == stats.McNemar(0, 0, 1.0)
    with pytest.raises(stats.StatsError, match="same images"):
        stats.mcnemar_exact([1, 2], [1], [1, 2])


def test_holm_steps_down_and_keeps_the_input_order():
    # sorted: 0.01*3 = 0.03, 0.02*2 = 0.04, 0.04*1 = 0.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
