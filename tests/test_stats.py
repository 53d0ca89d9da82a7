"""The statistics of experiment results, against scipy and numpy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from parley import stats

PROPORTIONS = [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (45, 100), (912, 1000), (5, 2000), (4999, 10000)]


@pytest.mark.parametrize(("k", "n"), PROPORTIONS)
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    reference = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson(k, n)  # type: ignore[misc]
    assert low == pytest.approx(reference.low, abs=1e-12)
    assert high == pytest.approx(reference.high, abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1


def test_wilson_has_no_interval_without_observations_and_refuses_nonsense() -> None:
    assert stats.wilson(0, 0) is None
    with pytest.raises(ValueError, match="within"):
        stats.wilson(11, 10)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((45, 100), (60, 110)),
        ((120, 400), (150, 400)),
        ((8, 20), (2, 20)),
        ((500, 1000), (500, 1000)),
        ((1, 3), (2, 3)),
        ((900, 1000), (880, 1000)),
    ],
)
def test_two_proportion_test_matches_the_chi_square_test_of_the_two_by_two_table(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    # The pooled two-sided z-test is the Pearson chi-square test of the 2x2 table (z² = χ²).
    table = [[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]]
    chi2, p, _, _ = sp.chi2_contingency(table, correction=False)
    result = stats.two_proportions(a[0], a[1], b[0], b[1])
    assert result is not None
    assert result.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert result.z**2 == pytest.approx(chi2, rel=1e-9)
    assert result.difference == pytest.approx(b[0] / b[1] - a[0] / a[1])
    assert math.copysign(1, result.z) == math.copysign(1, result.difference) or result.z == 0


def test_two_proportion_test_edges() -> None:
    assert stats.two_proportions(0, 0, 5, 10) is None
    same = stats.two_proportions(10, 10, 7, 7)
    assert same is not None
    assert (same.z, same.p_value) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ([5030, 4970], [1, 1]),
        ([5300, 4700], [50, 50]),
        ([7050, 1980, 970], [70, 20, 10]),
        ([100, 130, 90, 80], [1, 1, 1, 1]),
        ([10, 0], [1, 1]),
        ([3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7]),
    ],
)
def test_chi_square_goodness_of_fit_matches_scipy(observed: list[int], weights: list[float]) -> None:
    expected = np.array(weights, dtype=float) / sum(weights) * sum(observed)
    reference = sp.chisquare(observed, expected)
    result = stats.chi_square(observed, weights)
    assert result is not None
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-300)
    assert result.df == len(observed) - 1


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9, 10, 19, 20])
@pytest.mark.parametrize("x", [1e-6, 0.1, 1.0, 3.841, 10.0, 33.3, 100.0, 700.0, 1500.0])
def test_chi_square_survival_function_matches_scipy(df: int, x: float) -> None:
    assert stats.chi2_sf(x, df) == pytest.approx(sp.chi2.sf(x, df), rel=1e-9, abs=1e-300)


def test_chi_square_edges() -> None:
    assert stats.chi_square([0, 0], [1, 1]) is None
    assert stats.chi2_sf(0.0, 3) == 1.0
    with pytest.raises(ValueError, match="positive"):
        stats.chi_square([1, 2], [1, 0])


@pytest.mark.parametrize("q", [0.0, 0.5, 0.95, 0.99, 1.0])
def test_percentile_is_numpys_linear_interpolation(q: float) -> None:
    rng = np.random.default_rng(7)
    for size in (1, 2, 3, 20, 1001):
        values = rng.lognormal(6, 1, size).tolist()
        assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)), rel=1e-12)


def test_mean_and_percentile_of_nothing() -> None:
    assert stats.mean([]) is None
    assert stats.percentile([], 0.95) is None
    assert stats.mean([1.0, 2.0, 4.5]) == pytest.approx(2.5)
