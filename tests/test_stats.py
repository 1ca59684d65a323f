"""Statistics of the report, checked against values computed by hand, scipy, and simulations
with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.power import TTestPower

from dogbreeds.analysis import bootstrap, decisions, stats


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


# --- prediction intervals: where one more run falls ---------------------------------------


def test_prediction_interval_is_wider_by_the_new_runs_own_spread():
    values = [0.40, 0.42, 0.44, 0.46, 0.48]  # mean 0.44, sd sqrt(0.001)
    pi = stats.prediction_interval(values)
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(0.001) * math.sqrt(1 + 1 / 5)
    assert half == pytest.approx(0.09618, abs=1e-5)  # 2.776 * 0.03162 * 1.0954
    assert (pi.mean, pi.low, pi.high) == pytest.approx((0.44, 0.44 - half, 0.44 + half))
    # scipy's t distribution with that scale gives the same interval
    scale = math.sqrt(0.001) * math.sqrt(1 + 1 / 5)
    assert (pi.low, pi.high) == pytest.approx(scipy_stats.t.interval(0.95, 4, 0.44, scale))
    # a single run at 0.52 is typical of these seeds, yet outside the CI of their mean
    assert pi.contains(0.52) and not stats.t_interval(values).contains(0.52)
    assert math.isnan(stats.prediction_interval([0.5]).low)


def test_prediction_interval_covers_95_percent_of_new_runs_and_the_ci_does_not():
    rng = np.random.default_rng(0)
    runs = rng.normal(0.5, 0.03, (4000, 6))  # 5 seeds, then one more run (the paper's)
    inside_pi = inside_ci = 0
    for row in runs:
        seeds, new = list(row[:5]), row[5]
        inside_pi += stats.prediction_interval(seeds).contains(new)
        inside_ci += stats.t_interval(seeds).contains(new)
    assert inside_pi / 4000 == pytest.approx(0.95, abs=0.012)  # 3 sd of 4000 draws: 0.010
    assert inside_ci / 4000 == pytest.approx(0.68, abs=0.025)  # P(|T_4| < 2.776/sqrt(6))


# --- paired t tests and the degenerate rule -----------------------------------------------


def test_paired_test_is_scipys_paired_t_test_and_agrees_with_its_interval():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, b = rng.normal(0.5, 0.05, 5), rng.normal(0.52, 0.05, 5)
        test = stats.paired_test(list(a), list(b))
        assert test.p_value == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-9)
        assert test.significant() == test.interval.excludes_zero()
        flipped = test.negated()
        assert flipped.interval.mean == pytest.approx(-test.interval.mean)
        assert (flipped.interval.low, flipped.interval.high) == (
            -test.interval.high,
            -test.interval.low,
        )


def test_identical_differences_on_every_seed_are_never_significant():
    # b is a minus 0.02 on every seed: float noise leaves an interval of width ~1e-16
    a = [0.30, 0.50, 0.40, 0.70, 0.60]
    test = stats.paired_test(a, [x - 0.02 for x in a])
    assert test.interval.excludes_zero()  # what the interval alone would have claimed
    assert test.identical and test.degenerate and test.distinct == 1
    assert test.p_value == 1.0 and not test.significant()


def test_fewer_than_three_distinct_differences_are_never_significant():
    two = stats.paired_test([0.10, 0.10, 0.10, 0.10, 0.12], [0.0] * 5)
    assert scipy_stats.ttest_1samp([0.10, 0.10, 0.10, 0.10, 0.12], 0).pvalue < 1e-4
    assert two.distinct == 2 and two.degenerate and not two.identical
    assert not two.significant()
    three = stats.paired_test([0.08, 0.10, 0.12], [0.0] * 3)
    assert not three.degenerate
    assert three.p_value == pytest.approx(scipy_stats.ttest_1samp([0.08, 0.10, 0.12], 0).pvalue)
    assert three.significant()  # t = 8.66 on 2 df: p = 0.013


# --- multiplicity: a family of comparisons read as one verdict ----------------------------


def null_study(rng: np.random.Generator) -> list[stats.PairedTest]:
    """Deformable against cnn and dsc on 3 schedules, 5 seeds, all three nets equally good."""
    tests = []
    for _schedule in range(3):
        nets = rng.normal(0.5, 0.02, (3, 5))  # deformable, cnn, dsc: one accuracy per seed
        tests += [stats.paired_test(list(nets[0]), list(nets[k])) for k in (1, 2)]
    return tests


def test_holm_keeps_false_verdicts_at_5_percent_where_counting_cis_finds_a_quarter():
    rng = np.random.default_rng(2)
    studies = 1500
    adjusted = unadjusted = 0
    for _ in range(studies):
        tests = null_study(rng)
        verdict, _ = decisions.t_verdict(tests)
        adjusted += verdict.kind != "undecided"
        unadjusted += any(t.interval.excludes_zero() for t in tests)
    # Holm controls the chance of any "better"/"worse" at 5% (sd of 1500 draws: 0.0056)
    assert adjusted / studies < 0.05 + 0.017
    # the old rule, 6 CIs at 95% each: 1 - 0.95**6 = 0.26 if independent (they share a net)
    assert 0.17 < unadjusted / studies < 0.30


def test_yes_and_no_are_intersection_union_tests_at_each_comparisons_level():
    clear = stats.paired_test([0.08, 0.10, 0.12], [0.0] * 3)  # p = 0.013
    borderline = stats.paired_test([0.06, 0.10, 0.12], [0.0] * 3)
    assert borderline.p_value == pytest.approx(0.0339, abs=1e-4)
    # both below 5% alone: "yes", though Holm over the 2 keeps neither (2 * 0.0339 = 0.068)
    verdict, adjusted = decisions.t_verdict([borderline, borderline])
    assert verdict.kind == "yes" and verdict.above == 2
    assert adjusted == pytest.approx([2 * borderline.p_value] * 2)
    # one against: no yes, and the counts come from Holm: 1 better (0.026), 1 worse
    verdict, _ = decisions.t_verdict([clear, clear.negated()])
    assert (verdict.kind, verdict.above, verdict.below) == ("depends", 1, 1)
    verdict, _ = decisions.t_verdict([clear.negated(), clear.negated()])
    assert verdict.kind == "no"
    # a degenerate comparison is never counted, so it blocks a "yes"
    same = stats.paired_test([0.1, 0.1, 0.1], [0.0] * 3)
    verdict, _ = decisions.t_verdict([clear, same])
    assert (verdict.kind, verdict.above, verdict.below) == ("depends", 1, 0)
    assert "better in 1, worse in 0 and undecided in 1 of 2" in verdict.sentence()


# --- how many seeds would decide -----------------------------------------------------------


@pytest.mark.parametrize(("effect", "seeds"), [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_for_80_percent_power_match_the_published_tables(effect, seeds):
    """Two-sided one-sample/paired t test at 5%: G*Power and Cohen's tables give these n."""
    assert stats.seeds_for_power(effect, 0.8) == seeds
    assert stats.paired_t_power(effect, seeds) >= 0.8 > stats.paired_t_power(effect, seeds - 1)


