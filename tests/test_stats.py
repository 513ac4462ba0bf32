"""Paired statistics: t intervals and p-values against hand-computed values and SciPy, Holm by hand, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stcsnn.analysis.stats import bootstrap_mean_ci, holm, paired_summary, sign_test_p, t_ppf, t_two_sided_p


def test_a_hand_computed_paired_example():
    # d = [-2, -1, -3]: mean -2, sd 1, se 1/sqrt(3); with df = 2 the t distribution has closed forms:
    # quantile t_q = (2q - 1) sqrt(2 / (4 q (1 - q))), two-sided p = 1 - |t| / sqrt(2 + t^2)
    s = paired_summary([-2.0, -1.0, -3.0], n_boot=2000)
    t975 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # 4.302653
    assert s["n"] == 3 and s["mean"] == -2.0 and s["std"] == 1.0
    assert s["ci_t"] == pytest.approx((-2 - t975 / math.sqrt(3), -2 + t975 / math.sqrt(3)), abs=1e-9)
    t = -2 / (1 / math.sqrt(3))
    assert s["p_t"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), abs=1e-12)  # 0.074180
    lo, hi = s["ci_boot"]
    assert -3.0 <= lo <= hi <= -1.0  # means of resampled seeds lie within the data's range


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_sign_test():
    assert sign_test_p(3, 3) == pytest.approx(0.25)
    assert sign_test_p(5, 5) == pytest.approx(2 / 32)
    assert sign_test_p(2, 4) == 1.0


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 200])
def test_t_distribution_against_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    for q in (0.6, 0.9, 0.975, 0.995, 0.025):
        assert t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9, abs=1e-9)
    for t in (0.0, 0.3, 1.0, 2.5, 7.0, -4.0):
        assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-15)


def test_paired_summary_against_scipy_ttest():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=7), rng.normal(size=7) + 0.4
    s = paired_summary(a - b, n_boot=500)
    ref = stats.ttest_rel(a, b)
    assert s["p_t"] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = stats.t.interval(0.95, 6, loc=np.mean(a - b), scale=stats.sem(a - b))
    assert s["ci_t"] == pytest.approx(ci, rel=1e-9)


def test_two_level_bootstrap_is_wider_than_the_seed_level_one_when_sequences_vary():
    rng = np.random.default_rng(0)
    per_seq = rng.normal(-1.0, 5.0, size=(5, 40)) + rng.normal(0, 0.1, size=(5, 1))
    seeds_only = bootstrap_mean_ci(per_seq.mean(axis=1), n_boot=4000)
    two_level = bootstrap_mean_ci(per_seq, n_boot=4000)
    assert two_level[1] - two_level[0] > seeds_only[1] - seeds_only[0]
    assert two_level[0] < per_seq.mean() < two_level[1]
    assert bootstrap_mean_ci(per_seq, n_boot=300, seed=1) == bootstrap_mean_ci(per_seq, n_boot=300, seed=1)
