"""The robustness study's statistics (nxbar.study.stats) against cases with known answers."""

import numpy as np
import pytest
from math import comb

from nxbar.study import stats


def test_mcnemar_exact_on_a_hand_made_2x2_table():
    # 1,000 paired images: 700 correct on both, 10 correct only on ours, 2 only on the other, 288 on neither.
    # Under no difference the 12 discordant pairs are Binomial(12, 1/2): p = 2 P(X >= 10) = 2 (66 + 12 + 1) / 4096.
    expected = 2 * (comb(12, 10) + comb(12, 11) + comb(12, 12)) / 2**12
    assert stats.mcnemar_exact(10, 2) == pytest.approx(expected, rel=1e-12)
    assert stats.mcnemar_exact(2, 10) == pytest.approx(expected, rel=1e-12)  # two-sided
    ours = np.array([1] * 700 + [1] * 10 + [0] * 2 + [0] * 288, dtype=bool)
    other = np.array([1] * 700 + [0] * 10 + [1] * 2 + [0] * 288, dtype=bool)
    d = ours.astype(int) - other.astype(int)
    assert stats.paired_p(d[None]) == pytest.approx(expected, rel=1e-12)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(6, 0) == pytest.approx(2 / 64)


def test_paired_p_over_chips_is_the_sign_test_over_images():
    # two chips: image 0 favours ours on both, image 1 on one chip only (+1 + 0), image 2 cancels (+1 - 1),
    # image 3 favours the other side on one chip
    d = np.array([[1, 1, 1, -1], [1, 0, -1, 0]])
    assert stats.paired_p(d) == pytest.approx(stats.mcnemar_exact(2, 1))


def test_bootstrap_ci_covers_a_known_difference():
    # a sample whose difference is exactly +5 pp: the interval holds it and excludes 0
    d = np.zeros(1000, dtype=int)
    d[:100], d[100:150] = 1, -1
    lo, hi = stats.bootstrap_ci(d[None], resamples=2000)
    assert stats.effect_pp(d) == pytest.approx(5.0)
    assert lo < 5.0 < hi and lo > 0
    # its width is about that of the normal approximation: 2 * 1.96 * sd(d) / sqrt(n) * 100
    assert hi - lo == pytest.approx(2 * 1.96 * d.std() / np.sqrt(1000) * 100, rel=0.15)


def test_bootstrap_ci_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_pp, trials, covered = 3.0, 200, 0
    for t in range(trials):  # P(+1) = 0.08, P(-1) = 0.05: E[d] = 3 pp
        d = rng.choice([1, -1, 0], size=400, p=[0.08, 0.05, 0.87])
        lo, hi = stats.bootstrap_ci(d[None], resamples=1000, seed=t)
        covered += lo <= true_pp <= hi
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_ci_with_chips_as_the_outer_level_is_wider_when_chips_differ():
    rng = np.random.default_rng(2)
    base = rng.choice([1, 0], size=(3, 500), p=[0.1, 0.9])
    same = np.repeat(base[:1], 3, axis=0)
    spread = base.copy()
    spread[0, :60] = 1  # one chip gains far more than the others
    w_same = np.subtract(*stats.bootstrap_ci(same, resamples=2000)[::-1])
    w_spread = np.subtract(*stats.bootstrap_ci(spread, resamples=2000)[::-1])
    assert w_spread > w_same
    # the statistic is the mean over chips and images
    assert stats.effect_pp(spread) == pytest.approx(100 * spread.mean())


def test_bootstrap_is_reproducible_by_seed():
    d = np.random.default_rng(3).choice([1, 0, -1], size=(2, 300))
    assert stats.bootstrap_ci(d, resamples=500, seed=7) == stats.bootstrap_ci(d, resamples=500, seed=7)


def test_holm_against_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert len(stats.holm([])) == 0


@pytest.mark.parametrize("diff, ci, p, direction, expected", [
    (2.0, (0.1, 3.9), 0.049, 1, "holds"),
    (2.0, (0.1, 3.9), 0.05, 1, "not distinguishable"),  # p at the level: not significant
    (2.0, (0.0, 3.9), 0.01, 1, "not distinguishable"),  # the interval touches 0
    (2.0, (0.1, 3.9), 0.01, -1, "reversed"),
    (-2.0, (-3.9, -0.1), 0.01, -1, "holds"),
    (-2.0, (-3.9, -0.1), 0.01, 1, "reversed"),
    (-2.0, (-3.9, 0.2), 0.001, -1, "not distinguishable"),
])
def test_verdict_at_its_edges(diff, ci, p, direction, expected):
    assert stats.verdict(diff, ci, p, direction) == expected


@pytest.mark.parametrize("diff, ci, p, expected", [
    (0.2, (-0.6, 1.0), 0.5, "holds"),  # a gain (higher, gain = +1) of at most the tolerance 1 pp
    (0.2, (-0.6, 1.01), 0.5, "not distinguishable"),
    (2.0, (0.5, 3.5), 0.01, "reversed"),  # a significant gain
    (-2.0, (-3.5, -0.5), 0.01, "holds"),  # significantly worse is no gain either
])
def test_no_gain_verdict_at_its_edges(diff, ci, p, expected):
    assert stats.verdict_no_gain(diff, ci, p, gain=1, tolerance_pp=1.0) == expected


def test_claim_verdict():
    assert stats.claim_verdict(["holds", "holds"]) == "holds"
    assert stats.claim_verdict(["holds", "not distinguishable"]) == "not distinguishable"
    assert stats.claim_verdict(["holds", "reversed"]) == "reversed"
    assert stats.claim_verdict([]) == "not distinguishable"
