"""Experiment: deadlock detection over a wait-for graph spread across N servers.

The seed: a system-wide deadlock detector must build a wait-for graph that
spans many address spaces, and every edge that crosses servers costs IPC, so
it is slower than an in-kernel detector walking one lock graph.

Each case is a seeded random lock graph of N servers (``servers``), each
holding 1-4 resources and waiting for at most one held by another server;
``cyclic`` graphs have 1-3 planted cycles, ``acyclic`` ones none (``modes``;
``seeds`` pick the graphs). Transport ``call`` is the in-kernel detector: it
walks the lock table held in its own process. Any other transport starts N
real servers, each knowing only its own state, and the detector asks every
one over IPC, rebuilds the table and walks it (2N messages). The latency of
a detection, from the first query to the answer, is fitted as
``T(N) = T_0 + N * t_s``; ``t_s`` is the cost per server (``deadlock_ns_per_server``),
about one round trip plus the decode for IPC, a pointer step in process.
``deadlock_ratio`` is T_ipc/T_call at the largest N; ``deadlock_exact`` is 1
when every detection found exactly the planted cycles (as sets of servers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.params import ServiceParams
from harness.experiment import (
    ModelRow,
    Plan,
    ProbeExperiment,
    Section,
    param,
    parameters,
    probe_cases,
)
from harness.fit import FitError
from harness.plots import finish_axes
from harness.records import CaseResult
from harness.samples import estimate, line_fit, median_draws, select
from servers.deadlock import PAYLOAD, VARIANTS
from servers.transports import TRANSPORTS, Placement

METRICS = {"detect_ns": "ns", "cycles_found": "count", "cycles_planted": "count",
           "exact": "ratio", "messages": "count"}
IN_PROCESS = "call"




@dataclass(frozen=True)
class DeadlockParams(ServiceParams):
    """Its table in a suite file: the services, and these."""

    modes: tuple[str, ...] = param(VARIANTS, "graph kinds: cyclic, acyclic",
                                   column="graph")
    seeds: tuple[int, ...] = param((1,), "the random graphs' seeds", column="seed")


class Deadlock(ProbeExperiment):
    name = "deadlock"
    description = "deadlock detection: query N servers over IPC against one in-process lock graph"
    params_type = DeadlockParams
    format1 = (("variant", "graph", str), ("seed", "seed", int))

    def plan(self, params: DeadlockParams) -> Plan:
        where = self.where
        variants = params.modes
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"{where}.modes: unknown variant {unknown[0]!r} "
                             f"(known: {', '.join(VARIANTS)})")
        small = [n for n in params.servers if n < 2]
        if small:
            raise ValueError(f"{where}.servers: a wait-for graph needs at least 2 servers, "
                             f"not {small[0]}")
        if len(set(params.servers)) < 2:
            raise ValueError(f"{where}.servers: the fit needs at least two server counts")
        placement = Placement("same-cpu", len(os.sched_getaffinity(0)))
        plan = Plan()
        for transport in params.transports:
            for variant in variants:
                for n in params.servers:
                    for seed in params.seeds:
                        cases = probe_cases(self, transport, METRICS, k=n,
                                            graph=variant, seed=seed)
                        # N servers, one link each (mq runs out of queues first).
                        reason = TRANSPORTS[transport].refuse(PAYLOAD, placement, links=n)
                        if reason:
                            plan.skipped += [CaseResult(c, "skipped", reason) for c in cases]
                        else:
                            plan.runnable += cases
        return plan

    def mine(self, samples: pd.DataFrame, **where: Any) -> pd.DataFrame:
        mine = super().mine(samples, **where)
        # Worker w of seed 1 and of seed 2 are different processes: one cluster each
        # (numbered by the pair, not by arithmetic on either), or the bootstrap would
        # resample them together.
        return mine.assign(worker=mine.groupby(["seed", "worker"]).ngroup())

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        mine = self.mine(samples)
        rows: list[ModelRow] = []
        if mine.empty:
            return rows
        method = "OLS of detect_ns over N, workers bootstrapped"
        for (transport, variant), sub in mine.groupby(["transport", "graph"]):
            common = dict(placement="same-cpu", variant=variant)
            try:
                fit = line_fit(select(sub, metric="detect_ns"),
                               f"{self.name}/{transport}/{variant}")
            except FitError:
                fit = None
            if fit is not None:
                rows += [
                    ModelRow("deadlock_ns_fixed", transport, fit["intercept"][0], "ns",
                             fit["intercept"][1], fit["intercept"][2], method, **common),
                    ModelRow("deadlock_ns_per_server", transport, fit["slope"][0], "ns",
                             fit["slope"][1], fit["slope"][2], method, **common),
                    ModelRow("deadlock_r2", transport, fit.r2, "ratio", np.nan, np.nan, method,
                             **common),
                ]
            found = select(sub, metric="cycles_found").set_index(["k", "seed", "worker"]).value
            planted = select(sub, metric="cycles_planted").set_index(["k", "seed", "worker"])
            exact = select(sub, metric="exact").value
            ok = bool((exact == 1).all() and found.sort_index().equals(
                planted.value.sort_index()))
            rows.append(ModelRow("deadlock_exact", transport, float(ok), "ratio", np.nan, np.nan,
                                 "1 if every detection found exactly the planted cycles",
                                 **common))
            ratio = self._ratio(mine, transport, variant)
            if ratio is not None:
                n, (value, low, high) = ratio
                rows.append(ModelRow("deadlock_ratio", transport, value, "ratio", low, high,
                                     f"median detect_ns over {IN_PROCESS}'s at N = {n}, "
                                     "workers bootstrapped", k=n, **common))
        return rows

    def _ratio(self, mine: pd.DataFrame, transport: str, variant: str,
               ) -> tuple[int, tuple[float, float, float]] | None:
        """T_ipc / T_call at the largest N both ran, with a bootstrap interval."""
        if transport == IN_PROCESS:
            return None
        times = select(mine, metric="detect_ns", graph=variant)
        ipc, base = select(times, transport=transport), select(times, transport=IN_PROCESS)
        common = sorted(set(ipc.k) & set(base.k))
        if not common:
            return None
        n = int(common[-1])
        top, bottom = select(ipc, k=n), select(base, k=n)
        label = f"{self.name}/{transport}/{variant}/k{n}"
        draws = median_draws(top, label) / median_draws(bottom, f"{label}/{IN_PROCESS}")
        return n, estimate(float(np.median(top.value) / np.median(bottom.value)), draws)

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        wide = self.wide(samples, ["transport", "graph", "k", "seed"])
        if "detect_ns" in wide:
            wide["ns_per_server"] = wide.detect_ns / wide.servers
        return wide

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        if "detect_ns" not in table:
            return None
        fig, ax = self.figure()
        colours = {t: f"C{i}" for i, t in enumerate(sorted(set(table.transport)))}
        for (transport, variant), sub in table.groupby(["transport", "graph"]):
            points = sub.groupby("servers").detect_ns.median()  # over seeds
            style = "o-" if variant == "cyclic" else "s--"
            ax.plot(points.index, points.to_numpy() / 1e3, style, ms=4,
                    color=colours[transport], label=f"{transport} ({variant})")
        finish_axes(ax, "Deadlock detection: N servers over IPC against one in-process lock "
                    "graph", "servers N", "detection latency, us", xscale="log2", yscale="log")
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        params = parameters(model, "deadlock_")
        if not params:
            return []

        def cell(key: tuple[str, str], name: str) -> str:
            m = params.get((*key, name))
            if m is None:
                return "-"
            if name == "deadlock_exact":
                return "yes" if m.value == 1 else "NO"
            if name == "deadlock_r2":
                return f"{m.value:.3f}"
            if name == "deadlock_ratio":
                return f"{m.value:.0f}x ({m.ci_low:.0f} to {m.ci_high:.0f}) at N={m.k}"
            return f"{m.value / 1e3:.2f} ({m.ci_low / 1e3:.2f} to {m.ci_high / 1e3:.2f})"

        rows = [[t, v, cell((t, v), "deadlock_ns_fixed"), cell((t, v), "deadlock_ns_per_server"),
                 cell((t, v), "deadlock_r2"), cell((t, v), "deadlock_ratio"),
                 cell((t, v), "deadlock_exact")]
                for t, v in sorted({(t, v) for t, v, _ in params})]
        note = (f"T(N) = T_0 + N t_s, fitted over N. {IN_PROCESS} walks the lock table in its "
                "own process; every other transport asks each of N servers for its state (2N "
                "messages, one round trip after another), then walks the same table. The ratio "
                f"is T over {IN_PROCESS}'s T at the largest N. exact: every detection found the "
                "planted cycles, no more, no fewer. Per graph: deadlock.csv.")
        return [Section("Deadlock detection: T(N) = T_0 + N t_s (us, 95% CI)",
                        ["transport", "graphs", "T_0", "t_s", "R^2", "T / T_call", "exact"],
                        rows, note, self.own_plots(plots))]


EXPERIMENT = Deadlock()
