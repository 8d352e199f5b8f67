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

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# Where the history is unless told (harness.historydb opens it; defined here, where the
# command line can name it without importing SQLAlchemy).
HISTORY_VARIABLE = "IPCBENCH_HISTORY"
DEFAULT_PATH = Path("results") / "history.sqlite"
LOOKBACK = 10
MIN_LOOKBACK = 4
Z_LIMIT = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
MAD_TO_SIGMA = 0.6745


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
    judged at once."""
    part = np.asarray(values[start:], dtype=float)
    if len(part) <= MIN_LOOKBACK:
        return None
    padded = np.concatenate([np.full(LOOKBACK, np.nan), part])
    windows = sliding_window_view(padded, LOOKBACK)[MIN_LOOKBACK : len(part)]
    hits, z, center = _departures(windows, part[MIN_LOOKBACK:], threshold)
    if not hits.any():
        return None
    first = int(np.argmax(hits))
    return start + MIN_LOOKBACK + first, float(z[first]), float(center[first])


def _departures(windows: np.ndarray, current: np.ndarray, threshold: float,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether each value departs from its window (the last axis: NaN where a window is
    short), with its robust z and the window's median."""
    center = _medians(windows)
    mad = _medians(np.abs(windows - center[..., None]))
    # a floor on the spread: identical past values must not make any change infinite
    spread = np.maximum(mad, np.abs(center) * threshold / 10) / MAD_TO_SIGMA
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (current - center) / spread
        hits = (np.abs(z) > Z_LIMIT) & (np.abs(current / center - 1) > threshold)
    return hits, z, center


def _medians(windows: np.ndarray) -> np.ndarray:
    """The median of each window's numbers, along the last axis (NaN pads a short window:
    it sorts last)."""
    ordered = np.sort(windows, axis=-1)
    counts = np.count_nonzero(~np.isnan(windows), axis=-1)[..., None]
    low = np.take_along_axis(ordered, (counts - 1) // 2, axis=-1)[..., 0]
    high = np.take_along_axis(ordered, counts // 2, axis=-1)[..., 0]
    return (low + high) / 2


def _may_change(series: list[np.ndarray], threshold: float, block: int = 256) -> np.ndarray:
    """Whether each series has a change point, all of them judged at once (in blocks, to
    bound the memory) with the window never restarted. Until its first change a series
    is judged exactly so, so a series this clears has none; only the others need the
    sequential pass (1000 runs in 1268 series, 310 of them stepped: 0.2 s, not 0.35 s)."""
    found = np.zeros(len(series), dtype=bool)
    for first in range(0, len(series), block):
        part = series[first : first + block]
        longest = max(map(len, part))
        padded = np.full((len(part), LOOKBACK + longest), np.nan)
        for row, values in enumerate(part):  # right-aligned: the front is padding
            padded[row, LOOKBACK + longest - len(values):] = values
        windows = sliding_window_view(padded, LOOKBACK, axis=1)[:, :longest]
        enough = np.count_nonzero(~np.isnan(windows), axis=-1) >= MIN_LOOKBACK
        hits, _, _ = _departures(windows, padded[:, LOOKBACK:], threshold)
        found[first : first + block] = (hits & enough).any(axis=1)
    return found


def series_rows(table: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Each series' rows of ``historydb.series`` (a machine, a case), oldest first, keyed
    (machine, case) in that order."""
    machine, machines = pd.factorize(table["machine"], sort=True)
    name, names = pd.factorize(table["name"], sort=True)
    key = machine.astype(np.int64) * max(len(names), 1) + name
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.diff(key[order], prepend=-1))
    groups = np.split(order, starts[1:])
    return {(str(machines[machine[g[0]]]), str(names[name[g[0]]])): g for g in groups if len(g)}


def detect(table: pd.DataFrame, threshold: float = 0.05,
           rows: dict[tuple[str, str], np.ndarray] | None = None) -> list[ChangePoint]:
    """Change points of every series of ``historydb.series`` rows (oldest first);
    ``rows``: ``series_rows(table)``, if the caller has it already."""
    rows = series_rows(table) if rows is None else rows
    medians = table["median"].to_numpy(float)
    run_ids = table.run_id.to_numpy()
    kernels = table.kernel.fillna("?").to_numpy()
    keys = list(rows)
    # a missing median is no point of its series
    kept = [rows[key][~np.isnan(medians[rows[key]])] for key in keys]
    points = []
    for key, where, may in zip(keys, kept, _may_change([medians[w] for w in kept], threshold),
                               strict=True):
        if not may:
            continue
        for i, z, before in change_points(medians[where], threshold):
            at, previous = where[i], where[i - 1]
            points.append(ChangePoint(key[0], key[1], str(run_ids[at]), before,
                                      float(medians[at]), z, str(kernels[at]),
                                      str(kernels[previous])))
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
    # readable, and unique: "a_b" on "c" and "a" on "b_c" read alike, their hash does not
    safe = f"{machine}_{name}".replace("/", "_").replace(" ", "_")
    unique = hashlib.sha256(f"{machine}\0{name}".encode()).hexdigest()[:8]
    return save(fig, folder / f"{safe[:150]}-{unique}.png")


def trend(first: float, last: float) -> str:
    """The change from the first to the last value, or ``-`` where there is none to say."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.float64(last) / np.float64(first)
    return f"{ratio - 1:+.1%}" if first and np.isfinite(ratio) else "-"


def by_series(points: list[ChangePoint]) -> list[list[ChangePoint]]:
    """The change points grouped by series, in the order they come."""
    grouped: dict[tuple[str, str], list[ChangePoint]] = {}
    for point in points:
        grouped.setdefault((point.machine, point.name), []).append(point)
    return list(grouped.values())