def test_paired_t_power_matches_a_simulation():
    rng = np.random.default_rng(3)
    n, effect, trials = 10, 1.0, 20_000
    draws = rng.normal(effect, 1.0, (trials, n))
    t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, n - 1))
    assert stats.paired_t_power(effect, n) == pytest.approx(rejected, abs=0.009)  # 3 sd
    assert stats.paired_t_power(effect, n) == pytest.approx(0.8031, abs=1e-4)


def test_seeds_for_power_edges():
    assert stats.seeds_for_power(20.0, 0.8) == stats.MIN_DISTINCT  # never fewer than 3
    assert stats.seeds_for_power(-1.0, 0.8) == 10  # the sign does not matter
    assert stats.seeds_for_power(0.0, 0.8) is None
    assert stats.seeds_for_power(0.001, 0.8, most=10_000) is None  # needs ~7.8 million
    # a stricter level (Holm's first step over 6) needs more seeds
    assert stats.seeds_for_power(1.0, 0.8, alpha=0.05 / 6) > 10
    for effect in (0.01, 0.5, 5.0, 20.0):  # finite where scipy's nct.cdf tail gives nan
        assert all(math.isfinite(stats.paired_t_power(effect, n)) for n in range(3, 300))


# --- the bootstrap over test images and seeds ---------------------------------------------


