"""Experiment: initialization latency, ``boot = b0 + N * b_s`` (the seed's boot argument).

A microkernel must load, initialise and register its N servers one after
another before the system answers; a monolithic kernel initialises the same
subsystems inside one process. The probe times, from nothing, N services
started in sequence until every one has answered a first request correctly:
forked servers (``fork``, over any listed process transport), exec'd servers
(``exec``: a fresh interpreter each, over pipes) and the same N handlers
created in process (``object``, transport ``call``). Per server, the start
(until its ready handshake) is kept apart from its first reply. b0 and b_s
come from a line fit of the total over N (worker medians, cluster bootstrap
interval); the report sets the in-process boot beside fork and exec.

Suite keys: ``transports``, ``servers`` (the N list), ``modes`` (fork, exec;
exec runs over ``pipe`` only; left out: both, exec only if ``pipe`` is listed;
each transport in process, ``call``, is the object baseline whatever the
modes) and ``duration_s``: a worker repeats the boot
``settings.batches`` times but starts no new repetition once it has spent
``duration_s`` seconds (exec'd interpreters cost tens of ms each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.params import ServiceParams
from bench.probes.boot import METRICS, REQUEST_BYTES
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
from harness.samples import line_fit, select
from servers.transports import TRANSPORTS, Placement

MODES = ("fork", "exec")
FIT_METRIC = "boot_total"
ORDER = {"object": 0, "fork": 1, "exec": 2}


def human(ns: float) -> str:
    """A duration in the unit that suits it: boots span from us (objects) to s (exec)."""
    size = abs(ns)
    if size >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if size >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e3:.3g} us"


def times(ratio: float) -> str:
    """A ratio to three significant digits: 527x, 13,400x, 1.8x."""
    if np.isnan(ratio):
        return "-"
    return f"{float(f'{ratio:.3g}'):,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


@dataclass(frozen=True)
class BootParams(ServiceParams):
    """Its table in a suite file: the services, and these."""

    modes: tuple[str, ...] | None = param(None, "how servers start: fork, exec (default: "
                                          "every mode the transports allow)",
                                          column="start")
    duration_s: float = param(1.0, "the longest a worker repeats boots for", "s",
                              positive=True)


class Boot(ProbeExperiment):
    name = "boot"
    description = "start N servers until each answers, against N objects in process: b0 + N b_s"
    params_type = BootParams
    format1 = (("variant", "start", str),)

    def plan(self, params: BootParams) -> Plan:
        where = self.where
        # left out: every mode the transports allow
        modes = params.modes or (MODES if "pipe" in params.transports else ("fork",))
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise ValueError(f"{where}.modes: unknown mode {unknown[0]!r} (known: fork, exec)")
        if len(set(params.servers)) < 2:
            raise ValueError(f"{where}.servers: the fit needs at least two server counts")
        if "exec" in modes and "pipe" not in params.transports:
            raise ValueError(f"{where}: exec'd servers speak pipe only; add \"pipe\" to "
                             "transports or drop mode \"exec\"")
        placement = Placement("same-cpu", len(os.sched_getaffinity(0)))
        plan = Plan()
        for transport in params.transports:
            carrier = TRANSPORTS[transport]
            variants = ["object"] if carrier.in_process else [
                mode for mode in modes if mode == "fork" or transport == "pipe"]
            for variant in variants:
                for n in sorted(set(params.servers)):
                    cases = probe_cases(self, transport, METRICS, k=n, start=variant,
                                        duration_s=params.duration_s,
                                        payload_bytes=REQUEST_BYTES)
                    # N servers hold N links at once: mq runs out of queues first.
                    reason = None if variant == "exec" else carrier.refuse(
                        REQUEST_BYTES, placement, n)
                    if reason:
                        plan.skipped += [CaseResult(c, "skipped", reason) for c in cases]
                    else:
                        plan.runnable += cases
        return plan

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = []
        for (transport, variant), sub in self.mine(samples).groupby(["transport", "start"]):
            label = f"{self.name}/{transport}/{variant}/{FIT_METRIC}"
            try:
                fit = line_fit(select(sub, metric=FIT_METRIC), label)
            except FitError:
                continue
            method = f"OLS of {FIT_METRIC} over N, workers bootstrapped"
            common = dict(placement="same-cpu", variant=variant)
            rows += [
                ModelRow("boot_b0", transport, fit["intercept"][0], "ns", fit["intercept"][1],
                         fit["intercept"][2], method, **common),
                ModelRow("boot_b_s", transport, fit["slope"][0], "ns", fit["slope"][1],
                         fit["slope"][2], method, **common),
                ModelRow("boot_r2", transport, fit.r2, "ratio", np.nan, np.nan, method,
                         **common),
            ]
        return rows

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        return self.wide(samples, ["transport", "start", "k"], intervals=(FIT_METRIC,))

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        fig, ax = self.figure()
        fits = {(m.transport, m.variant, m.parameter): m.value for m in model}
        groups = sorted(table.groupby(["transport", "start"]), key=lambda g: ORDER[g[0][1]])
        for (transport, variant), sub in groups:
            y = sub[FIT_METRIC].to_numpy() / 1e6
            error = np.abs(np.vstack([y - sub[f"{FIT_METRIC}_ci_low"] / 1e6,
                                      sub[f"{FIT_METRIC}_ci_high"] / 1e6 - y]))
            drawn = ax.errorbar(sub.servers, y, yerr=error, fmt="o", ms=4, capsize=2,
                                label=f"{variant} ({transport})")
            b0, b_s = (fits.get((transport, variant, p)) for p in ("boot_b0", "boot_b_s"))
            if b0 is not None and b_s is not None:
                n = np.geomspace(sub.servers.min(), sub.servers.max(), 50)
                line = (b0 + b_s * n) / 1e6
                ax.plot(n[line > 0], line[line > 0], "--", lw=1, color=drawn[0].get_color())
        finish_axes(ax, "Boot: N servers against N objects in one process (dashed: b0 + N "
                    "b_s)", "services N (started one after another)",
                    "boot until all answered, ms", xscale="log2", yscale="log")
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        params = parameters(model, "boot_")
        keys = sorted({(t, v) for t, v, _ in params}, key=lambda key: (ORDER[key[1]], key[0]))
        if not keys:
            return []
        table = tables.get("boot", pd.DataFrame())
        objects = [key for key in keys if key[1] == "object"]
        base = objects[0] if objects else None
        base_slope = params[(*base, "boot_b_s")].value if base else np.nan

        def estimate(key: tuple[str, str], name: str) -> str:
            m = params.get((*key, name))
            if m is None:
                return "-"
            if m.unit == "ratio":
                return f"{m.value:.4f}"
            return f"{human(m.value)} ({human(m.ci_low)} to {human(m.ci_high)})"

        def boot_at(key: tuple[str, str], n: int) -> float:
            if table.empty:
                return np.nan
            row = select(table, transport=key[0], start=key[1], servers=n)
            return float(row[FIT_METRIC].iloc[0]) if len(row) else np.nan

        rows = []
        for key in keys:
            slope = params[(*key, "boot_b_s")].value
            slope_ratio = slope / base_slope if base and key != base and base_slope > 0 else np.nan
            mine = select(table, transport=key[0], start=key[1]) if not table.empty else table
            shared = set(mine.servers) if len(mine) else set()
            if base and key != base and not table.empty:
                shared &= set(select(table, transport=base[0], start=base[1]).servers)
            n = max(shared) if shared else None
            total = boot_at(key, n) if n else np.nan
            total_ratio = total / boot_at(base, n) if base and key != base and n else np.nan
            rows.append([key[0], key[1], estimate(key, "boot_b0"), estimate(key, "boot_b_s"),
                         estimate(key, "boot_r2"),
                         times(slope_ratio),
                         f"{human(total)} at N={n}" if n and not np.isnan(total) else "-",
                         times(total_ratio)])
        note = ("Boot: from nothing until N services, started one after another, have each "
                "answered a first request (stopping them is not timed); client and servers "
                "on one CPU. object: the N services are handlers created in this process "
                "(the monolithic kernel's subsystems); fork: each a forked server; exec: each "
                "a fresh interpreter. The services do no initialization work of their own, "
                "so the ratios to object measure what a process per service costs: per "
                "server (b_s) and the whole boot at the largest N both ran. boot.csv keeps "
                "each server's start (until ready) apart from its first reply.")
        return [Section("Boot: boot = b0 + N b_s (95% CI)",
                        ["transport", "start", "b0", "b_s", "R^2", "b_s / object",
                         "boot", "boot / object"],
                        rows, note, self.own_plots(plots))]


EXPERIMENT = Boot()
