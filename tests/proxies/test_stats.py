"""The rank statistics used by the proxy benchmark, against scipy."""

from __future__ import annotations

import numpy as np
import pytest

from autokd.proxies.stats import bootstrap_ci, kendall_tau_b, rankdata, spearman_rho

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
def test_kendall_and_spearman_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 25).astype(float)  # many ties
    y = x + rng.normal(0, 2, 25).round()
    assert kendall_tau_b(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.array_equal(rankdata(x), scipy_stats.rankdata(x))


def test_hand_values_and_degenerate_cases():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert np.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert np.isnan(spearman_rho([1, 2, 3], [5, 5, 5]))


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.5, size=40)
    lo, hi = bootstrap_ci(x, y, kendall_tau_b, n=300, seed=1)
    assert lo < kendall_tau_b(x, y) < hi and 0 < lo < hi < 1
    assert bootstrap_ci(x, y, kendall_tau_b, n=300, seed=1) == (lo, hi)  # seeded
