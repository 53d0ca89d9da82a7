"""The statistics behind experiment results, in the standard library.

Each function is checked against scipy/numpy on fixed data in ``tests/test_stats.py``;
scipy stays a test dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

#: Two-sided 95%: the normal quantile at 0.975.
Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """A two-proportion z-test (pooled variance) of ``b`` against ``a``."""

    difference: float  # rate of b minus rate of a
    z: float
    p_value: float  # two-sided


@dataclass(frozen=True, slots=True)
class ChiSquare:
    statistic: float
    df: int
    p_value: float
    #: Smallest expected count: below 5 the chi-square approximation is not trustworthy.
    min_expected: float


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; honest at small n and at rates near 0 or 1."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> ProportionTest | None:
    """Is b's rate different from a's? ``None`` while either side has no observations."""
    if n_a <= 0 or n_b <= 0:
        return None
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        # Both sides all-positive or all-negative: no evidence of a difference.
        return ProportionTest(rate_b - rate_a, 0.0, 1.0)
    z = (rate_b - rate_a) / se
    return ProportionTest(rate_b - rate_a, z, math.erfc(abs(z) / math.sqrt(2)))


def chi_square(observed: Sequence[int], weights: Sequence[float]) -> ChiSquare | None:
    """Goodness of fit of ``observed`` counts to the split ``weights`` describe."""
    if len(observed) != len(weights) or len(observed) < 2:
        raise ValueError("need one weight per observed count, and at least two of each")
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be positive")
    total = sum(observed)
    if total == 0:
        return None
    scale = total / math.fsum(weights)
    expected = [w * scale for w in weights]
    statistic = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    df = len(observed) - 1
    return ChiSquare(statistic, df, chi2_sf(statistic, df), min(expected))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with ``df`` degrees of freedom.

    The regularized upper incomplete gamma Q(df/2, x/2) has a closed form when df/2
    is an integer or a half-integer, which it always is here; terms are summed in log
    space so that a large statistic underflows to 0 instead of overflowing.
    """
    if df < 1:
        raise ValueError("df must be at least 1")
    if x <= 0:
        return 1.0
    half = x / 2
    log_half = math.log(half)
    if df % 2 == 0:
        total = math.fsum(math.exp(-half + k * log_half - math.lgamma(k + 1)) for k in range(df // 2))
    else:
        total = math.erfc(math.sqrt(half)) + math.fsum(
            math.exp(-half + (k - 0.5) * log_half - math.lgamma(k + 0.5)) for k in range(1, (df + 1) // 2)
        )
    return min(1.0, max(0.0, total))


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation between order statistics
    (numpy's default, Hyndman & Fan type 7)."""
    if not values:
        return None
    if not 0 <= q <= 1:
        raise ValueError("q must be within 0..1")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])
