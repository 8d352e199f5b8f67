"""Across machines: two machines' latest runs side by side, and one HTML page for a fleet.

Both read the history (``harness.historydb``); neither is a regression gate. Machines
differ in what they are, so their ratio describes them, it does not judge a change
(``ipcbench compare`` does that, within one machine).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import history, historydb
from harness.errors import UsageError
from harness.experiment import Section
from harness.historydb import Filters, Target
from harness.report import Report

REPORT_PAGE = "index.html"
TITLE = b"<title>ipcbench fleet report</title>"  # how an earlier report's page begins
PLOT = re.compile(r"case-\d{4,}\.png")  # a case's plot, as the report names them


@dataclass(frozen=True)
class MachineComparison:
    runs: tuple[pd.Series, pd.Series]  # each machine's latest run (a runs_table row)
    cases: pd.DataFrame  # name, unit, a, b, ratio (b / a), for the cases both measured
    only: tuple[int, int]  # cases measured by one of the two runs only

    def geometric_mean(self) -> float:
        ratios = self.cases.ratio.to_numpy(float)
        ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
        return float(np.exp(np.mean(np.log(ratios)))) if len(ratios) else float("nan")


def latest_run(where: Target, machine: str, filters: Filters) -> pd.Series:
    runs = historydb.runs_table(where, Filters(machines=(machine,), kernel=filters.kernel,
                                               suite=filters.suite))
    if runs.empty:
        within = Filters(kernel=filters.kernel, suite=filters.suite).said()
        raise UsageError(f"history {where}: no runs of machine {machine}{within}")
    return runs.iloc[-1]


def compare_machines(where: Target, a: str, b: str, filters: Filters) -> MachineComparison:
    """``a``'s and ``b``'s latest runs (of the suite, if one is given), case by case."""
    runs = (latest_run(where, a, filters), latest_run(where, b, filters))
    table = historydb.series(where, Filters(machines=(a, b), case=filters.case,
                                            suite=filters.suite, kernel=filters.kernel))
    side = [table[table.run_id == run.run_id].set_index("name") for run in runs]
    both = side[0].index.intersection(side[1].index)
    cases = pd.DataFrame({"unit": side[0].loc[both, "unit"],
                          "a": side[0].loc[both, "median"], "b": side[1].loc[both, "median"]})
    with np.errstate(divide="ignore", invalid="ignore"):
        cases["ratio"] = cases.b / cases.a
    cases = cases.rename_axis("name").reset_index().sort_values("name", ignore_index=True)
    return MachineComparison(runs, cases, (len(side[0]) - len(both), len(side[1]) - len(both)))


# ---------------------------------------------------------------- the fleet report

def write_fleet_report(where: Target, out: Path, filters: Filters,
                       threshold: float = 0.05) -> tuple[int, int]:
    """``out/index.html`` (one page that opens offline, plots inlined) and its PNG plots;
    written beside ``out`` and moved in whole. Returns (machines, cases) shown."""
    _check_out(out)
    table = historydb.series(where, filters)
    if table.empty:
        raise UsageError(f"history {where}: no runs to report" + filters.said())
    runs = historydb.runs_table(where, filters)
    runs = runs[runs.run_id.isin(set(table.run_id))]
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        stage.mkdir(parents=True)
        points = history.detect(table, threshold)
        sections = [_machines_section(runs)]
        for number, (name, rows) in enumerate(table.groupby("name", sort=True)):
            sections.append(_case_section(str(name), rows, points, stage, number))
        report = Report(
            title="ipcbench fleet report",
            facts=(f"{runs.run_id.nunique()} runs of {runs.machine.nunique()} machines, "
                   f"{_when(runs.started_utc.min())} to {_when(runs.started_utc.max())}; "
                   f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"),
            disturbance=_disturbance_line(runs),
            machine=[["history", str(where)], ["filters", filters.said() or "none"],
                     ["change points", f"{len(points)} (robust z over the last "
                      f"{history.LOOKBACK} runs, threshold {threshold:.0%})"]],
            intro=("One line per machine for each case: the median of each run, oldest "
                   "first. A series is a machine by its name, so a kernel update on it "
                   "stays in one line; red rings mark change points. Machines differ in "
                   "kind, so compare their lines for shape and for steps, and their levels "
                   "only as a description."),
            sections=sections, machine_heading="This report")
        from harness.renderers import HtmlRenderer

        (stage / REPORT_PAGE).write_text(HtmlRenderer(stage).render(report), encoding="utf-8")
        _swap_in(stage, out)
    except OSError as exc:  # a full disk, a folder taken away: no half-written page
        shutil.rmtree(stage, ignore_errors=True)
        raise UsageError(f"--out {out}: cannot write the report ({exc.strerror or exc})"
                         ) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return runs.machine.nunique(), len(sections) - 1


def _check_out(out: Path) -> None:
    """``out`` is new, empty, or an earlier fleet report: nothing but its page and plots,
    which are replaced whole (anything else in it would be lost, so it is refused)."""
    if not out.name or out.resolve() == Path.cwd().resolve():
        raise UsageError(f"--out {out}: give the report a folder of its own")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if not (p.name == REPORT_PAGE or PLOT.fullmatch(p.name)))
        page = out / REPORT_PAGE
        if not foreign and page.is_file() and TITLE not in page.read_bytes()[:400]:
            foreign = [REPORT_PAGE]  # a page of someone else's
        if foreign:
            raise UsageError(f"--out {out}: holds other files than a fleet report "
                             f"({foreign[0]}); give an empty or a new folder")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: cannot write in {parent}")


def _swap_in(stage: Path, out: Path) -> None:
    """The new report in, the earlier one out; if the new one cannot go in, the earlier
    one is put back."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        stage.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _when(utc: object) -> str:
    return str(utc or "?").replace("T", " ").removesuffix("Z")


