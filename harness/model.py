"""Fitting a run: every experiment derives its parameters, tables and plots from the samples.

``ipcbench run`` calls this once the cases are measured; ``ipcbench fit``
calls it again on a saved run folder, without re-running anything.
"""

from __future__ import annotations

from pathlib import Path

from harness.experiment import load_experiments
from harness.results import RunData


def analyze(run: RunData) -> None:
    """Fill ``run.model`` and ``run.tables`` from ``run``'s samples."""
    samples = run.samples_frame()
    run.model, run.tables = [], {}
    for experiment in load_experiments().values():
        run.model += experiment.model(samples)
        run.tables.update(experiment.tables(samples))


def draw(run: RunData, folder: Path) -> None:
    """Write every experiment's plots into ``folder``; their names go into ``run.plots``."""
    run.plots = []
    samples = run.samples_frame()
    for experiment in load_experiments().values():
        run.plots += [p.name for p in experiment.plots(samples, run.model, run.tables, folder)]
