"""The fitter recovers known parameters from synthetic data and refuses degenerate data."""

from __future__ import annotations

import numpy as np
import pytest

from harness.fit import FitError, ols


def chain_data(rng, c0=300.0, alpha=450.0, beta=2200.0, ks=(1, 2, 4, 8, 16), workers=8,
               noise=0.01):
    """Worker medians of T(k) = C0 + alpha*2k + beta*S(k), S(k) = 2k + small jitter."""
    rows = []
    for k in ks:
        for _ in range(workers):
            switches = 2 * k * (1 + rng.normal(0, 0.002))
            t = c0 + alpha * 2 * k + beta * switches
            rows.append((k, 2 * k, switches, t * (1 + rng.normal(0, noise))))
    return np.array(rows)


def test_seed_form_recovers_intercept_and_per_hop_cost():
    data = chain_data(np.random.default_rng(7))
    k, t = data[:, 0], data[:, 3]
    fit = ols(np.column_stack([np.ones_like(k), k]), t, ("C0", "per_hop"), k, "seed")
    _, low, high = fit["per_hop"]
    assert low <= 2 * 450 + 2 * 2200 <= high
    _, low, high = fit["C0"]
    assert low <= 300 <= high
    assert fit.r2 > 0.99
    assert fit.residuals.shape == t.shape


def test_count_form_recovers_beta_with_alpha_known():
    rng = np.random.default_rng(8)
    data = chain_data(rng)
    k, messages, switches, t = data.T
    y = t - 450.0 * messages
    fit = ols(np.column_stack([np.ones_like(k), switches]), y, ("C0", "beta"), k, "count")
    beta, low, high = fit["beta"]
    assert low <= 2200 <= high
    assert (high - low) / beta < 0.05


def test_intervals_cover_the_truth_most_of_the_time():
    rng = np.random.default_rng(9)
    covered = 0
    for trial in range(40):
        data = chain_data(rng, noise=0.03)
        k, t = data[:, 0], data[:, 3]
        fit = ols(np.column_stack([np.ones_like(k), k]), t, ("C0", "h"), k, f"t{trial}",
                  resamples=400)
        _, low, high = fit["h"]
        covered += low <= 5300 <= high
    assert covered >= 32


def test_a_single_k_cannot_be_fitted():
    data = chain_data(np.random.default_rng(10), ks=(4,))
    k, t = data[:, 0], data[:, 3]
    with pytest.raises(FitError, match=r"distinct levels|collinear"):
        ols(np.column_stack([np.ones_like(k), k]), t, ("C0", "h"), k, "single")


def test_collinear_regressors_are_refused():
    data = chain_data(np.random.default_rng(11))
    k, messages = data[:, 0], data[:, 1]
    x = np.column_stack([np.ones_like(k), messages, 2 * messages])
    with pytest.raises(FitError, match="collinear: C0, alpha, beta"):
        ols(x, data[:, 3], ("C0", "alpha", "beta"), k, "collinear")


def test_too_few_points():
    with pytest.raises(FitError, match="2 points cannot fit 2"):
        ols(np.array([[1.0, 1.0], [1.0, 2.0]]), np.array([1.0, 2.0]), ("a", "b"),
            np.array([1, 2]), "few")