def pmf(values: np.ndarray, support: np.ndarray) -> np.ndarray:
    return np.array([np.mean(np.isclose(values, x)) for x in support])


def test_resampling_draws_with_replacement():
    draws = bootstrap.draw(seeds=5, images=50, resamples=300, seed=0)
    assert draws.seeds.shape == (300, 5) and draws.images.shape == (300, 50)
    assert np.allclose(draws.seeds.sum(axis=1), 1) and np.allclose(draws.images.sum(axis=1), 1)
    assert np.allclose(draws.images * 50, np.round(draws.images * 50))  # whole draws per image


def test_bootstrap_over_images_alone_is_binomial():
    """One seed right on 15 of 50 images: resampling 50 images with replacement draws a right
    one with probability 0.3 each time, so the resampled accuracy is Binomial(50, 0.3) / 50."""
    scores = np.array([[1.0] * 15 + [0.0] * 35])
    stat = bootstrap.Resampled.of(scores, bootstrap.draw(1, 50, 20_000, seed=4))
    assert stat.point == pytest.approx(0.3)
    support = np.arange(51)
    assert np.std(stat.means) == pytest.approx(math.sqrt(0.3 * 0.7 / 50), rel=0.03)
    assert (
        np.max(np.abs(pmf(stat.means * 50, support) - scipy_stats.binom.pmf(support, 50, 0.3)))
        < 0.01
    )


def test_bootstrap_over_seeds_alone_is_binomial():
    """Three seeds scoring 1, 0 and 1 on every image: the images do not matter, and the mean
    over 3 seeds drawn with replacement is Binomial(3, 2/3) / 3."""
    scores = np.array([[1.0] * 20, [0.0] * 20, [1.0] * 20])
    stat = bootstrap.Resampled.of(scores, bootstrap.draw(3, 20, 20_000, seed=5))
    support = np.arange(4)
    expected = scipy_stats.binom.pmf(support, 3, 2 / 3)  # 1/27, 6/27, 12/27, 8/27
    assert np.max(np.abs(pmf(stat.means * 3, support) - expected)) < 0.01
    interval = stat.interval()
    assert (interval.low, interval.high) == pytest.approx((0.0, 1.0))  # 1/27 = 3.7% > 2.5%


def test_pairs_share_their_resamples():
    draws = bootstrap.draw(2, 50, 20_000, seed=6)
    rng = np.random.default_rng(7)
    net = (rng.random((2, 50)) < 0.6).astype(float)
    alone = bootstrap.Resampled.of(net, draws).interval()
    assert alone.high - alone.low > 0.1  # one net alone varies with the images and seeds
    same = bootstrap.Resampled.of(net - net, draws).interval()
    assert (same.low, same.high) == (0.0, 0.0)  # paired: two identical nets never differ
    # net a right on image 0 where b is wrong, on both seeds, identical elsewhere: the
    # difference is the number of draws of image 0 over 50, Binomial(50, 1/50) / 50
    other = net.copy()
    net[:, 0], other[:, 0] = 1.0, 0.0
    diff = bootstrap.Resampled.of(net - other, draws)
    support = np.arange(6)
    expected = scipy_stats.binom.pmf(support, 50, 1 / 50)
    assert np.max(np.abs(pmf(diff.means * 50, support) - expected)) < 0.01
    interval = diff.interval()  # P(0 draws) = 0.364; P(<= 3) = 0.982 > 0.975 > P(<= 2) = 0.922
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.02, 0.0, 3 / 50))
    assert diff.negated().interval().high == 0.0


def test_bootstrap_is_seeded():
    a, b = bootstrap.draw(5, 40, 500, seed=9), bootstrap.draw(5, 40, 500, seed=9)
    assert np.array_equal(a.seeds, b.seeds) and np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, bootstrap.draw(5, 40, 500, seed=10).images)


