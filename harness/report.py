"""A run's report, built once: sections of tables, each with its note and plots.

``harness.renderers`` draws the same report object for the terminal summary,
``report.md`` and ``report.html``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness import native
from harness.disturbance import LIMIT, run_disturbance
from harness.experiment import ModelRow, Section, load_experiments
from harness.records import BatchRecord
from harness.results import RunData

CROSS_CPU_NOTE = (
    "`cross-cpu` rows measure how fast the hypervisor wakes an idle vCPU as much as IPC: "
    "on a VM they are tens of microseconds even in C. They are labelled and never fitted "
    "into alpha or beta."
)


DISTURBANCE_NOTE = (
    f"A timed batch is disturbed when more than {LIMIT:.0%} of the CPU time its window "
    "offered on the case's CPUs went to other tasks, interrupts or the hypervisor (steal); on "
    "several CPUs the limit counts from the case's own lowest decile, since waiting CPUs idle "
    "and a VM's vCPU wake-up lands there too. Disturbed batches are left out of the statistics "
    "unless the run was made with --keep-disturbed; samples.csv keeps every batch with "
    "steal_ns, other_switches, run_delay_ns, foreign_ns and the reference ref_ns (a pipe "
    "loopback timed around each batch). reference.png shows the reference over the run: "
    "the host's fast and slow spells."
)


Rows = tuple[list[str], list[list[str]]]


def not_run_rows(run: RunData) -> Rows:
    header = ["case", "status", "reason"]
    return header, [[c.case.name, c.status, c.note] for c in run.cases if c.status != "ok"]


def _check_value(m: ModelRow, x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if m.unit == "pp":
        return f"{x:+.2f} pp"
    return f"{x:.1%}" if "rel_error" in m.parameter else f"{x:.3g}"


def check_rows(run: RunData) -> Rows:
    """Every prediction set against a measurement: what the run could tell."""
    header = ["check", "transport", "case", "value", "95% CI", "model claims", "events",
              "verdict"]
    body = []
    for m in run.model:
        if not m.check:
            continue
        where = " ".join(str(x) for x in (m.placement, m.variant, m.payload_bytes and
                                           f"{m.payload_bytes} B", m.k and f"k{m.k}") if x)
        claim = (f"at least {_check_value(m, m.bound_low)}" if m.bound_high == math.inf else
                 f"{_check_value(m, m.bound_low)} to {_check_value(m, m.bound_high)}")
        body.append([m.parameter, m.transport, where, _check_value(m, m.value),
                     f"{_check_value(m, m.ci_low)} to {_check_value(m, m.ci_high)}", claim,
                     "-" if m.events is None or math.isnan(m.events) else f"{m.events:.0f}",
                     m.check])
    return header, body


CHECKS_NOTE = (
    "A check holds when the whole 95% interval of what it measures lies within what the "
    "model claims, fails when the interval lies wholly outside, and is untestable when it "
    "straddles the claim: the run held too few events (workers, crashes, requests) to tell. "
    "Predictions use what the run really had (arrival and crash rates), not the settings."
)


def model_rows(run: RunData) -> Rows:
    header = ["parameter", "transport", "placement", "bytes", "value", "95% CI", "unit", "method"]
    body = [[m.parameter, m.transport, m.placement,
             "" if m.payload_bytes is None else str(m.payload_bytes), f"{m.value:.4g}",
             f"{m.ci_low:.4g}-{m.ci_high:.4g}", m.unit, m.method] for m in run.model]
    return header, body


def experiment_sections(run: RunData) -> list[Section]:
    """Each experiment's own sections, in the order the run's suite lists them."""
    results = run.results_frame()
    ran = list(dict.fromkeys(results.experiment))  # the suite's order
    registry = load_experiments()
    found = []
    for experiment in sorted(registry.values(), key=lambda e: (
            ran.index(e.name) if e.name in ran else len(ran), e.name)):
        try:
            made = experiment.report(results, run.model, run.tables, run.plots)
        except Exception as exc:  # as in harness.model.analyze: the rest still renders
            text = f"{experiment.name}: its report section is missing ({type(exc).__name__}: {exc})"
            if text not in run.notes:
                run.notes.append(text)
            continue
        found += [s for s in made if s.rows]
    return found


DISTURBANCE_TITLE = "Disturbance by experiment"
CHECKS_TITLE = "Model checks: predicted against measured"
HOST_PLOTS = ("reference.png",)


def disturbance_text(run: RunData) -> str:
    found = run_disturbance(run.measured())
    kept = ("kept in the statistics (--keep-disturbed)" if run.keep_disturbed
            else "left out of the statistics")
    return f"Disturbance: {found.summary()}".replace("were set aside", f"were {kept}")


def disturbance_rows(run: RunData) -> Rows:
    """Per experiment and placement: how many batches other work disturbed."""
    groups: dict[tuple[str, str], list[BatchRecord]] = {}
    for result in run.measured():
        key = (result.case.experiment, result.case.placement)
        groups.setdefault(key, []).extend(b for w in result.workers for b in w.batches)
    header = ["experiment", "placement", "batches", "disturbed", "median foreign %",
              "p95 foreign %", "steal %"]
    body = []
    for (experiment, placement), batches in sorted(groups.items()):
        if not batches:
            continue
        shares = [100 * b.foreign_share for b in batches]
        offered = sum(b.window_ns * b.cpus for b in batches)
        body.append([experiment, placement, str(len(batches)),
                     str(sum(b.disturbed for b in batches)), f"{np.median(shares):.2f}",
                     f"{np.percentile(shares, 95):.2f}",
                     f"{100 * sum(b.steal_ns for b in batches) / offered:.2f}"])
    return header, body




INTRO = (
    "Times are medians of per-batch means, in microseconds; intervals are 95% cluster "
    "bootstrap intervals over worker processes. Switches/op counts voluntary and "
    "involuntary context switches of the client and every server; CPU/op sums their CPU "
    "time. " + CROSS_CPU_NOTE
)

@dataclass
class Report:
    """Everything a renderer shows of one run."""

    title: str
    facts: str  # when, and which code
    disturbance: str
    machine: list[list[str]]  # key, value
    intro: str
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # parts of the analysis that failed
    machine_heading: str = "Machine"  # what the key-value table describes


def _section(title: str, rows: Rows, note: str = "", plots: list[str] | None = None,
             summary: bool = True) -> Section:
    header, body = rows
    return Section(title, header, body, note, plots or [], summary)


NATIVE_TITLE = "Suite / native: the same-cpu round trip against C"
NATIVE_NOTE = (
    "`--native-reference`: each transport's latency case against C doing the same per "
    "round trip (harness/native/pingpong.c), pinned to the same CPU, in alternating rounds; "
    "suite / C is the median over rounds of their ratio, the range its lowest and highest. "
    "What is over 1 is the harness's own cost: the interpreter around each system call, "
    "and the larger working set each switch brings back into the caches and TLB."
)


def native_section(run: RunData) -> Section | None:
    info = run.metadata.get("native_reference")
    if not isinstance(info, dict) or not info:
        return None
    status, reason = info.get("status"), info.get("reason") or "no reason noted"
    if status != "measured":
        verdict = "failed" if status == "failed" else "skipped"
        return _section(NATIVE_TITLE, (["native reference"], [[f"{verdict}: {reason}"]]))
    skipped = info.get("skipped")
    return _section(NATIVE_TITLE, native.report_rows(
        run.native, {str(k): str(v) for k, v in skipped.items()}
        if isinstance(skipped, dict) else {}), note=NATIVE_NOTE)


def build_report(run: RunData) -> Report:
    """The run's report; every section computed here, once. The experiments' own
    sections come first, in the order the suite lists them."""
    mhz = run.metadata.get("machine_extra", {}).get("cpu_mhz_nominal")
    cycles = (f"value_cycles in model.csv uses the nominal {mhz:.0f} MHz (a VM does not "
              "expose the real clock)." if mhz else "")
    held = native_section(run)
    sections = [
        *experiment_sections(run),
        *([held] if held else []),
        _section(CHECKS_TITLE, check_rows(run), note=CHECKS_NOTE),
        _section("All model parameters", model_rows(run), note=cycles, summary=False),
        _section(DISTURBANCE_TITLE, disturbance_rows(run), note=DISTURBANCE_NOTE,
                 plots=[p for p in HOST_PLOTS if p in run.plots], summary=False),
        _section("Cases not run", not_run_rows(run)),
    ]
    placed = {name for section in sections for name in section.plots}
    rest = [name for name in run.plots if name not in placed]
    if rest:
        sections.append(Section("Plots", [], [], plots=rest, summary=False))
    return _report(run, sections)


def model_report(run: RunData) -> Report:
    """What ``ipcbench fit`` prints: the sections the experiments mark as their model's."""
    return _report(run, [s for s in experiment_sections(run) if s.fit])


def _report(run: RunData, sections: list[Section]) -> Report:
    meta = run.metadata
    return Report(
        title=f"ipcbench run: {meta.get('suite', '?')}",
        facts=f"Started {meta.get('started', '?')}, finished {meta.get('finished', '?')}; "
              f"code {meta.get('git_commit') or 'unknown'}.",
        disturbance=disturbance_text(run),
        machine=[[k, str(v)] for k, v in meta.get("machine", {}).items()],
        intro=INTRO,
        sections=[s for s in sections if s.rows or s.plots],
        notes=list(run.notes),  # last: building the sections can add some
    )
