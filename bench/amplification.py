"""Experiment 3: IPC amplification through k servers, and the seed's cost model.

A request through a chain of k servers (client -> VFS -> net -> driver ...) or
a fan-out to k services costs, says the seed, ``C_total = C0 + k(2*alpha +
4*beta)``. Here alpha (one message, measured in one process), beta (one
context switch: the k = 1 round trip minus its messages and compute, per
measured switch) and C0 (the handler in process, empty loop subtracted) are
measured independently, then the chain is predicted three ways and set
beside the measurement:

- seed form: C0 + k(2 alpha + 4 beta), the text's accounting of 4k switches;
- measured-count form: C0 + alpha * messages + beta * switches, with the
  switches counted on every process;
- extended form: as the count form, with beta growing with the number of
  processes as the ring shows it (cache and TLB pollution): beta(k + 1) =
  beta + [beta_ring(k + 1) - beta_ring(2)]. The growth is added, not scaled,
  because it is refill work that does not depend on the base cost; anchoring
  at the direct beta keeps the ring relay's own loop out of the prediction.

At k = 1 the count and extended forms reproduce the measurement by
construction (beta is measured there); their test is every k > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import timed
from bench.params import ChainParams
from bench.ring import Ring, beta_by_processes, beta_draws
from harness.experiment import (
    Experiment,
    ModelRow,
    Plan,
    Section,
    check_row,
)
from harness.fit import FitError, ols
from harness.plots import pyplot, save
from harness.records import Case
from harness.samples import Estimate, estimate, median_draws, select, worker_points
from harness.stats import interval
from harness.units import number, us

BASELINE = "call"
PLACEMENT = "same-cpu"


class Amplification(Experiment):
    name = "amplification"
    description = "requests through k servers: the cost model, predicted against measured"
    params_type = ChainParams

    def plan(self, params: ChainParams) -> Plan:
        if BASELINE not in params.transports:
            raise ValueError(f"experiments.{self.name}.transports must include {BASELINE!r}")
        work: dict[str, Any] = dict(workload=params.workload, iterations=params.iterations,
                                    sched_batch=params.sched_batch)
        size = params.message_bytes
        cases = [Case(self.name, BASELINE, PLACEMENT, size, metric="compute",
                      topology="compute", **work)]
        for transport in params.transports:
            for placement in params.placements:
                cases += [Case(self.name, transport, placement, size, k, topology=topology,
                               **work)
                          for topology in params.topologies for k in params.k]
                if transport != BASELINE:
                    cases += [Case(self.name, transport, placement, p, metric="message",
                                   topology="self", **work) for p in params.payload_bytes]
        return timed.plan(cases)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        mine = self.mine(samples, placement=PLACEMENT)
        if mine.empty:
            return []
        rows: list[ModelRow] = []
        for transport in sorted(set(mine.transport) - {BASELINE}):
            rows += parameters(mine, transport)
        table, errors = predict(samples)
        if table.empty:  # only call rows (or no alpha, C0): no chain to predict, no columns
            return rows
        for (transport, topology), sub in table.groupby(["transport", "topology"]):
            if topology != "chain":
                continue
            rows += chain_rows(mine, transport, sub, errors.get(transport))
        return rows

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        table = predictions(samples)
        return {"chain_predictions": table} if not table.empty else {}

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        table = tables.get("chain_predictions")
        return plot(table, folder) if table is not None else []

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        chain = tables.get("chain_predictions")
        mine = [p for p in plots if p in ("chain.png", "ratio_over_k.png")]
        return [
            Section("Chain and fan-out: measured against the cost model, microseconds",
                    *prediction_rows(chain), plots=mine, fit=True),
            Section("Cost model (ns; errors are the worst k)", *headline_rows(model),
                    note=MODEL_NOTE, fit=True),
        ]


MODEL_NOTE = (
    "alpha is one message sent and received by one process (no switch); beta is one "
    "context switch: the k = 1 round trip less its messages and C0, divided by the "
    "switches counted on every process; beta_ring is a ring hop less the same-process hop. "
    "The seed form C0 + k(2 alpha + 4 beta) counts 4k switches per request; on one CPU a "
    "chain makes 2k (the `switches` column), so the seed form over-predicts by about 2k beta. "
    "The extended form takes beta from the ring at k + 1 processes."
)
# The cost model's headline, one column each: this experiment's parameters, the ring's
# beta and the payload sweep's copy cost (every experiment's model rows reach the report).
HEADLINE = {
    "alpha": "alpha ns", "beta": "beta ns", "beta_ring": "beta_ring ns", "C0": "C0 ns",
    "copy_ns_per_byte": "copy ns/B", "chain_max_rel_error": "seed form err",
    "chain_max_rel_error_count": "counts err", "chain_max_rel_error_extended": "extended err",
}
Rows = tuple[list[str], list[list[str]]]


def headline_rows(model: list[ModelRow]) -> Rows:
    """The model's headline parameters, one row per transport (same-cpu)."""
    chosen: dict[str, dict[str, str]] = {}
    for m in model:
        if m.parameter not in HEADLINE or m.placement not in (PLACEMENT, ""):
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


