"""Intervals for the numbers frugalign reports: over seeds (the t distribution) and for proportions (Wilson's
score interval, which stays inside [0, 1] and does not collapse to zero width at 0 or 1 correct); and the
Bradley-Terry draw of a simulated annotator, which the gold-oracle tasks and the gold-oracle annotator
(`active/annotators.GoldOracle`) share."""

from __future__ import annotations

import math

import numpy as np


def ci95(values) -> float:
    """Half-width of the 95% interval of the mean from the t distribution with n-1 degrees of freedom
    (at 3 seeds 4.30 standard errors, not the normal 1.96); 0 for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(list(values), dtype=float)
    if values.size < 2:
        return 0.0
    return float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval of a proportion (two-sided 95% with the default z; a one-sided bound takes
    z = 1.645); (0, 1) without observations."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))  # at 0 or n correct, rounding steps outside


def simulate_preference(reward_a: float, reward_b: float, tau: float, rng: np.random.Generator) -> int:
    """Bradley-Terry annotator: P(a beats b) = sigma((r_a - r_b) / tau). +1: a wins, -1: b wins,
    0: a tie, which only a noiseless annotator (tau = 0) gives, for equal rewards."""
    if tau == 0:
        return int(np.sign(reward_a - reward_b))
    p = 1.0 / (1.0 + math.exp(-(reward_a - reward_b) / tau))
    return 1 if rng.random() < p else -1
