"""Fitting a run: every experiment derives its parameters, tables and plots from the samples.

``ipcbench run`` calls this once the cases are measured; ``ipcbench fit``
calls it again on a saved run folder, without re-running anything.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.experiment import Experiment, load_experiments
from harness.plots import reference_plot
from harness.results import RunData
from harness.samples import host_adjusted


def model_samples(run: RunData) -> pd.DataFrame:
    """What the model is fitted on: the kept batches, scaled to the run's typical host
    unless the run says ``raw_model``."""
    samples = run.kept_samples()
    return samples if run.raw_model else host_adjusted(samples)


def analyze(run: RunData) -> None:
    """Fill ``run.model`` and ``run.tables`` from ``run``'s samples.

    An experiment whose analysis raises (samples it did not expect, such as a run whose
    limits left only some of its cases) loses its own rows and tables, and a note in
    ``run.notes`` says so; the other experiments' results stand."""
    samples = model_samples(run)
    run.model, run.tables, run.notes = [], {}, []
    for experiment in load_experiments().values():
        try:
            model = experiment.model(samples)
            tables = experiment.tables(samples)
        except Exception as exc:
            note(run, experiment, "its parameters and tables", exc)
            continue
        run.model += model
        run.tables.update(tables)


def note(run: RunData, experiment: Experiment, lost: str, exc: Exception) -> None:
    """Record that an experiment's part of the analysis failed (once per message)."""
    text = (f"{experiment.name}: {lost} are missing: its analysis failed "
            f"({type(exc).__name__}: {exc})")
    if text not in run.notes:
        run.notes.append(text)


def draw(run: RunData, folder: Path) -> None:
    """Write every experiment's plots into ``folder``; their names go into ``run.plots``."""
    run.plots = []
    samples = model_samples(run)
    for experiment in load_experiments().values():
        try:
            drawn = experiment.plots(samples, run.model, run.tables, folder)
        except Exception as exc:  # as in analyze: the other plots still get drawn
            note(run, experiment, "its plots", exc)
            continue
        run.plots += [p.name for p in drawn]
    host = reference_plot(run.samples_frame(), folder)  # every batch, disturbed ones marked
    if host is not None:
        run.plots.append(host.name)
