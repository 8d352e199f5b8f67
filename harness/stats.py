"""Summary statistics with confidence intervals that respect worker structure.

Batches of one worker share that worker's process layout (ASLR, cache
placement), so they are not independent: intervals come from a cluster
bootstrap that resamples workers first, then batches within each.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Estimate(NamedTuple):
    """A value with its 95% interval (nan bounds: no interval)."""

    value: float
    low: float
    high: float

    @classmethod
    def bare(cls, value: float) -> Estimate:
        """A value the run gives no interval for."""
        return cls(float(value), np.nan, np.nan)


CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    stdev: float
    p5: float
    p95: float
    p99: float
    ci_low: float
    ci_high: float


def seeded_rng(label: str) -> np.random.Generator:
    """A generator seeded from a case name: the same data gives the same interval."""
    return np.random.default_rng(zlib.crc32(label.encode()))


def _clusters(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Values as a (groups, m) matrix, each group cut to the smallest group's size."""
    members = [values[groups == g] for g in np.unique(groups)]
    m = min(len(x) for x in members)
    return np.stack([x[:m] for x in members])


def bootstrap_medians(
    values: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> np.ndarray:
    """Medians of ``resamples`` cluster-bootstrap resamples."""
    matrix = _clusters(values, groups)
    g, m = matrix.shape
    pick_group = rng.integers(g, size=(resamples, g, 1))
    pick_value = rng.integers(m, size=(resamples, g, m))
    return np.median(matrix[pick_group, pick_value].reshape(resamples, -1), axis=1)


def interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def summarize(values: np.ndarray, groups: np.ndarray, label: str) -> Summary:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError(f"{label}: no values to summarize")
    low, high = interval(bootstrap_medians(values, np.asarray(groups), seeded_rng(label)))
    p5, p95, p99 = np.percentile(values, [5, 95, 99])
    return Summary(
        n=int(values.size),
        median=float(np.median(values)),
        mean=float(values.mean()),
        stdev=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        p5=float(p5),
        p95=float(p95),
        p99=float(p99),
        ci_low=low,
        ci_high=high,
    )


def ratio_of_medians(
    num: np.ndarray, num_groups: np.ndarray, den: np.ndarray, den_groups: np.ndarray,
    label: str,
) -> tuple[float, float, float]:
    """median(num)/median(den) with a bootstrap interval from independent resamples."""
    rng = seeded_rng(label)
    draws = bootstrap_medians(num, num_groups, rng) / bootstrap_medians(den, den_groups, rng)
    low, high = interval(draws)
    return float(np.median(num) / np.median(den)), low, high


SENSITIVITY_RANGE = (0.0, 2.0)


def sensitivity(log_values: np.ndarray, log_refs: np.ndarray, groups: np.ndarray) -> float:
    """How strongly a case's values follow the machine reference: the slope of log value
    on log reference within each group (a run, or a side), pooled.

    Not every case moves one for one with the reference: on a 2-vCPU guest an in-process
    call moved about 1.4 times as much as the pipe loopback between the host's spells,
    a pipe round trip about once. A slope of 1 is assumed when the data cannot tell
    (fewer than four points, or a reference that did not move); fitted slopes are kept
    within ``SENSITIVITY_RANGE``.
    """
    x, y, groups = (np.asarray(a, float) for a in (log_refs, log_values, groups))
    if len(x) < 4 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return 1.0
    dx, dy = x.copy(), y.copy()
    for g in np.unique(groups):
        member = groups == g
        dx[member] -= x[member].mean()
        dy[member] -= y[member].mean()
    spread = float((dx * dx).sum())
    if spread <= 1e-6 * len(x):  # the reference stood still: nothing to learn from
        return 1.0
    return float(np.clip((dx * dy).sum() / spread, *SENSITIVITY_RANGE))
