"""Reading a run's samples: pick cases, bootstrap their medians, collapse to workers.

Experiments derive their model parameters through these, so every parameter
gets its interval the same way (a cluster bootstrap over workers).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from harness.fit import Fit, ols
from harness.records import Case
from harness.stats import Estimate, bootstrap_medians, interval, seeded_rng, sensitivity


def host_adjusted(samples: pd.DataFrame) -> pd.DataFrame:
    """Each timed value moved to the run's typical host: by the ratio of the run's median
    reference to its worker's median reference (``harness.reference``), raised to the
    case's own sensitivity to it (``harness.stats.sensitivity``, fitted on the case's
    workers).

    Workers of one case run at different moments of the run, and the host's spells
    move a worker's values and its reference together; the model compares cases
    measured at different moments, so it fits these. Probe values have no reference
    and stay as they are."""
    if "ref_ns" not in samples.columns or samples.ref_ns.isna().all():
        return samples
    case_keys = [c for c in CASE_FIELDS if c in samples.columns]
    typical = np.log(float(samples.ref_ns.median()))
    scale = pd.Series(1.0, index=samples.index)
    for _, rows in samples[samples.ref_ns.notna()].groupby(case_keys, dropna=False):
        workers = rows.groupby("worker")
        log_ref = np.log(workers.ref_ns.median())
        medians = workers.value.median().to_numpy()
        # a difference (C0 less an empty call) can be 0 or below: no logarithm, slope 1
        slope = sensitivity(np.log(medians), log_ref.to_numpy(), np.zeros(len(log_ref))) \
            if (medians > 0).all() else 1.0
        shift = np.exp(-slope * (log_ref - typical))
        scale[rows.index] = rows.worker.map(shift).to_numpy()
    return samples.assign(value=samples.value * scale)


CASE_FIELDS = [f.name for f in fields(Case) if f.name != "workers"]  # what names a case


def select(samples: pd.DataFrame, **where: Any) -> pd.DataFrame:
    mask = np.ones(len(samples), dtype=bool)
    for column, value in where.items():
        mask &= (samples[column] == value).to_numpy()
    return samples[mask]


def median_draws(rows: pd.DataFrame, label: str) -> np.ndarray:
    """Bootstrap draws of the median of one case's values (resampling workers)."""
    if rows.empty:
        raise ValueError(f"{label}: no samples")
    return bootstrap_medians(rows.value.to_numpy(), rows.worker.to_numpy(), seeded_rng(label))


def estimate(point: float, draws: np.ndarray) -> Estimate:
    return Estimate(float(point), *interval(draws))


def worker_points(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One point per worker (and ``by`` level): median value, mean counters."""
    return rows.groupby([*by, "worker"]).agg(
        value=("value", "median"),
        switches=("ctx_switches_per_op", "first"),
        messages=("messages_per_op", "first"),
    ).reset_index()


def line_fit(rows: pd.DataFrame, label: str) -> Fit:
    """value = a + b * k over worker medians (probe cases: k is N), bootstrapped by k."""
    points = rows.groupby(["k", "worker"]).value.median().reset_index()
    x = np.column_stack([np.ones(len(points)), points.k.to_numpy(float)])
    return ols(x, points.value.to_numpy(float), ("intercept", "slope"), points.k.to_numpy(),
               label)


def medians(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median value per ``by`` level, with its bootstrap interval over workers."""
    out = []
    for key, sub in rows.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = "/".join(map(str, key))
        value, low, high = estimate(float(np.median(sub.value)), median_draws(sub, label))
        out.append({**dict(zip(by, key, strict=True)), "median": value, "ci_low": low,
                    "ci_high": high, "workers": int(sub.worker.nunique())})
    return pd.DataFrame(out)
