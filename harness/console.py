"""What the other commands print at the terminal: comparisons, doctor's findings and the
history's trend (the run's own summary is a renderer of its report: ``harness.renderers``).
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness import units
from harness.compare import FDR, POWER, Comparison, Verdict
from harness.cputopology import Topology
from harness.doctor import Finding
from harness.history import ChangePoint, series_rows, trend

if TYPE_CHECKING:  # the history's database (SQLAlchemy) only for the commands that read it
    from harness.fleet import MachineComparison

VERDICT_STYLE = {"failed": "bold red", "slower": "bold red", "faster": "green", "same": "",
                 "underpowered": "yellow", "unknown": "yellow"}


def print_comparison(result: Comparison, base: str, new: str, console: Console) -> None:
    how = "paired workers, " if result.paired else ""
    how += "each batch over its reference, " if result.normalized else ""
    if result.families:
        console.print(_verdict_table(
            f"The gate: each transport's timed cases together, {new} against {base} "
            f"({how}one value per pass of workers)", result.families))
    console.print(_verdict_table(f"Each case, {new} against {base} ({how}largest changes "
                                 "first)", result.verdicts))
    for line in comparison_summary(result):
        console.print(line)


def _verdict_table(title: str, verdicts: list[Verdict]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("case", overflow="fold")
    for name in ("base", "new", "change", "detectable", "q (BH)"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("why", max_width=32)
    for v in verdicts:
        table.add_row(v.case, units.show(v.base_median, v.unit), units.show(v.new_median, v.unit),
                      "-" if math.isnan(v.ratio) else f"{v.ratio - 1:+.1%}",
                      _detectable(v.detectable),
                      "-" if math.isnan(v.q_value) else f"{v.q_value:.2g}",
                      f"[{VERDICT_STYLE[v.verdict]}]{v.verdict}[/]" if VERDICT_STYLE[v.verdict]
                      else v.verdict, v.reason)
    return table


def _detectable(change: float) -> str:
    if math.isnan(change) or math.isinf(change):
        return "-"
    return ">1000%" if change > 10 else f"{change:.1%}"


def comparison_summary(result: Comparison) -> list[str]:
    verdicts = result.verdicts
    counts = {k: sum(v.verdict == k for v in verdicts) for k in VERDICT_STYLE}
    lines = []
    if result.families:
        slower = [v.case.split(":")[0] for v in result.families if v.verdict == "slower"]
        able = [v.case.split(":")[0] for v in result.families
                if v.detectable <= result.threshold]
        lines.append(f"the gate: {', '.join(slower) or 'no transport'} slower; "
                     f"{len(able)} of {len(result.families)} transports could have caught "
                     f"{result.threshold:.0%} ({', '.join(able) or 'none'})")
    lines += [", ".join(f"{n} {k}" for k, n in counts.items()) + " (cases)",
              f"{result.powered()} of {len(verdicts)} cases could have caught a change of "
              f"{result.threshold:.0%} alone (detectable: the change found with {POWER:.0%} "
              f"power at the level Benjamini-Hochberg applied, FDR {FDR:.0%})"]
    if not math.isnan(result.reference_change):
        moved = result.reference_change
        lines.append(f"the machine reference moved {moved:+.1%} between the runs"
                     + ("" if result.normalized or abs(moved) < result.threshold / 2 else
                        ": the host was in another state; --normalize judges each case "
                        "against it"))
    return lines


def summary_console() -> Console:
    """The console for summaries: piped output would be cut to 80 columns, and the
    tables read better whole (160, or COLUMNS where it is set)."""
    if sys.stdout.isatty():
        return Console()
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() and int(columns) > 0 else 160)


def print_topology(machine: Topology, console: Console) -> None:
    """Cores by package, die, last-level cache and node; then each placement's CPUs."""
    cores = Table(title=f"CPU topology: {len(machine.cpus)} CPUs, {len(machine.usable)} "
                        "usable here", title_justify="left")
    for name in ("package", "die", "LLC domain", "NUMA node", "core: its CPUs (SMT)"):
        cores.add_column(name, justify="right" if name != "core: its CPUs (SMT)" else "left")
    for package, die, llc, node, threads in machine.layout():
        level = machine.cpus[threads[0]].llc_level
        domain = f"L{level} of CPU {llc}" if llc >= 0 else "none listed (package)"
        cores.add_row(str(package), str(die), domain, str(node), ", ".join(map(str, threads)))
    console.print(cores)
    places = Table(title="Placements: the client's CPU and its servers' CPUs (a chain "
                         "spreads over them in this order)", title_justify="left")
    for name in ("placement", "client", "servers", "or why not here"):
        places.add_column(name)
    for placement, plan in machine.plans().items():
        if isinstance(plan, str):
            places.add_row(placement, "-", "-", plan)
        else:
            shown = ", ".join(map(str, plan[1][:16])) + (" ..." if len(plan[1]) > 16 else "")
            places.add_row(placement, str(plan[0]), shown, "")
    console.print(places)


def print_findings(findings: list[Finding], console: Console) -> None:
    table = Table(title="ipcbench doctor", title_justify="left")
    for name in ("", "topic", "finding"):
        table.add_column(name)
    marks = {"ok": "[green]ok[/]", "note": "[cyan]note[/]", "attention": "[bold red]fix[/]"}
    for f in findings:
        table.add_row(marks[f.level], f.topic, f.text)
    console.print(table)


SERIES_SHOWN = 60  # series listed at most, unless --all


