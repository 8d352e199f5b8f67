"""Fitting a run: every experiment derives its parameters, tables and plots from the samples.

``ipcbench run`` calls this once the cases are measured; ``ipcbench fit``
calls it again on a saved run folder, without re-running anything.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.experiment import load_experiments
from harness.plots import reference_plot
from harness.results import RunData
from harness.samples import host_adjusted


def model_samples(run: RunData) -> pd.DataFrame:
    """What the model is fitted on: the kept batches, scaled to the run's typical host
    unless the run says ``raw_model``."""
    samples = run.kept_samples()
    return samples if run.raw_model else host_adjusted(samples)


def analyze(run: RunData) -> None:
    """Fill ``run.model`` and ``run.tables`` from ``run``'s samples."""
    samples = model_samples(run)
    run.model, run.tables = [], {}
    for experiment in load_experiments().values():
        run.model += experiment.model(samples)
        run.tables.update(experiment.tables(samples))


def draw(run: RunData, folder: Path) -> None:
    """Write every experiment's plots into ``folder``; their names go into ``run.plots``."""
    run.plots = []
    samples = model_samples(run)
    for experiment in load_experiments().values():
        run.plots += [p.name for p in experiment.plots(samples, run.model, run.tables, folder)]
    host = reference_plot(run.samples_frame(), folder)  # every batch, disturbed ones marked
    if host is not None:
        run.plots.append(host.name)
