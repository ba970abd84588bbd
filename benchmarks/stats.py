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


def group_best(wide, members):
    """Per row of ``wide`` (a cell: methods as columns), the lowest value among the
    columns of ``members`` it has: the best of a group of methods, chosen per cell."""
    return wide[[m for m in members if m in wide]].min(axis=1)


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


def interval_scores(y, mean, std, level: float = 0.9) -> dict:
    """How good a Gaussian predictive distribution ``N(mean, std²)`` is for targets ``y``.

    Returns
    -------
    dict
        ``coverage`` (share of ``y`` inside the central ``level`` interval),
        ``width`` (its mean width), ``nll`` (mean Gaussian negative log-likelihood)
        and ``crps`` (mean continuous ranked probability score, closed form), all
        in the units of ``y`` (NLL: nats).
    """
    from scipy.stats import norm

    y, mean = np.ravel(y).astype(float), np.ravel(mean).astype(float)
    std = np.maximum(np.ravel(std).astype(float), 1e-300)
    z = (y - mean) / std
    half = norm.ppf(0.5 + level / 2) * std
    crps = std * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    return {"coverage": float(np.mean(np.abs(y - mean) <= half)),
            "width": float(np.mean(2 * half)),
            "nll": float(np.mean(0.5 * np.log(2 * np.pi * std ** 2) + 0.5 * z ** 2)),
            "crps": float(np.mean(crps))}


def scaled_interval_scores(y, mean, std, scale: float, level: float = 0.9) -> dict:
    """:func:`interval_scores` as if ``y``, ``mean`` and ``std`` were divided by ``scale``
    (e.g. sd(target), so that tasks can be averaged): width and CRPS divided by it, the
    NLL lowered by ``log(scale)``."""
    scores = interval_scores(y, mean, std, level)
    return {**scores, "width": scores["width"] / scale, "crps": scores["crps"] / scale,
            "nll": scores["nll"] - float(np.log(scale))}


def ratio_line(label: str, n, s: dict) -> str:
    """A markdown row ``| label | n | ratio (CI) | p | better in |`` of a
    :func:`paired_summary`."""
    return (f"| {label} | {n} | {s['ratio']:.3f} ({s['low']:.3f}–{s['high']:.3f}) | "
            f"{s['p']:.2g} | {s['better']:.0%} of {s['pairs']} |")
