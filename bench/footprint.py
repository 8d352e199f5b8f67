"""Experiment: memory footprint, ``M_total = M_k + N * M_s`` (the seed's footprint model).

N echo servers are started (forked, or exec'd as programs of their own),
each answers a few requests, then the unique (USS), proportional (PSS) and
resident memory of the client and every server are summed (psutil reads
``smaps``), with the page tables (``VmPTE``) apart, since USS does not
count them. The monolithic baseline holds the same N services as objects in
the client process (transport ``call``). M_k and M_s come from a line fit
of the total over N, with a cluster bootstrap interval.
"""

from __future__ import annotations

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
from harness.samples import line_fit, select

# PSS divides each shared page among every process that maps it, other programs on the
# machine included: it moved 4-11% between runs with no change to the code, so compare
# does not judge it (its unit is not a plain cost); USS is the footprint it judges.
METRICS = {"uss_total": "bytes", "pss_total": "bytes-shared", "rss_total": "bytes",
           "pte_total": "bytes", "uss_client": "bytes"}
MODES = ("fork", "exec")
MIB = float(1 << 20)


@dataclass(frozen=True)
class FootprintParams(ServiceParams):
    """Its table in a suite file: the services, and these."""

    modes: tuple[str, ...] = param(("fork",), "how servers start: fork, exec",
                                   column="start")


class Footprint(ProbeExperiment):
    name = "footprint"
    description = "memory of N servers against N objects in one process: M_k + N M_s"
    params_type = FootprintParams
    format1 = (("variant", "start", str),)

    def plan(self, params: FootprintParams) -> Plan:
        where = self.where
        modes = params.modes
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise ValueError(f"{where}.modes: unknown mode {unknown[0]!r} (known: fork, exec)")
        if len(set(params.servers)) < 2:
            raise ValueError(f"{where}.servers: the fit needs at least two server counts")
        plan = Plan()
        for transport in params.transports:
            variants = ["object"] if transport == "call" else list(modes)
            for variant in variants:
                if variant == "exec" and transport != "pipe":
                    raise ValueError(f"{where}: exec'd servers speak pipe only, not {transport}")
                for n in params.servers:
                    plan.runnable += probe_cases(self, transport, METRICS, k=n,
                                                 start=variant)
        return plan

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = []
        mine = self.mine(samples)
        for (transport, variant), sub in mine.groupby(["transport", "start"]):
            # PSS sums to the memory the group really uses (shared pages counted once);
            # USS sums only the pages private to each, so its slope is the marginal server.
            for metric, suffix in (("pss_total", ""), ("uss_total", "_uss")):
                label = f"{self.name}/{transport}/{variant}/{metric}"
                try:
                    fit = line_fit(select(sub, metric=metric), label)
                except FitError:
                    continue
                method = f"OLS of {metric} over N, workers bootstrapped"
                common = dict(placement="same-cpu", variant=variant)
                rows += [
                    ModelRow(f"footprint_M_k{suffix}", transport, fit["intercept"][0], "bytes",
                             fit["intercept"][1], fit["intercept"][2], method, **common),
                    ModelRow(f"footprint_M_s{suffix}", transport, fit["slope"][0], "bytes",
                             fit["slope"][1], fit["slope"][2], method, **common),
                    ModelRow(f"footprint_r2{suffix}", transport, fit.r2, "ratio", np.nan, np.nan,
                             method, **common),
                ]
        return rows

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        return self.wide(samples, ["transport", "start", "k"])

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        fig, ax = self.figure()
        fits = {(m.transport, m.variant, m.parameter): m.value for m in model
                if m.parameter.startswith("footprint_M")}
        for (transport, variant), sub in table.groupby(["transport", "start"]):
            label = f"{transport} ({variant})"
            for metric, style in (("uss_total", "o-"), ("pss_total", "s--")):
                ax.plot(sub.servers, sub[metric] / MIB, style, ms=4,
                        label=f"{label} {metric.split('_')[0].upper()}")
            k, s = (fits.get((transport, variant, p)) for p in ("footprint_M_k",
                                                                 "footprint_M_s"))
            if k is not None and s is not None:
                n = np.array([sub.servers.min(), sub.servers.max()], float)
                ax.plot(n, (k + s * n) / MIB, ":", color="grey")
        finish_axes(ax, "Footprint: N servers against N objects in one process (dotted: fit)",
                    "services N", "total memory, MiB", xscale="log2")
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        params = parameters(model, "footprint_")
        rows = []
        for (transport, variant) in sorted({(t, v) for t, v, _ in params}):
            def cell(name: str) -> str:
                m = params.get((transport, variant, name))  # noqa: B023
                if m is None:
                    return "-"
                if m.unit == "ratio":
                    return f"{m.value:.4f}"
                return f"{m.value / 1024:.0f} ({m.ci_low / 1024:.0f} to {m.ci_high / 1024:.0f})"
            rows.append([transport, variant, cell("footprint_M_k"), cell("footprint_M_s"),
                         cell("footprint_r2"), cell("footprint_M_s_uss")])
        note = ("M_total is the summed PSS of the client and its servers (each shared page "
                "counted once in all); the USS slope is what one more server costs privately. "
                "Page tables (VmPTE) are in footprint.csv apart. Forked servers share the "
                "client's image until they write to it; exec'd servers build their own. "
                "In process (call) a service is an object: M_s is about 0.")
        return [Section("Footprint: M_total = M_k + N M_s (KiB, 95% CI)",
                        ["transport", "start", "M_k (PSS)", "M_s (PSS)", "R^2", "M_s (USS)"],
                        rows, note, self.own_plots(plots))]


EXPERIMENT = Footprint()
