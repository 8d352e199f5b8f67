"""A run's report, built once: sections of tables, each with its note and plots.

``harness.renderers`` draws the same report object for the terminal summary,
``report.md`` and ``report.html``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.disturbance import LIMIT, run_disturbance
from harness.experiment import ModelRow, Section, load_experiments
from harness.records import BatchRecord
from harness.results import RunData

CROSS_CPU_NOTE = (
    "`cross-cpu` rows measure how fast the hypervisor wakes an idle vCPU as much as IPC: "
    "on a VM they are tens of microseconds even in C. They are labelled and never fitted "
    "into alpha or beta."
)


MODEL_NOTE = (
    "alpha is one message sent and received by one process (no switch); beta is one "
    "context switch: the k = 1 round trip less its messages and C0, divided by the "
    "switches counted on every process; beta_ring is a ring hop less the same-process hop. "
    "The seed form C0 + k(2 alpha + 4 beta) counts 4k switches per request; on one CPU a "
    "chain makes 2k (the `switches` column), so the seed form over-predicts by about 2k beta. "
    "The extended form takes beta from the ring at k + 1 processes."
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


def _us(ns: float) -> str:
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    return f"{ns / 1000:.3f}" if ns < 100_000 else f"{ns / 1000:.1f}"


def _num(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


Rows = tuple[list[str], list[list[str]]]


def latency_rows(run: RunData) -> Rows:
    results = run.results_frame()
    rows = results[(results.experiment == "latency") & (results.status == "ok")]
    ratios = {(m.transport, m.placement, m.payload_bytes): m for m in run.model
              if m.parameter == "latency_ratio"}
    header = ["transport", "placement", "bytes", "median us", "95% CI us", "p95 us",
              "switches/op", "CPU us/op", "T_mu/T_m"]
    body = []
    for r in rows.itertuples():
        ratio = ratios.get((r.transport, r.placement, r.payload_bytes))
        body.append([
            r.transport, r.placement, str(r.payload_bytes), _us(r.median),
            f"{_us(r.ci_low)}-{_us(r.ci_high)}", _us(r.p95), _num(r.ctx_switches_per_op),
            _us(r.cpu_ns_per_op), _ratio_cell(r.transport, ratio),
        ])
    return header, body


def _ratio_cell(transport: str, ratio: ModelRow | None) -> str:
    if ratio is not None:
        return f"{ratio.value:.1f} ({ratio.ci_low:.1f}-{ratio.ci_high:.1f})"
    return "1 (baseline)" if transport == "call" else "-"


def payload_rows(run: RunData) -> Rows:
    results = run.results_frame()
    rows = results[(results.experiment == "payload") & (results.status == "ok")]
    if rows.empty:
        return [], []
    table = rows.pivot_table(index=["transport", "placement"], columns="payload_bytes",
                             values="median", aggfunc="first")
    slopes = {(m.transport, m.placement): m for m in run.model
              if m.parameter == "copy_ns_per_byte"}
    header = ["transport", "placement", *[_size(c) for c in table.columns], "ns/B"]
    body = []
    for (transport, placement), values in table.iterrows():
        slope = slopes.get((transport, placement))
        body.append([transport, placement, *[_us(v) for v in values],
                     f"{slope.value:.3f}" if slope else "-"])
    return header, body


def _size(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def not_run_rows(run: RunData) -> Rows:
    header = ["case", "status", "reason"]
    return header, [[c.case.name, c.status, c.note] for c in run.cases if c.status != "ok"]


HEADLINE = {
    "alpha": "alpha ns", "beta": "beta ns", "beta_ring": "beta_ring ns", "C0": "C0 ns",
    "copy_ns_per_byte": "copy ns/B", "chain_max_rel_error": "seed form err",
    "chain_max_rel_error_count": "counts err", "chain_max_rel_error_extended": "extended err",
}


def parameter_rows(run: RunData) -> Rows:
    """The model's headline parameters, one row per transport (same-cpu)."""
    chosen: dict[str, dict[str, str]] = {}
    for m in run.model:
        if m.parameter not in HEADLINE or m.placement not in ("same-cpu", ""):
            continue
        if m.parameter == "alpha" and m.payload_bytes not in (None, 64):
            continue
        if math.isnan(m.value):
            cell = "-"
        elif m.unit == "ratio":
            cell = f"{m.value:.1%}"
        else:
            cell = f"{m.value:.4g}" + (f" ({m.ci_low:.4g} to {m.ci_high:.4g})"
                                       if not math.isnan(m.ci_low) else "")
        chosen.setdefault(m.transport, {})[m.parameter] = cell
    names = [p for p in HEADLINE if any(p in row for row in chosen.values())]
    header = ["transport", *[HEADLINE[p] for p in names]]
    return header, [[t, *[row.get(p, "-") for p in names]] for t, row in sorted(chosen.items())]


