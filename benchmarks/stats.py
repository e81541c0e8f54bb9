"""Statistics for comparing training runs over seeds: confidence intervals, Welch's t-test,
bootstrap intervals and effect sizes. numpy and scipy's t distribution only; float64 throughout.

Each function takes per-seed values (one number per run), never per-iteration ones, so seeds are
the independent unit, as they are in the experiment.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _scipy_stats


def mean_ci(x, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of `x` (n >= 2; n = 1 gives a zero-width one)."""
    x = np.asarray(x, np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, m, m
    half = _scipy_stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return m, m - half, m + half


def mean_ci_bands(curves, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point-wise (mean, low, high) over the rows of `curves` [seeds, points]."""
    curves = np.asarray(curves, np.float64)
    m = curves.mean(0)
    if len(curves) < 2:
        return m, m, m
    half = _scipy_stats.t.ppf(0.5 + level / 2, len(curves) - 1) * curves.std(0, ddof=1) / np.sqrt(len(curves))
    return m, m - half, m + half


def welch(a, b) -> dict:
    """Welch's unequal-variance t-test of mean(a) != mean(b): t, Welch-Satterthwaite df, two-sided p."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:  # identical constants: no evidence of a difference unless the means differ
        same = a.mean() == b.mean()
        return {"t": 0.0 if same else float("inf"), "df": float(len(a) + len(b) - 2), "p": 1.0 if same else 0.0}
    t = (a.mean() - b.mean()) / np.sqrt(se2)
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return {"t": float(t), "df": float(df), "p": float(2 * _scipy_stats.t.sf(abs(t), df))}


def hedges_g(a, b) -> float:
    """Standardised mean difference (mean(a) - mean(b)) / pooled std, small-sample corrected."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return 0.0
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def bootstrap_diff_ci(a, b, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling seeds within each group."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare(a, b, level: float = 0.95) -> dict:
    """Everything a comparison row reports: difference of means, its bootstrap interval, Hedges' g,
    Welch's p."""
    lo, hi = bootstrap_diff_ci(a, b, level)
    return {"diff": float(np.mean(a) - np.mean(b)), "diff_low": lo, "diff_high": hi,
            "hedges_g": hedges_g(a, b), "welch_p": welch(a, b)["p"], "n": [len(a), len(b)]}
