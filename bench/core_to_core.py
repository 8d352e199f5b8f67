"""Core to core: the round trip between every pair of CPUs, as core-to-core-latency draws it.

Each unordered pair of usable CPUs is a measurement over a shared cache line both sides
poll (``shm-spin``) and over a pipe. The results name each pair's placement class
(``harness.cputopology``), so the report sums the pairs up per class: min, median, p99.
A machine of up to 256 CPUs has 32,640 pairs: past ``budget`` pairs (or with ``sample``
set) the plan measures ``sample`` pairs of each class instead, the class's canonical
pair (``ipcbench topology``) among them, drawn with a fixed seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.params import known_transports
from bench.probes.core_to_core import METRICS
from bench.timed import refusal
from harness.cputopology import Topology, Unavailable, this_machine
from harness.experiment import (
    ModelRow,
    Params,
    Plan,
    ProbeExperiment,
    Section,
    param,
    probe_cases,
    triage,
)
from harness.plots import save
from harness.records import Case, CaseResult

CLASSES = ("smt-sibling", "same-llc", "cross-llc", "cross-package")
SEED = 2026


@dataclass(frozen=True)
class CoreToCoreParams(Params):
    """Its table in a suite file."""

    transports: tuple[str, ...] = param(("shm-spin", "pipe"), "over a polled cache line "
                                        "(shm-spin) and over a pipe", choices=known_transports)
    round_trips: int = param(2000, "round trips a batch times for one pair", low=10,
                             column="round_trips")
    budget: int = param(512, "the most pairs measured in full; past it, sample", low=1)
    sample: int | None = param(None, "pairs per placement class (default: every pair "
                               "within the budget, else budget / classes)", low=1)


def pairs(machine: Topology, budget: int, sample: int | None) -> list[tuple[int, int, str]]:
    """(cpu a, cpu b, class) for every pair of usable CPUs, or a sample per class."""
    every = [(a, b, machine.relation(a, b)) for a, b in combinations(machine.usable, 2)]
    if sample is None and len(every) <= budget:
        return every
    per_class = sample or max(1, budget // len(CLASSES))
    rng = random.Random(SEED)
    chosen = []
    for placement in CLASSES:
        members = [p for p in every if p[2] == placement]
        if not members:
            continue
        try:
            client, servers = machine.plan(placement)
            first = (min(client, servers[0]), max(client, servers[0]), placement)
        except Unavailable:
            first = members[0]
        rest = [p for p in members if p != first]
        chosen += [first, *rng.sample(rest, min(per_class - 1, len(rest)))]
    return sorted(chosen)


class CoreToCore(ProbeExperiment):
    name = "core-to-core"
    description = "round trip between every pair of CPUs over a polled cache line and a pipe"
    params_type = CoreToCoreParams
    derived = (("cpu_a", int, "cpu"), ("cpu_b", int, "cpu"))

    def plan(self, params: CoreToCoreParams) -> Plan:
        machine = this_machine()
        found = pairs(machine, params.budget, params.sample)
        cases: list[Case] = []
        for transport in params.transports:
            for a, b, placement in found:
                cases += probe_cases(self, transport, METRICS, placement=placement,
                                     payload_bytes=64, cpu_a=a, cpu_b=b,
                                     round_trips=params.round_trips)
        if not found:  # one usable CPU: say so once per transport, under its lone CPU
            lone = machine.usable[0]
            cases = [c for t in params.transports for c in probe_cases(
                self, t, METRICS, placement="cross-cpu", payload_bytes=64, cpu_a=lone,
                cpu_b=lone, round_trips=params.round_trips)]
            return Plan(skipped=[CaseResult(c, "skipped", "one usable CPU: no pair to measure")
                                 for c in cases])
        plan = triage(cases, refusal)
        return plan

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        mine = self.mine(samples, metric="round_trip_ns")
        if mine.empty:
            return pd.DataFrame()
        # A pair's round trips a batch are part of its configuration: never pooled.
        table = mine.groupby(["transport", "placement", "cpu_a", "cpu_b", "round_trips"]
                             ).value.median()
        return table.rename("round_trip_ns").reset_index().astype(
            {"cpu_a": int, "cpu_b": int, "round_trips": int})

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        table = self.table(samples)
        if table.empty:
            return {}
        found = {self.name: table, f"{self.name}_classes": class_summary(table)}
        for transport, sub in table.groupby("transport"):
            found[f"{self.name}_matrix_{transport}"] = matrix(sub).reset_index()
        return found

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        table = self.table(samples)
        if table.empty:
            return []
        return [ModelRow(f"c2c_{r.placement}_median_ns", r.transport, r.median_ns, "ns",
                         r.min_ns, r.p99_ns, f"median over {r.pairs} pairs (interval: min "
                         "and p99 over them)", placement=r.placement)
                for r in class_summary(table).itertuples()]

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        table = tables.get(self.name)
        if table is None or table.empty:
            return []
        transports = sorted(set(table.transport))
        fig, axes = self.figure(len(transports), (5.5 * len(transports), 4.6), squeeze=False)
        for ax, transport in zip(axes[0], transports, strict=True):
            grid = matrix(table[table.transport == transport])
            shown = ax.imshow(grid.to_numpy() / 1e3, cmap="viridis", origin="upper")
            cpus = list(grid.index)
            step = max(1, len(cpus) // 16)
            ax.set_xticks(range(0, len(cpus), step), cpus[::step])
            ax.set_yticks(range(0, len(cpus), step), cpus[::step])
            ax.set(title=f"{transport}: round trip, us", xlabel="CPU", ylabel="CPU")
            fig.colorbar(shown, ax=ax, shrink=0.8)
        fig.tight_layout()
        return [save(fig, folder / self.plot_file)]

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        summary = tables.get(f"{self.name}_classes")
        if summary is None or summary.empty:
            return []
        rows = [[r.transport, r.placement, str(r.pairs), f"{r.min_ns / 1e3:.2f}",
                 f"{r.median_ns / 1e3:.2f}", f"{r.p99_ns / 1e3:.2f}"]
                for r in summary.itertuples()]
        note = ("Each pair's round trip with the client pinned to one CPU and its echo "
                "server to the other: shm-spin polls one shared cache line (two hand-offs "
                "per round trip, plus the interpreter's loop), pipe adds two wake-ups. "
                "Per class, over its pairs: the fastest, the median and the p99 of the "
                "pairs' medians. core-to-core.csv has every pair; "
                "core-to-core_matrix_<transport>.csv the matrix the heatmap draws.")
        return [Section("Core to core: round trip by placement class (us)",
                        ["transport", "class", "pairs", "min", "median", "p99"], rows, note,
                        self.own_plots(plots))]


def matrix(table: pd.DataFrame) -> pd.DataFrame:
    """CPU x CPU of one transport's medians, both halves filled, blank where unmeasured."""
    cpus = sorted(set(table.cpu_a) | set(table.cpu_b))
    grid = pd.DataFrame(np.nan, index=pd.Index(cpus, name="cpu"), columns=cpus)
    for r in table.itertuples():
        grid.loc[r.cpu_a, r.cpu_b] = grid.loc[r.cpu_b, r.cpu_a] = r.round_trip_ns
    return grid


def class_summary(table: pd.DataFrame) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for (transport, placement), sub in table.groupby(["transport", "placement"]):
        values = sub.round_trip_ns.to_numpy(float)
        rows.append({"transport": transport, "placement": placement, "pairs": len(values),
                     "min_ns": float(values.min()), "median_ns": float(np.median(values)),
                     "p99_ns": float(np.percentile(values, 99))})
    return pd.DataFrame(rows)


EXPERIMENT = CoreToCore()
