"""Reports of a run: the terminal summary (rich) and ``report.md``.

Both render the same tables, built once here as plain rows.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.compare import FDR, POWER, Comparison, Verdict
from harness.disturbance import LIMIT, run_disturbance
from harness.doctor import Finding
from harness.experiment import ModelRow, Section, load_experiments
from harness.history import ChangePoint
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
    header = ["transport", "placement", *[_size(c) for c in table.columns], "ns/byte"]
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


def _check_value(m: ModelRow, x: float) -> str:
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


def print_summary(run: RunData, console: Console) -> None:
    console.print(disturbance_text(run))
    _print_tables(console, [
        ("Round trip (latency), microseconds", latency_rows(run)),
        ("Payload sweep: median round trip, microseconds", payload_rows(run)),
        ("Chain: measured against the cost model, microseconds", prediction_rows(run)),
        ("Cost model (ns; errors are the worst k)", parameter_rows(run)),
        *[(s.title, (s.header, s.rows)) for s in experiment_sections(run)],
        (CHECKS_TITLE, check_rows(run)),
        ("Not run", not_run_rows(run)),
    ])


def print_model(run: RunData, console: Console) -> None:
    _print_tables(console, [
        ("Chain: measured against the cost model, microseconds", prediction_rows(run)),
        ("Cost model (ns; errors are the worst k)", parameter_rows(run)),
    ])


def _print_tables(console: Console, sections: list[tuple[str, Rows]]) -> None:
    for title, (header, body) in sections:
        if not body:
            continue
        table = Table(title=title, title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < 2 or title == "Not run" else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def sections(run: RunData) -> list[tuple[str, Rows]]:
    """The report's tables, in order; markdown and HTML render the same ones."""
    return [
        ("Latency and T_mu/T_m", latency_rows(run)),
        ("Payload sweep", payload_rows(run)),
        ("Cost model", parameter_rows(run)),
        ("Chain and fan-out: predicted against measured", prediction_rows(run)),
        ("Ring: beta over processes and working set", ring_rows(run)),
        (CHECKS_TITLE, check_rows(run)),
        ("All model parameters", model_rows(run)),
        (DISTURBANCE_TITLE, disturbance_rows(run)),
        ("Cases not run", not_run_rows(run)),
    ]


def render_markdown(run: RunData) -> str:
    meta = run.metadata
    machine = meta.get("machine", {})
    parts = [
        f"# ipcbench run: {meta.get('suite', '?')}",
        "",
        f"Started {meta.get('started', '?')}, finished {meta.get('finished', '?')}; "
        f"code {meta.get('git_commit') or 'unknown'}.",
        "",
        disturbance_text(run) + ".",
        "",
        "## Machine",
        "",
        _markdown(["key", "value"], [[k, str(v)] for k, v in machine.items()]),
        "",
        "Times are medians of per-batch means, in microseconds; intervals are 95% cluster "
        "bootstrap intervals over worker processes. Switches/op counts voluntary and "
        "involuntary context switches of the client and every server; CPU/op sums their CPU "
        "time. " + CROSS_CPU_NOTE,
    ]
    mhz = meta.get("machine_extra", {}).get("cpu_mhz_nominal")
    for title, (header, body) in sections(run):
        if body:
            parts += ["", f"## {title}", "", _markdown(header, body)]
            if title == "Cost model":
                parts += ["", MODEL_NOTE + (f" Cycles in `model.csv` use the nominal "
                                             f"{mhz:.0f} MHz (a VM does not expose the real "
                                             "clock)." if mhz else "")]
            if title == CHECKS_TITLE:
                parts += ["", CHECKS_NOTE]
            if title == DISTURBANCE_TITLE:
                parts += ["", DISTURBANCE_NOTE]
                parts += [f"\n![{name}]({name})" for name in HOST_PLOTS if name in run.plots]
    placed: set[str] = set(HOST_PLOTS)
    for section in experiment_sections(run):
        parts += ["", f"## {section.title}", "", _markdown(section.header, section.rows)]
        parts += ["", section.note] if section.note else []
        parts += [f"\n![{name}]({name})" for name in section.plots if name in run.plots]
        placed.update(section.plots)
    parts += [f"\n![{name}]({name})" for name in run.plots if name not in placed]
    if run.notes:  # last: rendering the sections above can add some
        parts += ["", "## Analysis notes", "", *[f"- {note}" for note in run.notes]]
    return "\n".join(parts) + "\n"