def prediction_rows(table: pd.DataFrame | None) -> Rows:
    if table is None or table.empty:
        return [], []
    header = ["transport", "topology", "k", "measured us", "T_m us", "T_mu/T_m", "messages",
              "switches (seed 4k)", "seed us (err)", "counts us (err)", "extended us (err)",
              "line fit residual us"]
    body = []
    for r in table.sort_values(["transport", "topology", "k"]).itertuples():
        body.append([
            str(r.transport), str(r.topology), str(r.k), us(r.measured_ns), us(r.T_m_ns),
            number(r.latency_ratio, 1), number(r.messages_per_op, 1),
            f"{r.switches_per_op:.2f} ({r.seed_switches})",
            f"{us(r.pred_seed_ns)} ({r.err_seed:+.1%})",
            f"{us(r.pred_count_ns)} ({r.err_count:+.1%})",
            f"{us(r.pred_extended_ns)} ({r.err_extended:+.1%})" if not math.isnan(
                r.pred_extended_ns) else "-",
            f"{r.seed_fit_residual_ns / 1000:+.3f}" if not math.isnan(r.seed_fit_residual_ns)
            else "-",
        ])
    return header, body


@dataclass(frozen=True)
class Costs:
    """alpha, C0 and beta of one transport: each point value with its bootstrap draws."""

    alpha: Estimate
    c0: Estimate
    beta: Estimate
    draws: dict[str, np.ndarray]  # alpha, C0, beta: one draw per bootstrap resample
    workers: int  # the fewest workers behind any of them


def independent(mine: pd.DataFrame, transport: str) -> Costs | None:
    """alpha, C0 and beta of one transport, each with a bootstrap interval."""
    c0_rows = select(mine, topology="compute")
    rt_rows = select(mine, transport=transport, topology="chain", k=1)
    if c0_rows.empty or rt_rows.empty:
        return None
    # alpha at the chain's own message size
    size = int(rt_rows.payload_bytes.iloc[0])
    alpha_rows = select(mine, transport=transport, topology="self", payload_bytes=size)
    if alpha_rows.empty:
        return None
    label = f"amplification/{transport}"
    alpha = median_draws(alpha_rows, label + "/alpha")
    c0 = median_draws(c0_rows, "amplification/C0")
    rt = median_draws(rt_rows, label + "/rt1")
    switches = float(rt_rows.ctx_switches_per_op.mean())
    messages = float(rt_rows.messages_per_op.mean())

    def beta_of(rt_value: float | np.ndarray, a: float | np.ndarray, c: float | np.ndarray):
        return (rt_value - a * messages - c) / switches

    a_pt, c_pt, rt_pt = (float(np.median(r.value)) for r in (alpha_rows, c0_rows, rt_rows))
    beta = beta_of(rt, alpha, c0)
    workers = min(r.worker.nunique() for r in (alpha_rows, c0_rows, rt_rows))
    return Costs(estimate(a_pt, alpha), estimate(c_pt, c0),
                 estimate(beta_of(rt_pt, a_pt, c_pt), beta),
                 {"alpha": alpha, "C0": c0, "beta": beta}, workers)


