"""Statistics over seeds: mean, std, a Student-t confidence interval and a paired t-test.

Seeds are few (3 to 10), so intervals use Student's t distribution, not the normal one. Its
tail probability comes from the regularised incomplete beta function, evaluated by its
continued fraction (Lentz's method, as in Press et al., "Numerical Recipes", section 6.4), and
its quantiles by bisection on that tail: no scipy. Accurate to about 1e-10, far below what
a handful of seeds can resolve.

The paired comparison (``paired``) looks at two architectures trained on the same seeds:
a seed fixes the initial weights' and batches' random streams of both runs, so the
per-seed differences cancel the part of the seed noise both share. It reports the mean
difference, its 95% interval and the two-sided p-value of the paired t-test; "beyond the seed
noise" means p < 0.05 (the interval excludes zero).
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast for x below the mean a / (a + b); use the symmetry above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0.5 < p < 1)."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1; received p={p}, df={df}")
    tail = 2.0 * (1.0 - p)  # the two-sided tail probability at the quantile
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def describe(values: list) -> dict:
    """Mean, sample standard deviation, count and the 95% interval of the mean.

    ``std`` and ``ci95`` are ``None`` for a single value (no spread to estimate). The interval
    is the textbook one and is not clipped to the metric's range: with few seeds near 100% it
    can pass 1.0, which says how little the seeds pin the mean down.
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half]}


def paired(name_a: str, values_a: dict, name_b: str, values_b: dict, *,
           higher_is_better: bool = True) -> dict | None:
    """Paired t-test of two architectures over the seeds both finished.

    Args:
        values_a, values_b: metric by seed.
        higher_is_better: whether a larger metric is better (accuracy) or worse (mse).

    Returns ``None`` with fewer than two common seeds. Otherwise ``a``, ``b``, the ``seeds``
    used, ``mean_diff`` (a - b), ``std_diff``, ``ci95`` of the difference, ``t``, ``df``,
    ``p`` (two-sided), ``better`` (the name, or ``None`` on an exact tie) and
    ``significant`` (p < 0.05: the difference is larger than the seed noise).
    """
    seeds = sorted(set(values_a) & set(values_b), key=str)
    if len(seeds) < 2:
        return None
    diffs = [values_a[s] - values_b[s] for s in seeds]
    stats = describe(diffs)
    mean, std, n = stats["mean"], stats["std"], stats["n"]
    if std == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / (std / math.sqrt(n))
    p = 1.0 if t == 0.0 else t_two_sided_p(t, n - 1)
    if mean == 0.0:
        better = None
    else:
        better = name_a if (mean > 0) == higher_is_better else name_b
    return {"a": name_a, "b": name_b, "seeds": seeds, "mean_diff": mean, "std_diff": std,
            "ci95": stats["ci95"], "t": t, "df": n - 1, "p": p, "better": better,
            "significant": p < ALPHA}