HTML_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; max-width: 60em; }
"""


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(run: RunData, folder: Path) -> str:
    """One file that opens offline: tables inline, plots as data URIs."""
    meta = run.metadata
    title = f"ipcbench run: {meta.get('suite', '?')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{HTML_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Started {html.escape(str(meta.get('started', '?')))}, finished "
             f"{html.escape(str(meta.get('finished', '?')))}; code "
             f"{html.escape(str(meta.get('git_commit') or 'unknown'))}.</p>",
             f"<p>{html.escape(disturbance_text(run))}.</p>",
             "<h2>Machine</h2>",
             _html_table(["key", "value"],
                         [[k, str(v)] for k, v in meta.get("machine", {}).items()]),
             f"<p class='note'>{html.escape(CROSS_CPU_NOTE)}</p>"]
    for name, (header, body) in sections(run):
        if body:
            parts += [f"<h2>{html.escape(name)}</h2>", _html_table(header, body)]
            if name == "Cost model":
                parts.append(f"<p class='note'>{html.escape(MODEL_NOTE)}</p>")
            if name == CHECKS_TITLE:
                parts.append(f"<p class='note'>{html.escape(CHECKS_NOTE)}</p>")
            if name == DISTURBANCE_TITLE:
                parts.append(f"<p class='note'>{html.escape(DISTURBANCE_NOTE)}</p>")
                parts += [_html_figure(folder, p) for p in HOST_PLOTS if p in run.plots]
    placed: set[str] = set(HOST_PLOTS)
    for section in experiment_sections(run):
        parts += [f"<h2>{html.escape(section.title)}</h2>",
                  _html_table(section.header, section.rows)]
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
        parts += [_html_figure(folder, name) for name in section.plots if name in run.plots]
        placed.update(section.plots)
    rest = [name for name in run.plots if name not in placed]
    if rest:
        parts.append("<h2>Plots</h2>")
    parts += [_html_figure(folder, name) for name in rest]
    if run.notes:
        parts += ["<h2>Analysis notes</h2>", "<ul>", *[f"<li>{html.escape(note)}</li>"
                                                       for note in run.notes], "</ul>"]
    return "\n".join(parts) + "\n</body></html>\n"


def _html_figure(folder: Path, name: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode()
    return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def write_report(run: RunData, folder: Path) -> None:
    """``report.md`` (plots linked) and ``report.html`` (plots inlined)."""
    (folder / "report.md").write_text(render_markdown(run))
    (folder / "report.html").write_text(render_html(run, folder))


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
        table.add_row(v.case, _with_unit(v.base_median, v.unit), _with_unit(v.new_median, v.unit),
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


def _with_unit(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "ns":
        return f"{_us(value)} us"
    if unit in ("bytes", "bytes-shared"):
        return f"{value / 1024:.0f} KiB"
    return f"{value:.4g} {unit}"


def print_findings(findings: list[Finding], console: Console) -> None:
    table = Table(title="ipcbench doctor", title_justify="left")
    for name in ("", "topic", "finding"):
        table.add_column(name)
    marks = {"ok": "[green]ok[/]", "note": "[cyan]note[/]", "attention": "[bold red]fix[/]"}
    for f in findings:
        table.add_row(marks[f.level], f.topic, f.text)
    console.print(table)


def print_history(table: pd.DataFrame, points: list[ChangePoint], console: Console) -> None:
    flagged: dict[str, list[ChangePoint]] = {}
    for point in points:
        flagged.setdefault(point.name, []).append(point)
    out = Table(title=f"History: {table.run_id.nunique()} runs, {len(points)} change points",
                title_justify="left")
    for name in ("case", "runs", "first", "last", "trend", "change points"):
        out.add_column(name, justify="left" if name in ("case", "change points") else "right")
    for name, rows in table.groupby("name", sort=True):
        first, last = rows["median"].iloc[0], rows["median"].iloc[-1]
        unit = str(rows.unit.iloc[0]) if "unit" in rows else "ns"
        marks = "; ".join(f"{p.run_id}: {p.after / p.before - 1:+.1%} (z {p.z:+.1f})"
                          for p in flagged.get(name, []))
        out.add_row(name, str(len(rows)), _with_unit(first, unit), _with_unit(last, unit),
                    f"{last / first - 1:+.1%}" if first else "-",
                    f"[bold red]{marks}[/]" if marks else "")
    console.print(out)