def print_history(table: pd.DataFrame, points: list[ChangePoint], console: Console,
                  every: bool = False,
                  rows: dict[tuple[str, str], np.ndarray] | None = None) -> None:
    """The change points run by run (a kernel update moves a machine's every case at
    once: one line says so), then one row per series (a case on a machine): its runs,
    first and last median, trend and change points. A fleet has thousands of series:
    past SERIES_SHOWN the listed ones are those that changed most, unless ``every``."""
    groups = series_rows(table) if rows is None else rows
    console.print(f"History: {_count(table.run_id.nunique(), 'run')} of "
                  f"{_count(table.machine.nunique(), 'machine')}, "
                  f"{_count(len(groups), 'series', 'series')}, "
                  f"{_count(len(points), 'change point')}")
    if points:
        console.print(_points_by_run(points, groups))
    flagged: dict[tuple[str, str], list[ChangePoint]] = {}
    for point in points:
        flagged.setdefault((point.machine, point.name), []).append(point)
    by_change = sorted(flagged, key=lambda key: -max(abs(p.after / p.before - 1)
                                                    for p in flagged[key]))
    shown = sorted(groups, key=lambda key: (key[1], key[0])) if every or \
        len(groups) <= SERIES_SHOWN else sorted(by_change[:SERIES_SHOWN],
                                                 key=lambda key: (key[1], key[0]))
    out = Table(title="Series (a case on a machine)", title_justify="left")
    for name in ("case", "machine", "runs", "first", "last", "trend", "change points"):
        out.add_column(name, justify="left" if name in ("case", "machine", "change points")
                       else "right")
    medians, units_of = table["median"].to_numpy(float), table.unit.astype(str).to_numpy()
    for machine, name in shown:
        at = groups[(machine, name)]
        first, last, unit = medians[at[0]], medians[at[-1]], units_of[at[0]]
        marks = "; ".join(
            f"{p.run_id}: {p.after / p.before - 1:+.1%} (z {p.z:+.1f})"
            + (f", kernel {p.kernel_before} to {p.kernel}" if p.kernel != p.kernel_before
               else "")
            for p in flagged.get((machine, name), []))
        out.add_row(Text(name), Text(machine), str(len(at)), units.show(first, unit),
                    units.show(last, unit), trend(first, last),
                    Text(marks, style="bold red"))  # Text: no markup to parse per row
    if shown:
        console.print(out)
    if len(shown) < len(groups):
        console.print(f"{len(shown)} of {len(groups)} series listed: those with the largest "
                      f"change points ({len(flagged)} have one); --all lists every series, "
                      "--case and --machine narrow them")


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _points_by_run(points: list[ChangePoint],
                   groups: dict[tuple[str, str], np.ndarray]) -> Table:
    """One row per machine and run with change points: how many of the machine's cases
    moved there, by how much, and the kernel update if it came with one."""
    cases_of: dict[str, int] = {}
    for machine, _ in groups:
        cases_of[machine] = cases_of.get(machine, 0) + 1
    by_run: dict[tuple[str, str], list[ChangePoint]] = {}
    for point in points:
        by_run.setdefault((point.machine, point.run_id), []).append(point)
    out = Table(title="Change points by run", title_justify="left")
    for name in ("machine", "run", "cases moved", "median change", "range", "kernel"):
        out.add_column(name, justify="right" if "change" in name or name in (
            "cases moved", "range") else "left")
    for (machine, run_id), found in sorted(by_run.items()):
        changes = np.array([p.after / p.before - 1 for p in found])
        kernel = found[0]
        out.add_row(Text(machine), Text(run_id), f"{len(found)} of {cases_of[machine]}",
                    f"{np.median(changes):+.1%}",
                    f"{changes.min():+.1%} to {changes.max():+.1%}",
                    f"{kernel.kernel_before} to {kernel.kernel}"
                    if kernel.kernel != kernel.kernel_before else "")
    return out


def print_machine_comparison(result: MachineComparison, console: Console) -> None:
    """Two machines' latest runs, case by case, as ratios: a description, not a verdict."""
    a, b = result.runs
    out = Table(title=f"{b.machine} / {a.machine}: latest runs {b.run_id} and {a.run_id}",
                title_justify="left")
    for name in ("case", a.machine, b.machine, f"{b.machine} / {a.machine}"):
        out.add_column(str(name), justify="left" if name == "case" else "right")
    for row in result.cases.itertuples(index=False):
        out.add_row(str(row.name), units.show(row.a, row.unit), units.show(row.b, row.unit),
                    f"{row.ratio:.2f}x" if math.isfinite(row.ratio) else "-")
    console.print(out)
    for run in result.runs:
        what = (f"{run.cpu_model}, {run.cpu_count} CPUs ({run.topology}), kernel "
                f"{run.kernel}, {run.virtualization}, Python {run.python}"
                if isinstance(run.cpu_model, str) else
                "fingerprint not recorded (stored before machines were)")
        console.print(f"{run.machine}: {what}; run {run.run_id} of suite {run.suite}, "
                      f"{run.started}")
    only = [f"{n} only on {run.machine}" for n, run in zip(result.only, result.runs,
                                                              strict=True) if n]
    console.print(f"{len(result.cases)} cases on both"
                  + (f" ({', '.join(only)})" if only else "")
                  + f"; geometric mean {b.machine} / {a.machine}: "
                  + f"{result.geometric_mean():.2f}x. Ratios between machines describe "
                    "them; they are not a regression gate.")
