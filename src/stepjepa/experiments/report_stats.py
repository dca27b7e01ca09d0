"""The report's statistics: a run's binomial (Wilson) interval, the paired t-test and its confidence interval
against regular, and Holm's correction over a sweep's comparisons."""

from __future__ import annotations

import math
import statistics
import warnings

CONFIDENCE = 0.95


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``correct / total`` (scipy's binomtest); None without trials."""
    if total <= 0:
        return None
    from scipy.stats import binomtest

    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def paired_p_value(ours: list[float], theirs: list[float]) -> float | None:
    """One-sided paired t-test p value for ``ours > theirs``; None below two pairs or when undefined."""
    if len(ours) < 2:
        return None
    from scipy.stats import ttest_rel

    # Identical pairs (e.g. every run at 0% on a tiny model) make t 0/0: scipy warns and returns nan.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(ours, theirs, alternative="greater").pvalue)
    return None if math.isnan(p) else p


def paired_interval(ours: list[float], theirs: list[float],
                    confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The two-sided t confidence interval of the mean paired difference ``ours - theirs`` (see
    :func:`mean_interval`); None below two pairs."""
    return mean_interval([a - b for a, b in zip(ours, theirs)], confidence)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, in the input's order: the i-th smallest of m p values becomes
    ``max over j <= i of min(1, (m - j + 1) p_(j))`` (the family-wise error rate of all m stays at alpha)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The two-sided t confidence interval of the mean of ``values`` (seeds, or paired differences):
    ``mean ± t(1/2 + confidence/2, n - 1) * sd / sqrt(n)``, sd the sample std; None below two values."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    mean = statistics.fmean(values)
    half = t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half