def parameters(mine: pd.DataFrame, transport: str) -> list[ModelRow]:
    rows = []
    for size, sub in select(mine, transport=transport, topology="self").groupby("payload_bytes"):
        draws = median_draws(sub, f"alpha/{transport}/{size}")
        value, low, high = estimate(float(np.median(sub.value)), draws)
        rows.append(ModelRow("alpha", transport, value, "ns", low, high,
                             "one process sends and receives one message (no switch)",
                             placement=PLACEMENT, payload_bytes=int(size)))
    found = independent(mine, transport)
    if found is None:
        return rows
    methods = {"C0": (found.c0, "handler in process minus an empty call, batch-timed"),
               "beta": (found.beta, "(k=1 round trip - alpha*messages - C0) / measured switches")}
    for name, ((value, low, high), method) in methods.items():
        rows.append(ModelRow(name, transport, value, "ns", low, high, method,
                             placement=PLACEMENT))
    return rows


FORMS = ("seed", "count", "extended")


def predictions(samples: pd.DataFrame) -> pd.DataFrame:
    """Measured and predicted request time per transport, topology and k."""
    return predict(samples)[0]


def predict(samples: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, ChainErrors]]:
    """The predictions table, and per transport the bootstrap draws of each form's
    worst error over the chain's k (alpha, beta, C0, the ring's growth and the measured
    chain all resampled)."""
    mine = select(samples, experiment="amplification", placement=PLACEMENT)
    ring_table = Ring().tables(samples).get("ring_beta")  # once: it bootstraps every case
    out, errors = [], {}
    for (transport, topology), rows in mine[mine.topology.isin(["chain", "fanout"])].groupby(
            ["transport", "topology"]):
        if transport == BASELINE:
            continue
        # T_m: the same shape in process (nested calls, or k calls in turn)
        baseline = select(mine, transport=BASELINE, topology=topology).groupby("k").value.median()
        costs = independent(mine, transport)
        if costs is None:
            continue
        alpha, c0, beta = costs.alpha.value, costs.c0.value, costs.beta.value
        draws = costs.draws
        growth = ring_growth(beta_by_processes(ring_table, transport))
        growth_draws = ring_growth_draws(beta_draws(samples, transport))
        residual = seed_fit_residuals(rows)
        worst = {form: np.zeros_like(draws["beta"]) for form in FORMS}
        for k, at_k in rows.groupby("k"):
            measured = float(np.median(at_k.value))
            measured_draws = median_draws(at_k, f"amplification/{transport}/{topology}/k{k}")
            messages = float(at_k.messages_per_op.mean())
            switches = float(at_k.ctx_switches_per_op.mean())

            shape = (int(k), messages, switches)
            point = forms(alpha, c0, beta, growth(k + 1), *shape)
            drawn = forms(draws["alpha"], draws["C0"], draws["beta"], growth_draws(k + 1),
                          *shape)
            for form in FORMS:
                worst[form] = np.maximum(worst[form], np.abs(drawn[form] / measured_draws - 1))
            out.append({
                "transport": transport, "topology": topology, "k": int(k),
                "measured_ns": measured, "T_m_ns": float(baseline.get(k, np.nan)),
                "latency_ratio": measured / baseline.get(k, np.nan),
                "messages_per_op": messages, "switches_per_op": switches,
                "seed_switches": 4 * k,
                "system_ctxt_per_op": float(at_k.system_ctxt_per_op.mean()),
                "pred_seed_ns": point["seed"], "err_seed": point["seed"] / measured - 1,
                "pred_count_ns": point["count"], "err_count": point["count"] / measured - 1,
                "pred_extended_ns": point["extended"],
                "err_extended": point["extended"] / measured - 1,
                "seed_fit_residual_ns": residual.get(k, np.nan),
                "workers": int(at_k.worker.nunique()),
            })
        if topology == "chain":
            events = min(costs.workers, int(rows.groupby("k").worker.nunique().min()))
            errors[transport] = ChainErrors(worst, events)
    return pd.DataFrame(out), errors


