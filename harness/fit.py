"""Linear fits with honest intervals: OLS point estimates, a cluster bootstrap for the CI.

Points are worker medians (workers are the independent units); the bootstrap
resamples workers within each level of the regressor, so intervals widen
when workers disagree, whatever the residuals of the mean line say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.stats import BOOTSTRAP_RESAMPLES, Estimate, interval, seeded_rng


class FitError(ValueError):
    """The data cannot identify the model (too few levels, collinear regressors)."""


@dataclass(frozen=True)
class Fit:
    names: tuple[str, ...]
    coef: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    r2: float
    residuals: np.ndarray  # one per point, observed minus fitted

    def __getitem__(self, name: str) -> Estimate:
        i = self.names.index(name)
        return Estimate(float(self.coef[i]), float(self.ci_low[i]), float(self.ci_high[i]))


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def check_design(x: np.ndarray, names: tuple[str, ...]) -> None:
    n, p = x.shape
    if n <= p:
        raise FitError(f"{n} points cannot fit {p} parameters ({', '.join(names)})")
    if np.linalg.matrix_rank(x) < p:
        raise FitError(
            f"regressors are collinear: {', '.join(names)} cannot be told apart from this data"
        )


def ols(
    x: np.ndarray, y: np.ndarray, names: tuple[str, ...], groups: np.ndarray, label: str,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Fit:
    """Fit y = x @ coef. ``groups`` marks points that share a level (the same k):
    the bootstrap resamples points within each group."""
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    check_design(x, names)
    if len(np.unique(groups)) < x.shape[1]:
        raise FitError(f"{len(np.unique(groups))} distinct levels cannot fit "
                       f"{x.shape[1]} parameters ({', '.join(names)})")
    coef = _solve(x, y)
    fitted = x @ coef
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 1.0
    rng = seeded_rng(label)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    picks = np.concatenate([m[rng.integers(len(m), size=(resamples, len(m)))]
                            for m in members], axis=1)
    # Every resample at once: the pseudo-inverse is lstsq's minimum-norm solution.
    draws = np.einsum("rpn,rn->rp", np.linalg.pinv(x[picks]), y[picks])
    bounds = np.array([interval(draws[:, j]) for j in range(x.shape[1])])
    return Fit(names, coef, bounds[:, 0], bounds[:, 1], r2, y - fitted)