def _disturbance_line(runs: pd.DataFrame) -> str:
    shares = runs.groupby("machine").disturbed_share.median().dropna()
    if shares.empty:
        return "No run recorded its disturbance"
    said = ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
    return f"Median share of timed batches set aside as disturbed, per machine: {said}"


def _machines_section(runs: pd.DataFrame) -> Section:
    rows = []
    for _, group in runs.groupby(["machine", "machine_key"], sort=True):
        first = group.iloc[0]
        rows.append([str(first.machine), str(first.machine_id), str(first.cpu_model),
                     str(first.cpu_count), str(first.topology), str(first.kernel),
                     str(first.virtualization), str(first.python), str(len(group)),
                     _when(group.started_utc.iloc[0]), _when(group.started_utc.iloc[-1])])
    return Section("Machines", ["machine", "fingerprint", "CPU", "CPUs", "topology", "kernel",
                                "virtualization", "Python", "runs", "first run", "last run"],
                   rows, note="One row per machine and fingerprint: a machine whose kernel "
                              "or Python changed has a row for each.")


def _case_section(name: str, rows: pd.DataFrame, points: list[history.ChangePoint],
                  folder: Path, number: int) -> Section:
    flagged = [p for p in points if p.name == name]
    unit = str(rows.unit.iloc[0])
    body = []
    for machine, series in rows.groupby("machine", sort=True):
        first, last = series["median"].iloc[0], series["median"].iloc[-1]
        marks = "; ".join(f"{p.run_id}: {p.after / p.before - 1:+.1%}"
                          + (f" (kernel {p.kernel_before} to {p.kernel})"
                             if p.kernel != p.kernel_before else "")
                          for p in flagged if p.machine == machine)
        body.append([str(machine), str(len(series)), _shown(first, unit), _shown(last, unit),
                     history.trend(first, last), marks])
    plot = f"case-{number:04d}.png"  # PLOT matches it
    _plot_case(name, rows, flagged, folder / plot)
    return Section(name, ["machine", "runs", "first", "last", "trend",
                                         "change points"], body, plots=[plot])


def _shown(value: float, unit: str) -> str:
    from harness import units

    return units.show(value, unit)


def _plot_case(name: str, rows: pd.DataFrame, flagged: list[history.ChangePoint],
               path: Path) -> None:
    from harness.plots import pyplot, save

    plt = pyplot()
    unit = str(rows.unit.iloc[0])
    scale, label = (1000, "us") if unit == "ns" else (1, unit)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    for machine, series in rows.groupby("machine", sort=True):
        when = pd.to_datetime(series.started_utc, utc=True, errors="coerce")
        ax.plot(when, series["median"] / scale, "o-", ms=2.5, lw=1, label=str(machine))
        hit = series.run_id.isin({p.run_id for p in flagged if p.machine == machine})
        ax.plot(when[hit], series["median"][hit] / scale, "o", ms=9, mfc="none", mec="red")
    ax.set(title=name, ylabel=f"median ({label})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    save(fig, path)
