r"""Statistics for paired comparisons across seeds: intervals, p-values and Holm's correction.

A comparison of model A with model B trains both with the same seeds; the unit of evidence is the paired
difference ``d_s = metric(A, seed s) - metric(B, seed s)`` over n seeds. This module gives, for such
differences (NumPy and the standard library only, so the package needs no SciPy):

- the **t interval**: ``mean(d) +- t_{1-alpha/2, n-1} * sd(d) / sqrt(n)`` and the two-sided paired t-test
  p-value ``2 P(T_{n-1} > |mean(d)| / (sd(d) / sqrt(n)))``;
- a **bootstrap interval** (percentile) of the mean difference, resampling the seeds and, when per-sequence
  differences are given, the test sequences within each resampled seed (a two-level bootstrap: it carries both
  the training-seed and the test-set variation);
- **Holm's step-down correction** of a family of p-values (pairs x metrics): sort ascending, multiply the
  i-th smallest (0-based) by ``m - i``, take the running maximum, cap at 1. It controls the family-wise error
  rate without assuming independence.

The Student t distribution is computed from the regularised incomplete beta function,
``P(|T_nu| > t) = I_{nu / (nu + t^2)}(nu / 2, 1 / 2)``, evaluated by its continued fraction (Lentz's method);
quantiles by bisection on that function. Tested against SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_mean_ci", "holm", "paired_summary", "sign_test_p", "t_ppf", "t_two_sided_p"]


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T_df| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_two_sided_p`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    tail = 2.0 * min(q, 1.0 - q)  # the two-sided tail probability beyond the quantile's magnitude
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    magnitude = 0.5 * (lo + hi)
    return magnitude if q > 0.5 else -magnitude


def bootstrap_mean_ci(diffs: Sequence[float] | np.ndarray, confidence: float = 0.95, n_boot: int = 10000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference.

    ``diffs``: shape (seeds,) -- resample the seeds; or (seeds, sequences) -- the per-sequence paired
    differences of each seed: resample the seeds, then the sequences within each drawn seed (two levels)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim not in (1, 2) or d.shape[0] < 1 or (d.ndim == 2 and d.shape[1] < 1):
        raise ValueError(f"expected differences shaped (seeds,) or (seeds, sequences), got {d.shape}")
    rng = np.random.default_rng(seed)
    n = d.shape[0]
    pick = rng.integers(n, size=(n_boot, n))
    if d.ndim == 1:
        means = d[pick].mean(axis=1)
    else:
        m = d.shape[1]
        rows = d[pick]  # (n_boot, seeds, sequences)
        cols = rng.integers(m, size=(n_boot, n, m))
        means = np.take_along_axis(rows, cols, axis=2).mean(axis=(1, 2))
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def paired_summary(diffs: Sequence[float] | np.ndarray, confidence: float = 0.95,
                   per_sequence: np.ndarray | None = None, n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean, standard deviation, t interval, paired t-test p-value and bootstrap interval of paired
    differences over seeds. ``per_sequence`` (seeds, sequences), when given, makes the bootstrap two-level."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"a paired summary needs the differences of at least 2 seeds, got {d.shape}")
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    if sd > 0:
        p = t_two_sided_p(mean / (sd / math.sqrt(n)), n - 1)
    else:
        p = 1.0 if mean == 0 else 0.0
    boot = bootstrap_mean_ci(d if per_sequence is None else per_sequence, confidence, n_boot, seed)
    return {"n": n, "mean": mean, "std": sd, "ci_t": (mean - half, mean + half), "p_t": p, "ci_boot": boot}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    p = [float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def sign_test_p(successes: int, n: int) -> float:
    """Two-sided exact sign test: the probability of a split at least as uneven as ``successes`` of ``n``
    under p = 1/2 (3 of 3 seeds: 0.25; one-sided 0.125)."""
    k = max(successes, n - successes)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def t_interval(values: Sequence[float | None], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the ``confidence`` Student t interval of the mean of the finite ``values``: mean +- t(n - 1) x
    s / sqrt(n) with the sample standard deviation s (NaN bounds for fewer than two values, NaN mean for none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
    half = t_ppf(0.5 + confidence / 2, len(vals) - 1) * sd / math.sqrt(len(vals))
    return mean, mean - half, mean + half