Cost = float | np.ndarray  # a point value, or one value per bootstrap draw


def forms(alpha: Cost, c0: Cost, beta: Cost, growth: Cost, k: int, messages: float,
          switches: float) -> dict[str, Cost]:
    """The three predictions of a chain of k servers that makes ``messages`` messages
    and ``switches`` switches per request; ``growth`` is the ring's rise in beta."""
    return {"seed": c0 + k * (2 * alpha + 4 * beta),
            "count": c0 + alpha * messages + beta * switches,
            "extended": c0 + alpha * messages + (beta + growth) * switches}


@dataclass(frozen=True)
class ChainErrors:
    """Per form, bootstrap draws of the worst |predicted / measured - 1| over k."""

    worst: dict[str, np.ndarray]
    workers: int  # the fewest workers behind any case the check uses


def seed_fit_residuals(rows: pd.DataFrame) -> pd.Series:
    """Measured minus the least-squares line T = a + b k, per k: a straight line with a
    high R^2 can still bend away at both ends, which these show."""
    points = worker_points(rows, ["k"])
    if points.k.nunique() < 3:
        return pd.Series(dtype=float)
    slope, intercept = np.polyfit(points.k, points.value, 1)
    medians = rows.groupby("k").value.median()
    return medians - (intercept + slope * medians.index.to_numpy(dtype=float))


def ring_growth(series: pd.Series) -> Callable[[int], float]:
    """beta_ring(N) - beta_ring(smallest N), linear in log2 N between measured ring
    sizes and flat beyond them; nan without a ring."""
    if series.empty:
        return lambda _processes: float("nan")
    x = np.log2(series.index.to_numpy(dtype=float))
    y = series.to_numpy() - series.iloc[0]
    return lambda processes: float(np.interp(np.log2(processes), x, y))


def ring_growth_draws(draws: dict[int, np.ndarray]) -> Callable[[int], np.ndarray | float]:
    """``ring_growth`` for every bootstrap draw of the ring's betas."""
    if not draws:
        return lambda _processes: float("nan")
    sizes = sorted(draws)
    x = np.log2(sizes)
    grown = np.stack([draws[n] - draws[sizes[0]] for n in sizes])  # (sizes, resamples)

    def at(processes: int) -> np.ndarray:
        target = np.clip(np.log2(processes), x[0], x[-1])
        upper = int(np.clip(np.searchsorted(x, target), 1, len(x) - 1)) if len(x) > 1 else 0
        if len(x) == 1:
            return grown[0]
        lower = upper - 1
        weight = (target - x[lower]) / (x[upper] - x[lower])
        return (1 - weight) * grown[lower] + weight * grown[upper]

    return at


CHAIN_TOLERANCE = 0.10  # the extended form's goal: every k within 10%


