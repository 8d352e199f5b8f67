"""Experiment 4 (lmbench's lat_ctx): a token around a ring of N pinned processes.

Each hop is one message and one context switch; each process touches W bytes
of its own per hop. beta(N, W) is the hop time minus the same-process
overhead (one process sending to itself and touching W bytes), so the
message cost is taken out and what remains is the switch, with the cache
refill a larger ring and a larger working set cause.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench import timed
from bench.params import RingParams
from harness.experiment import Experiment, ModelRow, Plan, Section
from harness.records import Case
from harness.samples import Estimate, estimate, median_draws, select
from harness.units import number, us


class Ring(Experiment):
    name = "ring"
    description = "token around N processes touching W bytes: beta(N, W)"
    params_type = RingParams

    def plan(self, params: RingParams) -> Plan:
        cases = []
        for transport in params.transports:
            for placement in params.placements:
                for w in params.working_sets:
                    common: dict[str, Any] = dict(payload_bytes=params.message_bytes,
                                                  working_set=w, sched_batch=params.sched_batch)
                    cases.append(Case(self.name, transport, placement, k=1, metric="message",
                                      topology="self", **common))
                    cases += [Case(self.name, transport, placement, k=n, metric="hop",
                                   topology="ring", **common) for n in params.k]
        return timed.plan(cases)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows: list[ModelRow] = []
        table = self.tables(samples).get("ring_beta")
        if table is None:
            return rows
        for transport, sub in table[table.working_set == 0].groupby("transport"):
            first = sub.sort_values("processes").iloc[0]
            rows.append(ModelRow(
                "beta_ring", transport, first.beta_ns, "ns", first.beta_ci_low,
                first.beta_ci_high, f"ring hop minus same-process hop, N={first.processes}, W=0",
                placement="same-cpu", k=int(first.processes)))
        return rows

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        mine = self.mine(samples, placement="same-cpu")
        if mine.empty:
            return {}
        out = []
        for (transport, w), rows in mine.groupby(["transport", "working_set"]):
            base = select(rows, topology="self")
            if base.empty:
                continue
            for n, ring in select(rows, topology="ring").groupby("k"):
                beta = hop_beta(ring, base, f"ring/{transport}/{n}/{w}")
                out.append({"transport": transport, "working_set": int(w), "processes": int(n),
                            "hop_ns": float(np.median(ring.value)),
                            "overhead_ns": float(np.median(base.value)),
                            "beta_ns": beta.value, "beta_ci_low": beta.low,
                            "beta_ci_high": beta.high,
                            "switches_per_hop": float(ring.ctx_switches_per_op.mean())})
        return {"ring_beta": pd.DataFrame(out)} if out else {}

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        table = tables.get("ring_beta")
        if table is None or table.empty:
            return []
        header = ["transport", "W bytes", "processes", "hop us", "same-process us",
                  "beta us (CI)", "switches/hop"]
        body = [[str(r.transport), str(r.working_set), str(r.processes), us(r.hop_ns),
                 us(r.overhead_ns), f"{us(r.beta_ns)} ({us(r.beta_ci_low)}-"
                 f"{us(r.beta_ci_high)})", number(r.switches_per_hop)]
                for r in table.sort_values(["transport", "working_set", "processes"])
                .itertuples()]
        return [Section("Ring: beta over processes and working set", header, body,
                        summary=False)]


def hop_beta(ring: pd.DataFrame, overhead: pd.DataFrame, label: str) -> Estimate:
    point = float(np.median(ring.value) - np.median(overhead.value))
    return estimate(point, hop_draws(ring, overhead, label))


def hop_draws(ring: pd.DataFrame, overhead: pd.DataFrame, label: str) -> np.ndarray:
    """Bootstrap draws of beta: the ring hop less the same-process hop."""
    return median_draws(ring, label + "/ring") - median_draws(overhead, label + "/self")


def beta_draws(samples: pd.DataFrame, transport: str) -> dict[int, np.ndarray]:
    """Bootstrap draws of beta per ring size N (W = 0, same CPU), the same draws the
    ``ring_beta`` table's intervals come from."""
    rows = select(samples, experiment="ring", placement="same-cpu", transport=transport,
                  working_set=0)
    base = select(rows, topology="self")
    if base.empty:
        return {}
    return {int(n): hop_draws(ring, base, f"ring/{transport}/{n}/0")
            for n, ring in select(rows, topology="ring").groupby("k")}


def beta_by_processes(table: pd.DataFrame | None, transport: str) -> pd.Series:
    """beta per hop over the ring size N (W = 0) from a ``ring_beta`` table."""
    if table is None:
        return pd.Series(dtype=float)
    sub = table[(table.transport == transport) & (table.working_set == 0)]
    return sub.set_index("processes").beta_ns.sort_index()


EXPERIMENT = Ring()