def test_the_bootstrap_verdict_keeps_the_degenerate_rule_and_adjusts_for_the_family():
    draws = bootstrap.draw(3, 50, 5000, seed=11)
    better = np.zeros((3, 50))
    better[0, :8], better[1, :10], better[2, :12] = 1, 1, 1  # 0.16, 0.20, 0.24 per seed
    stat = bootstrap.Resampled.of(better, draws)
    test = stats.paired_test([0.16, 0.20, 0.24], [0.0] * 3)
    assert decisions.bootstrap_verdict([stat, stat], [test, test]).kind == "yes"
    identical = stats.paired_test([0.2] * 3, [0.0] * 3)  # the same 10 images on every seed
    same = np.zeros((3, 50))
    same[:, :10] = 1
    verdict = decisions.bootstrap_verdict([bootstrap.Resampled.of(same, draws)], [identical])
    assert verdict.kind == "undecided"  # clear of 0 over images, yet one seed's worth


@pytest.mark.parametrize(("n", "alpha"), [(3, 0.05), (5, 0.05), (5, 0.05 / 6), (10, 0.05)])
def test_power_and_detectable_effect_match_statsmodels(n, alpha):
    """statsmodels' one-sample t power (a paired test is one on the differences) agrees with
    ours, and solving it for the effect gives our smallest detectable effect."""
    power_of = TTestPower()
    for effect in (0.3, 1.0, 2.5):
        assert stats.paired_t_power(effect, n, alpha) == pytest.approx(
            power_of.power(effect_size=effect, nobs=n, alpha=alpha), abs=1e-9
        )
    expected = power_of.solve_power(nobs=n, alpha=alpha, power=0.8)
    assert stats.detectable_effect(n, 0.8, alpha) == pytest.approx(expected, abs=1e-5)
    assert stats.paired_t_power(stats.detectable_effect(n, 0.8, alpha), n, alpha) >= 0.8
    assert stats.detectable_effect(1, 0.8) is None


def test_seeds_for_a_stated_difference_match_statsmodels():
    """Seeds to find 2 points when the per-seed differences have sd 0.03: statsmodels' n for
    effect 2/3, rounded up."""
    needed = stats.seeds_for_power(0.02 / 0.03, 0.8, 0.05)
    exact = TTestPower().solve_power(effect_size=0.02 / 0.03, alpha=0.05, power=0.8)
    assert needed == math.ceil(exact)


def test_a_verdict_short_of_yes_says_what_it_could_detect_and_rules_out():
    """Two undecided comparisons over 5 seeds, sd 0.01 and 0.03: each finds, at 80% power and
    level 0.05, a true difference of its sd x 1.682 (statsmodels' effect for n = 5); at Holm's
    first step (0.05/2) more; their CIs together span the ruled-out range's edges."""
    small = stats.paired_test([0.51, 0.49, 0.50, 0.52, 0.48], [0.5] * 5)
    large = stats.paired_test([0.53, 0.47, 0.50, 0.56, 0.44], [0.5] * 5)
    verdict, _ = decisions.t_verdict([small, large])
    assert verdict.kind == "undecided"
    text = decisions.detection([small, large], 0.8)
    effect = TTestPower().solve_power(nobs=5, alpha=0.05, power=0.8)
    sds = sorted(stats.sample_sd(t.differences) for t in (small, large))
    assert f"at least {sds[0] * effect:.4f}-{sds[1] * effect:.4f} with 80% power at level 0.05" in (
        text
    )
    holm_effect = TTestPower().solve_power(nobs=5, alpha=0.025, power=0.8)
    assert f"{sds[0] * holm_effect:.4f}-{sds[1] * holm_effect:.4f} at 0.05/2" in text
    low, high = large.interval.low, large.interval.high  # the wider interval holds the other
    assert f"within [{low:+.4f}, {high:+.4f}]" in text
    assert decisions.detection([stats.paired_test([0.5] * 3, [0.4] * 3)], 0.8) == ""
