"""Paired statistics shared by the benchmarks: one method against another, pair by pair.

A pair is the same task, seed and sample size under two methods; the quantity compared
is the ratio of their test errors (or fit times). Ratios are summarised on the log
scale: their geometric mean with a percentile bootstrap 95% interval over pairs, and a
Wilcoxon signed-rank test of the log ratios against 0 (no difference).
"""

from __future__ import annotations

import numpy as np


def geometric_ratio_ci(ratios, n_boot: int = 2000, seed: int = 0):
    """Geometric mean of ``ratios`` with a percentile bootstrap 95% interval.

    Returns
    -------
    (mean, low, high) : tuple of float
    """
    logs = np.log(np.asarray(ratios, dtype=float))
    rng = np.random.default_rng(seed)
    boot = logs[rng.integers(0, len(logs), (n_boot, len(logs)))].mean(axis=1)
    return tuple(float(np.exp(v)) for v in (logs.mean(), *np.percentile(boot, [2.5, 97.5])))


def wilcoxon_p(ratios) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``log(ratios)`` against 0.

    NaN with fewer than two pairs or when every ratio is exactly 1.
    """
    from scipy.stats import wilcoxon

    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) < 2 or not np.any(logs):
        return float("nan")
    return float(wilcoxon(logs).pvalue)


def paired_summary(ratios) -> dict:
    """Everything a table row reports about paired ratios (below 1: the first is better).

    Returns
    -------
    dict
        ``ratio`` (geometric mean), ``low``, ``high`` (bootstrap 95% interval), ``p``
        (Wilcoxon), ``better`` (share of pairs below 1) and ``pairs``.
    """
    ratios = np.asarray(ratios, dtype=float)
    ratio, low, high = geometric_ratio_ci(ratios)
    return {"ratio": ratio, "low": low, "high": high, "p": wilcoxon_p(ratios),
            "better": float(np.mean(ratios < 1)), "pairs": len(ratios)}
