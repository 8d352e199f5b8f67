"""Change points in each series of the history: one case on one machine, run after run.

A run is flagged where its median lies more than ``Z_LIMIT`` median absolute deviations
from the median of the runs before it (at least ``MIN_LOOKBACK`` of them, at most
``LOOKBACK``) and more than the practical threshold away in ratio. The MAD, not the
standard deviation, keeps one earlier outlier from hiding the next shift (Iglewicz and
Hoaglin's modified z-score, applied to a moving window as in change-point monitoring).

A series is one machine's (by the name a fleet knows it by), so a kernel update shows as a
change point with the kernel it came with. Where the runs are stored is
``harness.historydb``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

LOOKBACK = 10
MIN_LOOKBACK = 4
Z_LIMIT = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
MAD_TO_SIGMA = 0.6745
SERIES = ["machine", "name"]  # what one series is


@dataclass(frozen=True)
class ChangePoint:
    machine: str
    name: str
    run_id: str
    before: float  # median of the lookback window
    after: float
    z: float
    kernel: str  # the run's kernel, and the one before it where it changed there
    kernel_before: str


def change_points(values: np.ndarray, threshold: float = 0.05,
                  ) -> list[tuple[int, float, float]]:
    """(index, robust z, window median) where a value departs from its lookback window.

    After a change the window restarts there, as sequential detectors do: the
    new level is judged against itself, so a step is flagged once, at its start.
    """
    found = []
    start = 0
    while (hit := _first_change(values, start, threshold)) is not None:
        found.append(hit)
        start = hit[0]
    return found


def _first_change(values: np.ndarray, start: int, threshold: float,
                  ) -> tuple[int, float, float] | None:
    """The first index after ``start`` whose value departs from its window, the window
    being the up to LOOKBACK values before it but none before ``start``. Every index is
    judged at once (a series of 1000 runs in well under a millisecond)."""
    part = np.asarray(values[start:], dtype=float)
    if len(part) <= MIN_LOOKBACK:
        return None
    padded = np.concatenate([np.full(LOOKBACK, np.nan), part])
    windows = sliding_window_view(padded, LOOKBACK)[MIN_LOOKBACK : len(part)]
    current = part[MIN_LOOKBACK:]
    center = _row_medians(windows)
    mad = _row_medians(np.abs(windows - center[:, None]))
    # a floor on the spread: identical past values must not make any change infinite
    spread = np.maximum(mad, np.abs(center) * threshold / 10) / MAD_TO_SIGMA
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (current - center) / spread
        hits = (np.abs(z) > Z_LIMIT) & (np.abs(current / center - 1) > threshold)
    if not hits.any():
        return None
    first = int(np.argmax(hits))
    return start + MIN_LOOKBACK + first, float(z[first]), float(center[first])


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """The median of each row's numbers (NaN pads a short window: sorted last)."""
    ordered = np.sort(rows, axis=1)
    counts = np.count_nonzero(~np.isnan(rows), axis=1)
    index = np.arange(len(rows))
    low, high = ordered[index, (counts - 1) // 2], ordered[index, counts // 2]
    return (low + high) / 2


def detect(table: pd.DataFrame, threshold: float = 0.05) -> list[ChangePoint]:
    """Change points of every series of ``historydb.series`` rows (oldest first)."""
    table = table.dropna(subset=["median"])
    medians = table["median"].to_numpy(float)
    run_ids = table.run_id.astype(str).to_numpy()
    kernels = table.kernel.fillna("?").astype(str).to_numpy()
    points = []
    for (machine, name), where in sorted(table.groupby(SERIES).indices.items()):
        for i, z, before in change_points(medians[where], threshold):
            at, previous = where[i], where[i - 1]
            points.append(ChangePoint(str(machine), str(name), run_ids[at], before,
                                      float(medians[at]), z, kernels[at], kernels[previous]))
    return points


def plot_series(table: pd.DataFrame, points: list[ChangePoint], folder: Path) -> Path:
    """One PNG of a flagged series (``points`` are its change points, all of one series)."""
    from harness.plots import pyplot, save

    machine, name = points[0].machine, points[0].name
    plt = pyplot()
    rows = table[(table.name == name) & (table.machine == machine)].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    unit = str(rows.unit.iloc[0]) if "unit" in rows else "ns"
    scale, label = (1000, "us") if unit == "ns" else (1, unit)
    ax.plot(rows.index, rows["median"] / scale, "o-", ms=3)
    flagged = rows.index[rows.run_id.isin({p.run_id for p in points})]
    ax.plot(flagged, rows.loc[flagged, "median"] / scale, "ro", ms=8, label="change point")
    ax.set(title=f"{name} on {machine}", xlabel="run (oldest first)",
           ylabel=f"median ({label})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    folder.mkdir(parents=True, exist_ok=True)
    safe = f"{machine}_{name}".replace("/", "_").replace(" ", "_")
    return save(fig, folder / f"{safe}.png")


def by_series(points: list[ChangePoint]) -> list[list[ChangePoint]]:
    """The change points grouped by series, in the order they come."""
    grouped: dict[tuple[str, str], list[ChangePoint]] = {}
    for point in points:
        grouped.setdefault((point.machine, point.name), []).append(point)
    return list(grouped.values())