def chain_rows(mine: pd.DataFrame, transport: str, table: pd.DataFrame,
               errors: ChainErrors | None) -> list[ModelRow]:
    """Fit quality and prediction errors of one transport's chain."""
    methods = {
        "seed": ("chain_max_rel_error", "seed form C0 + k(2 alpha + 4 beta)"),
        "count": ("chain_max_rel_error_count", "C0 + alpha*messages + beta*measured switches"),
        "extended": ("chain_max_rel_error_extended",
                     "count form, beta growing with processes as the ring shows"),
    }
    rows = []
    for form, (parameter, what) in methods.items():
        point = _worst(table[f"err_{form}"])
        low, high = interval(errors.worst[form]) if errors else (np.nan, np.nan)
        rows.append(check_row(
            parameter, transport, (point, low, high), "ratio", (0.0, CHAIN_TOLERANCE),
            errors.workers if errors else np.nan,
            f"{what}: worst |predicted/measured - 1| over k, 95% interval of that worst from "
            f"resampling workers of every case involved; holds if within "
            f"{CHAIN_TOLERANCE:.0%}", placement=PLACEMENT))
    rows += [ModelRow("latency_ratio", transport, r.latency_ratio, "ratio", np.nan, np.nan,
                      "T_mu/T_m through a chain of k servers", placement=PLACEMENT,
                      k=int(r.k)) for r in table.itertuples()]
    points = worker_points(select(mine, transport=transport, topology="chain"), ["k"])
    try:
        rows += fitted(points, transport, independent(mine, transport))
    except FitError as exc:
        rows.append(ModelRow("chain_fit", transport, np.nan, "ns", np.nan, np.nan,
                             f"not fitted: {exc}", placement=PLACEMENT))
    return rows


def _worst(errors: pd.Series) -> float:
    return float(errors.abs().max()) if errors.notna().any() else float("nan")


def fitted(points: pd.DataFrame, transport: str, found: Costs | None) -> list[ModelRow]:
    """Regressions over k: the seed form, and the count form with alpha held at its
    direct measurement (messages and switches both grow with k: collinear together)."""
    k = points.k.to_numpy(float)
    ones = np.ones_like(k)
    label = f"fit/{transport}"
    seed = ols(np.column_stack([ones, k]), points.value, ("C0", "per_hop"), k, label + "/seed")
    rows = [
        _row("chain_per_hop_seed", transport, seed["per_hop"],
             f"OLS of T on k over worker medians, R^2 {seed.r2:.4f}"),
        _row("chain_C0_fit", transport, seed["C0"], "intercept of the seed-form fit"),
        ModelRow("chain_r2", transport, seed.r2, "ratio", np.nan, np.nan,
                 "R^2 of the seed-form fit (read with the residuals per k)", placement=PLACEMENT),
    ]
    if found is not None:
        alpha = found.alpha.value
        count = ols(np.column_stack([ones, points.switches]),
                    points.value - alpha * points.messages, ("C0", "beta"), k, label + "/count")
        rows.append(_row("beta_fit_count", transport, count["beta"],
                         "OLS of T - alpha*messages on measured switches"))
    return rows


def _row(parameter: str, transport: str, value: Estimate, method: str) -> ModelRow:
    return ModelRow(parameter, transport, value.value, "ns", value.low, value.high, method,
                    placement=PLACEMENT)


def plot(table: pd.DataFrame, folder: Path) -> list[Path]:
    """Measured and predicted chain latency over k per transport; T_mu/T_m over k."""
    plt = pyplot()
    chains = table[table.topology == "chain"]
    if chains.empty:
        return []
    transports = sorted(chains.transport.unique())
    fig, axes = plt.subplots(1, len(transports), figsize=(4 * len(transports), 3.6),
                             squeeze=False)
    for ax, transport in zip(axes[0], transports, strict=True):
        t = chains[chains.transport == transport].sort_values("k")
        ax.plot(t.k, t.measured_ns / 1000, "ko-", label="measured")
        ax.plot(t.k, t.pred_seed_ns / 1000, "--", label="seed form")
        ax.plot(t.k, t.pred_count_ns / 1000, ":", label="measured counts")
        ax.plot(t.k, t.pred_extended_ns / 1000, "-.", label="extended (ring beta)")
        ax.set(title=transport, xlabel="servers in the chain (k)", ylabel="request time (us)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    chain_png = save(fig, folder / "chain.png")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for transport in transports:
        t = chains[chains.transport == transport].sort_values("k")
        ax.plot(t.k, t.latency_ratio, "o-", label=transport)
    ax.axhline(1.3, color="grey", ls="--", lw=1, label="seed: 1.3")
    ax.set(xlabel="servers in the chain (k)", ylabel="T_mu / T_m", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [chain_png, save(fig, folder / "ratio_over_k.png")]


EXPERIMENT = Amplification()