def prediction_rows(run: RunData) -> Rows:
    table = run.tables.get("chain_predictions")
    if table is None or table.empty:
        return [], []
    header = ["transport", "topology", "k", "measured us", "T_m us", "T_mu/T_m", "messages",
              "switches (seed 4k)", "seed us (err)", "counts us (err)", "extended us (err)",
              "line fit residual us"]
    body = []
    for r in table.sort_values(["transport", "topology", "k"]).itertuples():
        body.append([
            r.transport, r.topology, str(r.k), _us(r.measured_ns), _us(r.T_m_ns),
            _num(r.latency_ratio, 1), _num(r.messages_per_op, 1),
            f"{r.switches_per_op:.2f} ({r.seed_switches})",
            f"{_us(r.pred_seed_ns)} ({r.err_seed:+.1%})",
            f"{_us(r.pred_count_ns)} ({r.err_count:+.1%})",
            f"{_us(r.pred_extended_ns)} ({r.err_extended:+.1%})" if not math.isnan(
                r.pred_extended_ns) else "-",
            f"{r.seed_fit_residual_ns / 1000:+.3f}" if not math.isnan(r.seed_fit_residual_ns)
            else "-",
        ])
    return header, body


def ring_rows(run: RunData) -> Rows:
    table = run.tables.get("ring_beta")
    if table is None or table.empty:
        return [], []
    header = ["transport", "W bytes", "processes", "hop us", "same-process us", "beta us (CI)",
              "switches/hop"]
    body = [[r.transport, str(r.working_set), str(r.processes), _us(r.hop_ns),
             _us(r.overhead_ns), f"{_us(r.beta_ns)} ({_us(r.beta_ci_low)}-{_us(r.beta_ci_high)})",
             _num(r.switches_per_hop)]
            for r in table.sort_values(["transport", "working_set", "processes"]).itertuples()]
    return header, body


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
    """What each experiment adds to the report (the system experiments do)."""
    results = run.results_frame()
    found = []
    for experiment in load_experiments().values():
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
LATENCY_TITLE = "Round trip (latency) and T_mu/T_m, microseconds"
COST_MODEL_TITLE = "Cost model (ns; errors are the worst k)"
CHAIN_TITLE = "Chain and fan-out: measured against the cost model, microseconds"


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


def _plots(run: RunData, *names: str) -> list[str]:
    return [name for name in names if name in run.plots]


def _section(title: str, rows: Rows, note: str = "", plots: list[str] | None = None,
             summary: bool = True) -> Section:
    header, body = rows
    return Section(title, header, body, note, plots or [], summary)


def cost_model_sections(run: RunData) -> list[Section]:
    """The chain against the model, and the model's parameters (what ``fit`` prints)."""
    mhz = run.metadata.get("machine_extra", {}).get("cpu_mhz_nominal")
    cycles = (f" Cycles in `model.csv` use the nominal {mhz:.0f} MHz (a VM does not expose "
              "the real clock)." if mhz else "")
    return [
        _section(CHAIN_TITLE, prediction_rows(run),
                 plots=_plots(run, "chain.png", "ratio_over_k.png")),
        _section(COST_MODEL_TITLE, parameter_rows(run), note=MODEL_NOTE + cycles),
    ]


def build_report(run: RunData) -> Report:
    """The run's report; every section computed here, once."""
    sections = [
        _section(LATENCY_TITLE, latency_rows(run),
                 plots=_plots(run, "latency.png", "latency_distribution.png")),
        _section("Payload sweep: median round trip, microseconds", payload_rows(run),
                 plots=_plots(run, "payload.png")),
        *cost_model_sections(run),
        _section("Ring: beta over processes and working set", ring_rows(run), summary=False),
        *experiment_sections(run),
        _section(CHECKS_TITLE, check_rows(run), note=CHECKS_NOTE),
        _section("All model parameters", model_rows(run), summary=False),
        _section(DISTURBANCE_TITLE, disturbance_rows(run), note=DISTURBANCE_NOTE,
                 plots=_plots(run, *HOST_PLOTS), summary=False),
        _section("Cases not run", not_run_rows(run)),
    ]
    placed = {name for section in sections for name in section.plots}
    rest = [name for name in run.plots if name not in placed]
    if rest:
        sections.append(Section("Plots", [], [], plots=rest, summary=False))
    return _report(run, sections)


def model_report(run: RunData) -> Report:
    """What ``ipcbench fit`` prints: the cost model's sections alone."""
    return _report(run, cost_model_sections(run))


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
